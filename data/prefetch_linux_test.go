package data

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// evictedNPY writes rows of per int32 values each (row r's elements
// from+r*per+e) to path and drops the file from the page cache, as a file
// larger than memory, or one not read since the machine started, is.
func evictedNPY(tb testing.TB, path string, rows, per, from int) {
	tb.Helper()
	b := make([]byte, 4*rows*per)
	for i := range rows * per {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(from+i))
	}
	if err := WriteNPY(path, Int32, []int{rows, per}, b); err != nil {
		tb.Fatal(err)
	}
	evict(tb, path, 0, 0)
}

// evict drops bytes [off, off+n) of path (n 0: to its end) from the page
// cache. Written pages are dirty, and stay in memory until written back:
// synced first. A page a process has mapped and touched stays too.
func evict(tb testing.TB, path string, off, n int64) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED); err != nil {
		tb.Fatal(err)
	}
}

// TestColdRowsAreReadAhead: an epoch over files not in memory (one array,
// a channel in parts, validation_split's part of one) asks for its rows
// ahead, and gathers exactly the rows it gathers from memory; once every
// row of a file was read, it is in memory and nothing is asked for again.
func TestColdRowsAreReadAhead(t *testing.T) {
	const rows, per = 3000, 300 // 1,200 bytes a row: rows straddle pages
	dir := t.TempDir()
	open := func(name string, n, firstRow int) *Array {
		path := filepath.Join(dir, name)
		evictedNPY(t, path, n, per, firstRow*per)
		a, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	whole := open("x.npy", rows, 0)
	if whole.survey() == nil {
		t.Skip("the file system kept the evicted file in memory (tmpfs?)")
	}
	parts, err := newPartsSource([]*Array{open("p0.npy", 1000, 0), open("p1.npy", 2000, 1000)})
	if err != nil {
		t.Fatal(err)
	}
	split, err := (&Dataset{names: []string{"x"}, sources: map[string]rowSource{"x": open("s.npy", rows, 0)}, n: rows}).Rows(1000, rows)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		src   rowSource
		first int // the file row of the source's row 0
	}{
		{"array", whole, 0},
		{"parts", parts, 0},
		{"split", split.sources["x"], 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := newDataset(map[string]rowSource{"x": c.src})
			if err != nil {
				t.Fatal(err)
			}
			if len(d.coldSources()) != 1 {
				t.Fatal("the evicted file is not cold")
			}
			seen := make([]bool, d.Len())
			it := d.Epoch(context.Background(), 0, BatchOptions{BatchSize: 64, Shuffle: true, Seed: 3})
			defer it.Close()
			for {
				b, err := it.Next(context.Background())
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				x := b.Tensors["x"]
				for i := range b.Rows {
					first := int(binary.LittleEndian.Uint32(x[4*i*per:]))
					r := first/per - c.first
					if first%per != 0 || r < 0 || r >= d.Len() || seen[r] {
						t.Fatalf("batch %d row %d starts with element %d: no row of the source, or one gathered twice", b.Step, i, first)
					}
					seen[r] = true
					for e := range per {
						if got := int(binary.LittleEndian.Uint32(x[4*(i*per+e):])); got != first+e {
							t.Fatalf("batch %d row %d element %d = %d, want %d", b.Step, i, e, got, first+e)
						}
					}
				}
			}
			for r, ok := range seen {
				if !ok {
					t.Fatalf("row %d was never gathered", r)
				}
			}
			// A part of a file asks about the whole file: the split's
			// first 1000 rows (validation_split's other part) are unread.
			if stillCold := len(d.coldSources()) != 0; stillCold != (c.name == "split") {
				t.Errorf("every row was read; still cold: %v", stillCold)
			}
		})
	}
}

