// Package hostlist writes a list of names (hosts, and the files or
// variables of other sentences) short enough to go into a failure sentence:
// SageMaker shows only the first 1024 characters of the failure file, so a
// job of 500 hosts must not spend them on host names. A short list is
// written whole, as fmt's %v writes it ("[algo-1 algo-2]"); a long one as
// its first names, an ellipsis, its last name and the count
// ("[algo-1 algo-2 … algo-500] (500 hosts)"). The full list belongs in the
// log.
//
// It imports nothing of sagefit.
package hostlist
