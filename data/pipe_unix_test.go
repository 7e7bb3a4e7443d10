//go:build unix

package data

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPipeWriterProcess is not a test: it is the separate process that
// feeds a FIFO, as SageMaker does in Pipe mode, when the tests re-run the
// test binary with SAGEFIT_PIPE_WRITER set. It optionally creates the FIFO
// late, writes the files back to back (stopping after a byte limit, as a
// writer that dies), and can keep the FIFO open afterwards (a stalled
// writer).
func TestPipeWriterProcess(t *testing.T) {
	if os.Getenv("SAGEFIT_PIPE_WRITER") == "" {
		t.Skip("helper process for the pipe tests")
	}
	err := pipeWriter(os.Getenv("PIPE_PATH"), os.Getenv("PIPE_FILES"), envInt("PIPE_LIMIT", -1),
		envInt("PIPE_CREATE_AFTER_MS", -1), envInt("PIPE_HOLD_MS", 0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipe writer:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func pipeWriter(path, files string, limit, createAfterMS, holdMS int) error {
	if createAfterMS >= 0 {
		time.Sleep(time.Duration(createAfterMS) * time.Millisecond)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			return err
		}
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0) // blocks until the reader opens
	if err != nil {
		return err
	}
	var stream []byte
	for _, f := range filepath.SplitList(files) {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		stream = append(stream, b...)
	}
	if limit >= 0 && limit < len(stream) {
		stream = stream[:limit]
	}
	if _, err := w.Write(stream); err != nil {
		return err
	}
	time.Sleep(time.Duration(holdMS) * time.Millisecond)
	return w.Close()
}

// writer describes one run of the writer process.
type writer struct {
	files       []string // streamed back to back
	limit       int      // bytes to write before stopping; -1 for all
	createAfter time.Duration
	late        bool // create the FIFO after createAfter, in the writer
	hold        time.Duration
}

// startWriter starts the writer process for fifo and makes sure it is
// gone when the test ends.
func startWriter(t *testing.T, fifo string, w writer) {
	t.Helper()
	if !w.late {
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatalf("mkfifo: %v", err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPipeWriterProcess$")
	create := -1
	if w.late {
		create = int(w.createAfter / time.Millisecond)
	}
	cmd.Env = append(os.Environ(), "SAGEFIT_PIPE_WRITER=1", "PIPE_PATH="+fifo,
		"PIPE_FILES="+strings.Join(w.files, string(filepath.ListSeparator)),
		"PIPE_LIMIT="+strconv.Itoa(w.limit), "PIPE_CREATE_AFTER_MS="+strconv.Itoa(create),
		"PIPE_HOLD_MS="+strconv.Itoa(int(w.hold/time.Millisecond)))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

func fixturePath(name string) string { return filepath.Join("testdata", name) }

func fileSize(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Size())
}

// sameRows checks that a dataset tensor holds exactly the rows of a file.
func sameRows(t *testing.T, d *Dataset, name, file string) {
	t.Helper()
	want, err := Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	got := soleArray(d, name)
	if got == nil || got.Len() != want.Len() || got.DType() != want.DType() || !reflect.DeepEqual(got.RowShape(), want.RowShape()) {
		t.Fatalf("%s: %v, want the array of %s (%v %v)", name, got, file, want.Shape(), want.DType())
	}
	rows := []int{}
	for r := want.Len() - 1; r >= 0; r-- {
		rows = append(rows, r)
	}
	a := make([]byte, len(rows)*want.RowElems()*8)
	b := make([]byte, len(a))
	if err := want.Gather(a, Float64, rows); err != nil {
		t.Fatal(err)
	}
	if err := got.Gather(b, Float64, rows); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s: rows differ from %s", name, file)
	}
}

// TestOpenPipeEpoch streams .npy files through a real FIFO from a separate
// writer process: whole streams open as datasets, broken ones fail with an
// error naming the FIFO, the array and the bytes, and nothing hangs.
func TestOpenPipeEpoch(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.npy") // far more than a pipe buffer
	writeRows(t, big, 20000, 8)
	ids := filepath.Join(t.TempDir(), "ids.npy")
	if err := WriteNPY(ids, Uint8, []int{20000}, make([]byte, 20000)); err != nil {
		t.Fatal(err)
	}
	f32, i64 := fixturePath("float32_le.npy"), fixturePath("int64_le.npy")
	i64Header := 128 // numpy's header for (3, 4) <i8
	for _, tt := range []struct {
		name    string
		files   []string
		limit   int // -1: the whole stream
		names   []string
		wantErr string // %s is the FIFO
		is      error  // the error wraps it
	}{
		{name: "four arrays, Fortran and big-endian too", names: []string{"x", "f", "b", "y"},
			files: []string{f32, fixturePath("fortran_2d.npy"), fixturePath("float64_be.npy"), fixturePath("uint8.npy")}},
		{name: "arrays larger than the pipe buffer", names: []string{"x", "y"}, files: []string{big, ids}},
		{name: "format 2.0 header", names: []string{"a"}, files: []string{fixturePath("v2.npy")}},
		{name: "row counts differ", names: []string{"a", "b"}, files: []string{fixturePath("v3.npy"), fixturePath("float32_be.npy")},
			wantErr: `pipe %s: array 1 ("b") has 3 rows but array 0 ("a") has 4; every array of a channel must have one row per example`},
		{name: "writer stops in an array's data", names: []string{"x", "y"}, files: []string{f32, i64},
			limit:   fileSize(t, f32) + i64Header + 20,
			wantErr: `pipe %s: array 1 ("y"), shape (3, 4) int64: the writer stopped after 20 of its 96 data bytes`},
		{name: "writer stops in a header", names: []string{"x", "y"}, files: []string{f32, i64}, limit: fileSize(t, f32) + 30,
			wantErr: `pipe %s: array 1 ("y"): the writer stopped in the middle of the header, after 30 bytes`},
		{name: "big array cut short", names: []string{"x", "y"}, files: []string{big, ids}, limit: 300000,
			wantErr: `pipe %s: array 0 ("x"), shape (20000, 8) float32: the writer stopped after 299872 of its 640000 data bytes`},
		{name: "fewer arrays than names", names: []string{"x", "y"}, files: []string{f32},
			wantErr: `pipe %s ended after 1 arrays, not a whole number of groups of 2 (["x" "y"]: an array per tensor, for each part of the stream); does the channel hold an array more or fewer`},
		{name: "empty stream", names: []string{"x"}, files: nil, is: ErrEmptyStream, // a sharded channel's host that got no objects
			wantErr: `pipe %s: the stream ended before its first array: the writer sent nothing`},
		// Or an array more than the names (it said "fewer" here).
		{name: "a part cut short", names: []string{"x", "y"}, files: []string{f32, i64, f32},
			wantErr: `pipe %s ended after 3 arrays, not a whole number of groups of 2`},
		{name: "parts of other examples", names: []string{"x"}, files: []string{f32, fixturePath("v2.npy")},
			wantErr: `pipe %s: tensor "x": %s[1] holds int32 rows of shape (3,) but %s[0] holds float32 rows of shape (4,); every part needs the same examples`},
		{name: "not .npy", names: []string{"x"}, files: []string{fixturePath("csv/part-a.csv")},
			wantErr: `pipe %s: array 0 ("x") is not a .npy array (bad magic); Pipe mode reads .npy files back to back`},
		{name: "scalar", names: []string{"x"}, files: []string{fixturePath("scalar.npy")},
			wantErr: `pipe %s: array 0 ("x") is a 0-d array (a scalar)`},
		{name: "object dtype", names: []string{"x"}, files: []string{fixturePath("object.npy")},
			wantErr: `pipe %s: array 0 ("x"): dtype object ('|O') holds pickled Python objects`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fifo := filepath.Join(dir, "train_0")
			spool := filepath.Join(dir, "spool")
			limit := tt.limit
			if limit == 0 {
				limit = -1
			}
			startWriter(t, fifo, writer{files: tt.files, limit: limit})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a hang fails, never blocks the suite
			defer cancel()
			d, err := OpenPipeEpoch(ctx, fifo, tt.names, PipeOptions{SpoolDir: spool, OpenTimeout: 10 * time.Second})
			if left, _ := os.ReadDir(spool); len(left) != 0 {
				t.Errorf("spool files left behind: %v", left)
			}
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "%s", fifo)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v\nwant %q", err, want)
				}
				if d != nil {
					t.Error("dataset returned with the error")
				}
				if tt.is != nil && !errors.Is(err, tt.is) {
					t.Errorf("err = %v does not wrap %v", err, tt.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sorted := append([]string(nil), tt.names...)
			sort.Strings(sorted)
			if !reflect.DeepEqual(d.Names(), sorted) {
				t.Errorf("Names = %v, want %v", d.Names(), tt.names)
			}
			for i, name := range tt.names {
				sameRows(t, d, name, tt.files[i])
				if p := soleArray(d, name).Path(); p != fmt.Sprintf("%s[%d]", fifo, i) {
					t.Errorf("Path = %q, want the FIFO and the array's index", p)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := soleArray(d, tt.names[0]).Gather(nil, Float32, nil); err == nil {
				t.Error("Gather after Close succeeded")
			}
		})
	}
}

// A stream of a channel in parts (each part's arrays, one per tensor name,
// back to back: part-0/x.npy, part-0/y.npy, part-1/x.npy, part-1/y.npy as
// S3 lists them) reads as one dataset of the parts' rows one after
// another. Before, it was refused ("carries more than the 2 arrays named").
func TestPipeStreamInParts(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for part, rows := range []int{5, 3} {
		x, y := filepath.Join(dir, fmt.Sprintf("x%d.npy", part)), filepath.Join(dir, fmt.Sprintf("y%d.npy", part))
		writeRows(t, x, rows, 2)
		writeRows(t, y, rows, 1)
		files = append(files, x, y)
	}
	whole := filepath.Join(dir, "whole")
	if err := os.Mkdir(whole, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"x", "y"} { // the concatenation, by hand: rows r*1000+e
		var b []byte
		per := map[string]int{"x": 2, "y": 1}[name]
		for _, rows := range []int{5, 3} {
			for r := range rows {
				for e := range per {
					b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(r*1000+e)))
				}
			}
		}
		if err := WriteNPY(filepath.Join(whole, name+".npy"), Float32, []int{8, per}, b); err != nil {
			t.Fatal(err)
		}
	}
	fifo := filepath.Join(dir, "train_0")
	startWriter(t, fifo, writer{files: files, limit: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := OpenPipeEpoch(ctx, fifo, []string{"x", "y"}, PipeOptions{SpoolDir: filepath.Join(dir, "spool"), OpenTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want, err := OpenChannel(whole, []string{"x"}, []string{"y"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	if d.Len() != 8 || len(d.Arrays("x")) != 2 {
		t.Fatalf("%d rows in %d parts, want 8 in 2", d.Len(), len(d.Arrays("x")))
	}
	o := BatchOptions{BatchSize: 3, Shuffle: true, Seed: 2}
	got, exp := epochBytes(t, d, o), epochBytes(t, want, o)
	for _, name := range []string{"x", "y"} {
		if !bytes.Equal(got[name], exp[name]) {
			t.Errorf("%s: the stream's batches differ from the concatenation's", name)
		}
	}
}

// TestPipeEpochs reads two epochs whose FIFOs the writer creates only when
// it is ready, the second one late, as SageMaker does.
func TestPipeEpochs(t *testing.T) {
	dir := t.TempDir()
	files := []string{fixturePath("float32_le.npy"), fixturePath("int8.npy")}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for epoch, delay := range []time.Duration{0, 300 * time.Millisecond} {
		fifo := filepath.Join(dir, "train_"+strconv.Itoa(epoch)) // as SageMaker names them (sagemaker.Paths.PipeFIFO)
		startWriter(t, fifo, writer{files: files, limit: -1, late: true, createAfter: delay})
		d, err := OpenPipeEpoch(ctx, fifo, []string{"x", "y"}, PipeOptions{SpoolDir: dir, OpenTimeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("epoch %d: %v", epoch, err)
		}
		sameRows(t, d, "x", files[0])
		sameRows(t, d, "y", files[1])
		if d.Len() != 3 {
			t.Errorf("epoch %d: Len %d, want 3", epoch, d.Len())
		}
		d.Close()
	}
}

// TestPipeNeverHangs: a FIFO that never appears, one no writer opens and a
// writer that stalls each end the wait with an error, by the option's
// timeout or by the context, and the abandoned open is released.
func TestPipeNeverHangs(t *testing.T) {
	const short = 200 * time.Millisecond
	f32 := fixturePath("float32_le.npy")
	for _, tt := range []struct {
		name     string
		fifo     bool    // create the FIFO (with no writer)
		writer   *writer // or start this writer
		opts     PipeOptions
		ctx      time.Duration // context timeout, 0 for none
		wantErr  string        // %s is the FIFO
		wantCtxE error
	}{
		{name: "FIFO never appears", opts: PipeOptions{OpenTimeout: short},
			wantErr: "pipe %s: the FIFO did not appear (SageMaker makes it for a channel whose TrainingInputMode is Pipe; sagefit local does not) within 200ms"},
		{name: "FIFO never appears, context ends", ctx: short,
			wantErr: "pipe %s: the FIFO did not appear", wantCtxE: context.DeadlineExceeded},
		{name: "no writer", fifo: true, opts: PipeOptions{OpenTimeout: short},
			wantErr: "pipe %s: no writer opened the FIFO within 200ms"},
		{name: "no writer, context ends", fifo: true, ctx: short,
			wantErr: "pipe %s: no writer opened the FIFO", wantCtxE: context.DeadlineExceeded},
		{name: "writer stalls", writer: &writer{files: []string{f32, f32}, limit: fileSize(t, f32) + 128 + 20, hold: 10 * time.Second},
			opts:    PipeOptions{IdleTimeout: short},
			wantErr: `pipe %s: array 1 ("y"), shape (3, 4) float32: after 20 of 48 data bytes: no data arrived for 200ms; the writer stalled`},
		{name: "writer stalls, context ends", writer: &writer{files: []string{f32}, limit: 40, hold: 10 * time.Second}, ctx: short,
			wantErr: `pipe %s: array 0 ("x"): read header: context deadline exceeded`, wantCtxE: context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fifo := filepath.Join(dir, "train_0")
			switch {
			case tt.fifo:
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					t.Fatal(err)
				}
			case tt.writer != nil:
				startWriter(t, fifo, *tt.writer)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if tt.ctx > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			tt.opts.SpoolDir = dir
			d, err := OpenPipeEpoch(ctx, fifo, []string{"x", "y"}, tt.opts)
			want := strings.ReplaceAll(tt.wantErr, "%s", fifo)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v\nwant %q", err, want)
			}
			if d != nil {
				t.Error("dataset returned with the error")
			}
			if tt.wantCtxE != nil && !errors.Is(err, tt.wantCtxE) {
				t.Errorf("err = %v does not wrap %v", err, tt.wantCtxE)
			}
			if tt.fifo {
				// The open that waited for a writer must not linger as a
				// reader: once it is released, a writer finds none.
				if !eventually(5*time.Second, func() bool {
					w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
					if err == nil {
						w.Close()
					}
					return errors.Is(err, syscall.ENXIO)
				}) {
					t.Error("the abandoned open still holds the FIFO for reading")
				}
			}
		})
	}
}

// eventually polls cond until it holds or the time is up.
func eventually(limit time.Duration, cond func() bool) bool {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

func TestOpenPipeEpochArguments(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "spool-is-a-file")
	os.WriteFile(file, nil, 0o644)
	for _, tt := range []struct {
		name  string
		names []string
		opts  PipeOptions
		want  string
	}{
		{"no names", nil, PipeOptions{}, "no tensor names given"},
		{"duplicate names", []string{"x", "x"}, PipeOptions{}, `tensor names ["x" "x"] must be distinct and not empty`},
		{"empty name", []string{""}, PipeOptions{}, "must be distinct and not empty"},
		{"bad spool dir", []string{"x"}, PipeOptions{SpoolDir: filepath.Join(file, "sub")}, "spool directory"},
		{"FIFO is a directory", []string{"x"}, PipeOptions{SpoolDir: dir}, "is a directory, not a FIFO"},
	} {
		_, err := OpenPipeEpoch(context.Background(), dir, tt.names, tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestPipeFromRegularFile: a regular file of concatenated arrays reads the
// same way (local runs can stand a file in for the FIFO).
func TestPipeFromRegularFile(t *testing.T) {
	dir := t.TempDir()
	var stream []byte
	files := []string{fixturePath("float16_le.npy"), fixturePath("uint16_be.npy")}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
	}
	path := filepath.Join(dir, "train_0")
	if err := os.WriteFile(path, stream, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := OpenPipeEpoch(context.Background(), path, []string{"a", "b"}, PipeOptions{SpoolDir: dir, IdleTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sameRows(t, d, "a", files[0])
	sameRows(t, d, "b", files[1])
}

// TestListChannelRefusesFIFO: a FIFO (or any other special file) in a
// channel directory is not data, and opening it would block.
func TestListChannelRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "x.npy"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListChannel(dir); err == nil || !strings.Contains(err.Error(), "x.npy is not a regular file") {
		t.Errorf("FIFO in a channel: err = %v", err)
	}
}
