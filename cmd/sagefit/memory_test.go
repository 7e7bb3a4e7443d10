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
	"syscall"
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

	_, out, err := trainInCgroup(t, procs, fx, channel)
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

// trainInCgroup trains one epoch (batch 256, shuffled) of the fixture's
// model on channel with the training process in the cgroup whose
// cgroup.procs is procs; it returns the job's base dir and the output.
func trainInCgroup(t *testing.T, procs, fx, channel string) (string, []byte, error) {
	t.Helper()
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
	return base, out, err
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}

// writeDeflatedNPZ writes a .npz whose only member, name.npy, is a deflated
// float32 array of the given shape holding a repeating pattern (so it
// compresses fast), through Python's zipfile as np.savez_compressed would
// lay it out, without holding it in memory.
func writeDeflatedNPZ(t *testing.T, path, name string, rows, cols int) {
	t.Helper()
	script := `
import sys, zipfile, numpy as np
path, name, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
header = np.lib.format.header_data_from_array_1_0(np.zeros((0, cols), np.float32))
header["shape"] = (rows, cols)
with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    with z.open(name + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        block = np.tile(np.arange(1, 1 + cols, dtype=np.float32), (16384, 1)).tobytes()
        left = rows * cols * 4
        while left > 0:
            f.write(block[:min(len(block), left)])
            left -= len(block)
`
	if out, err := exec.Command(fixture.Python(t), "-c", script, path, name, strconv.Itoa(rows), strconv.Itoa(cols)).CombinedOutput(); err != nil {
		t.Fatalf("write %s: %v\n%s", path, err, out)
	}
}

// TestCompressedLargerThanMemory: a deflated .npz member several times
// larger than the training process's memory limit trains: it is inflated
// to the job's volume and memory-mapped, never into the heap.
func TestCompressedLargerThanMemory(t *testing.T) {
	const limit = 256 << 20
	procs, peak := memoryCgroup(t, limit)
	fx := fixture.Make(t, "wide", "--rows", "64", "--no-fit", "--no-validation")
	channel := t.TempDir()
	rows := 50_000 // 4096 float32 each: 781 MiB inflated, 3x the limit
	writeDeflatedNPZ(t, filepath.Join(channel, "data.npz"), "train", rows, 4096)
	if err := data.WriteNPY(filepath.Join(channel, "labels.npy"), data.Float32, []int{rows}, make([]byte, rows*4)); err != nil {
		t.Fatal(err)
	}
	base, out, err := trainInCgroup(t, procs, fx, channel)
	if err != nil {
		t.Fatalf("training on a %d MiB compressed member under a %d MiB limit failed: %v\n%s", rows*4096*4>>20, limit>>20, err, tail(out))
	}
	p := peak()
	t.Logf("member %d MiB inflated, limit %d MiB, peak memory of the training process's cgroup %d MiB", rows*4096*4>>20, limit>>20, p>>20)
	if p > limit+(1<<20) {
		t.Errorf("peak %d MiB over the %d MiB limit", p>>20, limit>>20)
	}
	if !strings.Contains(string(out), "Epoch 1/1 - 196/196") {
		t.Errorf("did not train through the whole member:\n%s", tail(out))
	}
	if spool, _ := os.ReadDir(filepath.Join(base, "input", "sagefit-spool")); len(spool) != 0 {
		t.Errorf("inflated members left behind in the spool folder: %v", spool)
	}
}

// TestCompressedBombEndsInASentence: a 10 GB deflated member (a few MB of
// zip) beside labels of another row count fails from the two headers alone,
// in one sentence, without inflating anything (peak resident memory well
// under 1 GiB), as the hostile-input probe found it did not.
func TestCompressedBombEndsInASentence(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "64", "--no-fit", "--no-validation")
	channel := t.TempDir()
	writeDeflatedNPZ(t, filepath.Join(channel, "bomb.npz"), "train", 268_435_456, 10) // 10 GiB inflated
	if err := data.WriteNPY(filepath.Join(channel, "labels.npy"), data.Float32, []int{20000}, make([]byte, 20000*4)); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(channel, "bomb.npz"))
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": channel},
		Hyperparameters: map[string]string{"epochs": "1"},
	}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "train")
	cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a 10 GiB member beside 20000 labels trained:\n%s", tail(out))
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
	t.Logf("zip %d MiB; peak RSS %d MiB; failure: %s", st.Size()>>20, rss>>20, reason)
	if !strings.Contains(string(reason), "bomb.npz:train.npy has 268435456") || !strings.Contains(string(reason), "labels.npy has 20000 rows") {
		t.Errorf("failure %q does not name the member and the row counts", reason)
	}
	if rss > 1<<30 {
		t.Errorf("peak RSS %d MiB: the member was inflated before the headers were checked", rss>>20)
	}
}
