//go:build unix

package input_test

import (
	"bytes"
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/input"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// A host given no objects of a ShardedByS3Key Pipe channel opens it empty,
// a weight per element included (a review found its empty weight made with
// one weight per row, and the host refused at its first epoch, for a model
// whose loss is one value per pixel).
func TestHostWithoutShardOfPerElementWeights(t *testing.T) {
	four := int64(4)
	perElement := *meta
	perElement.Signatures = map[string]string{model.RoleTrainStepWeighted: "a", model.RoleComputeGradientsWeighted: "b", model.RoleTestStepWeighted: "c"}
	perElement.SampleWeights = []model.TensorSpec{{Name: model.SampleWeight, Key: model.SampleWeight, DType: "float32", Shape: []*int64{nil, &four}}}
	paths := sagemaker.Paths{Base: t.TempDir()}
	if err := os.MkdirAll(paths.DataDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := paths.PipeFIFO("training", 0)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	go func() { // a writer that sends nothing
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
	}()
	c, err := input.Open(sagemaker.Channel{Name: "training", InputMode: sagemaker.Pipe, Distribution: sagemaker.ShardedByS3Key}, paths, &perElement,
		input.Options{PipeTensors: []string{"x", "y", model.SampleWeight}, Warn: &bytes.Buffer{}, Pipe: data.PipeOptions{SpoolDir: t.TempDir(), OpenTimeout: time.Minute, IdleTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ds, done, err := c.Epoch(context.Background())
	if err != nil {
		t.Fatalf("the host without a share: %v", err)
	}
	defer done()
	if ds.Len() != 0 || len(ds.Arrays(model.SampleWeight)) != 1 {
		t.Errorf("dataset of %d rows, weights %v; want an empty one with its weights", ds.Len(), ds.Arrays(model.SampleWeight))
	}
}
