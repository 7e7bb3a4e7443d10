package s3sync_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/sagefit/sagefit/internal/s3sync"
	"github.com/sagefit/sagefit/internal/s3sync/s3test"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, bucket, key, err string
	}{
		{in: "s3://b/data", bucket: "b", key: "data"},
		{in: "s3://b/data/", bucket: "b", key: "data/"},
		{in: "s3://b", bucket: "b"},
		{in: "s3://b/", bucket: "b"},
		{in: "s3://b/a/b/c.npy", bucket: "b", key: "a/b/c.npy"},
		{in: "s3:///data", err: "has no bucket name"},
		{in: "/local/dir", err: "is not an s3:// URL"},
		{in: "s3://my bucket/x", err: "is not a valid bucket name"},
	} {
		u, err := s3sync.Parse(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || u.Bucket != tc.bucket || u.Key != tc.key {
			t.Errorf("Parse(%q) = %+v, %v; want %s %s", tc.in, u, err, tc.bucket, tc.key)
		}
	}
	u, _ := s3sync.Parse("s3://b/out/")
	if got := u.Join("job-1", "output", "model.tar.gz").String(); got != "s3://b/out/job-1/output/model.tar.gz" {
		t.Errorf("Join: %s", got)
	}
	if got := (s3sync.URL{Bucket: "b"}).Join("x").String(); got != "s3://b/x" {
		t.Errorf("Join on a bucket: %s", got)
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  *s3sync.Error
		want string
	}{
		{&s3sync.Error{URL: "s3://b/p", Kind: s3sync.AccessDenied, Detail: "InvalidAccessKeyId"}, "s3://b/p: access denied: check AWS credentials (InvalidAccessKeyId)"},
		{&s3sync.Error{URL: "s3://nope/p", Kind: s3sync.NoSuchBucket}, `s3://nope/p: bucket "nope" does not exist`},
		{&s3sync.Error{URL: "s3://b/p/x", Kind: s3sync.CutOff, Detail: "after 10 of 20 bytes", Err: io.ErrUnexpectedEOF}, "s3://b/p/x: transfer cut off after 10 of 20 bytes: unexpected EOF"},
		{&s3sync.Error{URL: "s3://b/p", Kind: s3sync.NotFound, Detail: "no objects under this prefix"}, "s3://b/p: no objects under this prefix"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newClient(t *testing.T, srv *s3test.Server, opts ...s3sync.Option) *s3sync.Client {
	t.Helper()
	srv.SetEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := s3sync.New(ctx, append([]s3sync.Option{s3sync.WithPartSize(5 << 20)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return c
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	return names
}

// TestS3 runs the transfers against a real S3-compatible server (moto,
// with IAM authentication) on loopback.
func TestS3(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "data")
	objects := map[string][]byte{
		"ds/train.npy":         randomBytes(300_000, 1),
		"ds/labels.npy":        randomBytes(2_000, 2),
		"ds/sub/extra.bin":     randomBytes(10, 3),
		"ds/empty.txt":         {},
		"ds2/not-this-one.npy": randomBytes(5, 4),
	}
	for k, v := range objects {
		srv.Put(t, "data", k, v)
	}
	srv.Put(t, "data", "ds/folder/", nil) // a console-made "folder" marker

	t.Run("download", func(t *testing.T) {
		c := newClient(t, srv)
		dir := filepath.Join(t.TempDir(), "training")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "stale.npy"), []byte("old"), 0o644)
		os.WriteFile(filepath.Join(dir, ".train.npy.s3part-123"), []byte("partial"), 0o644)
		u, _ := s3sync.Parse("s3://data/ds")
		st, err := c.Download(ctx(t), u, dir, s3sync.DownloadOptions{Mirror: true})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"empty.txt", "labels.npy", "sub/extra.bin", "train.npy"}
		if got := files(t, dir); !slices.Equal(got, want) {
			t.Fatalf("files %v, want %v", got, want)
		}
		for _, name := range want {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			if !bytes.Equal(b, objects["ds/"+name]) {
				t.Errorf("%s differs from the object", name)
			}
		}
		if st.Objects != 4 || st.Removed != 1 || st.Verified["MD5"] != 4 || st.Verified["CRC32"] != 4 {
			t.Errorf("stats %+v, want 4 objects (each CRC32 and MD5 checked), 1 removed", st)
		}
		// Again: nothing changed, nothing fetched.
		st, err = c.Download(ctx(t), u, dir, s3sync.DownloadOptions{Mirror: true})
		if err != nil || st.Objects != 0 || st.Skipped != 4 {
			t.Errorf("second download: %+v, %v; want 4 skipped", st, err)
		}
		// A single object.
		one, _ := s3sync.Parse("s3://data/ds/labels.npy")
		dir2 := t.TempDir()
		if _, err := c.Download(ctx(t), one, dir2, s3sync.DownloadOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := files(t, dir2); !slices.Equal(got, []string{"labels.npy"}) {
			t.Errorf("single object: %v", got)
		}
	})

	t.Run("multipart", func(t *testing.T) {
		c := newClient(t, srv)
		src := filepath.Join(t.TempDir(), "big.bin")
		body := randomBytes(11<<20, 5)
		os.WriteFile(src, body, 0o644)
		u, _ := s3sync.Parse("s3://data/big/big.bin")
		if err := c.UploadFile(ctx(t), src, u); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		prefix, _ := s3sync.Parse("s3://data/big")
		st, err := c.Download(ctx(t), prefix, dir, s3sync.DownloadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(dir, "big.bin"))
		if !bytes.Equal(got, body) || st.Objects != 1 {
			t.Fatalf("multipart object came back different (%d bytes), stats %+v", len(got), st)
		}
		// The multipart ETag is recognised: a second download skips it.
		if st, err := c.Download(ctx(t), prefix, dir, s3sync.DownloadOptions{}); err != nil || st.Skipped != 1 {
			t.Errorf("second download of the multipart object: %+v, %v", st, err)
		}
		// So is one uploaded in boto3's and the AWS CLI's 8 MiB parts (it
		// was fetched again by every download into the same folder).
		boto := newClient(t, srv, s3sync.WithPartSize(8<<20))
		u8, _ := s3sync.Parse("s3://data/big8/big.bin")
		if err := boto.UploadFile(ctx(t), src, u8); err != nil {
			t.Fatal(err)
		}
		prefix8, _ := s3sync.Parse("s3://data/big8")
		dir8 := t.TempDir()
		for i, want := range []int{0, 1} {
			if st, err := c.Download(ctx(t), prefix8, dir8, s3sync.DownloadOptions{}); err != nil || st.Skipped != want {
				t.Errorf("download %d of the object in 8 MiB parts: %+v, %v; want %d skipped", i+1, st, err, want)
			}
		}
	})

	t.Run("tar.gz", func(t *testing.T) {
		c := newClient(t, srv)
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "1", "variables"), 0o755)
		os.WriteFile(filepath.Join(dir, "1", "saved_model.pb"), []byte("pb"), 0o644)
		os.WriteFile(filepath.Join(dir, "1", "variables", "variables.index"), []byte("index"), 0o644)
		u, _ := s3sync.Parse("s3://data/out/job/output/model.tar.gz")
		n, err := c.UploadTarGz(ctx(t), dir, u)
		if err != nil {
			t.Fatal(err)
		}
		b := srv.Get(t, "data", "out/job/output/model.tar.gz")
		if int64(len(b)) != n {
			t.Errorf("reported %d bytes, the object has %d", n, len(b))
		}
		got := untar(t, b)
		want := []string{"1/", "1/saved_model.pb=pb", "1/variables/", "1/variables/variables.index=index"}
		if !slices.Equal(got, want) {
			t.Errorf("archive %v, want %v", got, want)
		}
	})

	t.Run("upload dir", func(t *testing.T) {
		c := newClient(t, srv)
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "ckpt-000001-000000000"), 0o755)
		os.MkdirAll(filepath.Join(dir, ".tmp-ckpt-000002-000000000-123"), 0o755)
		os.WriteFile(filepath.Join(dir, "ckpt-000001-000000000", "variables.bin"), randomBytes(1000, 6), 0o644)
		os.WriteFile(filepath.Join(dir, "ckpt-000001-000000000", "state.json"), []byte("{}"), 0o644)
		os.WriteFile(filepath.Join(dir, ".tmp-ckpt-000002-000000000-123", "variables.bin"), []byte("half"), 0o644)
		u, _ := s3sync.Parse("s3://data/ckpt/")
		opt := s3sync.UploadOptions{Skip: s3sync.Hidden}
		st, err := c.UploadDir(ctx(t), dir, u, opt)
		if err != nil || st.Objects != 2 {
			t.Fatalf("upload: %+v, %v", st, err)
		}
		if got := srv.Keys(t, "data", "ckpt/"); !slices.Equal(got, []string{"ckpt/ckpt-000001-000000000/state.json", "ckpt/ckpt-000001-000000000/variables.bin"}) {
			t.Errorf("keys %v", got)
		}
		os.WriteFile(filepath.Join(dir, "ckpt-000001-000000000", "state.json"), []byte(`{"x":1}`), 0o644)
		st, err = c.UploadDir(ctx(t), dir, u, opt)
		if err != nil || st.Objects != 1 || st.Skipped != 1 {
			t.Errorf("second upload: %+v, %v; want the changed file only", st, err)
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		for name, keys := range map[string][2]string{
			"unknown key":  {"AKIAUNKNOWNKEY000000", "secret"},
			"wrong secret": {srv.AccessKey, "not-the-secret"},
		} {
			t.Run(name, func(t *testing.T) {
				bad := *srv
				bad.AccessKey, bad.SecretKey = keys[0], keys[1]
				c := newClient(t, &bad)
				u, _ := s3sync.Parse("s3://data/ds")
				_, err := c.Download(ctx(t), u, t.TempDir(), s3sync.DownloadOptions{})
				if !s3sync.IsKind(err, s3sync.AccessDenied) || !strings.HasPrefix(err.Error(), "s3://data/ds: access denied: check AWS credentials") {
					t.Errorf("error %v", err)
				}
				err = c.CheckBucket(ctx(t), u)
				if !s3sync.IsKind(err, s3sync.AccessDenied) || !strings.HasPrefix(err.Error(), "s3://data/ds: access denied: check AWS credentials") {
					t.Errorf("CheckBucket error %v", err)
				}
				t.Log(err)
			})
		}
	})

	t.Run("missing bucket", func(t *testing.T) {
		c := newClient(t, srv)
		u, _ := s3sync.Parse("s3://no-such-bucket/ds")
		_, err := c.Download(ctx(t), u, t.TempDir(), s3sync.DownloadOptions{})
		if want := `s3://no-such-bucket/ds: bucket "no-such-bucket" does not exist`; err == nil || err.Error() != want {
			t.Errorf("error %v, want %s", err, want)
		}
		_, err = c.UploadTarGz(ctx(t), t.TempDir(), s3sync.URL{Bucket: "no-such-bucket", Key: "x.tar.gz"})
		if !s3sync.IsKind(err, s3sync.NoSuchBucket) {
			t.Errorf("upload error %v", err)
		}
	})

	t.Run("stopped", func(t *testing.T) {
		c := newClient(t, srv)
		stopped, cancel := context.WithCancel(context.Background())
		cancel()
		dir := t.TempDir()
		u, _ := s3sync.Parse("s3://data/ds")
		_, err := c.Download(stopped, u, dir, s3sync.DownloadOptions{})
		if !s3sync.IsKind(err, s3sync.Canceled) {
			t.Errorf("error %v", err)
		}
		if got := files(t, dir); len(got) != 0 {
			t.Errorf("files %v after a stopped download", got)
		}
	})

	t.Run("missing bucket check", func(t *testing.T) {
		c := newClient(t, srv)
		if err := c.CheckBucket(ctx(t), s3sync.URL{Bucket: "no-such-bucket"}); !s3sync.IsKind(err, s3sync.NoSuchBucket) {
			t.Errorf("error %v", err)
		}
		if err := c.CheckBucket(ctx(t), s3sync.URL{Bucket: "data", Key: "x"}); err != nil {
			t.Errorf("error %v", err)
		}
	})

	t.Run("empty prefix", func(t *testing.T) {
		c := newClient(t, srv)
		u, _ := s3sync.Parse("s3://data/nothing-here")
		_, err := c.Download(ctx(t), u, t.TempDir(), s3sync.DownloadOptions{})
		if !s3sync.IsKind(err, s3sync.NotFound) {
			t.Errorf("error %v", err)
		}
		if _, err := c.Download(ctx(t), u, t.TempDir(), s3sync.DownloadOptions{AllowEmpty: true}); err != nil {
			t.Errorf("AllowEmpty: %v", err)
		}
	})

	t.Run("cut off", func(t *testing.T) {
		proxy := s3test.CutProxy(t, s3test.Host(srv.Endpoint), 64<<10)
		c := newClient(t, srv, s3sync.WithEndpoint(proxy), s3sync.WithWorkers(1))
		dir := t.TempDir()
		u, _ := s3sync.Parse("s3://data/ds")
		_, err := c.Download(ctx(t), u, dir, s3sync.DownloadOptions{})
		if !s3sync.IsKind(err, s3sync.CutOff) || !strings.Contains(err.Error(), "s3://data/ds/train.npy: transfer cut off after ") {
			t.Fatalf("error %v", err)
		}
		t.Log(err)
		for _, f := range files(t, dir) {
			if f == "train.npy" || strings.Contains(f, ".s3part-") {
				t.Errorf("%s left in the folder after a cut-off transfer", f)
			}
		}
	})

	// An endpoint that freezes halfway through every response (a stopped
	// process): the transfer fails once nothing has moved for the stall
	// timeout, tried again, in a sentence; it waited forever. The stall
	// timeout covers the listing too, which a loaded machine's moto can
	// take a few hundred milliseconds to answer: 1 s.
	t.Run("stalled", func(t *testing.T) {
		proxy := s3test.StallProxy(t, s3test.Host(srv.Endpoint), 64<<10)
		c := newClient(t, srv, s3sync.WithEndpoint(proxy), s3sync.WithWorkers(1), s3sync.WithStallTimeout(time.Second))
		u, _ := s3sync.Parse("s3://data/ds")
		start := time.Now()
		_, err := c.Download(ctx(t), u, t.TempDir(), s3sync.DownloadOptions{})
		if err == nil || !strings.Contains(err.Error(), "s3://data/ds/train.npy: ") || !strings.Contains(err.Error(), "stopped answering") {
			t.Fatalf("error %v", err)
		}
		t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
	})

	// An object whose stored checksum does not match its bytes: the SDK's
	// validation (ChecksumMode ENABLED) must catch it.
	t.Run("bad checksum", func(t *testing.T) {
		c := newClient(t, srv, s3sync.WithAttempts(2))
		_, err := srv.Client().PutObject(ctx(t), &s3.PutObjectInput{
			Bucket: aws.String("data"), Key: aws.String("bad/x.npy"), Body: bytes.NewReader([]byte("hello")),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32, ChecksumCRC32: aws.String("AAAAAA=="),
		})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		u, _ := s3sync.Parse("s3://data/bad")
		_, err = c.Download(ctx(t), u, dir, s3sync.DownloadOptions{})
		if !s3sync.IsKind(err, s3sync.Corrupt) {
			t.Fatalf("error %v", err)
		}
		t.Log(err)
		if got := files(t, dir); len(got) != 0 {
			t.Errorf("files %v left after a checksum mismatch", got)
		}
	})
}

func untar(t *testing.T, b []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeDir {
			got = append(got, h.Name)
		} else {
			got = append(got, h.Name+"="+string(body))
		}
	}
}
