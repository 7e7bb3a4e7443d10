package input_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/input"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

func spec(name, key string, shape ...int64) model.TensorSpec {
	dims := []*int64{nil}
	for i := range shape {
		dims = append(dims, &shape[i])
	}
	return model.TensorSpec{Name: name, Key: key, DType: "float32", Shape: dims}
}

func writeNPY(t *testing.T, path string, rows, cols int) {
	t.Helper()
	shape := []int{rows, cols}
	if err := data.WriteNPY(path, data.Float32, shape, make([]byte, rows*cols*4)); err != nil {
		t.Fatal(err)
	}
}

var meta = &model.Metadata{
	Inputs:  []model.TensorSpec{spec("x", "x", 3)},
	Targets: []model.TensorSpec{spec("y", "target_y", 1)},
}

// A file in the channel that feeds nothing is named in a warning, with its
// path relative to the channel; the files that feed the model are not.
func TestUnusedFilesAreNamed(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 8, 3)
	writeNPY(t, filepath.Join(dir, "y.npy"), 8, 1)
	writeNPY(t, filepath.Join(dir, "extra.npy"), 8, 1)
	var warn bytes.Buffer
	ch, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir, InputMode: sagemaker.File}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &warn})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if ch.Examples() != 8 {
		t.Errorf("examples %d, want 8", ch.Examples())
	}
	got := warn.String()
	if !strings.Contains(got, `channel "training": extra.npy feeds no input or target of the model (inputs x; targets y)`) {
		t.Errorf("warning %q does not name extra.npy", got)
	}
	if strings.Contains(got, "x.npy") || strings.Contains(got, " y.npy") || strings.Count(got, "\n") != 1 {
		t.Errorf("warning names more than the unused file: %q", got)
	}
}

// A ContentType sagefit does not read (RecordIO protobuf, images) is named
// in a warning, as the data is read by file name regardless; numpy's and
// CSV's are not.
func TestUnreadContentTypeIsNamed(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 8, 3)
	writeNPY(t, filepath.Join(dir, "y.npy"), 8, 1)
	for ct, warned := range map[string]bool{"application/x-recordio-protobuf": true, "image/jpeg": true, "application/x-npy": false, "": false} {
		var warn bytes.Buffer
		ch, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir, InputMode: sagemaker.File, ContentType: ct}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &warn})
		if err != nil {
			t.Fatalf("ContentType %q: %v", ct, err)
		}
		ch.Close()
		want := fmt.Sprintf(`channel "training" has ContentType %q, which sagefit does not read`, ct)
		if strings.Contains(warn.String(), want) != warned || (!warned && warn.Len() > 0) {
			t.Errorf("ContentType %q: warnings %q", ct, warn.String())
		}
	}
}

// A file whose examples do not have the tensor's shape is refused in one
// sentence naming both; dimensions of size 1 may differ, as Keras allows.
func TestShapesAreChecked(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 8, 4)
	if err := data.WriteNPY(filepath.Join(dir, "y.npy"), data.Float32, []int{8}, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	_, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "x.npy has examples of shape (4) but model input \"x\" takes examples of shape (3)") {
		t.Fatalf("err = %v", err)
	}
}

// Labels saved as (N,) feed a (None, 1) target, as Keras accepts; where
// the model has metrics of its own, which fit would give them as saved
// (Keras's own match their rank to the predictions'), a warning says
// their values may differ from fit's and how to match it (a function of
// |y - p| gave other numbers without a word).
func TestLabelShapeNamedForOwnMetrics(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 8, 3)
	if err := data.WriteNPY(filepath.Join(dir, "y.npy"), data.Float32, []int{8}, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	for _, own := range [][]string{nil, {"my_err"}} {
		m := *meta
		m.LabelsAsGiven = own
		var warn bytes.Buffer
		ch, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir, InputMode: sagemaker.File}, sagemaker.Paths{Base: t.TempDir()}, &m, input.Options{Warn: &warn})
		if err != nil {
			t.Fatal(err)
		}
		ch.Close()
		want := `sagefit: warning: channel "training": y.npy has labels of shape () an example, fed to target "y" in its shape (1); fit given them passes them as saved, and the model's own steps, losses and metrics (my_err), unlike Keras's, read them so: their values may differ from fit's; save the labels in shape (1) an example, or export with target_shapes giving ()` + "\n"
		if own == nil {
			want = ""
		}
		if warn.String() != want {
			t.Errorf("own metrics %v: warned %q, want %q", own, warn.String(), want)
		}
	}
}

