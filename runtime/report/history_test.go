package report

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestHistoryAppend(t *testing.T) {
	var h History
	h.Append([]Metric{{"loss", 0.7}, {"accuracy", 0.5}})
	h.Append([]Metric{{"loss", 0.6}, {"accuracy", 0.6}, {"val_loss", 0.65}, {"val_accuracy", 0.55}})
	h.Append([]Metric{{"loss", 0.5}, {"accuracy", 0.7}})

	if got, want := h.Names(), []string{"loss", "accuracy", "val_loss", "val_accuracy"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %q, want %q", got, want)
	}
	tests := []struct {
		name string
		want []float64
	}{
		{"loss", []float64{0.7, 0.6, 0.5}},
		{"accuracy", []float64{0.5, 0.6, 0.7}},
		{"val_loss", []float64{0.65}},
		{"missing", nil},
	}
	for _, tt := range tests {
		if got := h.Values(tt.name); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Values(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	if h.Epochs() != 3 {
		t.Errorf("Epochs = %d, want 3", h.Epochs())
	}
	h.Values("loss")[0] = 99 // a copy
	if h.Values("loss")[0] != 0.7 {
		t.Error("Values shares its slice with the history")
	}
}

func TestSortMetrics(t *testing.T) {
	logs := []Metric{{"val_loss", 4}, {"loss", 2}, {"val_accuracy", 3}, {"accuracy", 1}}
	got := SortMetrics(logs)
	want := []Metric{{"accuracy", 1}, {"loss", 2}, {"val_accuracy", 3}, {"val_loss", 4}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SortMetrics = %v, want %v", got, want)
	}
	if logs[0].Name != "val_loss" {
		t.Error("SortMetrics changed its argument")
	}
}

func TestHistoryWriteJSON(t *testing.T) {
	tests := []struct {
		name string
		logs [][]Metric
		want string
	}{
		{"empty", nil, "{}\n"},
		{
			"two epochs",
			[][]Metric{
				{{"loss", 0.6931471805599453}, {"accuracy", 0.5}, {"val_loss", 0.7}, {"val_accuracy", 0.25}},
				{{"loss", 0.5}, {"accuracy", 0.75}, {"val_loss", 1e-7}, {"val_accuracy", 1}},
			},
			"{\n  \"loss\": [0.6931471805599453, 0.5],\n  \"accuracy\": [0.5, 0.75],\n" +
				"  \"val_loss\": [0.7, 1e-7],\n  \"val_accuracy\": [0.25, 1]\n}\n",
		},
		{
			"not finite",
			[][]Metric{{{"loss", math.NaN()}}, {{"loss", math.Inf(1)}}, {{"loss", 2}}},
			"{\n  \"loss\": [null, null, 2]\n}\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h History
			for _, logs := range tt.logs {
				h.Append(logs)
			}
			path := filepath.Join(t.TempDir(), "history.json")
			if err := h.WriteJSON(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("history.json\n got %q\nwant %q", got, tt.want)
			}
			back, err := ReadHistoryJSON(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Names(), h.Names()) {
				t.Errorf("names read back %q, want %q", back.Names(), h.Names())
			}
			for _, name := range h.Names() {
				if !sameValues(back.Values(name), h.Values(name)) {
					t.Errorf("%s read back %v, want %v", name, back.Values(name), h.Values(name))
				}
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("the folder holds %d files, want only history.json", len(entries))
			}
		})
	}
}

// sameValues compares values, with infinities written as null and read
// back as NaN.
func sameValues(got, want []float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		finite := !math.IsNaN(want[i]) && !math.IsInf(want[i], 0)
		if finite && got[i] != want[i] || !finite && !math.IsNaN(got[i]) {
			return false
		}
	}
	return true
}

// What Keras users have: json.dump(history.history, f), and pandas-style
// spacing, read with key order kept.
func TestReadHistoryJSON(t *testing.T) {
	tests := []struct {
		name      string
		text      string
		wantNames []string
		wantLoss  []float64
		wantErr   string
	}{
		{
			name:      "json.dump of Keras 3",
			text:      `{"accuracy": [0.5, 0.75], "loss": [0.69, 0.5], "val_accuracy": [0.5, 0.5], "val_loss": [0.7, 0.6]}`,
			wantNames: []string{"accuracy", "loss", "val_accuracy", "val_loss"},
			wantLoss:  []float64{0.69, 0.5},
		},
		{
			name:      "Keras 2 order, indented",
			text:      "{\n    \"loss\": [\n        0.3\n    ],\n    \"acc\": [\n        0.9\n    ]\n}",
			wantNames: []string{"loss", "acc"},
			wantLoss:  []float64{0.3},
		},
		{name: "list", text: `[1, 2]`, wantErr: "a history is a JSON object of metric names to lists of numbers"},
		{name: "not a list", text: `{"loss": 0.5}`, wantErr: `metric "loss": json: cannot unmarshal number into Go value of type []*float64`},
		{name: "strings", text: `{"loss": ["a"]}`, wantErr: `metric "loss": json: cannot unmarshal string into Go value of type float64`},
		{name: "twice", text: `{"loss": [1], "loss": [2]}`, wantErr: `metric "loss" appears twice`},
		{name: "cut short", text: `{"loss": [1]`, wantErr: `the JSON ends before the history does`},
		{name: "cut in a list", text: `{"loss": [1, 2`, wantErr: `the JSON ends before the history does`},
		{name: "empty", text: ``, wantErr: `a history is a JSON object of metric names to lists of numbers`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "history.json")
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			h, err := ReadHistoryJSON(path)
			if tt.wantErr != "" {
				want := "read history " + path + ": " + tt.wantErr
				if err == nil || err.Error() != want {
					t.Errorf("error = %v, want %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h.Names(), tt.wantNames) || !reflect.DeepEqual(h.Values("loss"), tt.wantLoss) {
				t.Errorf("read %q with loss %v, want %q with %v", h.Names(), h.Values("loss"), tt.wantNames, tt.wantLoss)
			}
		})
	}
	if _, err := ReadHistoryJSON(filepath.Join(t.TempDir(), "none.json")); err == nil || !strings.HasPrefix(err.Error(), "read history: ") {
		t.Errorf("missing file error = %v", err)
	}
}
