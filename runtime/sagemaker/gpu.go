package sagemaker

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// detectGPUs counts the NVIDIA GPUs of this machine.
var detectGPUs = func() int { return countGPUs("/dev", "nvidia-smi") }

// countGPUs counts the device files nvidia0, nvidia1, ... under dev and,
// when there are none, the "GPU n: ..." lines of `smi -L` (how the
// sagemaker-training toolkit counts). It is 0 when neither is there.
func countGPUs(dev, smi string) int {
	if devices, _ := filepath.Glob(filepath.Join(dev, "nvidia[0-9]*")); len(devices) > 0 {
		return len(devices)
	}
	path, err := exec.LookPath(smi)
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-L").Output()
	if err != nil {
		return 0
	}
	n := 0
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "GPU ") {
			n++
		}
	}
	return n
}
