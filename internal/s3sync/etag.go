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

// commonPartSizes are the part sizes S3 clients upload with: boto3's and
// the AWS CLI's 8 MiB (doubled until a file fits 10,000 parts), the SDKs'
// and our 5 MiB, and the other powers of two a large file's parts take.
var commonPartSizes = []int64{5 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20, 128 << 20, 256 << 20, 512 << 20, 1 << 30}

// sameContent reports whether the file at path, of the given size, holds
// what an object with that ETag holds: the MD5 for a single-part ETag, the
// MD5 of the parts' MD5s for a multipart one, its parts of partSize (how we
// upload) or of a size other clients use (commonPartSizes) that gives the
// ETag's part count. Other ETags (SSE-KMS, other part sizes) give false:
// not known to be the same. (Only 5 MiB parts were tried: an object boto3
// uploaded was fetched again by every run that reused the cache.)
func sameContent(path string, size int64, etag string, partSize int64) (bool, error) {
	if md5ETag(etag) {
		sum, err := fileMD5(path)
		return err == nil && sum == etag, err
	}
	hexSum, count, ok := strings.Cut(etag, "-")
	parts, err := strconv.Atoi(count)
	if !ok || err != nil || parts < 1 || !md5ETag(hexSum) {
		return false, nil
	}
	tried := map[int64]bool{} // by the parts' split: every size from the file's up splits it alike
	for _, ps := range append([]int64{partSize}, commonPartSizes...) {
		if ps <= 0 || tried[min(ps, size)] || (size+ps-1)/ps != int64(parts) {
			continue
		}
		tried[min(ps, size)] = true
		sum, err := partsMD5(path, ps, parts)
		if err != nil || sum == hexSum {
			return err == nil, err
		}
	}
	return false, nil
}

// partsMD5 is the hex MD5 of the MD5s of the file's parts of partSize.
func partsMD5(path string, partSize int64, parts int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	all := md5.New()
	for range parts {
		h := md5.New()
		if _, err := io.CopyN(h, f, partSize); err != nil && err != io.EOF {
			return "", err
		}
		all.Write(h.Sum(nil))
	}
	return hex.EncodeToString(all.Sum(nil)), nil
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
