package launch

import (
	"slices"
	"testing"
)

// TestVisibleGPUs: CUDA_VISIBLE_DEVICES, where set, decides which GPUs the
// host's processes get; set but empty hides them (one process on the CPU).
func TestVisibleGPUs(t *testing.T) {
	cases := []struct {
		environ []string
		gpus    int
		want    []string
	}{
		{nil, 0, nil},
		{nil, 4, []string{"0", "1", "2", "3"}},
		{[]string{"CUDA_VISIBLE_DEVICES=2,3"}, 4, []string{"2", "3"}},
		{[]string{"CUDA_VISIBLE_DEVICES="}, 4, nil},
	}
	for _, c := range cases {
		if got := visibleGPUs(c.environ, c.gpus); !slices.Equal(got, c.want) {
			t.Errorf("visibleGPUs(%q, %d) = %q, want %q", c.environ, c.gpus, got, c.want)
		}
	}
	if got := workerDevices([]string{"CUDA_VISIBLE_DEVICES=5,7"}, 8, 3); !slices.Equal(got, []string{"5", "7", "5"}) {
		t.Errorf("three workers on GPUs 5,7: %q", got)
	}
}
