// Package job is the hyperparameter catalogue: every hyperparameter sagefit
// reads, its default and its check, resolved from the SageMaker environment
// into one Job that the fit loop and the wiring read. A wrong value ends as
// one sentence naming the hyperparameter.
//
// Defaults live here, where the values are read; the packages below
// (data, fit) take explicit values. It must not import a session, the fit
// loop or the launcher.
package job
