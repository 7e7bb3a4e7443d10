package tf

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/internal/fixture"
)

// TestSessionConfigTurnsTFGOff reads the session config with TensorFlow's
// own ConfigProto: the field set by number is disable_tfg_optimizer, and
// the rest of the config is intact (NoGPUs: no GPU device).
func TestSessionConfigTurnsTFGOff(t *testing.T) {
	raw, err := configProto(Config{IntraOpThreads: 3, NoGPUs: true}, "")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fixture.Python(t), "-c", `import sys
from tensorflow.core.protobuf import config_pb2
c = config_pb2.ConfigProto()
c.ParseFromString(sys.stdin.buffer.read())
print(c.graph_options.rewrite_options.disable_tfg_optimizer, c.intra_op_parallelism_threads, dict(c.device_count))`)
	cmd.Stdin = bytes.NewReader(raw)
	cmd.Env = append(cmd.Environ(), "TF_CPP_MIN_LOG_LEVEL=3")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "True 3 {'GPU': 0}" {
		t.Fatalf("TensorFlow reads the session config as %q, want disable_tfg_optimizer True, 3 intra-op threads, no GPU", got)
	}
}
