package main_test

import (
	"bufio"
	le "encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// memoryCgroup makes a memory cgroup limited to limit bytes (cgroup v2 or
// v1) and returns the files to join it and read its peak; it skips, saying
// why, where it cannot.
func memoryCgroup(t *testing.T, limit int64) (procs string, peak func() int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("setting a memory limit needs root (a cgroup); CI runs as root")
	}
	name := fmt.Sprintf("sagefit-test-%d", os.Getpid())
	type layout struct{ dir, limitFile, peakFile string }
	for _, l := range []layout{
		{filepath.Join("/sys/fs/cgroup", name), "memory.max", "memory.peak"},
		{filepath.Join("/sys/fs/cgroup/memory", name), "memory.limit_in_bytes", "memory.max_usage_in_bytes"},
	} {
		if _, err := os.Stat(filepath.Dir(l.dir)); err != nil {
			continue
		}
		if err := os.Mkdir(l.dir, 0o755); err != nil {
			continue
		}
		// A real cgroup makes its control files itself; a plain folder
		// (a tmpfs where cgroups are not mounted) does not.
		if _, err := os.Stat(filepath.Join(l.dir, l.limitFile)); err != nil {
			os.Remove(l.dir)
			continue
		}
		if err := os.WriteFile(filepath.Join(l.dir, l.limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
			os.Remove(l.dir)
			continue
		}
		t.Cleanup(func() { os.Remove(l.dir) })
		return filepath.Join(l.dir, "cgroup.procs"), func() int64 {
			raw, err := os.ReadFile(filepath.Join(l.dir, l.peakFile))
			if err != nil {
				t.Fatalf("read peak memory: %v", err)
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
			return n
		}
	}
	t.Skip("no memory cgroup (v1 or v2) can be made here to set a memory limit")
	return "", nil
}

// writeBigNPY writes a float32 (rows, cols) .npy of random values without
// holding it in memory.
func writeBigNPY(t *testing.T, path string, rows, cols int) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "header.npy")
	if err := data.WriteNPY(tmp, data.Float32, []int{0, cols}, nil); err != nil {
		t.Fatal(err)
	}
	header, _ := os.ReadFile(tmp)
	header = []byte(strings.Replace(string(header), fmt.Sprintf("(0, %d)", cols), fmt.Sprintf("(%d, %d)", rows, cols), 1))
	// Keep the header length a multiple of 64, as numpy does.
	hl := int(le.LittleEndian.Uint16(header[8:10]))
	body := strings.TrimRight(string(header[10:10+hl]), " \n")
	hl = (10+len(body)+1+63)/64*64 - 10
	body += strings.Repeat(" ", hl-len(body)-1) + "\n"
	le.LittleEndian.PutUint16(header[8:10], uint16(hl))
	header = append(header[:10], body...)

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(header)
	block := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(block); i += 4 {
		le.LittleEndian.PutUint32(block[i:], uint32(r.IntN(1<<23))|0x3f800000) // floats in [1, 2)
	}
	for left := int64(rows) * int64(cols) * 4; left > 0; left -= int64(len(block)) {
		if _, err := w.Write(block[:min(int64(len(block)), left)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// Drop the file from the page cache: the pages the writer cached would
	// be charged to the test's cgroup, not the training process's.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLargerThanMemory trains, shuffle on, on a channel several times larger
// than a memory limit the test sets for the training process: the .npy is
// memory-mapped and read a batch at a time, so only the page cache (which
// the kernel reclaims under the limit) sees the whole file.
func TestLargerThanMemory(t *testing.T) {
	const limit = 512 << 20
	procs, peak := memoryCgroup(t, limit)
	fx := fixture.Make(t, "wide", "--rows", "64", "--no-fit", "--no-validation")
	channel := t.TempDir()
	rows := 100_000 // 4096 float32 each: 1.5 GiB, 3x the limit
	writeBigNPY(t, filepath.Join(channel, "train.npy"), rows, 4096)
	labels := make([]byte, rows*4)
	if err := data.WriteNPY(filepath.Join(channel, "labels.npy"), data.Float32, []int{rows}, labels); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(channel, "train.npy"))

	base := t.TempDir()
	err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": channel},
		Hyperparameters: map[string]string{"epochs": "1", "batch_size": "256", "shuffle": "true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `echo $$ > "$1" && exec "$2" train`, "sh", procs, binary)
	cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("training under a %d MiB limit on a %d MiB file failed: %v\n%s", limit>>20, st.Size()>>20, err, tail(out))
	}
	p := peak()
	t.Logf("file %d MiB, limit %d MiB, peak memory of the training process's cgroup %d MiB", st.Size()>>20, limit>>20, p>>20)
	if st.Size() < 3*limit-(16<<20) {
		t.Fatalf("the file (%d MiB) is not several times the limit", st.Size()>>20)
	}
	// The page cache fills the cgroup up to its limit and is reclaimed
	// there; a process holding the file in its own memory would have been
	// killed instead.
	if p > limit+(1<<20) {
		t.Errorf("peak %d MiB over the %d MiB limit", p>>20, limit>>20)
	}
	if !strings.Contains(string(out), "Epoch 1/1 - 391/391") {
		t.Errorf("did not train through the whole file:\n%s", tail(out))
	}
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}
