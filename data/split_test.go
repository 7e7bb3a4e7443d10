package data

import (
	"context"
	"reflect"
	"testing"
)

// Rows gives a part of a dataset that batches exactly like a dataset of
// those rows alone.
func TestRowsIsADatasetOfItsOwn(t *testing.T) {
	d, err := newDataset(map[string]rowSource{"x": idSource{n: 10, per: 2}})
	if err != nil {
		t.Fatal(err)
	}
	part, err := d.Rows(7, 10)
	if err != nil {
		t.Fatal(err)
	}
	if part.Len() != 3 {
		t.Fatalf("part has %d rows, want 3", part.Len())
	}
	it := part.Epoch(context.Background(), 0, BatchOptions{BatchSize: 2})
	defer it.Close()
	var rows []int
	for {
		b, err := it.Next(context.Background())
		if err != nil {
			break
		}
		rows = append(rows, batchRows(t, b.Tensors["x"], 2)...)
		b.Release()
	}
	if !reflect.DeepEqual(rows, []int{7, 8, 9}) {
		t.Errorf("rows %v, want [7 8 9]", rows)
	}
	if empty, err := d.Rows(5, 5); err != nil || empty.Len() != 0 {
		t.Errorf("Rows(5, 5) = %v rows, %v; want an empty part", empty, err)
	}
	for _, bad := range [][2]int{{-1, 3}, {4, 11}, {6, 5}} {
		if _, err := d.Rows(bad[0], bad[1]); err == nil {
			t.Errorf("Rows(%d, %d) accepted", bad[0], bad[1])
		}
	}
}
