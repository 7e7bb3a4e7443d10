package s3sync

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// md5ETag reports whether etag (without quotes) has the shape of a
// single-part upload's ETag: the hex MD5 of the object.
func md5ETag(etag string) bool {
	if len(etag) != 32 {
		return false
	}
	_, err := hex.DecodeString(etag)
	return err == nil
}

// sameContent reports whether the file at path, of the given size, holds
// what an object with that ETag holds: the MD5 for a single-part ETag, the
// MD5 of the parts' MD5s for a multipart one uploaded with partSize parts
// (the upload manager's, which is how we upload). Other ETags (SSE-KMS,
// other part sizes) give false: not known to be the same.
func sameContent(path string, size int64, etag string, partSize int64) (bool, error) {
	if md5ETag(etag) {
		sum, err := fileMD5(path)
		return err == nil && sum == etag, err
	}
	hexSum, count, ok := strings.Cut(etag, "-")
	parts, err := strconv.Atoi(count)
	if !ok || err != nil || parts < 1 || !md5ETag(hexSum) || partSize <= 0 {
		return false, nil
	}
	if want := (size + partSize - 1) / partSize; want != int64(parts) {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	all := md5.New()
	for range parts {
		h := md5.New()
		if _, err := io.CopyN(h, f, partSize); err != nil && err != io.EOF {
			return false, err
		}
		all.Write(h.Sum(nil))
	}
	return hex.EncodeToString(all.Sum(nil)) == hexSum, nil
}

func fileMD5(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parallel runs do(ctx, i) for i in [0, n) on at most c.workers
// goroutines. The first error cancels the rest and is the one returned.
func (c *Client) parallel(ctx context.Context, n int, do func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for range min(c.workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := do(ctx, i); err != nil {
					once.Do(func() { first = err })
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}
