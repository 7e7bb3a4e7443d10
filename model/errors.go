package model

// ValueOutOfRange is a step that failed on one value of the data: a sparse
// label outside the model's classes (Label) or an input id outside a
// lookup's rows. Its message is TensorFlow's, put plainly; the runtime,
// which has the data, adds where the value is.
type ValueOutOfRange struct {
	Msg   string
	Label bool    // a target's label; otherwise an input's id
	Value float64 // NaN for a NaN label
}

func (e *ValueOutOfRange) Error() string { return e.Msg }
