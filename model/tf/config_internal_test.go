package tf

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/internal/fixture"
)

// TestSessionConfigAsTensorFlowReadsIt reads session configs with
// TensorFlow's own ConfigProto: the field set by number is
// disable_tfg_optimizer, and the rest of each config is intact (NoGPUs: no
// GPU device; NoThreadSpinning beside the executor, and absent where
// not asked for).
func TestSessionConfigAsTensorFlowReadsIt(t *testing.T) {
	for _, tt := range []struct {
		cfg      Config
		executor string
		want     string
	}{
		{Config{IntraOpThreads: 3, NoGPUs: true}, "", "True 3 {'GPU': 0} False ''"},
		{Config{IntraOpThreads: 2, NoThreadSpinning: true}, "", "True 2 {} True ''"},
		{Config{IntraOpThreads: 2, NoThreadSpinning: true}, singleThreadedExecutor, "True 2 {} True 'SINGLE_THREADED_EXECUTOR'"},
	} {
		raw, err := configProto(tt.cfg, tt.executor)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(fixture.Python(t), "-c", `import sys
from tensorflow.core.protobuf import config_pb2
c = config_pb2.ConfigProto()
c.ParseFromString(sys.stdin.buffer.read())
print(c.graph_options.rewrite_options.disable_tfg_optimizer, c.intra_op_parallelism_threads, dict(c.device_count),
      c.experimental.disable_thread_spinning, repr(c.experimental.executor_type))`)
		cmd.Stdin = bytes.NewReader(raw)
		cmd.Env = append(cmd.Environ(), "TF_CPP_MIN_LOG_LEVEL=3")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("config %+v, executor %q: TensorFlow reads it as %q, want %q (disable_tfg_optimizer, intra-op threads, devices, disable_thread_spinning, executor)", tt.cfg, tt.executor, got, tt.want)
		}
	}
}
