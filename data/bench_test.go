package data

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sbinet/npyio"
)

// The benchmark data: 100k examples of 10 float32 features, what a small
// tabular channel looks like, read in shuffled batches of Keras's default
// 32 rows.
const (
	benchRows  = 100_000
	benchCols  = 10
	benchBatch = 32
)

// benchFile writes a (100000, 10) array. For Fortran files the bytes are
// not transposed: only the access pattern matters to a benchmark.
func benchFile(b *testing.B, dt DType, fortran bool) string {
	return benchFileOf(b, dt, fortran, benchRows)
}

// benchFileOf is benchFile of rows rows.
func benchFileOf(b *testing.B, dt DType, fortran bool, rows int) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "train.npy")
	h := Header{DType: dt, Fortran: fortran, Shape: []int{rows, benchCols}}
	data := make([]byte, h.DataLen())
	var f64 [benchCols]float64
	for r := range rows {
		for c := range benchCols {
			f64[c] = float64(r) + float64(c)/16
		}
		encodeFloat(data[r*benchCols*dt.Size():], dt, f64[:])
	}
	if err := os.WriteFile(p, append(encodeHeader(h), data...), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkLoadAndGather is the reason this package has its own reader:
// one op opens the file and gathers one shuffled epoch of 32-row batches.
// sagefit maps the file and copies rows; npyio decodes every element
// through its own Read call into a []float32 first (given a bufio.Reader,
// as a careful user would; unbuffered it makes a syscall per element).
func BenchmarkLoadAndGather(b *testing.B) {
	path := benchFile(b, Float32, false)
	order := orderRows(benchRows, 1, 0)
	rowBytes := benchCols * 4
	report := func(b *testing.B) {
		b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	}
	b.Run("sagefit-mmap", func(b *testing.B) {
		batch := make([]byte, benchBatch*rowBytes)
		for b.Loop() {
			a, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			for lo := 0; lo < benchRows; lo += benchBatch {
				rows := order[lo:min(lo+benchBatch, benchRows)]
				if err := a.Gather(batch[:len(rows)*rowBytes], Float32, rows); err != nil {
					b.Fatal(err)
				}
			}
			a.Close()
		}
		report(b)
	})
	npyio := func(buffered bool) func(b *testing.B) {
		return func(b *testing.B) {
			batch := make([]float32, benchBatch*benchCols)
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				var r io.Reader = f
				if buffered {
					r = bufio.NewReaderSize(f, 1<<16)
				}
				var all []float32
				if err := npyio.Read(r, &all); err != nil {
					b.Fatal(err)
				}
				f.Close()
				for lo := 0; lo < benchRows; lo += benchBatch {
					rows := order[lo:min(lo+benchBatch, benchRows)]
					for i, row := range rows {
						copy(batch[i*benchCols:(i+1)*benchCols], all[row*benchCols:(row+1)*benchCols])
					}
				}
			}
			report(b)
		}
	}
	b.Run("npyio-bufio", npyio(true))
	b.Run("npyio-unbuffered", npyio(false))
}

