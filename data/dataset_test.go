package data

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// idSource is an in-memory rowSource whose element (r, e) is the int64
// r*100+e, so a batch tells exactly which rows it holds.
type idSource struct {
	n, per int
	fail   error
}

func (s idSource) Path() string    { return "ids.npy" }
func (s idSource) Len() int        { return s.n }
func (s idSource) RowShape() []int { return []int{s.per} }
func (s idSource) DType() DType    { return Int64 }
func (s idSource) TextWidth() int  { return 0 }
func (s idSource) Gather(dst []byte, dt DType, rows []int) error {
	if s.fail != nil {
		return s.fail
	}
	if dt != Int64 || len(dst) != 8*s.per*len(rows) {
		return fmt.Errorf("idSource: bad gather %v %d", dt, len(dst))
	}
	for i, r := range rows {
		for e := range s.per {
			binary.LittleEndian.PutUint64(dst[8*(i*s.per+e):], uint64(r*100+e))
		}
	}
	return nil
}

// batchRows decodes the row ids of a batch of an idSource tensor.
func batchRows(t *testing.T, b []byte, per int) []int {
	t.Helper()
	var rows []int
	for i := 0; i < len(b); i += 8 * per {
		id := int(binary.LittleEndian.Uint64(b[i:]))
		if id%100 != 0 {
			t.Fatalf("row starts with element %d", id%100)
		}
		rows = append(rows, id/100)
	}
	return rows
}

// epochRows runs one epoch for one rank and returns the rows of each step.
func epochRows(t *testing.T, d *Dataset, epoch int, o BatchOptions) [][]int {
	t.Helper()
	it := d.Epoch(context.Background(), epoch, o)
	defer it.Close()
	var steps [][]int
	for {
		b, err := it.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b.Step != len(steps) {
			t.Fatalf("batch step %d, want %d", b.Step, len(steps))
		}
		rows := batchRows(t, b.Tensors["x"], 2)
		if len(rows) != b.Rows {
			t.Fatalf("batch says %d rows, holds %d", b.Rows, len(rows))
		}
		steps = append(steps, rows)
		b.Release()
	}
	if len(steps) != it.StepsPerEpoch() {
		t.Fatalf("got %d steps, StepsPerEpoch says %d", len(steps), it.StepsPerEpoch())
	}
	return steps
}

// TestSharding checks the distributed contract for many shapes of data:
// every rank runs ceil(N/(B*W)) steps, every row is seen exactly once per
// epoch across ranks, full global batches give each rank B rows from its
// contiguous slot, and the last one is split into near-equal contiguous
// parts in rank order.
func TestSharding(t *testing.T) {
	for _, tt := range []struct{ n, batch, world int }{
		{100, 32, 1}, {100, 10, 1}, {96, 32, 3}, {100, 32, 3}, {7, 4, 3}, {2, 4, 3},
		{1, 32, 4}, {0, 32, 2}, {33, 1, 4}, {1000, 32, 8},
	} {
		for _, shuffle := range []bool{false, true} {
			name := fmt.Sprintf("N=%d B=%d W=%d shuffle=%v", tt.n, tt.batch, tt.world, shuffle)
			d, err := newDataset(map[string]rowSource{"x": idSource{n: tt.n, per: 2}})
			if err != nil {
				t.Fatal(err)
			}
			g := tt.batch * tt.world
			wantSteps := (tt.n + g - 1) / g
			perRank := make([][][]int, tt.world)
			for r := range tt.world {
				o := BatchOptions{BatchSize: tt.batch, Rank: r, World: tt.world, Shuffle: shuffle, Seed: 7}
				if s := d.StepsPerEpoch(o); s != wantSteps {
					t.Fatalf("%s: StepsPerEpoch = %d, want %d", name, s, wantSteps)
				}
				perRank[r] = epochRows(t, d, 3, o)
				if len(perRank[r]) != wantSteps {
					t.Fatalf("%s rank %d: %d steps, want %d", name, r, len(perRank[r]), wantSteps)
				}
			}
			order := allRows(tt.n)
			if shuffle {
				order = orderRows(tt.n, 7, 3)
			}
			seen := make([]int, tt.n)
			for s := range wantSteps {
				start := s * g
				size := min(g, tt.n-start)
				var global []int
				for r := range tt.world {
					part := perRank[r][s]
					want := size / tt.world
					if r < size%tt.world {
						want++
					}
					if size == g && want != tt.batch {
						t.Fatalf("%s: full global batch gives %d rows", name, want)
					}
					if len(part) != want {
						t.Fatalf("%s step %d rank %d: %d rows, want %d", name, s, r, len(part), want)
					}
					global = append(global, part...)
				}
				if !reflect.DeepEqual(global, order[start:start+size]) && size > 0 {
					t.Fatalf("%s step %d: ranks' parts %v are not the global batch %v in rank order", name, s, global, order[start:start+size])
				}
				for _, row := range global {
					seen[row]++
				}
			}
			for row, c := range seen {
				if c != 1 {
					t.Fatalf("%s: row %d seen %d times", name, row, c)
				}
			}
		}
	}
}

