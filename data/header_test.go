package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
)

// rawHeader builds a .npy preamble around an arbitrary dict text, without
// numpy's padding rules, so tests can feed odd but legal headers.
func rawHeader(major byte, dict string) []byte {
	b := []byte(npyMagic)
	b = append(b, major, 0)
	if major == 1 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(dict)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(dict)))
	}
	return append(b, dict...)
}

func TestParseHeader(t *testing.T) {
	const f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n"
	tests := []struct {
		name    string
		in      []byte
		want    Header
		wantErr string
	}{
		{"v1", rawHeader(1, f4), Header{DType: Float32, Shape: []int{3, 4}}, ""},
		{"v2", rawHeader(2, f4), Header{DType: Float32, Shape: []int{3, 4}}, ""},
		{"big endian fortran", rawHeader(1, "{'descr': '>i8', 'fortran_order': True, 'shape': (2, 5)}"),
			Header{DType: Int64, BigEndian: true, Fortran: true, Shape: []int{2, 5}}, ""},
		{"native order", rawHeader(1, "{'descr': '=u2', 'fortran_order': False, 'shape': (7,)}"),
			Header{DType: Uint16, BigEndian: nativeBigEndian, Shape: []int{7}}, ""},
		{"0-d", rawHeader(1, "{'descr': '<f8', 'fortran_order': False, 'shape': ()}"),
			Header{DType: Float64, Shape: []int{}}, ""},
		{"empty", rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 10)}"),
			Header{DType: Float32, Shape: []int{0, 10}}, ""},
		{"python2 long and double quotes", rawHeader(1, `{"descr": "|u1", "fortran_order": False, "shape": (3L, 2L), }`),
			Header{DType: Uint8, Shape: []int{3, 2}}, ""},
		{"bool code", rawHeader(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (1,)}"),
			Header{DType: Bool, Shape: []int{1}}, ""},
		{"bytes text", rawHeader(1, "{'descr': '|S12', 'fortran_order': False, 'shape': (4,)}"),
			Header{DType: String, Width: 12, Shape: []int{4}}, ""},
		{"unicode text", rawHeader(1, "{'descr': '<U5', 'fortran_order': False, 'shape': (4, 2)}"),
			Header{DType: String, Width: 5, Unicode: true, Shape: []int{4, 2}}, ""},
		{"big-endian unicode", rawHeader(1, "{'descr': '>U1', 'fortran_order': False, 'shape': (4,)}"),
			Header{DType: String, Width: 1, Unicode: true, BigEndian: true, Shape: []int{4}}, ""},
		{"text without width", rawHeader(1, "{'descr': '<U0', 'fortran_order': False, 'shape': (4,)}"), Header{}, "has no positive width"},
		{"text too wide", rawHeader(1, "{'descr': '<U99999999999', 'fortran_order': False, 'shape': (4,)}"), Header{}, "has no positive width"},
		{"bad magic", []byte("PK\x03\x04 this is a zip file"), Header{}, "not a .npy file (bad magic)"},
		{"short bad magic", []byte("ab"), Header{}, "not a .npy file (bad magic)"},
		{"truncated magic", []byte("\x93NUM"), Header{}, "header is truncated"},
		{"version 4", append([]byte(npyMagic), 4, 0, 0, 0), Header{}, "version 4.0 is not supported"},
		{"version 1.1", append([]byte(npyMagic), 1, 1, 0, 0), Header{}, "version 1.1 is not supported"},
		{"truncated dict", rawHeader(1, f4)[:30], Header{}, "header is truncated"},
		{"huge length", append([]byte(npyMagic), 2, 0, 0xff, 0xff, 0xff, 0x7f), Header{}, "over the 1048576 byte limit"},
		{"object", rawHeader(1, "{'descr': '|O', 'fortran_order': False, 'shape': (3,)}"), Header{}, "dtype object ('|O') holds pickled Python objects, which sagefit never unpickles"},
		{"structured", rawHeader(1, "{'descr': [('a', '<i4'), ('b', '<f8')], 'fortran_order': False, 'shape': (3,)}"), Header{}, "structured dtypes"},
		{"missing key", rawHeader(1, "{'descr': '<f4', 'shape': (3,)}"), Header{}, `no "fortran_order" key`},
		{"extra key", rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1}"), Header{}, `unexpected key "x"`},
		{"duplicate key", rawHeader(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,)}"), Header{}, "appears twice"},
		{"negative dim", rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,)}"), Header{}, "negative dimension"},
		{"not a tuple", rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}"), Header{}, "not a tuple"},
		{"float dim", rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3.0,)}"), Header{}, "non-integer"},
		{"overflow", rawHeader(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}"), Header{}, "too large"},
		{"overflow behind zero", rawHeader(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296)}"), Header{}, "too large"},
		{"int out of range", rawHeader(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}"), Header{}, "out of range"},
		{"fortran not bool", rawHeader(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,)}"), Header{}, "not True or False"},
		{"not a dict", rawHeader(1, "['descr']"), Header{}, "not a Python dict"},
		{"nested too deep", rawHeader(1, strings.Repeat("(", 100)), Header{}, "nested too deeply"},
		{"trailing junk", rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} x"), Header{}, "unexpected"},
		{"v3 bad utf8", rawHeader(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}\xff"), Header{}, "not valid UTF-8"},
		{"unknown dtype", rawHeader(1, "{'descr': '<q9', 'fortran_order': False, 'shape': (3,)}"), Header{}, "dtype '<q9' is not supported"},
		{"datetime", rawHeader(1, "{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (3,)}"), Header{}, "datetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHeader(bytes.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.HeaderLen = len(tt.in)
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("got %+v, want %+v", h, tt.want)
			}
		})
	}
}

