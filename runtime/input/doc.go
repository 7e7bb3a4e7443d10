// Package input opens a SageMaker channel for a model: it maps the
// channel's files (File and FastFile mode) or each epoch's FIFO (Pipe mode)
// onto the model's inputs and targets through package data, and checks
// that every file's examples have the shape of the tensor they feed.
//
// It knows the contract's types (package model) and the channel
// description (runtime/sagemaker); it must not import a session or the fit
// loop.
package input
