package sagemaker

import (
	"path/filepath"
	"strconv"
)

// DefaultRoot is where SageMaker mounts the training contract in the container.
const DefaultRoot = "/opt/ml"

// BaseDirEnv names the environment variable that replaces [DefaultRoot] for
// local runs and tests. It is the sagemaker-training toolkit's own name.
const BaseDirEnv = "SAGEMAKER_BASE_DIR"

// DefaultBase returns the value of SAGEMAKER_BASE_DIR in environ (a list of
// "KEY=value" strings as [os.Environ] returns) when it is set and not empty,
// and [DefaultRoot] otherwise.
func DefaultBase(environ []string) string {
	if dir := lookup(environ, BaseDirEnv); dir != "" {
		return dir
	}
	return DefaultRoot
}

// Paths names the files and folders of the SageMaker contract under one
// base folder (/opt/ml in a training job). Its methods only join paths; they
// read nothing.
type Paths struct {
	Base string
}

// InputDir is <base>/input.
func (p Paths) InputDir() string { return filepath.Join(p.Base, "input") }

// ConfigDir is <base>/input/config, where SageMaker writes the JSON files.
func (p Paths) ConfigDir() string { return filepath.Join(p.Base, "input", "config") }

// DataDir is <base>/input/data, the parent of every channel.
func (p Paths) DataDir() string { return filepath.Join(p.Base, "input", "data") }

// Channel is <base>/input/data/<name>, the folder of a File or FastFile
// channel.
func (p Paths) Channel(name string) string { return filepath.Join(p.DataDir(), name) }

// PipeFIFO is <base>/input/data/<name>_<epoch>, the FIFO a Pipe mode channel
// is read from in the given epoch (SageMaker counts epochs from 0).
func (p Paths) PipeFIFO(name string, epoch int) string {
	return filepath.Join(p.DataDir(), name+"_"+strconv.Itoa(epoch))
}

// ModelDir is <base>/model; what is there at the end of the job becomes
// model.tar.gz.
func (p Paths) ModelDir() string { return filepath.Join(p.Base, "model") }

// OutputDir is <base>/output, which holds the failure file.
func (p Paths) OutputDir() string { return filepath.Join(p.Base, "output") }

// TensorBoardDir is <base>/output/tensorboard, the default LocalPath of
// SageMaker's TensorBoardOutputConfig, from where it uploads event files.
func (p Paths) TensorBoardDir() string { return filepath.Join(p.Base, "output", "tensorboard") }

// OutputDataDir is <base>/output/data, for extra artifacts (output.tar.gz).
func (p Paths) OutputDataDir() string { return filepath.Join(p.Base, "output", "data") }

// FailureFile is <base>/output/failure; see [WriteFailure].
func (p Paths) FailureFile() string { return filepath.Join(p.Base, "output", "failure") }

// DefaultCheckpointDir is <base>/checkpoints, where SageMaker syncs
// checkpoints to S3 unless checkpointconfig.json names another LocalPath.
// [Env.CheckpointDir] holds the folder that applies to a job.
func (p Paths) DefaultCheckpointDir() string { return filepath.Join(p.Base, "checkpoints") }

// config is the path of a file in the config folder.
func (p Paths) config(name string) string { return filepath.Join(p.ConfigDir(), name) }

// Names of the files in the config folder.
const (
	HyperparametersFile  = "hyperparameters.json"
	ResourceConfigFile   = "resourceconfig.json"
	InputDataConfigFile  = "inputdataconfig.json"
	CheckpointConfigFile = "checkpointconfig.json"
	// TensorBoardConfigFile is the job's TensorBoardOutputConfig: the
	// folder SageMaker uploads TensorBoard's event files from.
	TensorBoardConfigFile = "tensorboardoutputconfig.json"
	// DebugHookConfigFile is the job's DebugHookConfig, for SageMaker
	// Debugger's hook (smdebug, a Python library) in the training process.
	DebugHookConfigFile = "debughookconfig.json"
)
