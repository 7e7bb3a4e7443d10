package s3sync

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Hidden reports whether any element of the slash-separated name rel
// starts with a dot: hidden files, our partial downloads, and the
// runtime's checkpoints still being written (.tmp-ckpt-...). Pass it as a
// Skip to leave them out.
func Hidden(rel string) bool { return hasDotSegment(rel) }

// UploadFile uploads the file at path as the object dst.
func (c *Client) UploadFile(ctx context.Context, path string, dst URL) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", dst, err)
	}
	defer f.Close()
	_, err = c.up.Upload(ctx, &s3.PutObjectInput{
		Bucket: aws.String(dst.Bucket),
		Key:    aws.String(dst.Key),
		Body:   f,
		// Stored with the object, so downloads can verify it.
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	return classify(dst.String(), err)
}

// UploadTarGz uploads the contents of dir as a gzipped tar, the object
// dst, and returns its size. Entries are named relative to dir (for
// /opt/ml/model: 1/, 1/saved_model.pb, 1/variables/, ...), as SageMaker
// packs model.tar.gz and output.tar.gz. The archive is streamed to a
// multipart upload as it is written; no temporary file holds it.
func (c *Client) UploadTarGz(ctx context.Context, dir string, dst URL) (int64, error) {
	pr, pw := io.Pipe()
	var size atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(writeTarGz(ctx, dir, &countWriter{w: pw, n: &size}))
	}()
	_, err := c.up.Upload(ctx, &s3.PutObjectInput{
		Bucket:            aws.String(dst.Bucket),
		Key:               aws.String(dst.Key),
		Body:              pr,
		ContentType:       aws.String("application/gzip"),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	pr.CloseWithError(fmt.Errorf("upload ended"))
	<-done
	if err != nil {
		return 0, classify(dst.String(), err)
	}
	return size.Load(), nil
}

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// writeTarGz writes the contents of dir to w as a gzipped tar.
func writeTarGz(ctx context.Context, dir string, w io.Writer) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// UploadOptions change what [Client.UploadDir] does.
type UploadOptions struct {
	// Skip leaves out the files and folders whose slash-separated name
	// below dir it returns true for (e.g. [Hidden]).
	Skip func(rel string) bool
}

// UploadDir uploads each file under dir as dst/<its path below dir>,
// unless an object with the same size and content (by its ETag) is
// already there: files that are new or changed since the last sync.
// Nothing is deleted from S3.
func (c *Client) UploadDir(ctx context.Context, dir string, dst URL, opt UploadOptions) (Stats, error) {
	var st Stats
	remote := map[string]object{}
	objs, err := c.listObjects(ctx, dst, dst.dirPrefix(), nil)
	if err != nil {
		return st, err
	}
	for _, o := range objs {
		remote[o.rel] = o
	}
	type file struct {
		path, rel string
		size      int64
	}
	var files []file
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if opt.Skip != nil && opt.Skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if o, ok := remote[rel]; ok && o.size == fi.Size() {
			if same, _ := sameContent(p, o.size, o.etag, c.partSize); same {
				st.Skipped++
				return nil
			}
		}
		files = append(files, file{p, rel, fi.Size()})
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("%s: %w", dst, err)
	}
	var mu sync.Mutex
	err = c.parallel(ctx, len(files), func(ctx context.Context, i int) error {
		f := files[i]
		if err := c.UploadFile(ctx, f.path, dst.Join(f.rel)); err != nil {
			return err
		}
		mu.Lock()
		st.Objects++
		st.Bytes += f.size
		mu.Unlock()
		return nil
	})
	return st, err
}