// BenchmarkGather measures one shuffled 32-row batch from an open array:
// the per-step cost in the fit loop, for the copy path and the converting
// paths.
func BenchmarkGather(b *testing.B) {
	for _, tt := range []struct {
		name    string
		src     DType
		fortran bool
		dst     DType
	}{
		{"float32-copy", Float32, false, Float32},
		{"float64-to-float32", Float64, false, Float32},
		{"uint8-to-float32", Uint8, false, Float32},
		{"float32-to-float16", Float32, false, Float16},
		{"fortran-float32", Float32, true, Float32},
	} {
		b.Run(tt.name, func(b *testing.B) {
			a, err := Open(benchFile(b, tt.src, tt.fortran))
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			order := orderRows(benchRows, 1, 0)
			batch := make([]byte, benchBatch*benchCols*tt.dst.Size())
			i := 0
			for b.Loop() {
				if i+benchBatch > benchRows {
					i = 0
				}
				if err := a.Gather(batch, tt.dst, order[i:i+benchBatch]); err != nil {
					b.Fatal(err)
				}
				i += benchBatch
			}
			b.ReportMetric(float64(benchBatch)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkGatherParts is BenchmarkGather's copy from the same rows in a
// channel of 4 parts: a shuffled batch's rows fall in every part.
func BenchmarkGatherParts(b *testing.B) {
	parts := make([]*Array, 4)
	for i := range parts {
		a, err := Open(benchFileOf(b, Float32, false, benchRows/len(parts)))
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		parts[i] = a
	}
	s, err := newPartsSource(parts)
	if err != nil {
		b.Fatal(err)
	}
	order := orderRows(s.Len(), 1, 0)
	batch := make([]byte, benchBatch*benchCols*4)
	i := 0
	for b.Loop() {
		if i+benchBatch > len(order) {
			i = 0
		}
		if err := s.Gather(batch, Float32, order[i:i+benchBatch]); err != nil {
			b.Fatal(err)
		}
		i += benchBatch
	}
	b.ReportMetric(float64(benchBatch)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkEpoch is the batch iterator's throughput: one op is a full
// shuffled epoch through Dataset.Epoch (features and labels, background
// assembly, buffer reuse), consumed as fast as possible.
func BenchmarkEpoch(b *testing.B) {
	x, err := Open(benchFile(b, Float32, false))
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	yp := filepath.Join(b.TempDir(), "labels.npy")
	labels := make([]byte, 8*benchRows)
	for r := range benchRows {
		binary.LittleEndian.PutUint64(labels[8*r:], uint64(r%10))
	}
	if err := WriteNPY(yp, Int64, []int{benchRows}, labels); err != nil {
		b.Fatal(err)
	}
	y, err := Open(yp)
	if err != nil {
		b.Fatal(err)
	}
	defer y.Close()
	d, err := NewDataset(map[string]*Array{"x": x, "y": y})
	if err != nil {
		b.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		prefetch int
		batch    int
		dtype    DType         // what the model wants for x
		work     time.Duration // simulated train step per batch
	}{
		{"batch=32/prefetch=none", 0, 32, Float32, 0},
		{"batch=32/prefetch=2", 2, 32, Float32, 0},
		{"batch=256/prefetch=2", 2, 256, Float32, 0},
		// A consumer that works as long as a batch takes to assemble
		// (converting to float16 here): prefetch overlaps the two.
		{"batch=256/f16/step=20us/prefetch=none", -1, 256, Float16, 20 * time.Microsecond},
		{"batch=256/f16/step=20us/prefetch=2", 2, 256, Float16, 20 * time.Microsecond},
		{"batch=256/f16/step=20us/prefetch=8", 8, 256, Float16, 20 * time.Microsecond},
	} {
		b.Run(tt.name, func(b *testing.B) {
			epoch := 0
			var sink float32
			for b.Loop() {
				it := d.Epoch(context.Background(), epoch, BatchOptions{BatchSize: tt.batch, Shuffle: true, Prefetch: tt.prefetch,
					DTypes: map[string]DType{"x": tt.dtype}})
				for {
					bt, err := it.Next(context.Background())
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					sink += math.Float32frombits(binary.LittleEndian.Uint32(bt.Tensors["x"]))
					bt.Release()
					if tt.work > 0 {
						spin(tt.work)
					}
				}
				it.Close()
				epoch++
			}
			_ = sink
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// spin busies the CPU for d, standing in for a train step (sleeping would
// hand the core to the producer and flatter prefetch).
func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

// BenchmarkOpenCSV parses the benchmark data as a text/csv channel (label
// first, then the features), which OpenCSV reads whole into memory, next to
// mapping the same rows as .npy.
func BenchmarkOpenCSV(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "train.csv")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for r := range benchRows {
		fmt.Fprintf(w, "%d", r%2)
		for c := range benchCols {
			fmt.Fprintf(w, ",%g", float32(r)+float32(c)/16)
		}
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	b.ResetTimer()
	for b.Loop() {
		label, features, err := OpenCSV(path)
		if err != nil {
			b.Fatal(err)
		}
		label.Close()
		features.Close()
	}
	b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
