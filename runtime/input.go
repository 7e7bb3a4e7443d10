package runtime

import (
	"fmt"
	"strings"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// channelData is a channel opened for the model: its dataset and the dtype
// each tensor is converted to on the way in.
type channelData struct {
	name string
	ds   *data.Dataset
	// sharded channels arrive already split per host (ShardedByS3Key):
	// each host reads all it got instead of taking its share of the rows.
	sharded bool
	dtypes  map[string]data.DType
	close   func()
}

// openChannel maps a channel's files to the model's inputs and targets and
// checks every file against the tensor it feeds.
func openChannel(c sagemaker.Channel, meta *model.Metadata, overrides map[string]string) (*channelData, error) {
	// FastFile files are fetched on read; memory-mapping them reads them
	// lazily, page by page, as that mode intends.
	if c.InputMode == sagemaker.Pipe {
		return nil, fmt.Errorf("channel %q uses Pipe input mode, which this sagefit does not read yet; use File or FastFile", c.Name)
	}
	files, err := data.ListChannel(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("channel %q: %w", c.Name, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("channel %q (%s) holds no .npy files", c.Name, c.Dir)
	}
	specs := append(append([]model.TensorSpec{}, meta.Inputs...), meta.Targets...)
	var inputs, targets []string
	for _, t := range meta.Inputs {
		inputs = append(inputs, t.Name)
	}
	for _, t := range meta.Targets {
		targets = append(targets, t.Name)
	}
	paths, err := data.MapTensors(files, inputs, targets, overrides)
	if err != nil {
		return nil, fmt.Errorf("channel %q: %w", c.Name, err)
	}
	arrays := map[string]*data.Array{}
	closeAll := func() {
		for _, a := range arrays {
			a.Close()
		}
	}
	dtypes := map[string]data.DType{}
	for _, spec := range specs {
		a, err := data.Open(paths[spec.Name])
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("channel %q: %w", c.Name, err)
		}
		arrays[spec.Name] = a
		if err := checkFits(a, spec); err != nil {
			closeAll()
			return nil, fmt.Errorf("channel %q: %w", c.Name, err)
		}
		dt, err := data.ParseDType(spec.DType)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("model tensor %q: %w", spec.Name, err)
		}
		dtypes[spec.Name] = dt
	}
	ds, err := data.NewDataset(arrays)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("channel %q: %w", c.Name, err)
	}
	return &channelData{name: c.Name, ds: ds, dtypes: dtypes, close: closeAll,
		sharded: c.Distribution == sagemaker.ShardedByS3Key}, nil
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
		return fmt.Errorf("%s has examples of shape %s but model %s %q takes examples of shape %s", a.Path(), intShape(got), kindOf(spec), spec.Name, int64Shape(want))
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

func intShape(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func int64Shape(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
