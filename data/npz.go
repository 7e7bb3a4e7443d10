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

// Deflate writes at least one bit, in practice two, for a 258-byte match,
// so no member inflates to more than about 1032 times its compressed size;
// deflateSlack covers a tiny member's block headers.
const (
	maxDeflateRatio = 1032
	deflateSlack    = 1 << 10
)

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
// everything. Deflated members (np.savez_compressed) are opened from their
// .npy header alone (decompressing a few hundred bytes), so shapes, dtypes
// and row counts are checked before any data is inflated; a member whose
// inflated size disagrees with its header is refused. Their data is
// inflated on first use, into a file in the spool folder (SpoolDir below;
// the job's volume for a channel, see WithSpoolDir) that is then
// memory-mapped and unlinked, with the CRC checked, so a member larger than
// memory trains in bounded memory. The caller closes the arrays.
func OpenNPZ(path string) (map[string]*Array, error) {
	return openNPZ(path, path, "")
}

// openNPZ is OpenNPZ naming the archive name in errors and spooling
// deflated members in spool ("" for os.TempDir()).
func openNPZ(path, name, spool string) (map[string]*Array, error) {
	f, zr, err := openZip(path, name)
	if err != nil {
		return nil, err
	}
	defer f.Close() // mappings outlive the descriptor
	members, err := npzMembers(name, zr)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Array, len(members))
	for _, zf := range members {
		a, err := openZipMember(f, name, zf, spool)
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

// openZip opens a .npz file and reads its central directory; name is how
// errors name it.
func openZip(path, name string) (*os.File, *zip.Reader, error) {
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
		return nil, nil, fmt.Errorf("%s: is a directory, not a .npz file", name)
	}
	zr, err := zip.NewReader(f, fi.Size())
	if err != nil {
		f.Close()
		if errors.Is(err, zip.ErrFormat) {
			return nil, nil, fmt.Errorf("%s: not a .npz file (not a zip archive, or a truncated one)", name)
		}
		return nil, nil, fmt.Errorf("%s: read zip directory: %w", name, err)
	}
	return f, zr, nil
}

