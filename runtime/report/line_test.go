package report

import (
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestEpochLine(t *testing.T) {
	tests := []struct {
		name          string
		epoch, epochs int
		steps         int
		elapsed       time.Duration
		logs          []Metric
		want          string
	}{
		{
			name: "keras example", epoch: 3, epochs: 10, steps: 320, elapsed: 960 * time.Millisecond,
			logs: []Metric{{"accuracy", 0.51}, {"loss", 0.69314718}, {"val_accuracy", 0.5}, {"val_loss", 0.694}},
			want: "Epoch 3/10 - 320/320 - 1s - 3ms/step - accuracy: 0.5100 - loss: 0.6931 - val_accuracy: 0.5000 - val_loss: 0.6940",
		},
		{
			name: "small, zero, negative and large values", epoch: 1, epochs: 2, steps: 10, elapsed: 25 * time.Second,
			logs: []Metric{{"a", 1.2e-5}, {"b", 0}, {"c", 1e-3}, {"d", 0.0011}, {"e", -0.5}, {"f", 12345.678}, {"g", 1e-100}},
			want: "Epoch 1/2 - 10/10 - 25s - 2s/step - a: 1.2000e-05 - b: 0.0000e+00 - c: 1.0000e-03 - d: 0.0011 - e: -5.0000e-01 - f: 12345.6780 - g: 1.0000e-100",
		},
		{
			name: "not finite", epoch: 2, epochs: 2, steps: 4, elapsed: 2 * time.Millisecond,
			logs: []Metric{{"loss", math.NaN()}, {"x", math.Inf(1)}, {"y", math.Inf(-1)}},
			want: "Epoch 2/2 - 4/4 - 0s - 500us/step - loss: nan - x: inf - y: -inf",
		},
		{
			name: "steps not known", epoch: 5, epochs: 0, steps: 0, elapsed: 1500 * time.Millisecond,
			logs: []Metric{{"loss", 0.25}},
			want: "Epoch 5 - 2s - loss: 0.2500",
		},
		{
			name: "one step of a second", epoch: 1, epochs: 1, steps: 1, elapsed: time.Second,
			want: "Epoch 1/1 - 1/1 - 1s - 1s/step",
		},
		{
			name: "no time", epoch: 1, epochs: 1, steps: 8, elapsed: 0,
			want: "Epoch 1/1 - 8/8 - 0s - 0s/step",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EpochLine(tt.epoch, tt.epochs, tt.steps, tt.elapsed, tt.logs)
			if got != tt.want {
				t.Errorf("EpochLine\n got %q\nwant %q", got, tt.want)
			}
			if strings.Contains(got, "\n") {
				t.Errorf("EpochLine %q spans lines", got)
			}
		})
	}
}

// The regexes scrape an epoch line as SageMaker would: the first match's
// first group, read as a float.
func TestMetricRegex(t *testing.T) {
	line := EpochLine(3, 10, 32, time.Second, []Metric{
		{"accuracy", 0.51}, {"loss", 1.2e-5}, {"val_accuracy", 0.5}, {"val_loss", 0.694}, {"top-k (5)", 0.9}, {"neg", -0.25},
	})
	tests := []struct {
		regex string
		want  float64
	}{
		{MetricRegex("loss"), 1.2e-5},
		{MetricRegex("val_loss"), 0.694},
		{MetricRegex("accuracy"), 0.51},
		{MetricRegex("val_accuracy"), 0.5},
		{MetricRegex("top-k (5)"), 0.9},
		{MetricRegex("neg"), -0.25},
		{`Epoch ([0-9]+)/`, 3},
		// The short form also finds the training loss first, but not its
		// exponent.
		{`loss: ([0-9\.]+)`, 1.2},
	}
	for _, tt := range tests {
		m := regexp.MustCompile(tt.regex).FindStringSubmatch(line)
		if m == nil {
			t.Errorf("%q does not match %q", tt.regex, line)
			continue
		}
		got, err := strconv.ParseFloat(m[1], 64)
		if err != nil || got != tt.want {
			t.Errorf("%q captures %q (%v), want %v", tt.regex, m[1], err, tt.want)
		}
	}

	// val_loss first: loss still finds its own value.
	line = EpochLine(1, 1, 1, 0, []Metric{{"val_loss", 0.7}, {"loss", 0.6}})
	if m := regexp.MustCompile(MetricRegex("loss")).FindStringSubmatch(line); m == nil || m[1] != "0.6000" {
		t.Errorf("%q on %q gives %q, want 0.6000", MetricRegex("loss"), line, m)
	}
	// A value SageMaker cannot read does not match.
	line = EpochLine(1, 1, 1, 0, []Metric{{"loss", math.NaN()}, {"val_loss", math.Inf(-1)}})
	for _, name := range []string{"loss", "val_loss"} {
		if m := regexp.MustCompile(MetricRegex(name)).FindStringSubmatch(line); m != nil {
			t.Errorf("%q matches %q in %q", MetricRegex(name), m[1], line)
		}
	}
}

// The regexes in doc.go are the ones MetricRegex builds.
func TestDocRegexes(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"loss", "val_loss", "val_accuracy"} {
		want := `"Regex": "` + MetricRegex(name) + `"`
		if !strings.Contains(string(doc), want) {
			t.Errorf("doc.go does not show %s", want)
		}
	}
}
