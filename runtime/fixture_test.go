package runtime_test

import (
	"os"
	"testing"

	"github.com/sagefit/sagefit/internal/fixture"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.Cleanup()
	os.Exit(code)
}
