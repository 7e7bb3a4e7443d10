// Command sagefit trains a Keras model exported with the sagefit Python
// package inside SageMaker's training contract, with no Python at training
// time.
//
//	sagefit train                      run the job under /opt/ml (what SageMaker runs)
//	sagefit local --model DIR --channel training=DIR [--hp epochs=10] [--output DIR]
//	sagefit inspect SAVEDMODEL         print a training SavedModel's contract
//
// Invoked under the name "train" (as SageMaker starts BYO images with
// `docker run IMAGE train` and some images link the binary so), it trains.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/term"

	"github.com/sagefit/sagefit/model/tf"
	"github.com/sagefit/sagefit/runtime"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

const usage = `usage:
  sagefit train
  sagefit local --model DIR|s3://... --channel NAME=DIR|s3://... [--channel ...] [--hp KEY=VALUE ...]
                [--input-mode NAME=File|FastFile|Pipe ...] [--output DIR|s3://...] [--checkpoint s3://...]
                [--s3-endpoint URL] [--hosts N] [--image IMAGE [--gpus all|N|device=...] [--docker CLI]]
                (sagefit local -h: every flag)
  sagefit inspect [--json] SAVEDMODEL|TIMING.json
`

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := ""
	rest := args[1:]
	if filepath.Base(args[0]) == "train" {
		cmd = "train"
	} else if len(rest) > 0 {
		cmd, rest = rest[0], rest[1:]
	}
	if cmd != "train" && cmd != "local" && tf.SignalledBeforeStart() {
		// Noted while the program started; the commands that do not
		// stop cleanly end on it, as on any SIGTERM.
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
	switch cmd {
	case "train":
		if len(rest) > 0 && rest[0] == "train" {
			// SageMaker's own argument after an entrypoint that already
			// says train (the link, or ["sagefit", "train"]): `docker run IMAGE train`.
			rest = rest[1:]
		}
		if len(rest) == 1 && (rest[0] == "-h" || rest[0] == "--help") {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return train(stdout, stderr, "", rest)
	case "local":
		return local(rest, stdout, stderr)
	case "inspect":
		return inspect(rest, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprint(stderr, usage)
	return 2
}

// train runs the job in base (empty: SAGEMAKER_BASE_DIR or /opt/ml); args
// are the command's arguments, which it refuses.
func train(stdout, stderr io.Writer, base string, args []string) int {
	ctx, stop := sagemaker.NotifyStop(context.Background())
	defer stop()
	if tf.SignalledBeforeStart() {
		// A stop while the libraries loaded, noted then: raised again
		// for the handler now in place, which stops the job as any stop.
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
	var exec []string
	if self, err := os.Executable(); err == nil {
		exec = []string{self, "train"} // one more training process for another GPU
	}
	return runtime.Main(ctx, runtime.Options{
		Base:     base,
		Environ:  os.Environ(),
		Stdout:   stdout,
		Stderr:   stderr,
		Terminal: isTerminal(stdout),
		Exec:     exec,
		Args:     args,
	})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// flagExit is a subcommand's exit code for err from its flag set's Parse:
// 0 for -h or --help (the flag set printed the usage asked for), 2 for a
// flag it does not take.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
