package data

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// availableMemory is what this process may still allocate: the memory
// cgroup's limit less its usage where one is set (a container's), else the
// kernel's MemAvailable. A variable, so tests can set a small machine.
var availableMemory = func() (int64, bool) {
	avail, ok := memAvailable()
	if limit, err := readInt("/sys/fs/cgroup/memory.max"); err == nil {
		if used, err := readInt("/sys/fs/cgroup/memory.current"); err == nil && limit > used {
			if !ok || limit-used < avail {
				avail, ok = limit-used, true
			}
		}
	}
	return avail, ok
}

func memAvailable() (int64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// readInt reads a file holding one number ("max" is not one).
func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
