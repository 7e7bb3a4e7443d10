package data

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// zipMagic starts a zip archive's first local file header, so every .npz.
const zipMagic = "PK\x03\x04"

// OpenNPZ opens every array of a .npz archive, as np.savez and
// np.savez_compressed write them, keyed by member name without ".npy"
// (the keyword of np.savez(f, train=x), or arr_0, arr_1, ... for
// positional arrays). Each Array's Path is "<path>/<member>.npy", which
// Open also accepts.
//
// Stored members (np.savez) are memory-mapped in place, like a .npy file:
// a stored zip entry is one contiguous run of bytes, at the offset its
// local header gives, so a large uncompressed archive opens instantly and
// is never read whole. Their CRC is not checked, since that would read
// everything. Deflated members (np.savez_compressed) are decompressed once,
// into memory, with the CRC checked; data larger than memory belongs in
// np.savez or .npy files. The caller closes the arrays.
func OpenNPZ(path string) (map[string]*Array, error) {
	f, zr, err := openZip(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // mappings outlive the descriptor
	members, err := npzMembers(path, zr)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Array, len(members))
	for _, zf := range members {
		a, err := openZipMember(f, path, zf)
		if err != nil {
			for _, a := range out {
				a.Close()
			}
			return nil, err
		}
		out[memberKey(zf.Name)] = a
	}
	return out, nil
}

// openZip opens a .npz file and reads its central directory.
func openZip(path string) (*os.File, *zip.Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: is a directory, not a .npz file", path)
	}
	zr, err := zip.NewReader(f, fi.Size())
	if err != nil {
		f.Close()
		if errors.Is(err, zip.ErrFormat) {
			return nil, nil, fmt.Errorf("%s: not a .npz file (not a zip archive, or a truncated one)", path)
		}
		return nil, nil, fmt.Errorf("%s: read zip directory: %w", path, err)
	}
	return f, zr, nil
}

// npzMembers returns the archive's arrays in archive order, refusing
// members that are not .npy files and duplicate names (np.load would
// silently keep one of them).
func npzMembers(path string, zr *zip.Reader) ([]*zip.File, error) {
	var out []*zip.File
	seen := map[string]bool{}
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/") {
			continue // a directory entry
		}
		if !strings.HasSuffix(zf.Name, ".npy") {
			return nil, fmt.Errorf("%s: member %q is not a .npy array; a .npz file holds only arrays (np.savez)", path, zf.Name)
		}
		if seen[zf.Name] {
			return nil, fmt.Errorf("%s: holds two members named %q", path, zf.Name)
		}
		seen[zf.Name] = true
		out = append(out, zf)
	}
	return out, nil
}

// memberKey is the array name of a member: its name without ".npy".
func memberKey(name string) string { return strings.TrimSuffix(name, ".npy") }

// memberPath is how a member is named in listings and errors.
func memberPath(archive, member string) string {
	return archive + string(filepath.Separator) + filepath.FromSlash(member)
}

// listNPZ returns the member paths of a .npz file, sorted.
func listNPZ(path string) ([]string, error) {
	f, zr, err := openZip(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	members, err := npzMembers(path, zr)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(members))
	for i, zf := range members {
		out[i] = memberPath(path, zf.Name)
	}
	sort.Strings(out)
	return out, nil
}

// splitMemberPath splits "<dir>/data.npz/train.npy" into the archive and
// the member name, if an ancestor of p is a regular file named *.npz.
func splitMemberPath(p string) (archive, member string, ok bool) {
	clean := filepath.Clean(p)
	for dir := filepath.Dir(clean); ; dir = filepath.Dir(dir) {
		if strings.EqualFold(filepath.Ext(dir), ".npz") {
			if fi, err := os.Stat(dir); err == nil && fi.Mode().IsRegular() {
				rel, err := filepath.Rel(dir, clean)
				if err != nil {
					return "", "", false
				}
				return dir, filepath.ToSlash(rel), true
			}
		}
		if filepath.Dir(dir) == dir {
			return "", "", false
		}
	}
}

// openMember opens one member of an archive by name ("train.npy"; the
// ".npy" may be left out).
func openMember(archive, member string) (*Array, error) {
	f, zr, err := openZip(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	members, err := npzMembers(archive, zr)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, zf := range members {
		if zf.Name == member || zf.Name == member+".npy" {
			return openZipMember(f, archive, zf)
		}
		names = append(names, memberKey(zf.Name))
	}
	return nil, fmt.Errorf("%s: no such array in %s, which holds %q: %w",
		memberPath(archive, member), filepath.Base(archive), names, fs.ErrNotExist)
}

// openZipMember opens one .npy member of an open archive.
func openZipMember(f *os.File, archive string, zf *zip.File) (*Array, error) {
	path := memberPath(archive, zf.Name)
	if zf.Flags&0x1 != 0 {
		return nil, fmt.Errorf("%s: the member is encrypted", path)
	}
	switch zf.Method {
	case zip.Store:
		if zf.CompressedSize64 != zf.UncompressedSize64 {
			return nil, fmt.Errorf("%s: stored member has %d bytes but claims %d uncompressed; the archive is corrupt",
				path, zf.CompressedSize64, zf.UncompressedSize64)
		}
		off, err := zf.DataOffset() // reads the local header
		if err != nil {
			return nil, fmt.Errorf("%s: read local header: %w", path, err)
		}
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		size := int64(zf.CompressedSize64)
		if have := fi.Size() - off; have < size {
			return nil, fmt.Errorf("%s: the archive is truncated: the member needs %d bytes but only %d follow",
				path, size, max(have, 0))
		}
		return openNPY(f, path, off, size)
	case zip.Deflate:
		return inflateMember(path, zf)
	}
	return nil, fmt.Errorf("%s: compression method %d is not supported; numpy writes stored (np.savez) or deflated (np.savez_compressed) members",
		path, zf.Method)
}

// inflateMember decompresses a deflated member into memory.
func inflateMember(path string, zf *zip.File) (*Array, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer rc.Close()
	h, err := ParseHeader(rc)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: member is empty, not a .npy array", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dataLen := h.DataLen()
	if have := int64(zf.UncompressedSize64) - int64(h.HeaderLen); have < dataLen {
		return nil, fmt.Errorf("%s: member is truncated: header says shape %s %s = %d bytes of data but only %d follow",
			path, shapeString(h.Shape), h.DType, dataLen, max(have, 0))
	}
	buf := make([]byte, dataLen)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("%s: decompress: %w", path, err)
	}
	// Read to the end so the zip reader checks the CRC.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, fmt.Errorf("%s: decompress: %w", path, err)
	}
	return newMemArray(path, h, buf), nil
}
