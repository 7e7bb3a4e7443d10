// Package callbacks runs the Keras callbacks a model was exported with
// (sagefit.export(model, dir, callbacks=[...])) inside the Go fit loop, with
// Keras's semantics and arguments: EarlyStopping, ReduceLROnPlateau,
// TerminateOnNaN, CSVLogger, ModelCheckpoint(save_best_only=True) and
// TensorBoard (scalars). The exporter refuses every other callback.
//
// Decisions are taken on the epoch logs, which cover every process's data,
// so every process decides alike; only the job's writer (rank 0) writes
// files. A callback's counters (best value, wait, cooldown) and the
// weights it keeps travel in checkpoints, so a resumed job ends like an
// uninterrupted one.
//
// It sees the model through a small interface (weights, learning rate) and
// must not import the session (model/tf), the fit loop or the collectives.
package callbacks
