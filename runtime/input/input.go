package input

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// Channel is a channel opened for the model: its dataset (or, in Pipe
// mode, how to open each epoch's) and the dtype each tensor is converted to
// on the way in.
type Channel struct {
	Name string
	ds   *data.Dataset // nil in Pipe mode
	// Sharded channels arrive already split per host (ShardedByS3Key):
	// each host reads all it got instead of taking its share of the rows.
	Sharded bool
	// DTypes is the dtype the model takes for each tensor, by name.
	DTypes map[string]data.DType
	specs  []model.TensorSpec
	close  func()

	// Pipe mode: the n-th read's FIFO (fifo(n), from 0) carries one .npy
	// array per tensor of pipeNames, in that order. SageMaker makes each
	// FIFO once the one before it has been read, so they are counted by
	// reads, not by epoch: a validation channel read every other epoch,
	// or training that starts at initial_epoch or a checkpoint, reads _0
	// first.
	pipe      bool
	fifo      func(n int) string
	reads     int
	pipeNames []string
	pipeOpts  data.PipeOptions

	// classWeight weighs the training rows by class (also each epoch's
	// Pipe stream, checked against meta); the validation part of a split
	// is not weighted by it.
	meta        *model.Metadata
	classWeight map[int]float64

	warn       io.Writer // the warning for a host given no share of a sharded channel
	warnedNone bool
	validates  bool // Options.Validates
}

// Close releases the channel's files.
func (c *Channel) Close() { c.close() }

// Epoch returns the dataset of the channel's next pass and a func to call
// when done with it: its files, or in Pipe mode the next FIFO's stream,
// read (spooled) before it returns; ctx ends that wait (a stop).
func (c *Channel) Epoch(ctx context.Context) (*data.Dataset, func(), error) {
	if !c.pipe {
		return c.ds, func() {}, nil
	}
	if err := os.MkdirAll(c.pipeOpts.SpoolDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("pipe spool dir: %w", err)
	}
	fifo := c.fifo(c.reads)
	c.reads++
	ds, err := data.OpenPipeEpoch(ctx, fifo, c.pipeNames, c.pipeOpts)
	if errors.Is(err, data.ErrEmptyStream) && c.Sharded {
		ds, err = c.noShare(c.pipeNames, "its stream "+filepath.Base(fifo)+" sent nothing"), nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("channel %q (Pipe mode): %w", c.Name, err)
	}
	if ds.Len() == 0 && !c.Sharded { // as a File mode channel of empty arrays
		ds.Close()
		return nil, nil, fmt.Errorf("channel %q (Pipe mode): the stream of %s holds no rows, and model.fit refuses empty data too", c.Name, filepath.Base(fifo))
	}
	for _, spec := range c.specs {
		if err := checkFitsAll(ds, spec); err != nil {
			ds.Close()
			return nil, nil, fmt.Errorf("channel %q (Pipe mode): %w", c.Name, err)
		}
		if c.reads == 1 { // once, not each epoch
			warnLabelShape(c.warn, c.Name, firstArray(ds, spec.Name), spec, c.meta)
		}
	}
	if err := sampleWeights(ds, c.meta, c.classWeight, c.DTypes); err != nil {
		ds.Close()
		return nil, nil, fmt.Errorf("channel %q (Pipe mode): %w", c.Name, err)
	}
	return ds, func() { ds.Close() }, nil
}

// channelEmpty says whether a channel's folder holds no data files (a
// listing that fails says no: opening the channel names the fault).
func channelEmpty(dir string) bool {
	files, err := data.ListChannel(dir)
	return err == nil && len(files) == 0
}

