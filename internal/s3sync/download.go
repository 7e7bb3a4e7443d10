package s3sync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// partSuffix marks a file being downloaded: ".<name>.s3part-<random>",
// beside the final name, hidden from channel listings.
const partSuffix = ".s3part-"

// Stats counts what a transfer did.
type Stats struct {
	Objects int   // objects transferred
	Skipped int   // already the same on the other side
	Bytes   int64 // bytes transferred
	Removed int   // local files a mirror removed
	// Verified counts downloaded objects by how their bytes were checked
	// beyond their size: a checksum algorithm S3 stored ("CRC32",
	// "SHA256", ...) and/or "MD5" from a single-part ETag.
	Verified map[string]int
}

func (s *Stats) add(o Stats) {
	s.Objects += o.Objects
	s.Skipped += o.Skipped
	s.Bytes += o.Bytes
	s.Removed += o.Removed
	for k, v := range o.Verified {
		if s.Verified == nil {
			s.Verified = map[string]int{}
		}
		s.Verified[k] += v
	}
}

// DownloadOptions change what [Client.Download] does.
type DownloadOptions struct {
	// Mirror removes the files in the folder that are not under the prefix
	// (hidden files aside), so that the folder holds exactly its objects.
	Mirror bool
	// AllowEmpty makes an empty prefix a download of nothing, not a
	// [NotFound] error.
	AllowEmpty bool
	// Skip leaves out the objects whose slash-separated name below the
	// prefix it returns true for.
	Skip func(rel string) bool
}

// object is one object to download.
type object struct {
	key  string
	rel  string // slash-separated name below the prefix
	etag string // without quotes
	size int64
}

// Download copies every object under src into dir, keeping the key's path
// below the prefix (s3://b/data/x/y.npy from s3://b/data lands in
// dir/x/y.npy). src names a folder (s3://b/data and s3://b/data/ are the
// same); if nothing is under it, src may also name one object, which lands
// as dir/<its base name>. Objects are fetched by a bounded pool of workers
// and each is renamed into place only when whole and verified, so a
// failed or stopped download never leaves a partial file under a final
// name. Files already in dir with the object's size and content are kept.
func (c *Client) Download(ctx context.Context, src URL, dir string, opt DownloadOptions) (Stats, error) {
	var st Stats
	prefix := src.dirPrefix()
	todo, err := c.listObjects(ctx, src, prefix, opt.Skip)
	if err != nil {
		return st, err
	}
	if len(todo) == 0 && src.Key != "" && !strings.HasSuffix(src.Key, "/") {
		head, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(src.Bucket), Key: aws.String(src.Key)})
		switch err := classify(src.String(), err); {
		case err == nil:
			todo = append(todo, object{key: src.Key, rel: path.Base(src.Key), etag: unquote(aws.ToString(head.ETag)), size: aws.ToInt64(head.ContentLength)})
		case !IsKind(err, NotFound):
			return st, err
		}
	}
	if len(todo) == 0 && !opt.AllowEmpty {
		return st, &Error{URL: src.String(), Kind: NotFound, Detail: "no objects under this prefix"}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return st, fmt.Errorf("%s: %w", src, err)
	}
	if err := removeParts(dir); err != nil {
		return st, fmt.Errorf("%s: %w", src, err)
	}

	var mu sync.Mutex
	err = c.parallel(ctx, len(todo), func(ctx context.Context, i int) error {
		o := todo[i]
		final := filepath.Join(dir, filepath.FromSlash(o.rel))
		if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() && fi.Size() == o.size {
			if same, _ := sameContent(final, o.size, o.etag, c.partSize); same {
				mu.Lock()
				st.Skipped++
				mu.Unlock()
				return nil
			}
		}
		u := URL{Bucket: src.Bucket, Key: o.key}.String()
		algs, err := c.fetch(ctx, u, src.Bucket, o, final)
		if err != nil {
			return err
		}
		mu.Lock()
		st.add(Stats{Objects: 1, Bytes: o.size, Verified: algs})
		mu.Unlock()
		return nil
	})
	if err != nil {
		return st, err
	}
	if opt.Mirror {
		keep := map[string]bool{}
		for _, o := range todo {
			keep[filepath.FromSlash(o.rel)] = true
		}
		n, err := removeExtra(dir, keep)
		st.Removed = n
		if err != nil {
			return st, fmt.Errorf("%s: %w", src, err)
		}
	}
	return st, nil
}

