package job

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// Hyperparameters sagefit reads (all optional). Names follow Keras's fit
// arguments where one exists.
const (
	HPEpochs       = "epochs"
	HPBatchSize    = "batch_size"
	HPShuffle      = "shuffle"
	HPSeed         = "seed"
	HPLearningRate = "learning_rate"
	// fit's own arguments, each as model.fit defines it.
	HPStepsPerEpoch   = "steps_per_epoch"       // batches per epoch; the next epoch goes on where this one stopped
	HPValSteps        = "validation_steps"      // validation batches per evaluation, from the first
	HPValFreq         = "validation_freq"       // validate every N epochs, or at the epochs of a JSON list
	HPInitialEpoch    = "initial_epoch"         // epochs already trained (0-based): training runs initial_epoch+1..epochs
	HPValSplit        = "validation_split"      // the last fraction of the training rows validates instead
	HPClassWeight     = "class_weight"          // JSON object: class index -> weight of its training rows
	HPStepsPerExec    = "steps_per_execution"   // train steps per session call (one process), or "auto"
	HPModelPath       = "sagefit_model"         // a training SavedModel path, instead of the model channel
	HPModelChannel    = "sagefit_model_channel" // default "model"
	HPTrainChannel    = "sagefit_train_channel" // default "training", else "train"
	HPValChannel      = "sagefit_validation_channel"
	HPTensorFiles     = "sagefit_inputs" // JSON map: model input or target name -> file
	HPModelVersion    = "sagefit_model_version"
	HPIntraOpThreads  = "intra_op_threads"
	HPInterOpThreads  = "inter_op_threads"
	HPExecutor        = "executor" // TensorFlow's executor of train steps: "auto", "default" or "single_threaded"
	HPGPUMemGrowth    = "gpu_memory_growth"
	HPSoftPlacement   = "soft_placement"
	HPLogPlacement    = "log_device_placement"
	HPPrefetch        = "prefetch"
	HPPeerTimeout     = "sagefit_peer_timeout"
	HPConnectTimeout  = "sagefit_connect_timeout"
	HPAllReduceChunk  = "sagefit_allreduce_chunk_bytes"
	HPCompressFP16    = "sagefit_fp16_allreduce"
	HPRingTransport   = "sagefit_allreduce_transport" // "lane" (default) or "grpc"
	HPPipeTensors     = "sagefit_pipe_tensors"        // JSON list: the tensor of each array of a Pipe mode stream, in order
	HPPipeTimeout     = "sagefit_pipe_timeout"        // wait for an epoch's FIFO / stalled writer
	HPCheckpoint      = "checkpoint"                  // checkpoint every epoch; default: when checkpointconfig.json exists
	HPCheckpointSteps = "checkpoint_steps"            // also every N steps
	HPCheckpointKeep  = "checkpoint_keep"             // newest K kept
	// HPProcessesPerHost sets how many training processes a host runs:
	// "auto" (the default) runs one per visible GPU, a number runs that
	// many (read by runtime/launch).
	HPProcessesPerHost = "sagefit_processes_per_host"
	defaultModelChan   = "model"
	defaultValChannel  = "validation"
)

// DefaultPeerTimeout is sagefit_peer_timeout's default.
const DefaultPeerTimeout = 60 * time.Second

// Upper bounds of hyperparameters whose larger values would crash rather
// than train: TensorFlow keeps thread counts in an int32 and aborts on a
// pool it cannot make, prefetch sizes a queue, and an epoch count of
// math.MaxInt wrapped the epoch counter (a job that never ended, its
// checkpoints named by a negative epoch).
const (
	maxThreads  = 4096
	maxPrefetch = 1 << 20
	maxEpochs   = math.MaxInt32
)

// The values of the executor hyperparameter.
const (
	// ExecutorAuto moves the train steps to TensorFlow's single-threaded
	// executor when the first steps ran faster in the calling thread and
	// the steps left are worth the move (every process of the job, or
	// none).
	ExecutorAuto = "auto"
	// ExecutorDefault keeps TensorFlow's default executor.
	ExecutorDefault = "default"
	// ExecutorSingleThreaded moves from the first train step.
	ExecutorSingleThreaded = "single_threaded"
)