// noShare is the dataset of a host that got none of a ShardedByS3Key
// channel's S3 objects, which SageMaker does where a channel has fewer
// objects than the job has hosts: the tensors names, no rows. The host
// joins every step with an empty batch while the others' rows train (a job
// whose hosts all got none is refused at its first epoch). why says what
// showed it; said once per channel.
func (c *Channel) noShare(names []string, why string) *data.Dataset {
	arrays := make(map[string]*data.Array, len(names))
	for _, name := range names {
		shape, _ := c.specOf(name).ExampleShape()
		rowShape := make([]int, len(shape))
		for i, d := range shape {
			rowShape[i] = int(d)
		}
		arrays[name] = data.EmptyArray(fmt.Sprintf("%s (no rows on this host)", name), c.DTypes[name], rowShape)
	}
	ds, _ := data.NewDataset(arrays) // arrays of one row count, none 0-d
	if !c.warnedNone {
		c.warnedNone = true
		use := "it trains on none of the channel's rows, joining each step with an empty batch while the other hosts' rows train"
		if c.validates {
			use = "it validates on none of the channel's rows, joining each validation step with an empty batch while the other hosts' rows are evaluated"
		}
		fmt.Fprintf(c.warn, "sagefit: warning: channel %q is ShardedByS3Key and this host got none of its S3 objects (%s): %s; SageMaker gives a host no objects where a channel has fewer than the job has hosts, so split the data into at least as many objects\n", c.Name, why, use)
	}
	return ds
}

// checkPipeNames accepts the tensor names of a Pipe mode stream: every
// input and target once, and a sample weight where the model takes one.
func checkPipeNames(names, tensors, weights []string) error {
	for i, n := range names { // a name twice first: it also leaves a tensor out
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("hyperparameter %q lists %q twice", job.HPPipeTensors, n)
		}
	}
	for _, t := range tensors {
		if !slices.Contains(names, t) {
			return fmt.Errorf("hyperparameter %q lists %q but not the model's %q; the model has inputs and targets %s", job.HPPipeTensors, names, t, strings.Join(tensors, ", "))
		}
	}
	for _, n := range names {
		switch {
		case slices.Contains(weights, n), slices.Contains(tensors, n):
		default:
			return fmt.Errorf("hyperparameter %q lists %q, which is no input or target of the model (%s)%s", job.HPPipeTensors, n, strings.Join(tensors, ", "),
				map[bool]string{true: " nor a sample weight (" + strings.Join(weights, ", ") + ")", false: ""}[len(weights) > 0])
		}
	}
	return nil
}

// specOf is the spec of a tensor the channel's data may hold: an input, a
// target, or a weight (of a loss per element, a weight per element).
func (c *Channel) specOf(name string) model.TensorSpec {
	for _, spec := range c.specs {
		if spec.Name == name {
			return spec
		}
	}
	return weightSpec(c.meta, name)
}

// weightSpec is what the named weight tensor's file must hold: the model's
// spec of it (a weight per element for a loss per element), or one weight
// per row.
func weightSpec(meta *model.Metadata, name string) model.TensorSpec {
	for _, w := range meta.WeightSpecs() {
		if w.Name == name {
			return w
		}
	}
	return model.TensorSpec{Name: name, Key: name, DType: "float32", Shape: []*int64{nil}}
}

// pipeAliases names each array of a stream by the tensor it feeds, as a
// File mode channel's file names do (train, x, features, data for a
// model's only input; labels, y, label, targets, target for its only
// target); names that are no alias stay, for checkPipeNames to judge.
func pipeAliases(names, inputs, targets []string) []string {
	files := make([]string, len(names))
	for i, n := range names {
		files[i] = n + ".npy"
	}
	fed, err := data.MapTensors(files, inputs, targets, nil)
	if err != nil {
		return names // a tensor no name feeds: checkPipeNames says which
	}
	out := slices.Clone(names)
	for tensor, file := range fed {
		out[slices.Index(files, file)] = tensor
	}
	return out
}

// weightNames are the weight tensors the model's steps take: sample_weight
// (for every output) and, with several outputs, sample_weight_<output>.
func weightNames(meta *model.Metadata) []string {
	if !meta.HasSampleWeights() {
		return nil
	}
	return append([]string{model.SampleWeight}, meta.PerOutputWeights()...)
}

