// Package data turns a SageMaker channel (.npy, .npz or CSV files, or a
// Pipe-mode FIFO) into the batches a training step consumes. It is pure
// Go: no cgo and no TensorFlow, so it builds and tests fast and the model
// package only ever sees bytes.
//
// The pieces, in the order the runtime uses them:
//
//   - OpenChannel does everything below for one File or FastFile mode
//     channel directory and returns a Dataset; WithContentType passes the
//     channel's ContentType. Dataset.Arrays gives the arrays behind each
//     tensor, to check them against the model. A channel in parts (a
//     tensor's files in several subfolders or .npz archives, as a host of
//     a ShardedByS3Key channel gets several objects) maps each part on its
//     own and joins their rows in the order S3 lists them (parts.go).
//   - ListChannel lists a channel's tensors: each .npy file, and each
//     member of each .npz file as "<dir>/data.npz/<member>.npy". Dotfiles,
//     names starting with "_" (_SUCCESS) and *.manifest files are ignored;
//     any other file is an error naming it and the supported formats, as is
//     a channel mixing CSV with numpy files.
//   - MapTensors decides which file or member feeds which model input or
//     target (by name, by convention such as train.npy/labels.npy, or by
//     hyperparameter); an archive's members play the role of file names.
//   - Open memory-maps a .npy file (format 1.0, 2.0 and 3.0; every numeric
//     dtype; either byte order; C or Fortran order) as an Array. Nothing is
//     read up front: the page cache serves the rows a batch touches, so a
//     channel larger than RAM still opens instantly.
//   - OpenNPZ opens the arrays of a .npz archive. Stored members (np.savez)
//     are mapped in place, at the offset their zip local header gives, so
//     they cost what a .npy file costs; deflated members
//     (np.savez_compressed) are decompressed into memory once.
//   - OpenCSV reads text/csv the way SageMaker's built-in algorithms do (no
//     header, the label in the first column, numeric features after it),
//     concatenating files, into two float32 arrays in memory: CSV is text
//     and cannot be mapped. A CSV channel feeds a model with one input
//     (the features) and one target (the label).
//   - Array.Gather copies rows into a caller's buffer, converting to the
//     dtype the model wants. The common case (same dtype, little-endian,
//     C order) is a memmove per row run; conversions use type-specialised
//     loops, never reflection.
//   - NewDataset groups a channel's arrays, and Dataset.Epoch yields one
//     epoch of batches for one rank: shuffled by a permutation that depends
//     only on (seed, epoch) so every host agrees without talking (the
//     next epoch's made while this one runs), sharded so that each rank
//     takes a contiguous part of every global batch, and assembled ahead
//     by a goroutine into reused buffers.
//
// Pipe mode: SageMaker streams each epoch through a FIFO (its name is the
// SageMaker contract's, runtime/sagemaker's Paths.PipeFIFO). OpenPipeEpoch waits for it (bounded by its context and
// options, never blocked in open or read beyond them), reads the .npy
// arrays it carries back to back, spools each to a file and maps it, so an
// epoch larger than memory works and shuffles like a File-mode channel;
// the caller names the arrays in stream order. ParseHeader reads from a
// plain io.Reader and stops at the first data byte for that reason.
//
// The batcher reads rows through a small internal interface (row count,
// row shape, dtype, text width, Gather); every format above ends up as an
// Array behind it, or as the parts' Arrays one after another.
//
// Batching follows Keras fit's defaults (batch size 32, partial last batch
// kept) so a sagefit run and model.fit see the same number of steps.
//
// Errors are meant to end up in SageMaker's failure reason: one sentence
// that names the file (and for CSV the line and column, for a pipe the
// array and bytes) and says what to do.
package data