// npzMembers returns the archive's arrays in archive order, refusing
// members that are not .npy files, duplicate names (np.load would
// silently keep one of them), and names that are paths (np.savez writes
// plain names; "../x.npy" or "/etc/x.npy" would be named as another file).
func npzMembers(path string, zr *zip.Reader) ([]*zip.File, error) {
	var out []*zip.File
	seen := map[string]bool{}
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/") {
			continue // a directory entry
		}
		if strings.ContainsAny(zf.Name, `/\`) || strings.Contains(zf.Name, "..") || filepath.IsAbs(zf.Name) {
			return nil, fmt.Errorf("%s: member %q is a path, not an array name; np.savez names members after its keywords (train.npy), so the archive was not written by numpy", path, zf.Name)
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
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no arrays (np.savez with none); remove it", path)
	}
	return out, nil
}

// memberKey is the array name of a member: its name without ".npy".
func memberKey(name string) string { return strings.TrimSuffix(name, ".npy") }

// memberPath is how a member is listed: as a path below its archive, so
// Open takes it like a file.
func memberPath(archive, member string) string {
	return archive + string(filepath.Separator) + filepath.FromSlash(member)
}

// memberName is how errors name a member: "data.npz:train.npy", the
// archive as the caller names it.
func memberName(archive, member string) string { return archive + ":" + member }

// listNPZ returns the member paths of a .npz file, sorted; name is how
// errors name the archive.
func listNPZ(path, name string) ([]string, error) {
	f, zr, err := openZip(path, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	members, err := npzMembers(name, zr)
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
	return openMemberNamed(archive, archive, member, "")
}

func openMemberNamed(archive, name, member, spool string) (*Array, error) {
	f, zr, err := openZip(archive, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	members, err := npzMembers(name, zr)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, zf := range members {
		if zf.Name == member || zf.Name == member+".npy" {
			return openZipMember(f, name, zf, spool)
		}
		names = append(names, memberKey(zf.Name))
	}
	return nil, fmt.Errorf("%s: no such array in %s, which holds %q: %w",
		memberName(name, member), filepath.Base(archive), names, fs.ErrNotExist)
}

// openZipMember opens one .npy member of an open archive; archive is the
// archive's name in errors.
func openZipMember(f *os.File, archive string, zf *zip.File, spool string) (*Array, error) {
	path := memberName(archive, zf.Name)
	if zf.Flags&0x1 != 0 {
		return nil, fmt.Errorf("%s: the member is encrypted", path)
	}
	if zf.Method != zip.Store && zf.Method != zip.Deflate {
		return nil, fmt.Errorf("%s: compression method %d is not supported; numpy writes stored (np.savez) or deflated (np.savez_compressed) members",
			path, zf.Method)
	}
	off, err := zf.DataOffset() // reads the local header
	if err != nil {
		return nil, fmt.Errorf("%s: read local header: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// Go's zip reader believes the directory's sizes; a deflated member's
	// bound (deflatedMember) is only as good as its compressed size.
	size := int64(zf.CompressedSize64)
	if have := fi.Size() - off; size < 0 || have < size {
		return nil, fmt.Errorf("%s: the archive is truncated: the member needs %d bytes but only %d follow",
			path, zf.CompressedSize64, max(have, 0))
	}
	switch zf.Method {
	case zip.Store:
		if zf.CompressedSize64 != zf.UncompressedSize64 {
			return nil, fmt.Errorf("%s: stored member has %d bytes but claims %d uncompressed; the archive is corrupt",
				path, zf.CompressedSize64, zf.UncompressedSize64)
		}
		return openNPY(f, path, off, size)
	default:
		return deflatedMember(f.Name(), path, zf, spool)
	}
}

// deflatedMember opens a deflated member of the archive at archivePath
// from its header alone; its data is inflated to a spool file on first use
// (see OpenNPZ), from the archive opened again then.
func deflatedMember(archivePath, path string, zf *zip.File, spool string) (*Array, error) {
	// Its rows are believed from its header before a byte is inflated (the
	// shuffle order is sized for them), so a size deflate cannot reach is
	// refused here: a few kilobytes claiming 100 million rows took 1.2 GB
	// before the first batch found the member short.
	if limit := maxDeflateRatio*zf.CompressedSize64 + deflateSlack; zf.UncompressedSize64 > limit {
		return nil, fmt.Errorf("%s: the archive says the member inflates to %d bytes from %d, more than deflate can (%d to 1); the archive is corrupt or was not written by numpy",
			path, zf.UncompressedSize64, zf.CompressedSize64, maxDeflateRatio)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	h, err := ParseHeader(rc)
	rc.Close()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: member is empty, not a .npy array", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	want := int64(h.HeaderLen) + h.DataLen()
	if got := int64(zf.UncompressedSize64); got < want {
		return nil, fmt.Errorf("%s: member is truncated: header says shape %s %s = %d bytes of data but the member inflates to only %d in all",
			path, shapeString(h.Shape), h.DType, h.DataLen(), got)
	} else if got > want {
		return nil, fmt.Errorf("%s: member inflates to %d bytes but its header describes %d (shape %s %s); the archive was not written by numpy",
			path, got, want, shapeString(h.Shape), h.DType)
	}
	a := newArray(path, h)
	member := zf.Name
	a.load = func() error {
		f, zr, err := openZip(archivePath, path)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, zf := range zr.File {
			if zf.Name == member {
				return a.inflate(zf, spool)
			}
		}
		return fmt.Errorf("%s: the member is gone from the archive", path)
	}
	return a, nil
}

// inflate decompresses the member's data into a spool file and maps it.
func (a *Array) inflate(zf *zip.File, spool string) error {
	if spool == "" {
		spool = os.TempDir()
	}
	size := int64(a.hdr.HeaderLen) + a.hdr.DataLen()
	if err := os.MkdirAll(spool, 0o755); err != nil {
		return fmt.Errorf("%s: spool folder: %w", a.path, err)
	}
	if free, ok := freeBytes(spool); ok && free < size {
		return fmt.Errorf("%s: the member inflates to %s but %s has only %s free; store it uncompressed (np.savez or .npy), or give the job a larger volume",
			a.path, byteSize(size), spool, byteSize(free))
	}
	rc, err := zf.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", a.path, err)
	}
	defer rc.Close()
	sf, err := os.CreateTemp(spool, "sagefit-npz-*.npy")
	if err != nil {
		return fmt.Errorf("%s: spool: %w", a.path, err)
	}
	defer os.Remove(sf.Name()) // the mapping keeps the data; the name can go
	spoolW := &spoolWriter{w: sf}
	n, err := io.Copy(spoolW, io.LimitReader(rc, size))
	if spoolW.err != nil { // the volume, not the archive (full: several processes inflate there)
		sf.Close()
		return fmt.Errorf("%s: writing its inflated data to %s: %w", a.path, spool, spoolW.err)
	}
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil { // read to the end: the zip reader checks the CRC there
		var one [1]byte
		if k, rerr := rc.Read(one[:]); k > 0 {
			err = fmt.Errorf("the member inflates to more than its header's %d bytes", size)
		} else if rerr != nil && rerr != io.EOF {
			err = rerr
		}
	}
	if err != nil {
		sf.Close()
		return fmt.Errorf("%s: the archive's compressed member is corrupt or cut short (inflating it: %w); save the archive again", a.path, err)
	}
	if a.hdr.DataLen() > 0 {
		m, d, err := mapFile(sf, int64(a.hdr.HeaderLen), int(a.hdr.DataLen()))
		if err != nil {
			sf.Close()
			return fmt.Errorf("%s: map the inflated member: %w", a.path, err)
		}
		a.mapping, a.data = m, d[:a.hdr.DataLen()]
	}
	return sf.Close()
}

// byteSize writes n bytes for a person: "10.0 GiB".
func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// spoolWriter remembers its writer's error, to tell a full volume from a
// corrupt archive.
type spoolWriter struct {
	w   io.Writer
	err error
}

func (s *spoolWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}
