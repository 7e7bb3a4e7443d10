package report

import (
	"io"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// IsTerminal reports whether w is a terminal, such as os.Stdout in an
// interactive shell. Under SageMaker stdout goes to CloudWatch and is not.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// Progress is the progress bar of one epoch, with the latest metrics after
// it. It draws only on a terminal; elsewhere (CloudWatch, a file) its
// methods do nothing, so that logs hold the epoch lines alone, as do those
// of a nil *Progress. On a terminal the bar ends its line when the epoch
// does (as Keras's Progbar), so the epoch line after it stands on a line of
// its own whatever the terminal: one narrower than the bar, or a TTY whose
// output is read back as log lines (SageMaker's local mode gives each
// container one), where a bar cleared with carriage returns would leave the
// epoch line behind it on the same line.
type Progress struct {
	bar   *progressbar.ProgressBar // nil when not drawing
	w     io.Writer
	drawn bool // the bar is on the line
}

// NewProgress starts the bar of an epoch of steps steps (0 or less: not
// known, which draws a spinner) on w. Pass isTerminal as IsTerminal(w).
func NewProgress(w io.Writer, steps int, isTerminal bool) *Progress {
	if !isTerminal {
		return &Progress{}
	}
	max := steps
	if steps <= 0 {
		max = -1
	}
	bar := progressbar.NewOptions(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(20),
		progressbar.OptionShowCount(),
		progressbar.OptionSetItsString("step"),
		progressbar.OptionShowIts(),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionThrottle(50*time.Millisecond), // Keras's Progbar interval
		progressbar.OptionSetSpinnerChangeInterval(0),   // draw on Step only: no goroutine
	)
	return &Progress{bar: bar, w: w}
}

// Step records one finished step and shows logs, the metrics so far this
// epoch, after the bar.
func (p *Progress) Step(logs []Metric) {
	if p == nil || p.bar == nil {
		return
	}
	parts := make([]string, len(logs))
	for i, m := range logs {
		parts[i] = m.Name + ": " + formatValue(m.Value, true)
	}
	p.bar.Describe(strings.Join(parts, " - "))
	_ = p.bar.Add(1) // errors only past the last step; a bar is no reason to stop
	p.drawn = true
}

// Done ends the bar's line (the bar stays as it last was, like Keras's), so
// that what is written next, the epoch line, starts a line of its own. It
// writes nothing when the bar never drew.
func (p *Progress) Done() {
	if p == nil || p.bar == nil {
		return
	}
	_ = p.bar.Exit() // no more drawing
	if p.drawn {
		_, _ = io.WriteString(p.w, "\n")
		p.drawn = false
	}
}
