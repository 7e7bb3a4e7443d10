// Package fit is Keras's fit loop in Go: epochs of train steps over one
// process's share of the batches, epoch metrics summed over every process,
// validation, checkpoints every epoch or every N steps, and a stop request
// (SIGTERM) that every process honours after the same step, with a
// checkpoint. With several processes a step computes this process's
// gradient, all-reduces it with the others' (weighted by their rows, with
// the row count and the stop flag riding in the same buffer) and applies
// the mean, so N processes with batch B train as one with batch N·B; the
// rows of a sparse gradient (an Embedding's) are gathered instead, which
// Keras's optimizers apply one by one (sparse.go), and a loss-scaled
// optimizer's backward pass runs on each process's share of the loss.
// Its first train steps also time where the session runs their ops (the
// inter-op pool or the calling thread, inline.go) and how many steps one
// call runs (steps_per_execution "auto", blocks.go), and keep the faster;
// where the calling thread wins, the steps may then move to TensorFlow's
// single-threaded executor (the executor hyperparameter, single.go).
//
// The loop sees the model and the collective through two small interfaces
// (Model, Group), so it is pure Go: its tests drive it with a pure-Go model
// and the ring core's in-memory network in milliseconds. It must not import
// model/tf (libtensorflow), distributed/transport (sockets) or
// runtime/launch.
package fit
