package main_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/internal/fixture"
)

// wideModel makes docker/testdata/wide_mlp.py's model, whose weights take
// rank 0 a while to save, with training shards train-1 (all rows) and
// train-2 (half of them).
func wideModel(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "wide")
	cmd := exec.Command(fixture.Python(t), filepath.Join("..", "..", "docker", "testdata", "wide_mlp.py"), dir,
		"--rows", "256", "--width", "2048", "--shards", "2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wide_mlp.py: %v\n%s", err, out)
	}
	return dir
}

// exitWatch notes when processes whose environment holds marker end, by
// looking at /proc every few milliseconds (the launcher starts them; the
// test only sees the launcher).
type exitWatch struct {
	mu    sync.Mutex
	seen  map[int]bool
	ended map[int]time.Time
	stop  chan struct{}
	done  chan struct{}
}

func watchExits(marker string) *exitWatch {
	w := &exitWatch{seen: map[int]bool{}, ended: map[int]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			entries, _ := os.ReadDir("/proc")
			alive := map[int]bool{}
			for _, e := range entries {
				pid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				if w.seen[pid] {
					alive[pid] = running(pid)
					continue
				}
				env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
				if err == nil && bytes.Contains(env, []byte(marker)) {
					w.mu.Lock()
					w.seen[pid] = true
					w.mu.Unlock()
					alive[pid] = true
				}
			}
			now := time.Now()
			w.mu.Lock()
			for pid := range w.seen {
				if _, ok := w.ended[pid]; !ok && !alive[pid] {
					w.ended[pid] = now
				}
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

// running is false for a process that has ended, including a zombie its
// parent has not reaped yet (the launcher reaps its hosts together).
func running(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// first is when the first process seen ended; zero if none was seen.
func (w *exitWatch) first() time.Time {
	close(w.stop)
	<-w.done
	var first time.Time
	for _, at := range w.ended {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first
}

// TestNoHostLeavesBeforeTheModel: on several hosts, no host exits before
// rank 0 has written the model and the outputs (the final barrier), though
// the others, with no model to write, are done well before rank 0:
// `sagefit local --hosts 2` with a model whose weights take a while to
// save, and hosts of a ShardedByS3Key job in which rank 1 has half rank 0's
// rows.
func TestNoHostLeavesBeforeTheModel(t *testing.T) {
	wide := wideModel(t)
	t.Run("sagefit local --hosts 2", func(t *testing.T) {
		out := t.TempDir()
		watch := watchExits("SAGEMAKER_BASE_DIR=" + filepath.Join(out, "algo-2") + "\x00")
		cmd := exec.Command(binary, "local", "--hosts", "2", "--model", filepath.Join(wide, "model"),
			"--channel", "training="+filepath.Join(wide, "train"), "--hp", "epochs=2", "--output", out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		left := watch.first()
		if err != nil {
			t.Fatalf("sagefit local: %v\n%s", err, stderr.String())
		}
		rank0 := filepath.Join(out, "algo-1")
		written := fixture.LatestWrite(t, filepath.Join(rank0, "model"), filepath.Join(rank0, "output", "data"))
		if left.IsZero() {
			t.Fatalf("never saw algo-2's process:\n%s", stderr.String())
		}
		if left.Before(written) {
			t.Errorf("algo-2 exited %v before algo-1 had written the model and outputs", written.Sub(left))
		}
	})
	t.Run("rank 1 with less data", func(t *testing.T) {
		hosts := startJobWith(t, seedModels(wide, 2),
			[]string{filepath.Join(wide, "train-1"), filepath.Join(wide, "train-2")},
			map[string]string{"epochs": "2"}, map[int]bool{0: true, 1: true}, "ShardedByS3Key")
		ended := make([]time.Time, len(hosts))
		var wg sync.WaitGroup
		for i, h := range hosts {
			h.start(t)
			wg.Go(func() { <-h.done; ended[i] = time.Now() })
		}
		allSucceed(t, hosts, 180*time.Second, "")
		wg.Wait()
		written := fixture.LatestWrite(t, filepath.Join(hosts[0].base, "model"), filepath.Join(hosts[0].base, "output", "data"))
		if ended[1].Before(written) {
			t.Errorf("algo-2 exited %v before algo-1 had written the model and outputs", written.Sub(ended[1]))
		}
		if !strings.Contains(hosts[0].stdout.String(), "Epoch 2/2 - 8/8") {
			t.Errorf("algo-1 did not run its 8 steps:\n%s", hosts[0].stdout.String())
		}
	})
}
