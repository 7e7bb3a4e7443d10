// Package tf loads a sagefit training SavedModel through libtensorflow's C
// API and runs its contract (package model): Keras's fused train step,
// compute-gradients and apply-gradients for data-parallel training, the test
// step, metric reset, results and state, variable read and assign, the
// learning rate, and serving. It also writes the trained variables as a new
// servable SavedModel.
//
// It is the only package of sagefit that uses cgo. It knows nothing of
// SageMaker, channels or the fit loop; the contract is checked on Load, with
// an error that names what is missing.
//
// Protocol buffers come from github.com/galeone/tensorflow/tensorflow/go;
// sessions are run through a small cgo layer of our own (capi.go) because
// those bindings free tensors only through finalizers, and the step loop must
// release its tensors at once to keep resident memory flat. A model can move
// to a second session of its graph on TensorFlow's single-threaded executor
// (MoveSingleThreaded), its state handed over.
package tf
