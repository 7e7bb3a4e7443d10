package runtime

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/input"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// A value no channel holds is said to be the model's own, an id and a
// label each in their words; a channel that cannot be searched (a Pipe
// stream, gone) leaves the failure as TensorFlow said it.
func TestLocateSaysNoDataHoldsTheValue(t *testing.T) {
	ctx := context.Background()
	if got := locate(ctx, time.Second, &model.ValueOutOfRange{Value: 7}, nil, nil); !strings.HasPrefix(got, "no input or label holds that id: ") {
		t.Errorf("an id: %q", got)
	}
	if got := locate(ctx, time.Second, &model.ValueOutOfRange{Value: 7, Label: true}, nil); !strings.HasPrefix(got, "no label holds that value: ") {
		t.Errorf("a label: %q", got)
	}
	pipe, err := input.Open(sagemaker.Channel{Name: "training", InputMode: sagemaker.Pipe}, sagemaker.Paths{Base: t.TempDir()}, &model.Metadata{}, input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.Close()
	if got := locate(ctx, time.Second, &model.ValueOutOfRange{Value: 7}, pipe, nil); got != "" {
		t.Errorf("a Pipe channel: %q, want nothing said", got)
	}
}