func TestEpochOrder(t *testing.T) {
	a, b := epochOrder(1000, 42, 0), epochOrder(1000, 42, 0)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same (seed, epoch) gave two orders")
	}
	if reflect.DeepEqual(a, epochOrder(1000, 42, 1)) || reflect.DeepEqual(a, epochOrder(1000, 43, 0)) {
		t.Fatal("another epoch or seed gave the same order")
	}
	seen := make([]bool, 1000)
	for _, r := range a {
		if seen[r] {
			t.Fatalf("row %d twice in the permutation", r)
		}
		seen[r] = true
	}
	// Pin the algorithm: a change here reshuffles every resumed job.
	if got, want := epochOrder(10, 42, 0), []uint32{6, 2, 5, 3, 4, 7, 0, 1, 9, 8}; !reflect.DeepEqual(got, want) {
		t.Errorf("epochOrder(10, 42, 0) = %v, want %v", got, want)
	}
	if got := epochOrder(0, 1, 1); len(got) != 0 {
		t.Errorf("empty order = %v", got)
	}
}

// TestOrdersMadeAhead checks that an epoch's batches follow epochOrder
// whether its order was made ahead (by the epoch before) or when asked,
// for epochs and seeds in any order, and that asking for epoch e leaves
// e+1's order under way beside it, except in Pipe mode; rows beyond what
// 32 bits number are refused, not shuffled.
func TestOrdersMadeAhead(t *testing.T) {
	const n = 1000
	d, err := newDataset(map[string]rowSource{"x": idSource{n: n, per: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		seed  int64
		epoch int
	}{{7, 0}, {7, 1}, {7, 2}, {7, 1}, {7, 0}, {8, 1}, {8, 2}, {7, 3}} {
		o := BatchOptions{BatchSize: n, Shuffle: true, Seed: q.seed}
		if got := epochRows(t, d, q.epoch, o)[0]; !reflect.DeepEqual(got, orderRows(n, q.seed, q.epoch)) {
			t.Fatalf("seed %d epoch %d: rows are not epochOrder's", q.seed, q.epoch)
		}
		d.orders.mu.Lock()
		kept := d.orders.kept
		d.orders.mu.Unlock()
		if len(kept) != 2 || kept[1].seed != q.seed || kept[1].epoch != q.epoch+1 {
			t.Fatalf("seed %d epoch %d: %d orders kept, the second not the next epoch's", q.seed, q.epoch, len(kept))
		}
	}
	huge, err := newDataset(map[string]rowSource{"x": idSource{n: int(maxShuffledRows + 1), per: 2}})
	if err != nil {
		t.Fatal(err)
	}
	it := huge.Epoch(context.Background(), 0, BatchOptions{BatchSize: 32, Shuffle: true})
	defer it.Close()
	if _, err := it.Next(context.Background()); err == nil || !strings.Contains(err.Error(), "shuffles at most 4294967295") {
		t.Fatalf("%d rows shuffled: error %v, want a refusal naming the bound", maxShuffledRows+1, err)
	}
	pipe := orders{noAhead: true}
	if got := pipe.get(10, 42, 0); !reflect.DeepEqual(got, epochOrder(10, 42, 0)) || len(pipe.kept) != 1 {
		t.Fatalf("Pipe mode: order %v, %d kept; want epochOrder's and no other", got, len(pipe.kept))
	}
}

func TestNewDataset(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, shape ...int) *Array {
		p := filepath.Join(dir, name)
		h := Header{DType: Float32, Shape: shape}
		if err := WriteNPY(p, Float32, shape, make([]byte, h.DataLen())); err != nil {
			t.Fatal(err)
		}
		a, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	train, labels, short, scalar := mk("train.npy", 1000, 10), mk("labels.npy", 1000), mk("short.npy", 999), mk("s.npy")
	d, err := NewDataset(map[string]*Array{"x": train, "y": labels})
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 1000 || !reflect.DeepEqual(d.RowShape("x"), []int{10}) || !reflect.DeepEqual(d.RowShape("y"), []int{}) ||
		d.DType("x") != Float32 || d.DType("nope") != Invalid || d.RowShape("nope") != nil || !reflect.DeepEqual(d.Names(), []string{"x", "y"}) {
		t.Errorf("dataset: Len %d RowShape %v %v DType %v names %v", d.Len(), d.RowShape("x"), d.RowShape("y"), d.DType("x"), d.Names())
	}
	for _, tt := range []struct {
		name   string
		arrays map[string]*Array
		want   string
	}{
		{"row counts differ", map[string]*Array{"x": train, "y": short}, "short.npy has 999; every file of a channel must have one row per example"},
		{"0-d", map[string]*Array{"x": scalar}, "s.npy is a 0-d array (a scalar)"},
		{"nothing", map[string]*Array{}, "dataset has no tensors"},
		{"nil", map[string]*Array{"x": nil}, `dataset tensor "x" has no array`},
	} {
		if _, err := NewDataset(tt.arrays); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// datasetOf opens the .npy file at path as a dataset's only tensor, "x";
// the array is closed when the test ends.
func datasetOf(t *testing.T, path string) (*Array, *Dataset) {
	t.Helper()
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	d, err := NewDataset(map[string]*Array{"x": a})
	if err != nil {
		t.Fatal(err)
	}
	return a, d
}

// TestEpochConvertsDTypes runs a real mmapped file through an epoch with a
// dtype the model wants that differs from the file's.
func TestEpochConvertsDTypes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "train.npy")
	writeRows(t, p, 70, 3)
	_, d := datasetOf(t, p)
	it := d.Epoch(context.Background(), 0, BatchOptions{BatchSize: 32, DTypes: map[string]DType{"x": Float64}})
	defer it.Close()
	var rows []int
	for {
		b, err := it.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		x := b.Tensors["x"]
		if len(x) != b.Rows*3*8 {
			t.Fatalf("step %d: %d bytes for %d rows of 3 float64", b.Step, len(x), b.Rows)
		}
		for i := 0; i < len(x); i += 24 {
			rows = append(rows, int(math.Float64frombits(binary.LittleEndian.Uint64(x[i:])))/1000)
		}
		b.Release()
	}
	if !reflect.DeepEqual(rows, allRows(70)) || it.StepsPerEpoch() != 3 {
		t.Fatalf("rows %v over %d steps, want 0..69 in order over 3 (batch 32)", rows, it.StepsPerEpoch())
	}
}

func TestEpochErrors(t *testing.T) {
	d, _ := newDataset(map[string]rowSource{"x": idSource{n: 10, per: 2}})
	for _, tt := range []struct {
		name string
		o    BatchOptions
		want string
	}{
		{"rank past world", BatchOptions{BatchSize: 32, Rank: 2, World: 2}, "rank 2 is outside [0, 2)"},
		{"negative batch", BatchOptions{BatchSize: -1}, "batch size -1 is not positive"},
		{"no batch size", BatchOptions{}, "batch size 0 is not positive"},
		{"negative prefetch", BatchOptions{BatchSize: 4, Prefetch: -1}, "prefetch -1 is negative"},
		{"negative world", BatchOptions{BatchSize: 32, World: -1}, "world size -1"},
		{"unknown dtype tensor", BatchOptions{BatchSize: 32, DTypes: map[string]DType{"y": Float32}}, `dtype given for "y"`},
	} {
		it := d.Epoch(context.Background(), 0, tt.o)
		_, err := it.Next(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
		it.Close()
	}
	huge, _ := newDataset(map[string]rowSource{"x": idSource{n: 0, per: 1 << 59}})
	it := huge.Epoch(context.Background(), 0, BatchOptions{BatchSize: 32, Prefetch: 2})
	if _, err := it.Next(context.Background()); err == nil || !strings.Contains(err.Error(), "too large to hold in memory") {
		t.Errorf("huge rows: err = %v, want a too-large error", err)
	}
	it.Close()
	boom := errors.New("disk on fire")
	bad, _ := newDataset(map[string]rowSource{"x": idSource{n: 10, per: 2, fail: boom}})
	it = bad.Epoch(context.Background(), 4, BatchOptions{BatchSize: 32, Prefetch: 2})
	defer it.Close()
	// The batch, counted from 1; the caller names the epoch (a 0-based one
	// here read "Epoch 19: ...: epoch 18 step 714").
	if _, err := it.Next(context.Background()); !errors.Is(err, boom) || err.Error() != "batch 1: disk on fire" {
		t.Errorf("gather failure: err = %v, want it wrapped with the batch", err)
	}
	if _, err := it.Next(context.Background()); !errors.Is(err, boom) {
		t.Errorf("second Next: err = %v, want the same error again", err)
	}
}

func TestEpochEmptyDataset(t *testing.T) {
	d, _ := newDataset(map[string]rowSource{"x": idSource{n: 0, per: 2}})
	it := d.Epoch(context.Background(), 0, BatchOptions{BatchSize: 32, Prefetch: 2})
	defer it.Close()
	if _, err := it.Next(context.Background()); err != io.EOF || it.StepsPerEpoch() != 0 {
		t.Fatalf("empty dataset: err = %v, steps %d; want io.EOF and 0", err, it.StepsPerEpoch())
	}
}

// waitGoroutines waits for the goroutine count to drop back to n; the
// producer's exit is asynchronous to the cancel that causes it.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

func TestEpochCancelStopsProducer(t *testing.T) {
	d, _ := newDataset(map[string]rowSource{"x": idSource{n: 10000, per: 2}})
	base := runtime.NumGoroutine()

	// Cancel the epoch's context mid-epoch: Next must report it, not EOF.
	ctx, cancel := context.WithCancel(context.Background())
	it := d.Epoch(ctx, 0, BatchOptions{BatchSize: 4, Prefetch: 3})
	if b, err := it.Next(context.Background()); err != nil || b.Rows != 4 {
		t.Fatalf("first batch: %v, %v", b, err)
	}
	cancel()
	waitGoroutines(t, base)
	var err error
	for range 10 { // batches already queued may still come out first
		if _, err = it.Next(context.Background()); err != nil {
			break
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: err = %v, want context.Canceled", err)
	}

	// Close without reading anything, with a producer blocked on a full queue.
	it = d.Epoch(context.Background(), 1, BatchOptions{BatchSize: 4, Prefetch: 0})
	it.Close()
	waitGoroutines(t, base)

	// A Next whose own context ends gives up without ending the epoch.
	it = d.Epoch(context.Background(), 2, BatchOptions{BatchSize: 4, Prefetch: 2})
	defer it.Close()
	dead, stop := context.WithCancel(context.Background())
	stop()
	if _, err := it.Next(dead); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a done context: err = %v, want context.Canceled", err)
	}
	if b, err := it.Next(context.Background()); err != nil || b.Step != 0 || b.Rows != 4 {
		t.Fatalf("Next after a caller's own cancel: %+v, %v; want step 0, the epoch going on", b, err)
	}
}

// TestEpochReusesBuffers checks that released batches come back: in steady
// state an epoch allocates nothing per batch.
func TestEpochReusesBuffers(t *testing.T) {
	d, _ := newDataset(map[string]rowSource{"x": idSource{n: 64 * 800, per: 16}})
	it := d.Epoch(context.Background(), 0, BatchOptions{BatchSize: 64, Prefetch: 2})
	defer it.Close()
	backing := map[*byte]bool{}
	next := func() *Batch {
		b, err := it.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		backing[&b.Tensors["x"][0]] = true
		return b
	}
	// Warm up: the pool fills. The producer makes buffers as far as it runs
	// ahead, so let it fill the queue (Prefetch and the refill run) a few
	// times before counting.
	for range 3 {
		for deadline := time.Now().Add(5 * time.Second); len(it.out) < cap(it.out) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		for range cap(it.out) {
			next().Release()
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 500
	for range n {
		b := next()
		b.Release()
		b.Release() // a second Release must not hand the buffer out twice
	}
	runtime.ReadMemStats(&after)
	if allocs := after.Mallocs - before.Mallocs; allocs > n/10 {
		t.Errorf("%d allocations over %d batches, want (almost) none", allocs, n)
	}
	if limit := 2 + it.refill + 3; len(backing) > limit {
		t.Errorf("%d distinct buffers used, want at most %d (Prefetch, the refill run and 3)", len(backing), limit)
	}
}

func TestOpenChannel(t *testing.T) {
	dir := t.TempDir()
	writeRows(t, filepath.Join(dir, "train.npy"), 10, 3)
	if err := WriteNPY(filepath.Join(dir, "labels.npy"), Uint8, []int{10}, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	d, err := OpenChannel(dir, []string{"features"}, []string{"label"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 10 || !reflect.DeepEqual(d.Names(), []string{"features", "label"}) ||
		d.DType("features") != Float32 || d.DType("label") != Uint8 || !reflect.DeepEqual(d.RowShape("features"), []int{3}) {
		t.Errorf("OpenChannel: Len %d names %v dtypes %v %v", d.Len(), d.Names(), d.DType("features"), d.DType("label"))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	it := d.Epoch(context.Background(), 0, BatchOptions{BatchSize: 32, Prefetch: 2})
	defer it.Close()
	if _, err := it.Next(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("epoch after Close: err = %v, want a closed-array error", err)
	}

	if err := WriteNPY(filepath.Join(dir, "labels.npy"), Uint8, []int{9}, make([]byte, 9)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		inputs, targets []string
		want            string
	}{
		{[]string{"features"}, []string{"label"}, "train.npy has 10 rows but labels.npy has 9"},
		{[]string{"a", "b"}, nil, `no file for model input "a" in channel files [labels.npy train.npy]`},
	} {
		if _, err := OpenChannel(dir, tt.inputs, tt.targets, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("OpenChannel(%v, %v): err = %v, want %q", tt.inputs, tt.targets, err, tt.want)
		}
	}
}

// TestEpochStartStep: resuming mid-epoch yields exactly the rest of the
// epoch's batches, the same rows as an epoch read from the start.
func TestEpochStartStep(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.npy")
	raw := make([]byte, 100*4)
	for i := range 100 {
		raw[4*i] = byte(i)
	}
	if err := WriteNPY(p, Int32, []int{100}, raw); err != nil {
		t.Fatal(err)
	}
	a, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	d, err := NewDataset(map[string]*Array{"x": a})
	if err != nil {
		t.Fatal(err)
	}
	read := func(start int) (steps []int, rows [][]byte) {
		opts := BatchOptions{BatchSize: 8, Shuffle: true, Seed: 3, StartStep: start}
		it := d.Epoch(context.Background(), 2, opts)
		defer it.Close()
		for {
			b, err := it.Next(context.Background())
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			steps = append(steps, b.Step)
			rows = append(rows, bytes.Clone(b.Tensors["x"]))
			b.Release()
		}
	}
	allSteps, all := read(0)
	steps, rest := read(5)
	if len(allSteps) != 13 || !reflect.DeepEqual(steps, allSteps[5:]) || !reflect.DeepEqual(rest, all[5:]) {
		t.Errorf("from step 5: steps %v, want %v; same rows %v", steps, allSteps[5:], reflect.DeepEqual(rest, all[5:]))
	}
}

// A batch larger than the data is the data: the same steps and split as a
// batch of every row, with buffers sized by the rows there are (a batch
// size of 10^10 asked for a buffer that large and ran out of memory).
func TestBatchLargerThanTheData(t *testing.T) {
	d, err := newDataset(map[string]rowSource{"x": idSource{n: 5, per: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for _, world := range []int{1, 2} {
		for rank := range world {
			huge := BatchOptions{BatchSize: math.MaxInt64 - 1000, Rank: rank, World: world, Shuffle: true, Seed: 3}
			if s := d.StepsPerEpoch(huge); s != 1 {
				t.Errorf("world %d: a batch near 2^63 has %d steps, want 1", world, s)
			}
			all := huge
			all.BatchSize = 5
			got, want := epochRows(t, d, 1, huge), epochRows(t, d, 1, all)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("world %d rank %d: batch near 2^63 gave %v, a batch of every row %v", world, rank, got, want)
			}
		}
	}
}