// Job is everything the fit loop needs, resolved from the SageMaker
// environment and hyperparameters, each value checked.
type Job struct {
	Env *sagemaker.Env

	ModelDir     string // the training SavedModel to load
	ModelChannel string // the channel it came from; empty when HPModelPath named it
	TrainChannel sagemaker.Channel
	ValChannel   *sagemaker.Channel // nil: no validation
	TensorFiles  map[string]string

	Epochs       int
	InitialEpoch int // epochs run from InitialEpoch+1 (1-based) to Epochs
	BatchSize    int
	// StepsPerExecution is the train steps one process runs per session
	// call (compile's steps_per_execution); 0 is "auto", chosen from the
	// first steps' times.
	StepsPerExecution int
	// StepsPerEpoch > 0 caps an epoch's batches; the next epoch goes on
	// where it stopped, a new pass over the data starting when one ends
	// (as Keras's epoch iterator does).
	StepsPerEpoch int
	// ValidationSteps > 0 caps each validation at its first batches.
	ValidationSteps int
	// ValidationFreq validates after every ValidationFreq-th epoch, or,
	// when ValidationEpochs is set, after those (1-based) epochs.
	ValidationFreq   int
	ValidationEpochs []int
	// ValidationSplit in (0, 1): the last fraction of the training rows
	// (before shuffling) is the validation data.
	ValidationSplit float64
	// ClassWeight weighs each training row by its class (fit's
	// class_weight); classes not named weigh 1.
	ClassWeight  map[int]float64
	Shuffle      bool
	Seed         int64
	Prefetch     int
	LearningRate float64 // 0: keep the exported one
	ModelVersion string

	PipeTensors []string
	PipeTimeout time.Duration

	Session model.SessionConfig
	// ProbeInline lets the fit loop time train steps in the inter-op pool
	// and in the calling thread and keep the faster: inter_op_threads
	// unset (a count given is the pool the user asked for; -1, the
	// calling thread).
	ProbeInline bool
	// Executor is where the train steps run (runtime/fit,
	// single.go): ExecutorAuto, ExecutorDefault or ExecutorSingleThreaded.
	Executor string

	CheckpointDir    string
	CheckpointEpochs bool
	CheckpointSteps  int
	CheckpointKeep   int

	PeerTimeout    time.Duration
	ConnectTimeout time.Duration
	ChunkBytes     int
	CompressFP16   bool
	DataOverGRPC   bool // gradient chunks on the gRPC streams, not the data lanes
}

// OutputModelDir is where rank 0 writes the trained SavedModel, in TF
// Serving's layout (<model dir>/<version>/saved_model.pb).
func (j *Job) OutputModelDir() string { return filepath.Join(j.Env.ModelDir, j.ModelVersion) }