// checkWeightSet accepts, among the tensors a channel or stream (where)
// holds, one sample_weight for every output, or one weight per output,
// as fit takes sample_weight: an array, or one per output.
func checkWeightSet(have []string, meta *model.Metadata, where string) error {
	per := meta.PerOutputWeights()
	var given, missing []string
	for _, n := range per {
		if slices.Contains(have, n) {
			given = append(given, n)
		} else {
			missing = append(missing, n)
		}
	}
	switch {
	case len(given) == 0:
		return nil
	case slices.Contains(have, model.SampleWeight):
		return fmt.Errorf("%s has %s for every output and per-output weights %s; keep one or the other", where, model.SampleWeight, strings.Join(given, ", "))
	case len(missing) > 0:
		return fmt.Errorf("%s weighs outputs by %s but has no %s; give every output its weights, or one %s for all", where, strings.Join(given, ", "), strings.Join(missing, ", "), model.SampleWeight)
	}
	return nil
}

// Sample is a digest of the channel's rows (data.Dataset.Sample); "" for a
// Pipe stream, read once, and for a sharded channel, each host's own.
func (c *Channel) Sample() (string, error) {
	if c == nil || c.pipe || c.Sharded || c.ds == nil {
		return "", nil
	}
	s, err := c.ds.Sample()
	if err != nil {
		return "", fmt.Errorf("channel %q: %w", c.Name, err)
	}
	return s, nil
}

// Streams reports whether the channel is read in Pipe mode: a FIFO per
// pass, whose wait a stop must end.
func (c *Channel) Streams() bool { return c.pipe }

// Examples is the channel's row count, or -1 when it streams (Pipe mode).
func (c *Channel) Examples() int {
	if c.ds == nil {
		return -1
	}
	return c.ds.Len()
}

// Options say how a channel's files map to the model's tensors.
type Options struct {
	// Files maps a model input or target name to a file of the channel
	// (hyperparameter sagefit_inputs); others are found by name.
	Files map[string]string
	// PipeTensors names the tensor of each array of a Pipe mode stream,
	// in order (hyperparameter sagefit_pipe_tensors); empty: the inputs,
	// then the targets.
	PipeTensors []string
	Pipe        data.PipeOptions // its SpoolDir also takes inflated .npz members
	// Warn receives a warning line for each channel file that feeds no
	// tensor of the model; nil: os.Stderr.
	Warn io.Writer
	// ClassWeight weighs each row by its label's class (fit's
	// class_weight); the training channel only.
	ClassWeight map[int]float64
	// Validates says the channel is the validation data, for what its
	// messages say it is used for.
	Validates bool
}

