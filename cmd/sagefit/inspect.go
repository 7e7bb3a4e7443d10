package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/sagefit/sagefit/model/tf"
)

// inspect loads a training SavedModel through libtensorflow, checks its
// contract and prints it.
func inspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the contract metadata as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, "usage: sagefit inspect [--json] SAVEDMODEL\n")
		return 2
	}
	m, err := tf.Load(fs.Arg(0), tf.Config{})
	if err != nil {
		fmt.Fprintf(stderr, "sagefit inspect: %v\n", err)
		return 1
	}
	defer m.Close()
	meta := m.Meta()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(meta); err != nil {
			fmt.Fprintf(stderr, "sagefit inspect: %v\n", err)
			return 1
		}
		return 0
	}
	lr, _ := m.LearningRate()
	fmt.Fprintf(stdout, "training SavedModel %s\n", m.Dir())
	fmt.Fprintf(stdout, "  contract       %s v%d (TensorFlow %s, Keras %s)\n", meta.Format, meta.ContractVersion, meta.TensorFlowVersion, meta.KerasVersion)
	for _, t := range meta.Inputs {
		fmt.Fprintf(stdout, "  input          %-20s %-8s %s\n", t.Name, t.DType, t.ShapeString())
	}
	for _, t := range meta.Targets {
		fmt.Fprintf(stdout, "  target         %-20s %-8s %s\n", t.Name, t.DType, t.ShapeString())
	}
	fmt.Fprintf(stdout, "  outputs        %s\n", strings.Join(meta.Outputs, ", "))
	fmt.Fprintf(stdout, "  metrics        %s\n", strings.Join(meta.Metrics, ", "))
	fmt.Fprintf(stdout, "  optimizer      %s (learning rate %g, assignable %v)\n", meta.Optimizer, lr, meta.LearningRateAssignable)
	fmt.Fprintf(stdout, "  gradients      %d floats over %d trainable variables\n", meta.GradientSize, len(meta.Gradients))
	fmt.Fprintf(stdout, "  variables      %d (model and optimizer)\n", len(meta.Variables))
	fmt.Fprintf(stdout, "  fingerprint    %s\n", meta.Fingerprint)
	roles := make([]string, 0, len(meta.Signatures))
	for r := range meta.Signatures {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, r := range roles {
		fmt.Fprintf(stdout, "  signature      %-20s %s\n", r, meta.Signatures[r])
	}
	return 0
}
