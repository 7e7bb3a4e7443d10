package launch

import (
	"slices"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
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

// TestProcessesPerHostReadAsIntegers: sagefit_processes_per_host takes a
// whole number as every integer hyperparameter does ("2.0" from a float in
// the estimator's dict was refused), or "auto".
func TestProcessesPerHostReadAsIntegers(t *testing.T) {
	for text, want := range map[string]int{"auto": 0, `"auto"`: 0, "2": 2, "2.0": 2, `"3"`: 3, "": 0,
		"0": -1, "1.5": -1, "many": -1, "-2": -1} {
		env, err := sagemaker.Load(jobWith(t, job.HPProcessesPerHost, text), []string{"SM_NUM_GPUS=0"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ProcessesPerHost(env)
		if want < 0 {
			if err == nil || !strings.Contains(err.Error(), "must be \"auto\" (one process per GPU) or a whole number of at least 1") {
				t.Errorf("%q: %d, %v; want the refusal", text, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", text, got, err, want)
		}
	}
}