// Open maps a channel's files to the model's inputs and targets and checks
// every file against the tensor it feeds. FastFile files are fetched on
// read; memory-mapping them reads them lazily, page by page, as that mode
// intends. paths places a Pipe mode channel's FIFOs.
func Open(c sagemaker.Channel, paths sagemaker.Paths, meta *model.Metadata, o Options) (*Channel, error) {
	if c.RecordWrapper != "" && c.RecordWrapper != "None" {
		// Read as it is, a wrapped stream failed at its first array as "not a .npy array".
		return nil, fmt.Errorf("channel %q has RecordWrapperType %s; sagefit reads its files as they are (in Pipe mode, back to back), not wrapped in records: leave the channel's record_wrapping unset (None)", c.Name, c.RecordWrapper)
	}
	pipeNames := o.PipeTensors
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
	cd := &Channel{Name: c.Name, DTypes: dtypes, specs: specs, meta: meta, classWeight: o.ClassWeight,
		Sharded: c.Distribution == sagemaker.ShardedByS3Key, close: func() {}, warn: o.Warn, validates: o.Validates}
	if cd.warn == nil {
		cd.warn = os.Stderr
	}
	if ct := c.ContentType; ct != "" && !data.ReadsContentType(ct) {
		fmt.Fprintf(cd.warn, "sagefit: warning: channel %q has ContentType %q, which sagefit does not read: it reads the channel's data by the files' names (.npy, .npz, .csv) or as text/csv; drop the ContentType, or convert the data\n", c.Name, ct)
	}
	if c.InputMode == sagemaker.Pipe {
		if data.IsCSV(c.ContentType) { // it failed in epoch 1, its stream "not a .npy array"
			return nil, fmt.Errorf("channel %q has ContentType %s in Pipe mode, which streams .npy arrays back to back; read CSV in File or FastFile mode", c.Name, c.ContentType)
		}
		if len(pipeNames) == 0 {
			pipeNames = append(inputs, targets...)
		} else {
			pipeNames = pipeAliases(pipeNames, inputs, targets)
		}
		if meta.SampleWeightsRefused != "" && slices.ContainsFunc(pipeNames, model.IsSampleWeight) {
			return nil, fmt.Errorf("channel %q (Pipe mode): hyperparameter %q lists sample weights, but %s", c.Name, job.HPPipeTensors, meta.SampleWeightsRefused)
		}
		if err := checkPipeNames(pipeNames, append(inputs, targets...), weightNames(meta)); err != nil {
			return nil, fmt.Errorf("channel %q (Pipe mode): %w", c.Name, err)
		}
		if err := checkWeightSet(pipeNames, meta, "the stream"); err != nil {
			return nil, fmt.Errorf("channel %q (Pipe mode): %w", c.Name, err)
		}
		weighted := false
		for _, n := range weightNames(meta) {
			if slices.Contains(pipeNames, n) {
				dtypes[n], weighted = data.Float32, true
			}
		}
		if len(o.ClassWeight) > 0 && weighted {
			return nil, fmt.Errorf("channel %q (Pipe mode): hyperparameter %q and the stream's %s cannot both weigh the rows, as in Keras; keep one", c.Name, job.HPClassWeight, model.SampleWeight)
		}
		cd.pipe, cd.pipeNames, cd.pipeOpts = true, pipeNames, o.Pipe
		cd.fifo = func(n int) string { return paths.PipeFIFO(c.Name, n) }
		return cd, nil
	}
	chOpts := []data.ChannelOption{data.WithContentType(c.ContentType), data.WithSpoolDir(o.Pipe.SpoolDir), data.WithOptional(append([]string{model.SampleWeight}, meta.PerOutputWeights()...)...)}
	if len(meta.Inputs) == 1 && dtypes[meta.Inputs[0].Name] == data.String {
		chOpts = append(chOpts, data.WithCSVText()) // a CSV channel's features are its text
	}
	// The folder is listed again only where opening it fails: a host's share
	// of a ShardedByS3Key channel may be no files at all.
	ds, err := data.OpenChannel(c.Dir, inputs, targets, o.Files, chOpts...)
	if err != nil && cd.Sharded && channelEmpty(c.Dir) {
		ds, err = cd.noShare(append(inputs, targets...), "its folder holds no files"), nil
	}
	if err != nil {
		if cd.Sharded && errors.Is(err, data.ErrNoFile) {
			return nil, fmt.Errorf("channel %q: %w; the channel is ShardedByS3Key, which gives each host whole S3 objects, so a tensor in a file of its own can land on another host: keep each shard's tensors together, one .npz per shard holding them all", c.Name, err)
		}
		return nil, fmt.Errorf("channel %q: %w", c.Name, err)
	}
	for _, spec := range specs {
		if err := checkFitsAll(ds, spec); err != nil {
			ds.Close()
			return nil, fmt.Errorf("channel %q: %w", c.Name, err)
		}
		warnLabelShape(cd.warn, c.Name, firstArray(ds, spec.Name), spec, meta)
	}
	// model.fit refuses empty data too; training on none reported a loss of
	// 0. A host's shard of a ShardedByS3Key channel may be empty: the
	// others' rows train.
	if ds.Len() == 0 && !cd.Sharded {
		ds.Close()
		var files []string
		for _, spec := range specs {
			for _, a := range ds.Arrays(spec.Name) {
				files = append(files, a.Path()) // relative to the channel: part-1/x.npy
			}
		}
		return nil, fmt.Errorf("channel %q holds no rows: %s are empty, and model.fit refuses empty data too", c.Name, strings.Join(files, ", "))
	}
	if unused := ds.Unused(); len(unused) > 0 { // named as data names them: relative to the channel
		has := "inputs " + strings.Join(inputs, ", ") + "; targets " + strings.Join(targets, ", ")
		if len(targets) == 0 {
			has = "inputs " + strings.Join(inputs, ", ") + "; no targets: it was compiled without a loss"
		}
		for _, f := range unused {
			fmt.Fprintf(cd.warn, "sagefit: warning: channel %q: %s feeds no input or target of the model (%s) and is not used; remove it, or name it in hyperparameter %q\n",
				c.Name, f, has, job.HPTensorFiles)
		}
	}
	if err := sampleWeights(ds, meta, o.ClassWeight, dtypes); err != nil {
		ds.Close()
		return nil, fmt.Errorf("channel %q: %w", c.Name, err)
	}

	cd.ds, cd.close = ds, func() { ds.Close() }
	return cd, nil
}

