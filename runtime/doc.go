// Package runtime wires one sagefit training job inside SageMaker's
// training contract, and holds nothing else: it reads the job from the
// SageMaker environment (runtime/sagemaker), resolves its settings
// (runtime/job), fans out one process per GPU when the host has several
// (runtime/launch), loads the training SavedModel (model/tf), resumes from
// the newest checkpoint (runtime/checkpoint), opens the channels
// (runtime/input), joins the other processes (distributed/transport), runs
// the fit loop (runtime/fit), and writes the trained SavedModel, the history
// and a loss curve (runtime/report). Any error ends as one sentence in the
// failure file and a non-zero exit (Main).
//
// It is the only package of runtime/ that links libtensorflow (through
// model/tf); its sub-packages never import it or each other upwards:
//
//	runtime            the wiring: Main, Train
//	runtime/fit        the fit loop, behind small Model and Group interfaces
//	runtime/callbacks  Keras's callbacks (EarlyStopping, TensorBoard, ...) in the loop
//	runtime/job        hyperparameters and the job's settings
//	runtime/input      a channel's files mapped onto the model's tensors
//	runtime/checkpoint the checkpoint format
//	runtime/launch     every fan-out of sagefit processes, every SAGEFIT_* variable
//	runtime/sagemaker  the /opt/ml contract, failure file, stop signal
//	runtime/report     epoch lines, progress bar, history, loss plot
package runtime
