// Package model is the training contract between sagefit's Python exporter
// and the Go runtime, in plain Go: the metadata a training SavedModel
// carries (assets.extra/sagefit.json: inputs, targets, variables, gradient
// order, metrics, the signature of every role), the dtypes, and the values
// that cross a session's boundary (Batch, Metric, Tensor, Variable).
//
// It holds no cgo and imports nothing of sagefit, so the fit loop, the data
// readers and their tests build and run without libtensorflow. The session
// that runs the contract through libtensorflow is package model/tf, the only
// cgo code of sagefit.
//
// The names mirror python/sagefit/contract.py; change both together and bump
// ContractVersion when a role changes.
package model
