// Package float16 converts between IEEE 754 binary16 ("half") and float32,
// and tells the host's byte order. The data readers (numpy float16 files)
// and the all-reduce (fp16 wire compression) share it, so both widen a half
// the same way.
//
// It imports nothing of sagefit.
package float16
