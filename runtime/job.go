package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// Hyperparameters sagefit reads (all optional). Names follow Keras's fit
// arguments where one exists.
const (
	HPEpochs          = "epochs"
	HPBatchSize       = "batch_size"
	HPShuffle         = "shuffle"
	HPSeed            = "seed"
	HPLearningRate    = "learning_rate"
	HPModelPath       = "sagefit_model"         // a training SavedModel path, instead of the model channel
	HPModelChannel    = "sagefit_model_channel" // default "model"
	HPTrainChannel    = "sagefit_train_channel" // default "training", else "train"
	HPValChannel      = "sagefit_validation_channel"
	HPTensorFiles     = "sagefit_inputs" // JSON map: model input or target name -> file
	HPModelVersion    = "sagefit_model_version"
	HPIntraOpThreads  = "intra_op_threads"
	HPInterOpThreads  = "inter_op_threads"
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
	defaultModelChan  = "model"
	defaultValChannel = "validation"
)

// Job is everything the fit loop needs, resolved from the SageMaker
// environment and hyperparameters, each value checked.
type Job struct {
	Env *sagemaker.Env

	ModelDir     string // the training SavedModel to load
	TrainChannel sagemaker.Channel
	ValChannel   *sagemaker.Channel // nil: no validation
	TensorFiles  map[string]string

	Epochs       int
	BatchSize    int
	Shuffle      bool
	Seed         int64
	Prefetch     int
	LearningRate float64 // 0: keep the exported one
	ModelVersion string

	PipeTensors []string
	PipeTimeout time.Duration

	Session model.Config

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

// NewJob reads the job's settings from env.
func NewJob(env *sagemaker.Env) (*Job, error) {
	j := &Job{Env: env}
	var err error
	ints := []struct {
		name string
		def  int
		dst  *int
		min  int
	}{
		{HPEpochs, 1, &j.Epochs, 1},
		{HPBatchSize, 32, &j.BatchSize, 1},
		{HPPrefetch, 2, &j.Prefetch, 0},
		{HPIntraOpThreads, 0, &j.Session.IntraOpThreads, 0},
		{HPInterOpThreads, 0, &j.Session.InterOpThreads, 0},
		{HPAllReduceChunk, 1 << 20, &j.ChunkBytes, 4},
		{HPCheckpointSteps, 0, &j.CheckpointSteps, 0},
		{HPCheckpointKeep, 3, &j.CheckpointKeep, 1},
	}
	for _, p := range ints {
		if *p.dst, err = env.Int(p.name, p.def); err != nil {
			return nil, err
		}
		if *p.dst < p.min {
			return nil, fmt.Errorf("hyperparameter %q must be at least %d, got %d", p.name, p.min, *p.dst)
		}
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
	if j.LearningRate < 0 {
		return nil, fmt.Errorf("hyperparameter %q must be positive, got %v", HPLearningRate, j.LearningRate)
	}
	if j.PeerTimeout, err = env.Duration(HPPeerTimeout, 60*time.Second); err != nil {
		return nil, err
	}
	if j.ConnectTimeout, err = env.Duration(HPConnectTimeout, 15*time.Minute); err != nil {
		return nil, err
	}
	if j.TensorFiles, err = env.StringMap(HPTensorFiles, nil); err != nil {
		return nil, err
	}
	if j.PipeTimeout, err = env.Duration(HPPipeTimeout, 10*time.Minute); err != nil {
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
			return nil, fmt.Errorf("hyperparameter %q must be a JSON list of tensor names, e.g. [\"train\", \"labels\"]", HPPipeTensors)
		}
	}
	if _, err := processesPerHost(env); err != nil {
		return nil, err
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
		return nil, fmt.Errorf("hyperparameter %q must be a positive whole number (TF Serving's version folder), got %q", HPModelVersion, j.ModelVersion)
	}
	if j.ModelDir, err = modelDir(env); err != nil {
		return nil, err
	}
	if j.TrainChannel, err = trainChannel(env); err != nil {
		return nil, err
	}
	valName := env.String(HPValChannel, defaultValChannel)
	if c, ok := env.Channels[valName]; ok {
		j.ValChannel = &c
	} else if valName != defaultValChannel {
		return nil, fmt.Errorf("hyperparameter %q names channel %q, but the job has channels %v", HPValChannel, valName, env.ChannelNames())
	}
	return j, nil
}

// modelDir finds the training SavedModel: a hyperparameter naming a path
// (e.g. baked into the image), else the model channel, where the SavedModel
// may sit at the top or one folder down (as an unpacked model.tar.gz often
// leaves it).
func modelDir(env *sagemaker.Env) (string, error) {
	if p := env.String(HPModelPath, ""); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("hyperparameter %q names %s, which does not exist", HPModelPath, p)
		}
		return p, nil
	}
	name := env.String(HPModelChannel, defaultModelChan)
	c, ok := env.Channels[name]
	if !ok {
		return "", fmt.Errorf("no training SavedModel: the job has no %q channel (channels: %v); add a %q channel holding the output of sagefit.export, or set hyperparameter %q to its path", name, env.ChannelNames(), name, HPModelPath)
	}
	return findSavedModel(c.Dir)
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
		return "", fmt.Errorf("the model channel %s holds no saved_model.pb; put the folder written by sagefit.export there", dir)
	}
	return "", fmt.Errorf("the model channel %s holds %d SavedModels %v; keep one", dir, len(found), found)
}

func trainChannel(env *sagemaker.Env) (sagemaker.Channel, error) {
	if name := env.String(HPTrainChannel, ""); name != "" {
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