// checkFitsAll checks each array behind a tensor of ds (one per part of a
// channel of parts) with CheckFits.
func checkFitsAll(ds *data.Dataset, spec model.TensorSpec) error {
	for _, a := range ds.Arrays(spec.Name) {
		if err := CheckFits(a, spec); err != nil {
			return err
		}
	}
	return nil
}

// firstArray is the first array behind a tensor of ds; nil without one.
func firstArray(ds *data.Dataset, name string) *data.Array {
	if arrays := ds.Arrays(name); len(arrays) > 0 {
		return arrays[0]
	}
	return nil
}

// CheckFits accepts a file whose examples have the tensor's shape, allowing
// only dimensions of size 1 to differ (labels saved as (N,) feed a (None, 1)
// target, as Keras accepts).
func CheckFits(a *data.Array, spec model.TensorSpec) error {
	shape := a.Shape()
	if len(shape) == 0 {
		return fmt.Errorf("%s holds a single value (a 0-d array); it needs one row per example", a.Path())
	}
	if text := a.DType() == data.String; text != (spec.DType == "string") {
		if text {
			return fmt.Errorf("%s holds text (%s) but model %s %q takes %s numbers; save numbers, or give the model a string input (StringLookup, TextVectorization)", a.Path(), a.Header().Descr(), kindOf(spec), spec.Name, spec.DType)
		}
		return fmt.Errorf("%s holds %s numbers but model %s %q takes text; save the text as a string array (np.save(path, np.asarray(texts, dtype=str)))", a.Path(), a.DType(), kindOf(spec), spec.Name)
	}
	want, _ := spec.ExampleShape()
	got := a.RowShape()
	if !sameIgnoringOnes(got, want) {
		return fmt.Errorf("%s has examples of shape %s but model %s %q takes examples of shape %s", a.Path(), shapeOf(got), kindOf(spec), spec.Name, shapeOf(want))
	}
	return nil
}