// New reads the job's settings from env. A hyperparameter sagefit does not
// read is refused (see CheckKnown): a typo must not train something else.
func New(env *sagemaker.Env) (*Job, error) {
	if err := CheckKnown(env); err != nil {
		return nil, err
	}
	j := &Job{Env: env}
	var err error
	ints := []struct {
		name     string
		def      int
		dst      *int
		min, max int
	}{
		{HPEpochs, 1, &j.Epochs, 1, maxEpochs},
		{HPBatchSize, 32, &j.BatchSize, 1, math.MaxInt},
		{HPPrefetch, 2, &j.Prefetch, 0, maxPrefetch},
		{HPIntraOpThreads, 0, &j.Session.IntraOpThreads, 0, maxThreads},
		{HPInterOpThreads, 0, &j.Session.InterOpThreads, -1, maxThreads},
		{HPAllReduceChunk, 1 << 20, &j.ChunkBytes, 4, math.MaxInt},
		{HPCheckpointSteps, 0, &j.CheckpointSteps, 0, math.MaxInt},
		{HPCheckpointKeep, 3, &j.CheckpointKeep, 1, math.MaxInt},
		{HPInitialEpoch, 0, &j.InitialEpoch, 0, maxEpochs},
		{HPStepsPerEpoch, 0, &j.StepsPerEpoch, 1, math.MaxInt},
		{HPValSteps, 0, &j.ValidationSteps, 1, math.MaxInt},
	}
	for _, p := range ints {
		if *p.dst, err = env.Int(p.name, p.def); err != nil {
			return nil, err
		}
		if _, set := env.Hyperparameters[p.name]; set && *p.dst < p.min {
			return nil, fmt.Errorf("hyperparameter %q must be at least %d, got %d", p.name, p.min, *p.dst)
		}
		if *p.dst > p.max {
			return nil, fmt.Errorf("hyperparameter %q must be at most %d, got %d", p.name, p.max, *p.dst)
		}
	}
	_, interOpSet := env.Hyperparameters[HPInterOpThreads]
	j.ProbeInline = !interOpSet
	if _, ok := env.Hyperparameters[HPStepsPerExec]; ok && env.String(HPStepsPerExec, "") != "auto" {
		if j.StepsPerExecution, err = env.Int(HPStepsPerExec, 0); err != nil || j.StepsPerExecution < 1 {
			return nil, fmt.Errorf("hyperparameter %q must be \"auto\" or an integer of at least 1, got %q", HPStepsPerExec, env.String(HPStepsPerExec, ""))
		}
	}
	j.Executor = env.String(HPExecutor, ExecutorAuto)
	if !slices.Contains([]string{ExecutorAuto, ExecutorDefault, ExecutorSingleThreaded}, j.Executor) {
		return nil, fmt.Errorf("hyperparameter %q must be %q, %q or %q, got %q", HPExecutor, ExecutorAuto, ExecutorDefault, ExecutorSingleThreaded, j.Executor)
	}
	if j.Executor == ExecutorSingleThreaded && j.StepsPerExecution > 1 {
		return nil, fmt.Errorf("hyperparameter %q %q runs one train step per session call, so %q cannot be %d: leave it out or set it to 1", HPExecutor, ExecutorSingleThreaded, HPStepsPerExec, j.StepsPerExecution)
	}
	seed, err := env.Int(HPSeed, 0)
	if err != nil {
		return nil, err
	}
	j.Seed = int64(seed)
	bools := []struct {
		name string
		def  bool
		dst  *bool
	}{
		{HPShuffle, true, &j.Shuffle},
		{HPGPUMemGrowth, true, &j.Session.GPUMemoryGrowth},
		{HPSoftPlacement, true, &j.Session.SoftPlacement},
		{HPLogPlacement, false, &j.Session.LogPlacement},
		{HPCompressFP16, false, &j.CompressFP16},
		{HPCheckpoint, env.CheckpointS3URI != "", &j.CheckpointEpochs},
	}
	for _, p := range bools {
		if *p.dst, err = env.Bool(p.name, p.def); err != nil {
			return nil, err
		}
	}
	if j.LearningRate, err = env.Float(HPLearningRate, 0); err != nil {
		return nil, err
	}
	if _, set := env.Hyperparameters[HPLearningRate]; set && !(j.LearningRate > 0 && j.LearningRate <= math.MaxFloat64) {
		return nil, fmt.Errorf("hyperparameter %q must be a positive number, got %q", HPLearningRate, env.String(HPLearningRate, ""))
	}
	if lr := float32(j.LearningRate); j.LearningRate > 0 && (lr == 0 || math.IsInf(float64(lr), 0)) {
		// The optimizer's rate is a float32 variable: this one would be 0 or Inf there.
		return nil, fmt.Errorf("hyperparameter %q is %q, which a float32 learning rate (the optimizer's) cannot hold: give one from 1e-45 to 3.4e38", HPLearningRate, env.String(HPLearningRate, ""))
	}
	if j.ValidationSplit, err = env.Float(HPValSplit, 0); err != nil {
		return nil, err
	}
	if !(j.ValidationSplit >= 0 && j.ValidationSplit < 1) { // NaN too
		return nil, fmt.Errorf("hyperparameter %q must be a fraction of the training rows in [0, 1), got %v", HPValSplit, j.ValidationSplit)
	}
	if j.ValidationFreq, j.ValidationEpochs, err = validationFreq(env); err != nil {
		return nil, err
	}
	if j.ClassWeight, err = classWeight(env); err != nil {
		return nil, err
	}
	if j.InitialEpoch >= j.Epochs {
		return nil, fmt.Errorf("hyperparameter %q is %d, so of %d epochs none would train; it counts the epochs already trained and must be less than %q", HPInitialEpoch, j.InitialEpoch, j.Epochs, HPEpochs)
	}
	for _, d := range []struct {
		name string
		def  time.Duration
		dst  *time.Duration
	}{
		{HPPeerTimeout, DefaultPeerTimeout, &j.PeerTimeout},
		{HPConnectTimeout, 15 * time.Minute, &j.ConnectTimeout},
		{HPPipeTimeout, 10 * time.Minute, &j.PipeTimeout},
	} {
		if *d.dst, err = env.Duration(d.name, d.def); err != nil {
			return nil, err
		}
		if *d.dst <= 0 {
			return nil, fmt.Errorf("hyperparameter %q must be a positive duration, got %q", d.name, env.String(d.name, ""))
		}
	}
	if j.TensorFiles, err = env.StringMap(HPTensorFiles, nil); err != nil {
		return nil, err
	}
	if v, ok := env.Hyperparameters[HPPipeTensors]; ok {
		list, _ := v.([]any)
		for _, item := range list {
			if name, ok := item.(string); ok {
				j.PipeTensors = append(j.PipeTensors, name)
			}
		}
		if len(list) == 0 || len(j.PipeTensors) != len(list) {
			return nil, fmt.Errorf("hyperparameter %q must be a JSON list of tensor names, e.g. [\"train\", \"labels\"]%s", HPPipeTensors, sagemaker.NotJSONHint(env.String(HPPipeTensors, "")))
		}
	}
	switch tr := env.String(HPRingTransport, "lane"); tr {
	case "lane":
	case "grpc":
		j.DataOverGRPC = true
	default:
		return nil, fmt.Errorf("hyperparameter %q must be \"lane\" (plain TCP beside gRPC, the fast default) or \"grpc\" (gradient chunks on the gRPC streams too), got %q", HPRingTransport, tr)
	}
	j.CheckpointDir = env.CheckpointDir
	j.ModelVersion = env.String(HPModelVersion, "1")
	if _, err := strconv.ParseUint(j.ModelVersion, 10, 64); err != nil {
		return nil, fmt.Errorf("hyperparameter %q must be a whole number (TF Serving's version folder), got %q", HPModelVersion, j.ModelVersion)
	}
	if j.ModelDir, j.ModelChannel, err = modelDir(env); err != nil {
		return nil, err
	}
	if j.TrainChannel, err = trainChannel(env); err != nil {
		return nil, err
	}
	valName := env.String(HPValChannel, defaultValChannel)
	if c, ok := env.Channels[valName]; ok {
		j.ValChannel = &c
	} else if _, given := env.Hyperparameters[HPValChannel]; given {
		// Given, even as the default's name: the user expects validation.
		return nil, fmt.Errorf("hyperparameter %q names channel %q, but the job has channels %v", HPValChannel, valName, env.ChannelNames())
	}
	if err := j.checkFitArguments(); err != nil {
		return nil, err
	}
	return j, nil
}

