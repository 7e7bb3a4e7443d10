package model

import (
	"unsafe"

	"encoding/binary"
	"errors"
	"fmt"
	"github.com/sagefit/sagefit/internal/float16"
	"math"
)

// Metric is one named metric value, in the order Keras reports them.
type Metric struct {
	Name  string
	Value float64
}

// Tensor is a dense tensor in host memory (little-endian, C order).
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// Float32s views the tensor's data as float32 values (copying).
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType != Float32 {
		return nil, fmt.Errorf("tensor is %s, not float32", t.DType)
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// Float32View is the tensor's data as float32 values, without copying
// where the host is little-endian and the bytes are aligned (else a copy).
func (t Tensor) Float32View() []float32 {
	if f := float32View(t.Data); f != nil {
		return f
	}
	f, _ := t.Float32s()
	return f
}

// Float32Bytes is the little-endian bytes of f: a view where the host is
// little-endian, else a copy.
func Float32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	if float16.HostLittleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
	}
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func float32View(b []byte) []float32 {
	if !float16.HostLittleEndian || len(b)%4 != 0 || len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// Batch is one step's data: for every input and target (by its name in the
// contract) the bytes of Rows examples in the contract's dtype, C order.
type Batch struct {
	Rows    int
	Tensors map[string][]byte
}

// Variable is a model or optimizer variable's value.
type Variable struct {
	Spec VariableSpec
	Tensor
}

// SessionConfig is the TensorFlow session configuration (package model/tf
// turns it into a ConfigProto).
type SessionConfig struct {
	// IntraOpThreads and InterOpThreads size TensorFlow's thread pools; 0
	// lets TensorFlow pick (one per core). A negative InterOpThreads runs
	// every op in the calling thread (TensorFlow's meaning).
	IntraOpThreads int
	InterOpThreads int
	// GPUMemoryGrowth allocates GPU memory as needed instead of all at once.
	GPUMemoryGrowth bool
	// SoftPlacement lets ops without a GPU kernel fall back to the CPU.
	SoftPlacement bool
	// VisibleGPUs restricts the GPUs this process uses ("0", "0,1"); empty
	// means all.
	VisibleGPUs string
	// LogPlacement logs the device every op is placed on.
	LogPlacement bool
	// NoGPUs keeps TensorFlow from looking for GPUs: on a machine without
	// NVIDIA's driver, looking only logs an error line (cuInit, 303) into a
	// run that is fine.
	NoGPUs bool
}

// SplitVariables lays raw variable bytes (a checkpoint's Vars, or a broadcast
// buffer) over the model's variables, taking specs, dtypes and shapes from
// like (the model's current variables, which it reuses).
func SplitVariables(like []Variable, raw []byte) ([]Variable, error) {
	vars := like
	for i := range vars {
		n := len(vars[i].Data)
		if len(raw) < n {
			return nil, errors.New("it holds fewer variable bytes than the model has")
		}
		vars[i].Data, raw = raw[:n:n], raw[n:]
	}
	if len(raw) != 0 {
		return nil, errors.New("it holds more variable bytes than the model has")
	}
	return vars, nil
}