func TestParseHeaderV3UTF8(t *testing.T) {
	// Version 3.0 exists so headers may hold UTF-8; a comment-free dict
	// with a non-ASCII escape in a string must still parse.
	in := rawHeader(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }        \n")
	h, err := ParseHeader(bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if h.DType != Float32 || !reflect.DeepEqual(h.Shape, []int{2}) || h.HeaderLen != len(in) {
		t.Fatalf("got %+v", h)
	}
	_, err = ParseHeader(bytes.NewReader(rawHeader(3, "{'descr': 'é', 'fortran_order': False, 'shape': (2,)}")))
	if err == nil || !strings.Contains(err.Error(), "dtype") {
		t.Fatalf("non-ASCII descr: err = %v, want a dtype error", err)
	}
}

func TestParseHeaderEmptyStreamIsEOF(t *testing.T) {
	_, err := ParseHeader(bytes.NewReader(nil))
	if err != io.EOF {
		t.Fatalf("err = %v, want io.EOF itself so stream readers see a clean end", err)
	}
}

// TestParseHeaderStopsAtData checks the pipe-mode property: over a real
// pipe holding several arrays back to back, each header read leaves the
// stream at that array's first data byte.
func TestParseHeaderStopsAtData(t *testing.T) {
	type arr struct {
		h    Header
		data []byte
	}
	arrays := []arr{
		{Header{DType: Float32, Shape: []int{2, 3}}, bytes.Repeat([]byte{1, 2, 3, 4}, 6)},
		{Header{DType: Uint8, Shape: []int{5}}, []byte{9, 8, 7, 6, 5}},
		{Header{DType: Int64, Shape: []int{0, 4}}, nil},
		{Header{DType: Int16, BigEndian: true, Fortran: true, Shape: []int{2, 2}}, []byte{0, 1, 0, 2, 0, 3, 0, 4}},
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() {
		for _, a := range arrays {
			pw.Write(encodeHeader(a.h))
			pw.Write(a.data)
		}
		pw.Close()
	}()
	for i, a := range arrays {
		h, err := ParseHeader(pr)
		if err != nil {
			t.Fatalf("array %d: %v", i, err)
		}
		if h.DType != a.h.DType || h.BigEndian != a.h.BigEndian || h.Fortran != a.h.Fortran || !reflect.DeepEqual(h.Shape, a.h.Shape) {
			t.Fatalf("array %d: header %+v, want %+v", i, h, a.h)
		}
		got := make([]byte, h.DataLen())
		if _, err := io.ReadFull(pr, got); err != nil {
			t.Fatalf("array %d data: %v", i, err)
		}
		if !bytes.Equal(got, a.data) {
			t.Fatalf("array %d data = %v, want %v", i, got, a.data)
		}
	}
	if _, err := ParseHeader(pr); err != io.EOF {
		t.Fatalf("after the last array: err = %v, want io.EOF", err)
	}
}

func TestEncodeHeaderRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{DType: Float32, Shape: []int{1000, 10}},
		{DType: Float64, Shape: []int{}},
		{DType: Bool, Shape: []int{5}},
		{DType: Uint64, BigEndian: true, Fortran: true, Shape: []int{2, 3, 4}},
		{DType: Int8, Shape: make([]int, 30000)}, // needs a 4-byte length: version 2.0
	} {
		b := encodeHeader(h)
		if len(b)%64 != 0 {
			t.Errorf("%v: header is %d bytes, want a multiple of 64", h, len(b))
		}
		got, err := ParseHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%v: %v", h, err)
		}
		h.HeaderLen = len(b)
		if !reflect.DeepEqual(got, h) {
			t.Errorf("round trip: got %+v, want %+v", got, h)
		}
		wantMajor := byte(1)
		if len(b) > 65535 {
			wantMajor = 2
		}
		if b[6] != wantMajor {
			t.Errorf("%d-byte header written as version %d, want %d", len(b), b[6], wantMajor)
		}
	}
}

