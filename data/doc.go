// Package data turns a SageMaker channel of .npy files into the batches a
// training step consumes. It is pure Go: no cgo and no TensorFlow, so it
// builds and tests fast and the model package only ever sees bytes.
//
// The pieces, in the order the runtime uses them:
//
//   - ListChannel lists a channel directory's .npy files and MapTensors
//     decides which file feeds which model input or target (by name, by
//     convention such as train.npy/labels.npy, or by hyperparameter).
//   - Open memory-maps a .npy file (format 1.0, 2.0 and 3.0; every numeric
//     dtype; either byte order; C or Fortran order) as an Array. Nothing is
//     read up front: the page cache serves the rows a batch touches, so a
//     channel larger than RAM still opens instantly.
//   - Array.Gather copies rows into a caller's buffer, converting to the
//     dtype the model wants. The common case (same dtype, little-endian,
//     C order) is a memmove per row run; conversions use type-specialised
//     loops, never reflection.
//   - NewDataset groups a channel's arrays, and Dataset.Epoch yields one
//     epoch of batches for one rank: shuffled by a permutation that depends
//     only on (seed, epoch) so every host agrees without talking, sharded
//     so that each rank takes a contiguous part of every global batch, and
//     assembled ahead by a goroutine into reused buffers.
//   - OpenChannel does all of the above for one channel directory.
//
// The batcher reads rows through a small internal interface (row count,
// row shape, dtype, Gather), so sources other than mapped files, such as
// pipe-mode FIFOs, plug in behind the same iterator. ParseHeader reads
// from a plain io.Reader and stops at the first data byte for that reason.
//
// Batching follows Keras fit's defaults (batch size 32, partial last batch
// kept) so a sagefit run and model.fit see the same number of steps.
//
// Errors are meant to end up in SageMaker's failure reason: one sentence
// that names the file and says what to do.
package data