// Validates reports whether training validates after epoch (1-based).
func (j *Job) Validates(epoch int) bool {
	if len(j.ValidationEpochs) > 0 {
		return slices.Contains(j.ValidationEpochs, epoch)
	}
	return j.ValidationFreq <= 1 || epoch%j.ValidationFreq == 0 // the zero Job validates every epoch
}

// checkFitArguments refuses combinations that model.fit would silently
// ignore or that sagefit cannot honour, each in one sentence.
func (j *Job) checkFitArguments() error {
	hasVal := j.ValChannel != nil || j.ValidationSplit > 0
	_, freqSet := j.Env.Hyperparameters[HPValFreq]
	switch {
	case j.ValidationSplit > 0 && j.ValChannel != nil:
		return fmt.Errorf("hyperparameter %q asks to validate on the last training rows, but the job also has the validation channel %q, which model.fit would use instead; give one of them", HPValSplit, j.ValChannel.Name)
	case j.ValidationSplit > 0 && j.TrainChannel.InputMode == sagemaker.Pipe:
		return fmt.Errorf("hyperparameter %q needs the training rows ahead of time, but channel %q streams them in Pipe mode; use File or FastFile mode, or a validation channel", HPValSplit, j.TrainChannel.Name)
	case j.StepsPerEpoch > 0 && j.TrainChannel.InputMode == sagemaker.Pipe:
		return fmt.Errorf("hyperparameter %q goes on with the next epoch where the last one stopped, but channel %q streams each epoch anew in Pipe mode; use File or FastFile mode", HPStepsPerEpoch, j.TrainChannel.Name)
	case !hasVal && j.ValidationSteps > 0:
		return fmt.Errorf("hyperparameter %q is set, but the job has no validation data (a %q channel or hyperparameter %q)", HPValSteps, defaultValChannel, HPValSplit)
	case !hasVal && freqSet:
		return fmt.Errorf("hyperparameter %q is set, but the job has no validation data (a %q channel or hyperparameter %q)", HPValFreq, defaultValChannel, HPValSplit)
	}
	return nil
}

