// Package sagemaker reads and writes the SageMaker training contract: the
// files SageMaker puts under /opt/ml for a bring-your-own-container job, the
// SM_* variables of the sagemaker-training toolkit, the failure file and the
// stop signal. It is pure Go and knows nothing about models.
//
// The layout, under /opt/ml or under $SAGEMAKER_BASE_DIR:
//
//	input/config/hyperparameters.json   every value a string, JSON-decoded one by one
//	input/config/resourceconfig.json    current_host, hosts (rank = index), network_interface_name
//	input/config/inputdataconfig.json   per channel TrainingInputMode, S3DistributionType, ContentType
//	input/config/checkpointconfig.json  LocalPath and S3Uri, when the job has checkpoints
//	input/config/tensorboardoutputconfig.json  LocalPath, for TensorBoard's event files
//	input/config/debughookconfig.json   SageMaker Debugger's hook: read for a warning only
//	input/data/<channel>                a channel's files (File and FastFile mode)
//	input/data/<channel>_<epoch>        a channel's FIFO for one epoch (Pipe mode)
//	model/                              becomes model.tar.gz
//	output/data/                        becomes output.tar.gz
//	output/failure                      its first 1024 characters become the FailureReason
//	checkpoints/                        synced with S3 while the job runs
//
// [Load] reads it into an [Env]; SM_* variables that are set win over the
// files. Typed
// hyperparameter accessors ([Env.Int], [Env.Float], [Env.Bool],
// [Env.String], [Env.Duration], [Env.StringMap]) turn a wrong value into one
// sentence:
//
//	hyperparameter "epochs" must be an integer, got "ten"
//
// [WriteLocal] lays out a base folder the way SageMaker would, for
// `sagefit local`; [Load] reads back what it wrote. [WriteFailure] writes
// the failure file, and [NotifyStop] turns SIGTERM into a cancelled context.
package sagemaker
