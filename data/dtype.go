package data

import (
	"fmt"
	"strconv"
	"strings"
)

// DType is the element type of an array. The zero value is Invalid, so a
// missing entry in BatchOptions.DTypes means "keep the file's dtype".
type DType uint8

// The numeric dtypes that .npy files and model tensors share.
const (
	Invalid DType = iota
	Bool
	Int8
	Int16
	Int32
	Int64
	Uint8
	Uint16
	Uint32
	Uint64
	Float16
	Float32
	Float64
	// String is text: numpy's fixed-width bytes ('S') or unicode ('U')
	// elements in a file (Header.Width says how wide), and in a batch
	// NUL-padded UTF-8 elements of one width per tensor (see
	// Array.TextWidth). Numbers and text do not convert into each other.
	String
)

var dtypeInfo = [...]struct {
	name string
	code string // numpy typestr without the byte order, e.g. "f4"
	size int
}{
	Invalid: {"invalid", "", 0},
	Bool:    {"bool", "b1", 1},
	Int8:    {"int8", "i1", 1},
	Int16:   {"int16", "i2", 2},
	Int32:   {"int32", "i4", 4},
	Int64:   {"int64", "i8", 8},
	Uint8:   {"uint8", "u1", 1},
	Uint16:  {"uint16", "u2", 2},
	Uint32:  {"uint32", "u4", 4},
	Uint64:  {"uint64", "u8", 8},
	Float16: {"float16", "f2", 2},
	Float32: {"float32", "f4", 4},
	Float64: {"float64", "f8", 8},
	String:  {"string", "", 0},
}

// Size is the number of bytes of one element (0 for Invalid and String,
// whose width is the array's: Header.ItemSize).
func (d DType) Size() int {
	if int(d) >= len(dtypeInfo) {
		return 0
	}
	return dtypeInfo[d].size
}

// String is numpy's name for the dtype, e.g. "float32".
func (d DType) String() string {
	if int(d) >= len(dtypeInfo) {
		return fmt.Sprintf("DType(%d)", uint8(d))
	}
	return dtypeInfo[d].name
}

// Valid reports whether d is one of the supported dtypes.
func (d DType) Valid() bool { return d > Invalid && int(d) < len(dtypeInfo) }

// IsFloat says whether d is a floating-point dtype.
func (d DType) IsFloat() bool { return d == Float16 || d == Float32 || d == Float64 }

// typestr is numpy's array-interface type string for d, e.g. "<f4".
func (d DType) typestr(bigEndian bool) string {
	if d.Size() == 1 {
		return "|" + dtypeInfo[d].code
	}
	if bigEndian {
		return ">" + dtypeInfo[d].code
	}
	return "<" + dtypeInfo[d].code
}

// ParseDType accepts numpy and TensorFlow names ("float32", "int64", "bool",
// "half", "float", "double") and numpy type codes without a byte order
// ("f4", "i8", "b1", "?"). Byte order is a property of a file, not of a
// dtype, so "<f4" is refused here; ParseHeader handles it.
func ParseDType(name string) (DType, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	switch n {
	case "half":
		return Float16, nil
	case "float":
		return Float32, nil
	case "double":
		return Float64, nil
	case "?", "bool_":
		return Bool, nil
	case "string", "str", "bytes":
		return String, nil
	}
	for d := Bool; d <= Float64; d++ {
		if n == dtypeInfo[d].name || n == dtypeInfo[d].code {
			return d, nil
		}
	}
	return Invalid, fmt.Errorf("unknown dtype %q; want one of bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, float32, float64", name)
}

// parseDescr decodes a numpy typestr such as "<f4", "|b1", "|S12" or
// "<U5" into h's DType, BigEndian, Width and Unicode. The error is a
// sentence fragment that the caller prefixes with the file name.
func parseDescr(h *Header, descr string) error {
	dt, big, err := parseNumericDescr(descr)
	if err == nil {
		h.DType, h.BigEndian = dt, big
		return nil
	}
	code := strings.TrimLeft(descr, "<>|=")
	if len(code) < 1 || (code[0] != 'S' && code[0] != 'U' && code[0] != 'a') {
		return err
	}
	w, werr := strconv.Atoi(code[1:])
	if werr != nil || w < 1 || w > 1<<28 {
		return fmt.Errorf("dtype '%s' has no positive width; save text with np.save(path, np.asarray(texts, dtype=str))", descr)
	}
	h.DType, h.Width, h.Unicode = String, w, code[0] == 'U'
	h.BigEndian = h.Unicode && (descr[0] == '>' || (descr[0] == '=' && nativeBigEndian))
	return nil
}

// parseNumericDescr decodes a numeric typestr; text types are an error
// here (parseDescr takes them).
func parseNumericDescr(descr string) (dt DType, bigEndian bool, err error) {
	if len(descr) < 2 {
		return Invalid, false, fmt.Errorf("dtype %q is not a numpy type string", descr)
	}
	order, code := descr[0], descr[1:]
	switch order {
	case '<', '|':
	case '>':
		bigEndian = true
	case '=':
		bigEndian = nativeBigEndian
	default:
		// numpy always writes a byte order; a bare code is tolerated.
		code = descr
		bigEndian = nativeBigEndian
	}
	for d := Bool; d <= Float64; d++ {
		if code == dtypeInfo[d].code {
			if d.Size() == 1 {
				bigEndian = false
			}
			return d, bigEndian, nil
		}
	}
	if code == "?" {
		return Bool, false, nil
	}
	switch code[0] {
	case 'O':
		return Invalid, false, fmt.Errorf("dtype object ('%s') holds pickled Python objects, which sagefit never unpickles; save numbers as a numeric array and text as a fixed-width string array (np.save(path, np.asarray(texts, dtype=str)), allow_pickle=False)", descr)
	case 'U', 'S', 'a':
		return Invalid, false, fmt.Errorf("dtype '%s' is text", descr)
	case 'V':
		return Invalid, false, fmt.Errorf("dtype void ('%s') is not supported; save a numeric array", descr)
	case 'c':
		return Invalid, false, fmt.Errorf("dtype complex ('%s') is not supported; save real and imaginary parts as float arrays", descr)
	case 'M', 'm':
		return Invalid, false, fmt.Errorf("dtype datetime ('%s') is not supported; save it as int64", descr)
	}
	return Invalid, false, fmt.Errorf("dtype '%s' is not supported; want bool, int8-64, uint8-64 or float16/32/64", descr)
}