// classWeight reads HPClassWeight: a JSON object of class index to weight,
// {"0": 1, "1": 5}, as fit's class_weight dict.
func classWeight(env *sagemaker.Env) (map[int]float64, error) {
	v, ok := env.Hyperparameters[HPClassWeight]
	if !ok {
		return nil, nil
	}
	bad := fmt.Errorf("hyperparameter %q must be a JSON object of class index (a whole number from 0) to weight (a finite number from 0), such as {\"0\": 1, \"1\": 5}, got %q%s", HPClassWeight, env.String(HPClassWeight, ""), sagemaker.NotJSONHint(env.String(HPClassWeight, "")))
	obj, isObj := v.(map[string]any)
	if !isObj || len(obj) == 0 {
		return nil, bad
	}
	out := make(map[int]float64, len(obj))
	for k, w := range obj {
		class, err := strconv.Atoi(k)
		f, isNum := w.(float64)
		if err != nil || class < 0 || !isNum || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, bad
		}
		if k != strconv.Itoa(class) {
			// "01" beside "1" would name one class twice, the weight kept chosen by map order.
			return nil, fmt.Errorf("hyperparameter %q names class %d as %q: write each class index as a plain whole number (%q), once", HPClassWeight, class, k, strconv.Itoa(class))
		}
		out[class] = f
	}
	return out, nil
}

// validationFreq reads HPValFreq: a whole number of epochs (default 1) or a
// JSON list of 1-based epochs, as model.fit takes it.
func validationFreq(env *sagemaker.Env) (int, []int, error) {
	v, ok := env.Hyperparameters[HPValFreq]
	if !ok {
		return 1, nil, nil
	}
	bad := fmt.Errorf("hyperparameter %q must be a whole number of epochs of at least 1, or a JSON list of epochs such as [1, 5, 10]%s", HPValFreq, sagemaker.NotJSONHint(env.String(HPValFreq, "")))
	if list, isList := v.([]any); isList {
		var epochs []int
		for _, item := range list {
			f, isNum := item.(float64)
			if !isNum || f != math.Trunc(f) || f < 1 {
				return 0, nil, bad
			}
			epochs = append(epochs, int(f))
		}
		if len(epochs) == 0 {
			return 0, nil, bad
		}
		return 1, epochs, nil
	}
	n, err := env.Int(HPValFreq, 1)
	if err != nil || n < 1 {
		return 0, nil, bad
	}
	return n, nil, nil
}

