package report

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// EpochLine formats the end of an epoch as Keras 3 does with verbose=2, with
// the "Epoch 3/10" header on the same line so that one SageMaker
// metric_definitions regex sees the whole epoch:
//
//	Epoch 3/10 - 32/32 - 1s - 3ms/step - accuracy: 0.5100 - loss: 0.6931 - val_accuracy: 0.5000 - val_loss: 0.6940
//
// epoch counts from 1. Metrics come in the order of logs (see
// [SortMetrics] for Keras 3's order). A value above 1e-3 is written with
// four decimals and any other (small, zero or negative, as Keras's
// verbose=2 does) in exponent form, such as 1.2000e-05. With steps 0 (not
// known) the step count and time per step are left out.
func EpochLine(epoch, epochs, steps int, elapsed time.Duration, logs []Metric) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Epoch %d", epoch)
	if epochs > 0 {
		fmt.Fprintf(&b, "/%d", epochs)
	}
	if steps > 0 {
		fmt.Fprintf(&b, " - %d/%d", steps, steps)
	}
	fmt.Fprintf(&b, " - %.0fs", elapsed.Seconds())
	if steps > 0 {
		b.WriteString(" - " + perStep(elapsed.Seconds()/float64(steps)))
	}
	for _, m := range logs {
		b.WriteString(" - " + m.Name + ": " + formatValue(m.Value, false))
	}
	return b.String()
}

// perStep formats the time of one step as Keras's Progbar._format_time.
func perStep(seconds float64) string {
	switch {
	case seconds >= 1 || seconds == 0:
		return fmt.Sprintf("%.0fs/step", seconds)
	case seconds >= 1e-3:
		return fmt.Sprintf("%.0fms/step", seconds*1e3)
	default:
		return fmt.Sprintf("%.0fus/step", seconds*1e6)
	}
}

// formatValue formats a metric as Keras's Progbar: "{:.4f}" above 1e-3,
// "{:.4e}" otherwise. verbose=2 compares the value itself (so negative
// values take the exponent form), the verbose=1 bar its magnitude (byMagnitude).
// NaN and infinities are written as Python writes them.
func formatValue(v float64, byMagnitude bool) string {
	switch {
	case math.IsNaN(v):
		return "nan"
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	}
	cmp := v
	if byMagnitude {
		cmp = math.Abs(v)
	}
	if cmp > 1e-3 {
		return strconv.FormatFloat(v, 'f', 4, 64)
	}
	return strconv.FormatFloat(v, 'e', 4, 64)
}

// MetricRegex returns a regex for SageMaker's metric_definitions that
// captures the value of the metric name in an [EpochLine], in either of its
// forms (0.6931, 1.2000e-05): MetricRegex("loss") is the string
//
//	" - loss: (-?[0-9.]+e?[+-]?[0-9]*)"
//
// which does not match val_loss. A value of nan or inf does not match, as
// SageMaker could not read it as a number anyway.
func MetricRegex(name string) string {
	return ` - ` + regexp.QuoteMeta(name) + `: (-?[0-9.]+e?[+-]?[0-9]*)`
}
