package data

import (
	"archive/zip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Files are named relative to the channel's root, so two train.npy in
// different folders read apart, and a .npz member with its archive.
func TestChannelNamesTellFilesApart(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"part-1", "part-2"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o755)
		if err := WriteNPY(filepath.Join(dir, sub, "train.npy"), Float32, []int{2, 3}, make([]byte, 24)); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteNPY(filepath.Join(dir, "labels.npy"), Float32, []int{2}, make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	_, err := OpenChannel(dir, []string{"x"}, []string{"y"}, nil)
	if err == nil || !strings.Contains(err.Error(), "[part-1/train.npy part-2/train.npy]") {
		t.Fatalf("err = %v, want both files named by their folder", err)
	}
}

// A .npz member whose name is a path (np.savez never writes one) is
// refused, naming it, rather than shown as another file.
func TestNPZMemberPathsRefused(t *testing.T) {
	for _, name := range []string{"../../etc/x.npy", "/etc/x.npy", "sub/x.npy", `a\x.npy`} {
		dir := t.TempDir()
		path := filepath.Join(dir, "evil.npz")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		zw := zip.NewWriter(f)
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(filepath.Join("testdata", "float32_le.npy"))
		w.Write(raw)
		zw.Close()
		f.Close()
		_, err = OpenChannel(dir, []string{"x"}, []string{"y"}, nil)
		if err == nil || !strings.Contains(err.Error(), "evil.npz: member "+strings.TrimSpace(`"`+strings.ReplaceAll(name, `\`, `\\`)+`"`)+" is a path, not an array name") {
			t.Errorf("member %q: err = %v", name, err)
		}
	}
}

// CSV is parsed into memory, so a channel larger than half the memory
// available is refused in one sentence before it is read.
func TestCSVBoundedByMemory(t *testing.T) {
	dir := t.TempDir()
	row := "1,0.5,0.25,0.125\n"
	if err := os.WriteFile(filepath.Join(dir, "part-0.csv"), []byte(strings.Repeat(row, 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func(f func() (int64, bool)) { availableMemory = f }(availableMemory)
	availableMemory = func() (int64, bool) { return 20000, true } // a 20 kB machine
	_, err := OpenChannel(dir, []string{"x"}, []string{"y"}, nil)
	if err == nil || !strings.Contains(err.Error(), "part-0.csv: the CSV data is 17000 bytes, more than the 10000 bytes (half the memory available)") {
		t.Fatalf("err = %v", err)
	}
	availableMemory = func() (int64, bool) { return 1 << 30, true }
	ds, err := OpenChannel(dir, []string{"x"}, []string{"y"}, nil)
	if err != nil {
		t.Fatalf("a CSV channel within the bound: %v", err)
	}
	ds.Close()
}
