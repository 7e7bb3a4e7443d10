package model

import "fmt"

// DType is a TensorFlow data type (the TF_DataType enum values).
type DType int

// The dtypes sagefit feeds and fetches.
const (
	Float32  DType = 1
	Float64  DType = 2
	Int32    DType = 3
	Uint8    DType = 4
	Int16    DType = 5
	Int8     DType = 6
	String   DType = 7
	Int64    DType = 9
	Bool     DType = 10
	BFloat16 DType = 14
	Uint16   DType = 17
	Float16  DType = 19
	Uint32   DType = 22
	Uint64   DType = 23
)

var dtypeInfo = map[DType]struct {
	name string
	size int
}{
	Float32: {"float32", 4}, Float64: {"float64", 8}, Int32: {"int32", 4},
	Uint8: {"uint8", 1}, Int16: {"int16", 2}, Int8: {"int8", 1},
	String: {"string", 0}, Int64: {"int64", 8}, Bool: {"bool", 1},
	BFloat16: {"bfloat16", 2}, Uint16: {"uint16", 2}, Float16: {"float16", 2},
	Uint32: {"uint32", 4}, Uint64: {"uint64", 8},
}

// Size is the byte size of one element (0 for strings).
func (d DType) Size() int { return dtypeInfo[d].size }

// String is the numpy / tf.DType name, e.g. "float32".
func (d DType) String() string {
	if i, ok := dtypeInfo[d]; ok {
		return i.name
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// ParseDType maps a tf.DType name ("float32", "int64", ...) to a DType.
func ParseDType(name string) (DType, error) {
	for d, i := range dtypeInfo {
		if i.name == name {
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q", name)
}