func TestDType(t *testing.T) {
	tests := []struct {
		in   string
		want DType
		size int
	}{
		{"float32", Float32, 4}, {"float", Float32, 4}, {"f4", Float32, 4},
		{"float16", Float16, 2}, {"half", Float16, 2}, {"double", Float64, 8},
		{"bool", Bool, 1}, {"?", Bool, 1}, {"b1", Bool, 1},
		{"int8", Int8, 1}, {"int16", Int16, 2}, {"int32", Int32, 4}, {"INT64", Int64, 8},
		{"uint8", Uint8, 1}, {"uint16", Uint16, 2}, {"u4", Uint32, 4}, {"uint64", Uint64, 8},
		{"float64", Float64, 8},
	}
	for _, tt := range tests {
		got, err := ParseDType(tt.in)
		if err != nil || got != tt.want || got.Size() != tt.size {
			t.Errorf("ParseDType(%q) = %v (size %d), %v; want %v (size %d)", tt.in, got, got.Size(), err, tt.want, tt.size)
		}
		if back, err := ParseDType(got.String()); err != nil || back != got {
			t.Errorf("ParseDType(%v.String()) = %v, %v", got, back, err)
		}
	}
	for _, bad := range []string{"", "<f4", "complex64", "object", "float128", "int"} {
		if d, err := ParseDType(bad); err == nil {
			t.Errorf("ParseDType(%q) = %v, want an error", bad, d)
		}
	}
	if Invalid.Valid() || Invalid.Size() != 0 || DType(200).Size() != 0 || DType(200).String() != "DType(200)" {
		t.Errorf("invalid dtypes: Valid=%v Size=%d String=%q", Invalid.Valid(), DType(200).Size(), DType(200).String())
	}
}

func TestShapeString(t *testing.T) {
	for _, tt := range []struct {
		in   []int
		want string
	}{{nil, "()"}, {[]int{5}, "(5,)"}, {[]int{1000, 10}, "(1000, 10)"}, {[]int{0, 1, 2}, "(0, 1, 2)"}} {
		if got := shapeString(tt.in); got != tt.want {
			t.Errorf("shapeString(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzParseHeader feeds arbitrary bytes to the header parser. It must never
// panic, must never consume more than the header it reports, and a header
// it accepts must survive a write and re-read unchanged.
func FuzzParseHeader(f *testing.F) {
	f.Add(rawHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n"))
	f.Add(rawHeader(2, "{'descr': '>i8', 'fortran_order': True, 'shape': (2, 3, 4), }\n"))
	f.Add(rawHeader(3, "{'descr': '|b1', 'fortran_order': False, 'shape': (), }\n"))
	f.Add(rawHeader(1, "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (3,)}"))
	f.Add([]byte("\x93NUMPY\x01\x00\xff\xff{"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ParseHeader(r)
		if err != nil {
			if h.Shape != nil || h.DType != Invalid {
				t.Fatalf("error %v came with a non-zero header %+v", err, h)
			}
			if errors.Is(err, io.EOF) && len(in) != 0 {
				t.Fatalf("io.EOF from %d bytes of input", len(in))
			}
			return
		}
		if consumed := len(in) - r.Len(); consumed != h.HeaderLen {
			t.Fatalf("consumed %d bytes but HeaderLen is %d", consumed, h.HeaderLen)
		}
		if !h.DType.Valid() {
			t.Fatalf("accepted invalid dtype %v", h.DType)
		}
		if h.DataLen() < 0 {
			t.Fatalf("negative data length for %v", h)
		}
		back, err := ParseHeader(bytes.NewReader(encodeHeader(h)))
		if err != nil {
			t.Fatalf("re-reading our own header for %+v: %v", h, err)
		}
		if back.DType != h.DType || back.BigEndian != h.BigEndian || back.Fortran != h.Fortran || !reflect.DeepEqual(back.Shape, h.Shape) {
			t.Fatalf("round trip changed %+v into %+v", h, back)
		}
	})
}
