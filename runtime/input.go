package runtime

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// channelData is a channel opened for the model: its dataset (or, in Pipe
// mode, how to open each epoch's) and the dtype each tensor is converted to
// on the way in.
type channelData struct {
	name string
	ds   *data.Dataset // nil in Pipe mode
	// sharded channels arrive already split per host (ShardedByS3Key):
	// each host reads all it got instead of taking its share of the rows.
	sharded bool
	dtypes  map[string]data.DType
	specs   []model.TensorSpec
	close   func()

	// Pipe mode: the FIFO of epoch e is <dataDir>/<name>_<e>, carrying one
	// .npy array per tensor of pipeNames, in that order.
	pipe      bool
	dataDir   string
	pipeNames []string
	pipeOpts  data.PipeOptions
}

// epochData returns the dataset of an epoch (0-based) and a func to call
// when done with it.
func (c *channelData) epochData(ctx context.Context, epoch int) (*data.Dataset, func(), error) {
	if !c.pipe {
		return c.ds, func() {}, nil
	}
	if err := os.MkdirAll(c.pipeOpts.SpoolDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("pipe spool dir: %w", err)
	}
	fifo := data.PipePath(c.dataDir, c.name, epoch)
	ds, err := data.OpenPipeEpoch(ctx, fifo, c.pipeNames, c.pipeOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("channel %q (Pipe mode): %w", c.name, err)
	}
	for _, spec := range c.specs {
		if err := checkFits(ds.Array(spec.Name), spec); err != nil {
			ds.Close()
			return nil, nil, fmt.Errorf("channel %q (Pipe mode): %w", c.name, err)
		}
	}
	return ds, func() { ds.Close() }, nil
}

// examples is the channel's row count, or -1 when it streams (Pipe mode).
func (c *channelData) examples() int {
	if c.ds == nil {
		return -1
	}
	return c.ds.Len()
}

// openChannel maps a channel's files to the model's inputs and targets and
// checks every file against the tensor it feeds. FastFile files are fetched
// on read; memory-mapping them reads them lazily, page by page, as that mode
// intends.
func openChannel(c sagemaker.Channel, dataDir string, meta *model.Metadata, overrides map[string]string, pipeNames []string, pipeOpts data.PipeOptions) (*channelData, error) {
	specs := append(append([]model.TensorSpec{}, meta.Inputs...), meta.Targets...)
	var inputs, targets []string
	for _, t := range meta.Inputs {
		inputs = append(inputs, t.Name)
	}
	for _, t := range meta.Targets {
		targets = append(targets, t.Name)
	}
	dtypes := map[string]data.DType{}
	for _, spec := range specs {
		dt, err := data.ParseDType(spec.DType)
		if err != nil {
			return nil, fmt.Errorf("model tensor %q: %w", spec.Name, err)
		}
		dtypes[spec.Name] = dt
	}
	cd := &channelData{name: c.Name, dtypes: dtypes, specs: specs,
		sharded: c.Distribution == sagemaker.ShardedByS3Key, close: func() {}}
	if c.InputMode == sagemaker.Pipe {
		if len(pipeNames) == 0 {
			pipeNames = append(inputs, targets...)
		}
		if len(pipeNames) != len(specs) {
			return nil, fmt.Errorf("channel %q (Pipe mode): hyperparameter %q lists %d tensors, the model has %d inputs and targets (%s)",
				c.Name, HPPipeTensors, len(pipeNames), len(specs), strings.Join(append(inputs, targets...), ", "))
		}
		cd.pipe, cd.dataDir, cd.pipeNames, cd.pipeOpts = true, dataDir, pipeNames, pipeOpts
		return cd, nil
	}
	ds, err := data.OpenChannel(c.Dir, inputs, targets, overrides, data.WithContentType(c.ContentType))
	if err != nil {
		return nil, fmt.Errorf("channel %q: %w", c.Name, err)
	}
	for _, spec := range specs {
		if err := checkFits(ds.Array(spec.Name), spec); err != nil {
			ds.Close()
			return nil, fmt.Errorf("channel %q: %w", c.Name, err)
		}
	}
	cd.ds, cd.close = ds, func() { ds.Close() }
	return cd, nil
}

// checkFits accepts a file whose examples have the tensor's shape, allowing
// only dimensions of size 1 to differ (labels saved as (N,) feed a (None, 1)
// target, as Keras accepts).
func checkFits(a *data.Array, spec model.TensorSpec) error {
	shape := a.Shape()
	if len(shape) == 0 {
		return fmt.Errorf("%s holds a single value (a 0-d array); it needs one row per example", a.Path())
	}
	want, _ := spec.ExampleShape()
	got := a.RowShape()
	if !sameIgnoringOnes(got, want) {
		return fmt.Errorf("%s has examples of shape %s but model %s %q takes examples of shape %s", a.Path(), shapeOf(got), kindOf(spec), spec.Name, shapeOf(want))
	}
	return nil
}

func kindOf(spec model.TensorSpec) string {
	if strings.HasPrefix(spec.Key, "target_") {
		return "target"
	}
	return "input"
}

func sameIgnoringOnes(got []int, want []int64) bool {
	var g, w []int64
	for _, d := range got {
		if d != 1 {
			g = append(g, int64(d))
		}
	}
	for _, d := range want {
		if d != 1 {
			w = append(w, d)
		}
	}
	if len(g) != len(w) {
		return false
	}
	for i := range g {
		if g[i] != w[i] {
			return false
		}
	}
	return true
}

// shapeOf writes a shape as "(4096)" or "(28, 28, 1)".
func shapeOf[T int | int64](s []T) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
