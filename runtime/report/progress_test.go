package report

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProgress(t *testing.T) {
	logs := []Metric{{"accuracy", 0.5}, {"loss", 0.6931}}
	tests := []struct {
		name       string
		steps      int
		run        int // Step calls
		isTerminal bool
		wantOutput bool
	}{
		{"not a terminal", 32, 32, false, false},
		{"not a terminal, unknown steps", 0, 5, false, false},
		{"terminal", 32, 32, true, true},
		{"terminal, unknown steps", 0, 5, true, true},
		{"terminal, more steps than said", 3, 5, true, true},
		{"terminal, no steps", 3, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			p := NewProgress(&out, tt.steps, tt.isTerminal)
			for range tt.run {
				p.Step(logs)
			}
			p.Done()
			p.Done() // twice is harmless
			got := out.String()
			if !tt.wantOutput {
				if got != "" {
					t.Errorf("wrote %q, want nothing", got)
				}
				return
			}
			if !strings.Contains(got, "accuracy: 0.5000 - loss: 0.6931") {
				t.Errorf("bar %q does not show the metrics", got)
			}
			// The bar ends its line, once, so the epoch line written next
			// stands on a line of its own.
			if !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
				t.Errorf("bar %q does not end with one newline", got)
			}
		})
	}
}

func TestNilProgress(t *testing.T) {
	var p *Progress
	p.Step([]Metric{{"loss", 1}})
	p.Done()
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name string
		w    io.Writer
	}{
		{"buffer", &bytes.Buffer{}},
		{"file", f},
	}
	for _, tt := range tests {
		if IsTerminal(tt.w) {
			t.Errorf("IsTerminal(%s) = true", tt.name)
		}
	}
}
