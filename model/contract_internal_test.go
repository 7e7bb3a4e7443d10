package model

import (
	"slices"
	"strings"
	"testing"
)

// Two gradients may share a name (one layer name in two sub-models), one of
// them sparse: the export says which by its place, and the row sizes follow
// the place. An earlier export that names it only is ambiguous where it
// lists the name fewer times than the gradients have it (every multi-host
// step failed on the sizes; such a job is now refused in a sentence).
func TestSparseGradientsByPlace(t *testing.T) {
	meta := func(indexes []int) *Metadata {
		return &Metadata{
			Variables: []VariableSpec{{Name: "v", DType: "float32", Shape: []int64{1}}},
			Metrics:   []string{"loss"},
			Gradients: []VariableSpec{
				{Name: "emb/embeddings", DType: "float32", Shape: []int64{50, 4}},
				{Name: "emb/embeddings", DType: "float32", Shape: []int64{20, 3}},
				{Name: "out/kernel", DType: "float32", Shape: []int64{7, 1}},
			},
			GradientSize:          50*4 + 20*3 + 7,
			SparseGradients:       []string{"emb/embeddings"},
			SparseGradientIndexes: indexes,
		}
	}
	m := meta([]int{1})
	if err := m.consistent(); err != nil {
		t.Fatal(err)
	}
	if rows, dense := m.SparseRowSizes(); !slices.Equal(rows, []int{3}) || dense != 50*4+7 {
		t.Errorf("row sizes %v, dense %d; want [3], %d (the second emb/embeddings)", rows, dense, 50*4+7)
	}
	if name := m.AmbiguousSparse(); name != "" {
		t.Errorf("an export with places: %q ambiguous", name)
	}
	// An earlier export, names only: one of two listed is ambiguous (a
	// multi-host job refuses it), both listed are not.
	m = meta(nil)
	if err := m.consistent(); err != nil || m.AmbiguousSparse() != "emb/embeddings" {
		t.Errorf("names only, one of two: %v, ambiguous %q", err, m.AmbiguousSparse())
	}
	m.SparseGradients = []string{"emb/embeddings", "emb/embeddings"}
	if rows, _ := m.SparseRowSizes(); m.AmbiguousSparse() != "" || !slices.Equal(rows, []int{4, 3}) {
		t.Errorf("names only, both listed: ambiguous %q, rows %v", m.AmbiguousSparse(), rows)
	}
	for _, c := range []struct {
		indexes []int
		want    string
	}{
		{[]int{2}, `sparse gradient "emb/embeddings" is not a gradient of rows`},
		{[]int{0, 1}, "sparse_gradient_indexes has 2 places for 1 sparse_gradients"},
		{[]int{3}, `sparse gradient "emb/embeddings" is not a gradient of rows`},
	} {
		if err := meta(c.indexes).consistent(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("indexes %v: %v, want %q", c.indexes, err, c.want)
		}
	}
	m = meta([]int{0, 1})
	m.SparseGradients = []string{"emb/embeddings", "emb/embeddings"}
	m.SparseGradientIndexes = []int{1, 0}
	if err := m.consistent(); err == nil || !strings.Contains(err.Error(), "not in the gradients' order") {
		t.Errorf("indexes out of order: %v", err)
	}
}
