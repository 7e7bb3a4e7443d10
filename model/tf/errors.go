package tf

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/sagefit/sagefit/model"
)

var (
	// TensorFlow appends where in the graph an op failed ("\n\t [[{{function_node
	// __inference_train_step_3561}}{{node compile_loss/...}}]]"): graph
	// internals, no help to the person whose data or model is at fault.
	nodeTrace = regexp.MustCompile(`(?s)\s*\[\[\{\{.*`)
	// A sparse label outside the model's classes; TensorFlow lists every
	// label of the batch after it.
	labelRange = regexp.MustCompile(`Received a label value of (-?\d+) which is outside the valid range of \[0, (\d+)\)\.\s*Label values:[-\d\s]*`)
	// An id outside a lookup's rows (an Embedding's input_dim): TensorFlow
	// names the position in the batch, not what is at fault.
	idRange = regexp.MustCompile(`indices\[[\d,]+\] = (-?\d+) is not in \[0, (\d+)\)\.?`)
	spaces  = regexp.MustCompile(`\s+`)
)

// tfError is TensorFlow's message as one sentence-like line: without the
// graph's node trace, the batch's label list, or line breaks.
// A failure on one value of the data is a *model.ValueOutOfRange.
func tfError(msg string) error {
	var value *model.ValueOutOfRange
	msg = nodeTrace.ReplaceAllString(msg, "")
	msg = labelRange.ReplaceAllStringFunc(msg, func(m string) string {
		g := labelRange.FindStringSubmatch(m)
		label := "a label is " + g[1]
		v, _ := strconv.ParseFloat(g[1], 64)
		if g[1] == "-9223372036854775808" { // a NaN label, cast to an integer
			label, v = "a label is NaN (or past int64)", math.NaN()
		}
		value = &model.ValueOutOfRange{Label: true, Value: v}
		return fmt.Sprintf("%s, outside the model's %s classes [0, %s) (the labels of a sparse categorical loss are class indices) ", label, g[2], g[2])
	})
	msg = idRange.ReplaceAllStringFunc(msg, func(m string) string {
		g := idRange.FindStringSubmatch(m)
		n, _ := strconv.Atoi(g[2])
		v, _ := strconv.ParseFloat(g[1], 64)
		value = &model.ValueOutOfRange{Value: v}
		return fmt.Sprintf("an input id is %s, outside the %d rows of a lookup (an Embedding layer's input_dim, or a lookup table's size), which take ids 0 to %d: check the input data, or build the layer with a larger input_dim", g[1], n, n-1)
	})
	msg = strings.TrimSpace(spaces.ReplaceAllString(msg, " "))
	if value != nil {
		value.Msg = msg
		return value
	}
	return errors.New(msg)
}
