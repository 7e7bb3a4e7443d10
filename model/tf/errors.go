package tf

import (
	"errors"
	"regexp"
	"strings"
)

var (
	// TensorFlow appends where in the graph an op failed ("\n\t [[{{function_node
	// __inference_train_step_3561}}{{node compile_loss/...}}]]"): graph
	// internals, no help to the person whose data or model is at fault.
	nodeTrace = regexp.MustCompile(`(?s)\s*\[\[\{\{.*`)
	// A sparse label outside the model's classes; TensorFlow lists every
	// label of the batch after it.
	labelRange = regexp.MustCompile(`Received a label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)\.\s*Label values:[-\d\s]*`)
	spaces     = regexp.MustCompile(`\s+`)
)

// tfError is TensorFlow's message as one sentence-like line: without the
// graph's node trace, the batch's label list, or line breaks.
func tfError(msg string) error {
	msg = nodeTrace.ReplaceAllString(msg, "")
	msg = labelRange.ReplaceAllString(msg, "a label is $1, outside the model's $2 classes [0, $2) (the labels of a sparse categorical loss are class indices) ")
	return errors.New(strings.TrimSpace(spaces.ReplaceAllString(msg, " ")))
}