// Where says where in the channel's files the value a step failed on is
// (a label past the classes, an id past an Embedding's rows): TensorFlow
// names neither file nor row. It names the first row holding the value
// among the targets (a label) or the inputs, then the targets (an id),
// integer arrays first:
// a fact about the data, which the person judges (an id the model computes,
// a position, is in no file as such). "" where it is not found; searched
// is false where the channel could not be searched whole within ctx, or it
// streams (Pipe mode: the stream is gone). A nil channel holds nothing.
func (c *Channel) Where(ctx context.Context, v *model.ValueOutOfRange) (where string, searched bool) {
	if c == nil {
		return "", true
	}
	if c.ds == nil {
		return "", false
	}
	match := func(x float64) bool { return x == v.Value }
	value := strconv.FormatFloat(v.Value, 'f', -1, 64)
	if math.IsNaN(v.Value) {
		match, value = func(x float64) bool { return math.IsNaN(x) || math.Abs(x) >= 0x1p63 }, "NaN"
	}
	// An id past a lookup's rows may be a label's too (a loss of the
	// model's own gathering by y_true): the inputs first, then the labels.
	kinds := []bool{false, true}
	if v.Label {
		kinds = []bool{true}
	}
	for _, labels := range kinds {
		what := "input"
		if labels {
			what = "label"
		}
		for _, ints := range []bool{true, false} {
			for _, spec := range c.specs {
				if (kindOf(spec) == "target") != labels {
					continue
				}
				for _, a := range c.ds.Arrays(spec.Name) {
					if dt := a.DType(); dt == data.String || dt.IsFloat() == ints {
						continue
					}
					row, err := a.FindRow(ctx, match)
					if err != nil || ctx.Err() != nil { // FindRow ends at ctx's end without an error
						return "", false
					}
					if row >= 0 {
						return fmt.Sprintf("the %s value %s is first in %s in channel %q", what, value, a.Place(row), c.Name), true
					}
				}
			}
		}
	}
	return "", true
}

// warnLabelShape names labels saved in another shape than the target's
// (N, against (N, 1)): they feed the target's shape, where fit passes them
// as they are to the losses and metrics, which Keras's own match to the
// predictions' rank and the model's own need not (a metric function of
// |y - p| then broadcasts to a batch by batch matrix in fit).
func warnLabelShape(w io.Writer, channel string, a *data.Array, spec model.TensorSpec, meta *model.Metadata) {
	want, _ := spec.ExampleShape()
	if a == nil || kindOf(spec) != "target" || len(meta.LabelsAsGiven) == 0 || slices.Equal(a.RowShape(), intsOf(want)) {
		return
	}
	fmt.Fprintf(w, "sagefit: warning: channel %q: %s has labels of shape %s an example, fed to target %q in its shape %s; fit given them passes them as saved, and the model's own steps, losses and metrics (%s), unlike Keras's, read them so: their values may differ from fit's; save the labels in shape %s an example, or export with target_shapes giving %s\n",
		channel, a.Path(), shapeOf(a.RowShape()), spec.Name, shapeOf(want), strings.Join(meta.LabelsAsGiven, ", "), shapeOf(want), shapeOf(a.RowShape()))
}

func intsOf(s []int64) []int {
	out := make([]int, len(s))
	for i, d := range s {
		out[i] = int(d)
	}
	return out
}