// modelDir finds the training SavedModel: a hyperparameter naming a path
// (e.g. baked into the image), else the model channel, where the SavedModel
// may sit at the top or one folder down (as an unpacked model.tar.gz often
// leaves it).
func modelDir(env *sagemaker.Env) (dir, channel string, err error) {
	if _, set := env.Hyperparameters[HPModelPath]; set {
		p := env.String(HPModelPath, "")
		if p == "" {
			return "", "", fmt.Errorf("hyperparameter %q is empty; give the training SavedModel's path, or leave it out to read the %q channel", HPModelPath, env.String(HPModelChannel, defaultModelChan))
		}
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("hyperparameter %q names %s, which does not exist", HPModelPath, p)
		}
		return p, "", nil
	}
	name := env.String(HPModelChannel, defaultModelChan)
	c, ok := env.Channels[name]
	if !ok {
		return "", "", fmt.Errorf("no training SavedModel: the job has no %q channel (channels: %v); add a %q channel holding the output of sagefit.export, or set hyperparameter %q to its path", name, env.ChannelNames(), name, HPModelPath)
	}
	if c.InputMode == sagemaker.Pipe {
		return "", "", fmt.Errorf("the model channel %q is in Pipe mode, which streams records through a FIFO; sagefit loads the SavedModel from its files: give the channel File or FastFile mode", name)
	}
	dir, err = findSavedModel(c.Dir)
	return dir, name, err
}

func findSavedModel(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "saved_model.pb")); err == nil {
		return dir, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("model channel: %w", err)
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "saved_model.pb")); err == nil {
				found = append(found, filepath.Join(dir, e.Name()))
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if archives, _ := filepath.Glob(filepath.Join(dir, "*.tar.gz")); len(archives) > 0 {
			return "", fmt.Errorf("the model channel %s holds %s but no saved_model.pb; sagefit reads the folder sagefit.export wrote, not an archive: unpack it there, or upload the folder", dir, filepath.Base(archives[0]))
		}
		return "", fmt.Errorf("the model channel %s holds no saved_model.pb; put the folder written by sagefit.export there", dir)
	}
	return "", fmt.Errorf("the model channel %s holds %d SavedModels %v; keep one", dir, len(found), found)
}

func trainChannel(env *sagemaker.Env) (sagemaker.Channel, error) {
	if _, set := env.Hyperparameters[HPTrainChannel]; set {
		name := env.String(HPTrainChannel, "")
		c, ok := env.Channels[name]
		if !ok {
			return c, fmt.Errorf("hyperparameter %q names channel %q, but the job has channels %v", HPTrainChannel, name, env.ChannelNames())
		}
		return c, nil
	}
	for _, name := range []string{"training", "train"} {
		if c, ok := env.Channels[name]; ok {
			return c, nil
		}
	}
	return sagemaker.Channel{}, fmt.Errorf("no training data: the job has no \"training\" channel (channels: %v); name the data channel \"training\" or set hyperparameter %q", env.ChannelNames(), HPTrainChannel)
}