// listObjects lists the objects under prefix as downloads (folder markers
// and skipped names left out).
func (c *Client) listObjects(ctx context.Context, src URL, prefix string, skip func(string) bool) ([]object, error) {
	var todo []object
	p := s3.NewListObjectsV2Paginator(c.s3, &s3.ListObjectsV2Input{Bucket: aws.String(src.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, classify(src.String(), err)
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			rel := strings.TrimPrefix(key, prefix)
			if rel == "" || strings.HasSuffix(rel, "/") {
				continue // the prefix itself, or a "folder" marker
			}
			if skip != nil && skip(rel) {
				continue
			}
			if _, err := localName(rel); err != nil {
				return nil, &Error{URL: URL{Bucket: src.Bucket, Key: key}.String(), Kind: BadKey}
			}
			todo = append(todo, object{key: key, rel: rel, etag: unquote(aws.ToString(o.ETag)), size: aws.ToInt64(o.Size)})
		}
	}
	return todo, nil
}

// fetch downloads one object to final, trying again from the start when
// the bytes stop coming halfway or do not verify.
func (c *Client) fetch(ctx context.Context, url, bucket string, o object, final string) (map[string]int, error) {
	pause := c.backoff
	for attempt := 1; ; attempt++ {
		algs, err := c.fetchOnce(ctx, url, bucket, o, final)
		if err == nil {
			return algs, nil
		}
		var e *Error
		retry := errors.As(err, &e) && (e.Kind == CutOff || e.Kind == Corrupt)
		if !retry || ctx.Err() != nil {
			return nil, err
		}
		if attempt == c.attempts {
			e.tries = attempt
			return nil, err
		}
		select {
		case <-time.After(pause):
			pause *= 2
		case <-ctx.Done():
			return nil, classify(url, context.Cause(ctx))
		}
	}
}

func (c *Client) fetchOnce(ctx context.Context, url, bucket string, o object, final string) (_ map[string]int, err error) {
	in := &s3.GetObjectInput{
		Bucket:       aws.String(bucket),
		Key:          aws.String(o.key),
		ChecksumMode: types.ChecksumModeEnabled,
	}
	if o.etag != "" {
		in.IfMatch = aws.String(`"` + o.etag + `"`) // the object as listed, not a newer one
	}
	out, err := c.s3.GetObject(ctx, in)
	if err != nil {
		return nil, classify(url, err)
	}
	defer out.Body.Close()
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+partSuffix+"*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	want := o.size
	if out.ContentLength != nil {
		want = *out.ContentLength
	}
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), out.Body)
	if err != nil {
		if ctx.Err() != nil {
			return nil, classify(url, context.Cause(ctx))
		}
		if strings.Contains(err.Error(), "checksum did not match") {
			return nil, &Error{URL: url, Kind: Corrupt, Err: err}
		}
		detail := fmt.Sprintf("after %d of %d bytes", n, want)
		if errors.Is(err, os.ErrDeadlineExceeded) { // stallConn's
			detail += ": the endpoint stopped answering"
		}
		return nil, &Error{URL: url, Kind: CutOff, Detail: detail, Err: err}
	}
	if n != want || n != o.size {
		return nil, &Error{URL: url, Kind: Corrupt, Detail: fmt.Sprintf("(%d bytes, the object has %d)", n, o.size)}
	}
	algs := map[string]int{}
	if meta, ok := s3.GetChecksumValidationMetadata(out.ResultMetadata); ok {
		for _, a := range meta.AlgorithmsUsed {
			algs[a]++
		}
	}
	if md5ETag(o.etag) && plainEncryption(out) {
		if got := hex.EncodeToString(h.Sum(nil)); got != o.etag {
			return nil, &Error{URL: url, Kind: Corrupt, Detail: fmt.Sprintf("(MD5 %s, the ETag says %s)", got, o.etag)}
		}
		algs["MD5"]++
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return algs, nil
}

// plainEncryption reports whether the object's ETag is the MD5 of its
// bytes: not so for SSE-KMS, DSSE-KMS and SSE-C objects.
func plainEncryption(out *s3.GetObjectOutput) bool {
	switch out.ServerSideEncryption {
	case types.ServerSideEncryptionAwsKms, types.ServerSideEncryptionAwsKmsDsse:
		return false
	}
	return out.SSECustomerAlgorithm == nil
}

// removeParts removes the partial downloads a killed run left in dir.
func removeParts(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), ".") && strings.Contains(d.Name(), partSuffix) {
			return os.Remove(p)
		}
		return nil
	})
}

// removeExtra removes the files under dir that keep lacks, leaving hidden
// files and folders alone, and then the folders that this left empty.
func removeExtra(dir string, keep map[string]bool) (int, error) {
	n := 0
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if !keep[rel] {
			if err := os.Remove(p); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails, harmlessly, unless empty
	}
	return n, err
}

func unquote(etag string) string { return strings.Trim(etag, `"`) }