func kindOf(spec model.TensorSpec) string {
	switch {
	case strings.HasPrefix(spec.Key, "target_"):
		return "target"
	case model.IsSampleWeight(spec.Name):
		return "weight"
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

// SplitValidation splits the channel as model.fit's validation_split does:
// the last fraction of the rows (before any shuffling) validates, the rest
// trains. Both parts share c's files: close c, after both are done.
func (c *Channel) SplitValidation(fraction float64) (train, val *Channel, err error) {
	if c.ds == nil {
		return nil, nil, fmt.Errorf("channel %q streams in Pipe mode: it has no rows to split ahead of time", c.Name)
	}
	n := c.ds.Len()
	at := int(math.Floor(float64(n) * (1 - fraction)))
	// A host's shard of a ShardedByS3Key channel may be too small to give
	// both parts rows, or empty: it joins the steps it has no rows for, as
	// it does without the split.
	if (at == 0 || at == n) && !c.Sharded {
		return nil, nil, fmt.Errorf("channel %q has %d rows, too few to split into training and validation rows with hyperparameter %q = %v", c.Name, n, job.HPValSplit, fraction)
	}
	part := func(lo, hi int) (*Channel, error) {
		ds, err := c.ds.Rows(lo, hi)
		if err != nil {
			return nil, err
		}
		p := *c
		p.ds, p.close = ds, func() {}
		return &p, nil
	}
	if train, err = part(0, at); err != nil {
		return nil, nil, err
	}
	if val, err = part(at, n); err != nil {
		return nil, nil, err
	}
	if len(c.classWeight) > 0 { // Keras weighs the training rows by class, not the validation rows
		val.ds = val.ds.Without(model.SampleWeight)
		val.DTypes = maps.Clone(c.DTypes)
		delete(val.DTypes, model.SampleWeight)
		val.classWeight = nil
	}
	return train, val, nil
}

// stepsTakeNoWeights says why a model without weighted steps cannot
// weigh rows, and what to do.
const stepsTakeNoWeights = "the model's steps take no sample weights (a custom train_step that unpacks `x, y = data`, or an export by an older sagefit); unpack `x, y, sample_weight = data` in the step and export again"

// sampleWeights checks a channel's sample_weight file, or makes one from
// class weights, as model.fit does with sample_weight and class_weight.
func sampleWeights(ds *data.Dataset, meta *model.Metadata, classWeight map[int]float64, dtypes map[string]data.DType) error {
	weights := firstArray(ds, model.SampleWeight)
	if weights != nil && meta.SampleWeightsRefused != "" {
		return fmt.Errorf("%s would weigh the rows, but %s: remove the file", weights.Path(), meta.SampleWeightsRefused)
	}
	if weights != nil && !meta.HasSampleWeights() {
		return fmt.Errorf("%s would weigh the rows, but %s, or remove the file", weights.Path(), stepsTakeNoWeights)
	}
	var have []string
	for _, name := range append([]string{model.SampleWeight}, meta.PerOutputWeights()...) {
		if firstArray(ds, name) != nil {
			have = append(have, name)
		}
	}
	if err := checkWeightSet(have, meta, "the channel"); err != nil {
		return err
	}
	for _, name := range have {
		spec, what := weightSpec(meta, name), "one weight per row"
		if len(spec.Shape) > 1 {
			what = "a weight per element of the model's loss, as model.fit takes them for a loss per pixel or time step; to weigh whole rows, repeat each row's weight over its elements"
			if err := repeatPerRow(ds, name, spec, meta); err != nil {
				return err
			}
		}
		if err := checkFitsAll(ds, spec); err != nil {
			return fmt.Errorf("%w (%s)", err, what)
		}
		dtypes[name] = data.Float32
		weights = firstArray(ds, name)
	}
	if len(classWeight) == 0 {
		return nil
	}
	shared := weightSpec(meta, model.SampleWeight)
	switch {
	case meta.SampleWeightsRefused != "":
		return fmt.Errorf("hyperparameter %q weighs each row by its class, but %s", job.HPClassWeight, meta.SampleWeightsRefused)
	case len(shared.Shape) > 1 && (len(meta.Targets) != 1 || !repeatable(shared, meta, meta.Targets[0])):
		per, _ := shared.ExampleShape()
		return fmt.Errorf("hyperparameter %q weighs each row by its class, but the model's loss is one value per element (per pixel or time step), weighed by a sample_weight.npy of shape %s per row: make one from the labels", job.HPClassWeight, shapeOf(per))
	case !meta.HasSampleWeights():
		return fmt.Errorf("hyperparameter %q weighs each row by its class, but %s, or leave out the hyperparameter", job.HPClassWeight, stepsTakeNoWeights)
	case len(meta.Targets) != 1:
		return fmt.Errorf("hyperparameter %q is only supported for models with a single output, as in Keras; this model has %d", job.HPClassWeight, len(meta.Targets))
	case weights != nil:
		return fmt.Errorf("hyperparameter %q and %s cannot both weigh the rows, as in Keras; keep one", job.HPClassWeight, weights.Path())
	}
	var w []float32
	labels := ds.Arrays(meta.Targets[0].Name) // a channel of parts: one per part, in row order
	for _, part := range labels {
		pw, err := classWeights(part, classWeight)
		if err != nil {
			return err
		}
		w = append(w, pw...)
	}
	dtypes[model.SampleWeight] = data.Float32
	if err := ds.Add(model.SampleWeight, data.NewFloat32Array(fmt.Sprintf("class weights of %s", labels[0].Path()), w)); err != nil {
		return err
	}
	if len(shared.Shape) > 1 {
		return repeatPerRow(ds, model.SampleWeight, shared, meta)
	}
	return nil
}

// repeatPerRow repeats a weight file of one weight per row over the values
// per row of a loss weighed per element (spec), as tf-keras's fit
// broadcasts it (a (rows,) weight over a (rows, steps) loss; Keras 3's
// refuses it, and so does the job); a file of spec's shape is left as it
// is. A loss reduced otherwise than by a mean over its values
// (mean_with_sample_weight divides by the weights' sum, which the
// repeated weights would change) takes only weights of its own shape.
func repeatPerRow(ds *data.Dataset, name string, spec model.TensorSpec, meta *model.Metadata) error {
	if !repeatable(spec, meta, model.TensorSpec{}) {
		return nil
	}
	arrays := ds.Arrays(name)
	if len(arrays) == 0 {
		return nil
	}
	for _, a := range arrays {
		if a.RowElems() != 1 || len(a.Shape()) > 2 {
			return nil
		}
	}
	per, _ := spec.ExampleShape()
	rowShape := make([]int, len(per))
	for i, d := range per {
		rowShape[i] = int(d)
	}
	repeated, err := data.RepeatRows(fmt.Sprintf("%s (one weight per row, repeated over each row's %s values)", arrays[0].Path(), shapeOf(per)), arrays, rowShape)
	if err != nil {
		return err
	}
	return ds.Replace(name, repeated)
}

// repeatable says whether tf-keras's fit repeats one weight per row over
// the values of a loss weighed per element (spec): a loss of one value
// per time step (rank 2; over rank 3 it refuses a (rows,) weight) reduced
// by a mean. With a target (for class weights), also where its labels are
// one value per time step, of which tf-keras takes the argmax over the
// row, one class per row (labels per step of rank 2 or one-hot, it weighs
// step by step).
func repeatable(spec model.TensorSpec, meta *model.Metadata, target model.TensorSpec) bool {
	per, ok := spec.ExampleShape()
	if !meta.LegacyKeras || !ok || len(per) != 1 || len(meta.LossReductions) > 0 {
		return false
	}
	if target.Name == "" {
		return true
	}
	labels, ok := target.ExampleShape()
	return ok && len(labels) == 1
}

// classWeights is each row's weight by its label's class, as Keras's
// class_weight_to_sample_weights computes it: the label rounded (half to
// even) as an integer, or the argmax of a one-hot row; a class not named
// weighs 1. Labels are read a block of rows at a time.
func classWeights(labels *data.Array, classWeight map[int]float64) ([]float32, error) {
	n, per := labels.Len(), labels.RowElems()
	out := make([]float32, n)
	const block = 4096
	buf := make([]byte, block*per*8)
	rows := make([]int, 0, block)
	for lo := 0; lo < n; lo += block {
		rows = rows[:0]
		for r := lo; r < min(n, lo+block); r++ {
			rows = append(rows, r)
		}
		b := buf[:len(rows)*per*8]
		if err := labels.Gather(b, data.Float64, rows); err != nil {
			return nil, err
		}
		for i := range rows {
			row := b[i*per*8 : (i+1)*per*8]
			class := 0
			if per == 1 {
				class = int(int32(math.RoundToEven(math.Float64frombits(binary.LittleEndian.Uint64(row)))))
			} else {
				best := math.Inf(-1)
				for k := range per {
					if v := math.Float64frombits(binary.LittleEndian.Uint64(row[8*k:])); v > best {
						best, class = v, k
					}
				}
			}
			w, ok := classWeight[class]
			if !ok {
				w = 1
			}
			out[lo+i] = float32(w)
		}
	}
	return out, nil
}
