package tf

import "testing"

// TensorFlow's messages reach the failure file as one line: the graph's
// node trace and a batch's label list dropped (a hostile-input probe found
// them as the only explanation of a label out of range).
func TestTFErrorIsOneLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"sagefit_train_step_weighted: Received a label value of 7 which is outside the valid range of [0, 3).  Label values: 3 0 1 2 7 1\n\t [[{{function_node __inference_train_step_3561}}{{node compile_loss/sparse_categorical_crossentropy/SparseSoftmaxCrossEntropyWithLogits}}]]",
			"sagefit_train_step_weighted: a label is 7, outside the model's 3 classes [0, 3) (the labels of a sparse categorical loss are class indices)"},
		{"Received a label value of -1 which is outside the valid range of [0, 10).  Label values: -1", "a label is -1, outside the model's 10 classes [0, 10) (the labels of a sparse categorical loss are class indices)"},
		// A NaN label reaches the loss as int64's least value.
		{"Received a label value of -9223372036854775808 which is outside the valid range of [0, 3).  Label values: -9223372036854775808 1",
			"a label is NaN (or past int64), outside the model's 3 classes [0, 3) (the labels of a sparse categorical loss are class indices)"},
		{"Input to reshape is a tensor with 12 values,\nbut the requested shape has 16\n\t [[{{node Reshape}}]]", "Input to reshape is a tensor with 12 values, but the requested shape has 16"},
		// An Embedding's id beyond its input_dim (TensorFlow's words named
		// only the batch position).
		{"Graph execution error:\n\nindices[3,2] = 25 is not in [0, 20)\n\t [[{{node sequential_2_1/embedding_1/GatherV2}}]]",
			"Graph execution error: an input id is 25, outside the 20 rows of a lookup (an Embedding layer's input_dim, or a lookup table's size), which take ids 0 to 19: check the input data, or build the layer with a larger input_dim"},
		{"Could not find meta graph def matching supplied tags: { serve }", "Could not find meta graph def matching supplied tags: { serve }"},
	} {
		if got := tfError(c.in).Error(); got != c.want {
			t.Errorf("tfError(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}