// Unused names, one sentence each, the hyperparameters given that this job
// will not use as it is set up (world: its training processes), so that
// none is dropped without a word.
func (j *Job) Unused(world int) []string {
	set := func(name string) bool { _, ok := j.Env.Hyperparameters[name]; return ok }
	var out []string
	if world > 1 && j.StepsPerExecution > 1 {
		out = append(out, fmt.Sprintf("hyperparameter %q is %d, but the job's %d training processes all-reduce the gradients of every step, so each runs one step per session call", HPStepsPerExec, j.StepsPerExecution, world))
	}
	if world == 1 {
		var ring []string
		for _, name := range []string{HPPeerTimeout, HPConnectTimeout, HPAllReduceChunk, HPCompressFP16, HPRingTransport} {
			if set(name) {
				ring = append(ring, fmt.Sprintf("%q", name))
			}
		}
		if len(ring) == 1 {
			out = append(out, fmt.Sprintf("hyperparameter %s tunes the all-reduce between training processes, and this job has one", ring[0]))
		} else if len(ring) > 1 {
			out = append(out, fmt.Sprintf("hyperparameters %s tune the all-reduce between training processes, and this job has one", strings.Join(ring, ", ")))
		}
	}
	if set(HPCheckpoint) && !j.CheckpointEpochs && j.CheckpointSteps > 0 {
		out = append(out, fmt.Sprintf("hyperparameter %q is false, which leaves out the checkpoints at epoch ends only: %q=%d still checkpoints every %d steps", HPCheckpoint, HPCheckpointSteps, j.CheckpointSteps, j.CheckpointSteps))
	}
	// Epoch-end checkpoints come before the last epoch only.
	if periodic := j.CheckpointSteps > 0 || j.CheckpointEpochs && j.Epochs-j.InitialEpoch > 1; set(HPCheckpointKeep) && !periodic {
		how := fmt.Sprintf("give the job a checkpoint config (checkpoint_s3_uri), %q=true or %q", HPCheckpoint, HPCheckpointSteps)
		switch {
		case j.CheckpointEpochs:
			how = fmt.Sprintf("set %q (its one epoch ends no epoch before the last)", HPCheckpointSteps)
		case j.Env.CheckpointS3URI != "":
			how = fmt.Sprintf("set %q=true or %q", HPCheckpoint, HPCheckpointSteps)
		}
		out = append(out, fmt.Sprintf("hyperparameter %q keeps the newest checkpoints, and this job writes none but a stop's; to checkpoint as it trains, %s", HPCheckpointKeep, how))
	}
	if set(HPModelPath) && set(HPModelChannel) {
		out = append(out, fmt.Sprintf("hyperparameter %q names the channel the model is read from, and %q gives the model's path, which is read instead", HPModelChannel, HPModelPath))
	}
	if !j.Shuffle && set(HPSeed) {
		out = append(out, fmt.Sprintf("hyperparameter %q orders the shuffle, and %q is false", HPSeed, HPShuffle))
	}
	pipe := false
	for _, c := range j.Env.Channels {
		pipe = pipe || c.InputMode == sagemaker.Pipe
	}
	if !pipe {
		for _, name := range []string{HPPipeTensors, HPPipeTimeout} {
			if set(name) {
				out = append(out, fmt.Sprintf("hyperparameter %q applies to Pipe mode channels, and the job has none", name))
			}
		}
	}
	if set(HPTensorFiles) && j.TrainChannel.InputMode == sagemaker.Pipe && (j.ValChannel == nil || j.ValChannel.InputMode == sagemaker.Pipe) {
		out = append(out, fmt.Sprintf("hyperparameter %q names the files of File and FastFile mode channels, and this job reads its data from Pipe mode channels only (%q orders a Pipe stream's arrays)", HPTensorFiles, HPPipeTensors))
	}
	read := map[string]string{j.TrainChannel.Name: "training data"}
	if j.ValChannel != nil {
		read[j.ValChannel.Name] = "validation data"
	}
	if j.ModelChannel != "" {
		read[j.ModelChannel] = "the model"
	}
	var reads []string
	for _, name := range slices.Sorted(maps.Keys(read)) {
		reads = append(reads, fmt.Sprintf("%q (%s)", name, read[name]))
	}
	choose := fmt.Sprintf("hyperparameters %q, %q and %q choose other channels", HPTrainChannel, HPValChannel, HPModelChannel)
	if j.ModelChannel == "" { // the model's path is given: no channel of its
		choose = fmt.Sprintf("hyperparameters %q and %q choose other channels", HPTrainChannel, HPValChannel)
	}
	for _, name := range j.Env.ChannelNames() {
		if _, ok := read[name]; !ok {
			out = append(out, fmt.Sprintf("channel %q is not read: this job reads %s (%s); sagefit evaluates no test set after training: evaluate the model it writes",
				name, strings.Join(reads, ", "), choose))
		}
	}
	if j.ValChannel != nil || j.ValidationSplit > 0 {
		first, last := j.InitialEpoch+1, j.Epochs
		validates := j.ValidationFreq <= 1 || last/j.ValidationFreq*j.ValidationFreq >= first
		if len(j.ValidationEpochs) > 0 {
			validates = slices.ContainsFunc(j.ValidationEpochs, func(e int) bool { return e >= first && e <= last })
		}
		if !validates {
			out = append(out, fmt.Sprintf("hyperparameter %q validates after no epoch of %d..%d, so the validation data is never used", HPValFreq, j.InitialEpoch+1, j.Epochs))
		}
	}
	return out
}
