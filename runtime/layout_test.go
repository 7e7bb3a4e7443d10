package runtime_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLayout holds the house to its plan: only model/tf links
// libtensorflow, so everything below the wiring builds and tests without
// it, and the fit loop sees the session, the sockets and the launcher only
// through its interfaces.
func TestLayout(t *testing.T) {
	const mod = "github.com/sagefit/sagefit/"
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"runtime/fit", []string{"model/tf", "distributed/transport", "runtime/launch"}},
		{"runtime/job", []string{"model/tf", "runtime/fit", "runtime/launch"}},
		{"runtime/callbacks", []string{"model/tf", "runtime/fit", "distributed"}},
		{"runtime/input", []string{"model/tf", "runtime/fit"}},
		{"runtime/checkpoint", []string{"model/tf", "runtime/fit", "distributed"}},
		{"runtime/launch", []string{"model/tf", "runtime/fit"}},
		{"runtime/sagemaker", []string{"model", "data", "distributed", "runtime/report"}},
		{"model", []string{"model/tf", "runtime/sagemaker"}},
		{"data", []string{"model/tf", "runtime/sagemaker"}},
		{"distributed", []string{"distributed/transport", "model", "runtime/sagemaker"}},
		{"distributed/transport", []string{"model", "runtime/sagemaker"}},
	}
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-deps", mod+r.pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", r.pkg, err)
		}
		deps := strings.Fields(string(out))
		for _, f := range r.forbidden {
			if slices.Contains(deps, mod+f) {
				t.Errorf("%s depends on %s", r.pkg, f)
			}
		}
	}
}