// Row weights are refused, in one sentence, where Keras refuses them or
// the model cannot take them.
func TestWeightsRefused(t *testing.T) {
	weighted := *meta
	weighted.Signatures = map[string]string{model.RoleTrainStepWeighted: "a", model.RoleComputeGradientsWeighted: "b", model.RoleTestStepWeighted: "c"}
	perPixel := *meta
	perPixel.SampleWeightsRefused = "the loss of output 'y' is one value per element of shape (4, 4) (per pixel or time step), which a weight per row does not fit"
	four := int64(4)
	perElement := weighted
	perElement.SampleWeights = []model.TensorSpec{{Name: model.SampleWeight, Key: model.SampleWeight, DType: "float32", Shape: []*int64{nil, &four}}}
	twoOut := weighted
	twoOut.Targets = append([]model.TensorSpec{spec("z", "target_z", 1)}, meta.Targets...)
	for _, c := range []struct {
		name        string
		meta        *model.Metadata
		file        bool
		classWeight map[int]float64
		want        string
	}{
		{"file for a model without weighted steps", meta, true, nil, "sample_weight.npy would weigh the rows, but the model's steps take no sample weights"},
		// It told to export again with this sagefit, which cannot help a
		// custom step (a probe).
		{"class_weight for a model without weighted steps", meta, false, map[int]float64{0: 2}, "hyperparameter \"class_weight\" weighs each row by its class, but the model's steps take no sample weights (a custom train_step that unpacks `x, y = data`"},
		// A loss per pixel: Keras would take weights of its shape, sagefit
		// reads one per row.
		{"file for a loss per pixel", &perPixel, true, nil, "sample_weight.npy would weigh the rows, but the loss of output 'y' is one value per element"},
		{"class_weight for a loss per pixel", &perPixel, false, map[int]float64{0: 2}, `hyperparameter "class_weight" weighs each row by its class, but the loss of output 'y'`},
		// A loss per element of a model of one output: weights of its shape.
		{"a weight per row for a loss per element", &perElement, true, nil, `sample_weight.npy has examples of shape (1) but model weight "sample_weight" takes examples of shape (4) (a weight per element of the model's loss`},
		{"class_weight for a loss per element", &perElement, false, map[int]float64{0: 2}, `weighed by a sample_weight.npy of shape (4) per row: make one from the labels`},
		{"class_weight beside the file", &weighted, true, map[int]float64{0: 2}, `hyperparameter "class_weight" and sample_weight.npy cannot both weigh the rows`},
		{"class_weight with two outputs", &twoOut, false, map[int]float64{0: 2}, `hyperparameter "class_weight" is only supported for models with a single output`},
	} {
		dir := t.TempDir()
		writeNPY(t, filepath.Join(dir, "x.npy"), 8, 3)
		writeNPY(t, filepath.Join(dir, "y.npy"), 8, 1)
		writeNPY(t, filepath.Join(dir, "z.npy"), 8, 1)
		if c.file {
			writeNPY(t, filepath.Join(dir, "sample_weight.npy"), 8, 1)
		}
		_, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, c.meta, input.Options{Warn: &bytes.Buffer{}, ClassWeight: c.classWeight})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

// A channel wrapped in RecordIO records is refused where it is read (the
// stream failed at its first array, "not a .npy array"; the setting was
// read and never used).
func TestRecordWrappedChannelRefused(t *testing.T) {
	_, err := input.Open(sagemaker.Channel{Name: "training", InputMode: sagemaker.Pipe, RecordWrapper: "RecordIO"}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{})
	want := `channel "training" has RecordWrapperType RecordIO; sagefit reads its files as they are (in Pipe mode, back to back), not wrapped in records: leave the channel's record_wrapping unset (None)`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

// A CSV channel in Pipe mode is refused where it opens (it failed in
// epoch 1: its stream "not a .npy array").
func TestPipeCSVRefused(t *testing.T) {
	_, err := input.Open(sagemaker.Channel{Name: "training", InputMode: sagemaker.Pipe, ContentType: "text/csv"}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{})
	want := `channel "training" has ContentType text/csv in Pipe mode, which streams .npy arrays back to back; read CSV in File or FastFile mode`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

// A Pipe mode stream's tensor names are checked when the channel opens:
// every input and target once, a sample weight only where the model takes
// one, nothing else.
func TestPipeTensorNamesChecked(t *testing.T) {
	weighted := *meta
	perPixel := *meta
	perPixel.SampleWeightsRefused = "the loss of output 'y' is one value per element of shape (4, 4) (per pixel or time step), which a weight per row does not fit"
	weighted.Signatures = map[string]string{model.RoleTrainStepWeighted: "a", model.RoleComputeGradientsWeighted: "b", model.RoleTestStepWeighted: "c"}
	for _, c := range []struct {
		meta  *model.Metadata
		names []string
		want  string // "" when accepted
	}{
		{meta, nil, ""},
		{meta, []string{"y", "x"}, ""},
		{&weighted, []string{"x", "y", "sample_weight"}, ""},
		// The File mode's names of a model's only input and target (the
		// README's example was refused).
		{&weighted, []string{"train", "labels", "sample_weight"}, ""},
		{meta, []string{"labels", "features"}, ""},
		{meta, []string{"train", "x"}, `but not the model's "y"`},
		{meta, []string{"x", "y", "sample_weight"}, `lists "sample_weight", which is no input or target of the model (x, y)`},
		{&perPixel, []string{"x", "y", "sample_weight"}, `lists sample weights, but the loss of output 'y' is one value per element`},
		{meta, []string{"x"}, `but not the model's "y"`},
		{meta, []string{"x", "y", "x"}, `lists "x" twice`},
		{meta, []string{"x", "x"}, `lists "x" twice`}, // was: lists ["x" "x"] but not the model's "y"
		{&weighted, []string{"x", "y", "labels"}, `lists "labels", which is no input or target of the model (x, y) nor a sample weight (sample_weight)`},
	} {
		_, err := input.Open(sagemaker.Channel{Name: "training", InputMode: sagemaker.Pipe}, sagemaker.Paths{Base: t.TempDir()}, c.meta, input.Options{PipeTensors: c.names})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q refused: %v", c.names, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: err = %v, want %q", c.names, err, c.want)
		}
	}
}

// writeTextNPY writes rows of width-byte text as numpy's np.save writes an
// 'S' array (the header padded to 64 bytes).
func writeTextNPY(t *testing.T, path string, width int, rows ...string) {
	t.Helper()
	dict := fmt.Sprintf("{'descr': '|S%d', 'fortran_order': False, 'shape': (%d, 1), }", width, len(rows))
	pad := 64 - (10+len(dict)+1)%64
	hdr := dict + strings.Repeat(" ", pad) + "\n"
	buf := append([]byte("\x93NUMPY\x01\x00"), byte(len(hdr)), byte(len(hdr)>>8))
	buf = append(buf, hdr...)
	for _, r := range rows {
		buf = append(buf, (r + strings.Repeat("\x00", width))[:width]...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Text and numbers do not feed each other: each way is refused in one
// sentence saying what to save; text feeds a string input.
func TestTextAndNumbersAreChecked(t *testing.T) {
	text := &model.Metadata{
		Inputs:  []model.TensorSpec{{Name: "x", Key: "x", DType: "string", Shape: []*int64{nil, ptr(1)}}},
		Targets: meta.Targets,
	}
	for _, c := range []struct {
		name string
		meta *model.Metadata
		text bool
		want string
	}{
		{"text into numbers", meta, true, `x.npy holds text (|S5) but model input "x" takes float32 numbers`},
		{"numbers into text", text, false, `x.npy holds float32 numbers but model input "x" takes text; save the text as a string array`},
		{"text into text", text, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.text {
				writeTextNPY(t, filepath.Join(dir, "x.npy"), 5, "red", "green", "blue")
			} else {
				writeNPY(t, filepath.Join(dir, "x.npy"), 3, 1)
			}
			writeNPY(t, filepath.Join(dir, "y.npy"), 3, 1)
			if c.want == "" {
				ch, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, c.meta, input.Options{Warn: &bytes.Buffer{}})
				if err != nil {
					t.Fatal(err)
				}
				ch.Close()
				return
			}
			_, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, c.meta, input.Options{Warn: &bytes.Buffer{}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func ptr(n int64) *int64 { return &n }

// A model with two outputs takes one sample_weight.npy for both or one
// sample_weight_<output>.npy each: a partial or mixed set is refused.
func TestPerOutputWeightSets(t *testing.T) {
	two := &model.Metadata{
		Inputs:     meta.Inputs,
		Targets:    []model.TensorSpec{spec("a", "target_a", 1), spec("b", "target_b", 1)},
		Signatures: map[string]string{model.RoleTrainStepWeighted: "t", model.RoleComputeGradientsWeighted: "c", model.RoleTestStepWeighted: "e"},
		SampleWeights: []model.TensorSpec{
			{Name: "sample_weight_a", Key: "sample_weight_a", DType: "float32", Shape: []*int64{nil}},
			{Name: "sample_weight_b", Key: "sample_weight_b", DType: "float32", Shape: []*int64{nil}},
		},
	}
	for _, c := range []struct {
		files []string
		want  string
	}{
		{[]string{"sample_weight"}, ""},
		{[]string{"sample_weight_a", "sample_weight_b"}, ""},
		{[]string{"sample_weight_a"}, "the channel weighs outputs by sample_weight_a but has no sample_weight_b; give every output its weights, or one sample_weight for all"},
		{[]string{"sample_weight", "sample_weight_b"}, "the channel has sample_weight for every output and per-output weights sample_weight_b; keep one or the other"},
	} {
		t.Run(strings.Join(c.files, "+"), func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range append([]string{"x", "a", "b"}, c.files...) {
				cols := 1
				if f == "x" {
					cols = 3
				}
				writeNPY(t, filepath.Join(dir, f+".npy"), 8, cols)
			}
			var warn bytes.Buffer
			ch, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, two, input.Options{Warn: &warn})
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer ch.Close()
				for _, f := range c.files {
					if ch.DTypes[f] != data.Float32 {
						t.Errorf("%s is not fed (dtypes %v)", f, ch.DTypes)
					}
				}
				if warn.Len() > 0 {
					t.Errorf("warned: %s", warn.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// A channel of empty arrays is refused, as model.fit refuses empty data:
// before, training ran no step and reported a loss of 0.
func TestEmptyChannelRefused(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 0, 3)
	writeNPY(t, filepath.Join(dir, "y.npy"), 0, 1)
	_, err := input.Open(sagemaker.Channel{Name: "validation", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &bytes.Buffer{}})
	if err == nil || err.Error() != `channel "validation" holds no rows: x.npy, y.npy are empty, and model.fit refuses empty data too` {
		t.Fatalf("err = %v", err)
	}
}

// A ShardedByS3Key channel laid out a file per tensor lands the tensors on
// different hosts: the host missing one is told why and what to do, not
// only that the file is missing.
func TestShardedTensorOnAnotherHostIsExplained(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 8, 3) // y.npy went to the other host
	c := sagemaker.Channel{Name: "training", Dir: dir, InputMode: sagemaker.File, Distribution: sagemaker.ShardedByS3Key}
	_, err := input.Open(c, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &bytes.Buffer{}})
	want := `channel "training": no file for model target "y" in channel files [x.npy]; name it y.npy or labels.npy or set hyperparameter sagefit_inputs; the channel is ShardedByS3Key, which gives each host whole S3 objects, so a tensor in a file of its own can land on another host: keep each shard's tensors together, one .npz per shard holding them all`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	c.Distribution = sagemaker.FullyReplicated // the sentence alone
	if _, err := input.Open(c, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &bytes.Buffer{}}); err == nil || strings.Contains(err.Error(), "ShardedByS3Key") {
		t.Errorf("FullyReplicated: err = %v", err)
	}
}

// A host given no objects of a ShardedByS3Key channel says what it then
// does without them: trains, or for the validation channel validates, on
// none of the rows (the validation channel's said it trained: a probe).
func TestHostWithoutShardSaysWhatFor(t *testing.T) {
	for _, validates := range []bool{false, true} {
		var warn bytes.Buffer
		c, err := input.Open(sagemaker.Channel{Name: "some", Dir: t.TempDir(), InputMode: sagemaker.File, Distribution: sagemaker.ShardedByS3Key},
			sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &warn, Validates: validates})
		if err != nil {
			t.Fatal(err)
		}
		if _, done, err := c.Epoch(context.Background()); err != nil {
			t.Fatal(err)
		} else {
			done()
		}
		c.Close()
		want := "it trains on none of the channel's rows"
		if validates {
			want = "it validates on none of the channel's rows"
		}
		if !strings.Contains(warn.String(), want) {
			t.Errorf("validates %v: %q, want %q", validates, warn.String(), want)
		}
	}
}

// Where says whether it searched the channel whole: a value in no file
// (an id the model or its optimizer computes) is told from one it could
// not look for (a Pipe stream, gone once read).
func TestWhereSaysItSearched(t *testing.T) {
	dir := t.TempDir()
	writeNPY(t, filepath.Join(dir, "x.npy"), 8, 3) // zeros
	labels := make([]byte, 8*4)
	binary.LittleEndian.PutUint32(labels[3*4:], math.Float32bits(5))
	if err := data.WriteNPY(filepath.Join(dir, "y.npy"), data.Float32, []int{8, 1}, labels); err != nil {
		t.Fatal(err)
	}
	ch, err := input.Open(sagemaker.Channel{Name: "training", Dir: dir}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ctx := context.Background()
	if where, searched := ch.Where(ctx, &model.ValueOutOfRange{Value: 0}); !searched || !strings.Contains(where, "the input value 0 is first in row 0") {
		t.Errorf("a value in the data: %q, searched %v", where, searched)
	}
	if where, searched := ch.Where(ctx, &model.ValueOutOfRange{Value: 7}); where != "" || !searched {
		t.Errorf("a value in no file: %q, searched %v; want none, searched", where, searched)
	}
	// An id no input holds may be a label's (a loss gathering by y_true).
	if where, _ := ch.Where(ctx, &model.ValueOutOfRange{Value: 5}); !strings.Contains(where, "the label value 5 is first in row 3") {
		t.Errorf("an id in the labels: %q", where)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if where, searched := ch.Where(done, &model.ValueOutOfRange{Value: 7}); where != "" || searched {
		t.Errorf("a search out of time: %q, searched %v; want not searched", where, searched)
	}
	pipe, err := input.Open(sagemaker.Channel{Name: "training", InputMode: sagemaker.Pipe}, sagemaker.Paths{Base: t.TempDir()}, meta, input.Options{Warn: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	if where, searched := pipe.Where(ctx, &model.ValueOutOfRange{Value: 7}); where != "" || searched {
		t.Errorf("a Pipe channel: %q, searched %v; want not searched", where, searched)
	}
}
