// Package runtime runs a sagefit training job inside SageMaker's training
// contract: it reads the job from the SageMaker environment (package
// runtime/sagemaker), loads the training SavedModel (package model), opens
// the channels (package data), joins the other hosts (package distributed),
// runs Keras's fit loop, and writes the trained SavedModel, the history and a
// loss curve. Any error ends as one sentence in the failure file and a
// non-zero exit (Main).
package runtime