// TestNearlyWarmFileAsksForItsColdRowsOnly: a file with some of its pages
// out of memory asks for the rows on those only (a review: asked for
// whole, a system call per row, such a file's epoch ran 5-8x slower than
// without the read-ahead), one with a few out asks for nothing, and a
// file mostly out of memory asks for every row, as the pages in memory at
// the epoch's start may be gone by their turn.
func TestNearlyWarmFileAsksForItsColdRowsOnly(t *testing.T) {
	const rows, per = 4096, 256 // 1 KiB rows, 4 MiB
	path := filepath.Join(t.TempDir(), "x.npy")
	evictedNPY(t, path, rows, per, 0)
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	cold, ok := a.survey().(arrayRows)
	if !ok {
		t.Skip("the file system kept the evicted file in memory (tmpfs?)")
	}
	if cold.resident != nil {
		t.Error("a file all out of memory asks for its rows by residency")
	}
	rowsOf := func(lo, hi int) []int {
		var r []int
		for i := lo; i < hi; i++ {
			r = append(r, i)
		}
		return r
	}
	all := rowsOf(0, rows)
	buf := make([]byte, len(all)*per*4)
	if err := a.Gather(buf, Int32, all); err != nil { // every page in memory
		t.Fatal(err)
	}
	if a.survey() != nil {
		t.Fatal("a file all in memory is asked for")
	}
	// Rows 1000-1799 out of memory again (a mapped page the process
	// touched is not dropped: unmap first).
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	evict(t, path, 128+1000*per*4, 800*per*4)
	if a, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	nearly, ok := a.survey().(arrayRows)
	if !ok || nearly.resident == nil {
		t.Fatalf("a file a fifth out of memory: %#v, want its rows asked for by residency", nearly)
	}
	page := os.Getpagesize()
	for _, r := range []int{0, 999, 1801, 4095} {
		if p := (128 + r*per*4) / page; nearly.resident[p]&1 == 0 {
			t.Errorf("row %d's page %d out of memory", r, p)
		}
	}
	if p := (128 + 1500*per*4) / page; nearly.resident[p]&1 != 0 {
		t.Errorf("row 1500's page %d in memory", p)
	}

	// Nearly all in memory (three pages out of 1,025): not asked for.
	if err := a.Gather(buf, Int32, all); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	evict(t, path, int64(10*page), int64(3*page))
	if a, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if vec := residency(a.mapping); pagesOut(vec) != 3 {
		t.Fatalf("%d of %d pages out of memory, want 3", pagesOut(vec), len(vec))
	}
	if c := a.survey(); c != nil {
		t.Errorf("a file nearly all in memory is asked for: %#v", c)
	}
}

// BenchmarkColdEpoch: an epoch of 256-row batches over a 256 MiB file of
// 4 KiB rows dropped from the page cache before each (a file larger than
// memory, or one not read since the machine started), shuffled, with the
// read-ahead and without; and the disk's own limit, the file read from
// start to end in 4 MiB reads after the same eviction. MB/s of the file.
func BenchmarkColdEpoch(b *testing.B) {
	const rows, per = 65536, 1024
	path := filepath.Join(b.TempDir(), "x.npy")
	evictedNPY(b, path, rows, per, 0)
	epoch := func(b *testing.B, ahead bool) {
		defer func(was bool) { readAhead = was }(readAhead)
		readAhead = ahead
		b.SetBytes(rows * per * 4)
		for i := range b.N {
			// Pages a process maps stay in memory: evicted unmapped.
			b.StopTimer()
			evict(b, path, 0, 0)
			a, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			d, err := NewDataset(map[string]*Array{"x": a})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			it := d.Epoch(context.Background(), i, BatchOptions{BatchSize: 256, Shuffle: true, Seed: 1})
			for {
				if _, err := it.Next(context.Background()); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
			it.Close()
			b.StopTimer()
			a.Close()
			b.StartTimer()
		}
	}
	b.Run("read-ahead", func(b *testing.B) { epoch(b, true) })
	b.Run("no-read-ahead", func(b *testing.B) { epoch(b, false) })
	b.Run("sequential-read", func(b *testing.B) {
		b.SetBytes(rows * per * 4)
		buf := make([]byte, 4<<20)
		for range b.N {
			b.StopTimer()
			evict(b, path, 0, 0)
			b.StartTimer()
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := f.Read(buf); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
		}
	})
}
