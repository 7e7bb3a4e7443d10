package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// pairs collects repeated NAME=VALUE flags.
type pairs map[string]string

func (p pairs) String() string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k+"="+p[k])
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", s)
	}
	p[k] = v
	return nil
}

// local lays out a SageMaker base dir from flags and runs the same code path
// as `train` in it.
func local(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "training SavedModel written by sagefit.export (becomes the \"model\" channel)")
	output := fs.String("output", "", "SageMaker base dir to create (model/, output/ land there); default: a new temporary folder")
	instance := fs.String("instance-type", "local", "instance type to report in resourceconfig.json")
	hosts := fs.Int("hosts", 1, "simulate a job of N hosts: N processes on 127.0.0.1..N, one base dir each under --output")
	channels := pairs{}
	hps := pairs{}
	modes := pairs{}
	fs.Var(channels, "channel", "NAME=DIR: a data channel (repeatable), e.g. training=./data")
	fs.Var(hps, "hp", "KEY=VALUE: a hyperparameter (repeatable), e.g. epochs=10")
	fs.Var(modes, "input-mode", "NAME=MODE: File (default), FastFile or Pipe for a channel")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *hosts < 1 {
		fmt.Fprintf(stderr, "sagefit local: --hosts must be at least 1\n")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sagefit local: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *modelDir != "" {
		channels["model"] = *modelDir
	}
	base := *output
	if base == "" {
		dir, err := os.MkdirTemp("", "sagefit-local-")
		if err != nil {
			fmt.Fprintf(stderr, "sagefit local: %v\n", err)
			return 1
		}
		base = dir
	}
	for name, dir := range channels {
		abs, err := filepath.Abs(dir)
		if err != nil {
			fmt.Fprintf(stderr, "sagefit local: channel %s: %v\n", name, err)
			return 2
		}
		channels[name] = abs
	}
	spec := sagemaker.LocalSpec{
		Channels:        channels,
		Hyperparameters: hps,
		InputModes:      modes,
		InstanceType:    *instance,
	}
	if *hosts > 1 {
		return cluster(*hosts, base, spec, stdout, stderr)
	}
	if err := sagemaker.WriteLocal(base, spec); err != nil {
		fmt.Fprintf(stderr, "sagefit local: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "sagefit local: SageMaker base dir %s\n", base)
	return train(stdout, stderr, base)
}
