package data_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/sagefit/sagefit/data"
)

// writeExample writes x.npy (6 rows of 2 float32 features: row r holds r
// and 10r) and labels.npy (6 int64 labels) into a new folder.
func writeExample() string {
	dir, _ := os.MkdirTemp("", "sagefit-example-")
	var x, y []byte
	for r := range 6 {
		x = binary.LittleEndian.AppendUint32(x, math.Float32bits(float32(r)))
		x = binary.LittleEndian.AppendUint32(x, math.Float32bits(float32(10*r)))
		y = binary.LittleEndian.AppendUint64(y, uint64(r%2))
	}
	data.WriteNPY(filepath.Join(dir, "x.npy"), data.Float32, []int{6, 2}, x)
	data.WriteNPY(filepath.Join(dir, "labels.npy"), data.Int64, []int{6}, y)
	return dir
}

// A channel folder mapped onto a model with input "x" and target "y" (the
// seed's labels.npy name is known), read in batches of 4 without shuffling;
// the labels arrive as float32, the dtype the model asks for.
func ExampleOpenChannel() {
	dir := writeExample()
	defer os.RemoveAll(dir)
	ds, err := data.OpenChannel(dir, []string{"x"}, []string{"y"}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ds.Close()
	it := ds.Epoch(context.Background(), 0, data.BatchOptions{BatchSize: 4, DTypes: map[string]data.DType{"y": data.Float32}})
	defer it.Close()
	for {
		b, err := it.Next(context.Background())
		if err != nil {
			break // io.EOF after the last batch
		}
		fmt.Printf("%d rows: first x %v, y bytes %d\n", b.Rows,
			math.Float32frombits(binary.LittleEndian.Uint32(b.Tensors["x"][4:])), len(b.Tensors["y"]))
		b.Release()
	}
	// Output:
	// 4 rows: first x 0, y bytes 16
	// 2 rows: first x 40, y bytes 8
}

// Two ranks share every global batch: rank 1 of 2 with batch 2 takes rows
// 2-3 of the first global batch of 4, then row 5 of the short last one.
func ExampleDataset_Epoch() {
	dir := writeExample()
	defer os.RemoveAll(dir)
	ds, _ := data.OpenChannel(dir, []string{"x"}, []string{"y"}, nil)
	defer ds.Close()
	it := ds.Epoch(context.Background(), 0, data.BatchOptions{BatchSize: 2, Rank: 1, World: 2, Prefetch: 2})
	defer it.Close()
	fmt.Println("steps:", it.StepsPerEpoch())
	for {
		b, err := it.Next(context.Background())
		if err != nil {
			break
		}
		x := b.Tensors["x"]
		for r := range b.Rows {
			fmt.Println("row", math.Float32frombits(binary.LittleEndian.Uint32(x[8*r:])))
		}
		b.Release()
	}
	// Output:
	// steps: 2
	// row 2
	// row 3
	// row 5
}

// One .npy file, memory-mapped; Gather converts the chosen rows to
// another dtype into the caller's buffer.
func ExampleOpen() {
	dir := writeExample()
	defer os.RemoveAll(dir)
	a, err := data.Open(filepath.Join(dir, "x.npy"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	dst := make([]byte, 2*2*8)
	if err := a.Gather(dst, data.Float64, []int{5, 1}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(a.Shape(), a.DType())
	for i := range 4 {
		fmt.Print(math.Float64frombits(binary.LittleEndian.Uint64(dst[8*i:])), " ")
	}
	fmt.Println()
	// Output:
	// [6 2] float32
	// 5 50 1 10
}
