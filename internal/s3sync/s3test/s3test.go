// Package s3test runs a real S3-compatible server for tests: moto's server
// mode (python -m moto.server, pinned in python/requirements.txt) on a free
// loopback port, with IAM authentication enforced, so wrong credentials
// fail as they do on AWS. It also has a TCP proxy that cuts a connection
// off after a number of bytes, to test transfers that break halfway.
package s3test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Region is the region the server's clients sign for.
const Region = "us-east-1"

// Server is a running moto server with one IAM user allowed everything on
// S3, whose keys are AccessKey and SecretKey.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// Python is the interpreter to run moto with: $SAGEFIT_PYTHON (set by the
// Makefile), else the repository's .venv; "" if neither exists.
func Python() string {
	if p := os.Getenv("SAGEFIT_PYTHON"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "..", "..", ".venv", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// Start runs a moto server for t and stops it when t ends. It skips t,
// saying why, when moto is not importable.
func Start(t testing.TB) *Server {
	t.Helper()
	py := Python()
	if py == "" {
		t.Skip("skipping: no Python virtualenv with moto (run `make setup`, which installs python/requirements.txt)")
	}
	if out, err := exec.Command(py, "-c", "import moto.server").CombinedOutput(); err != nil {
		t.Skipf("skipping: moto is not importable with %s (pip install -r python/requirements.txt): %v: %s", py, err, lastLine(out))
	}
	var s *Server
	var err error
	for range 3 { // the free port may be taken between finding and binding it
		if s, err = start(py); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start moto server: %v", err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("moto server log (last 4 KiB):\n%s", s.log.tail(4096))
		}
	})
	if err := s.setupAuth(); err != nil {
		t.Fatalf("moto server: %v\n%s", err, s.log.tail(4096))
	}
	return s
}

func start(py string) (*Server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), log: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(py, "-m", "moto.server", "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("moto server exited: %s", s.log.tail(2048))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("moto server did not answer on %s within 30 s: %s", s.Endpoint, s.log.tail(2048))
		}
	}
}

func (s *Server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// setupAuth makes an IAM user with an access key and a policy allowing
// all of S3, then makes moto check every later request's signature and
// permissions (it accepts any credentials until told otherwise).
func (s *Server) setupAuth() error {
	const user = "sagefit-test"
	if _, err := s.iam(url.Values{"Action": {"CreateUser"}, "UserName": {user}}); err != nil {
		return err
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`
	if _, err := s.iam(url.Values{"Action": {"PutUserPolicy"}, "UserName": {user}, "PolicyName": {"s3"}, "PolicyDocument": {policy}}); err != nil {
		return err
	}
	body, err := s.iam(url.Values{"Action": {"CreateAccessKey"}, "UserName": {user}})
	if err != nil {
		return err
	}
	var key struct {
		ID     string `xml:"CreateAccessKeyResult>AccessKey>AccessKeyId"`
		Secret string `xml:"CreateAccessKeyResult>AccessKey>SecretAccessKey"`
	}
	if err := xml.Unmarshal(body, &key); err != nil || key.ID == "" || key.Secret == "" {
		return fmt.Errorf("CreateAccessKey answered %q (%v)", body, err)
	}
	s.AccessKey, s.SecretKey = key.ID, key.Secret
	resp, err := http.Post(s.Endpoint+"/moto-api/reset-auth", "text/plain", strings.NewReader("0"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("reset-auth: %s: %s", resp.Status, b)
	}
	return nil
}

// iam sends one signed IAM query API request.
func (s *Server) iam(params url.Values) ([]byte, error) {
	params.Set("Version", "2010-05-08")
	body := params.Encode()
	req, err := http.NewRequest(http.MethodPost, s.Endpoint+"/", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: "setup"}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "iam", Region, time.Now()); err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("IAM %s: %s: %s", params.Get("Action"), resp.Status, b)
	}
	return b, nil
}

// Env is os.Environ() with every AWS_ variable replaced by ones that point
// the SDK's default chain at this server with the test user's keys
// (endpoint through AWS_ENDPOINT_URL_S3), then extra ("KEY=value") on top.
func (s *Server) Env(extra ...string) []string {
	return Environ(s.Endpoint, s.AccessKey, s.SecretKey, extra...)
}

// Environ is os.Environ() without AWS_ variables, plus the ones for an S3
// endpoint and a key pair (no shared config files, no instance metadata),
// then extra on top.
func Environ(endpoint, accessKey, secretKey string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	env = append(env, awsVars(endpoint, accessKey, secretKey)...)
	return append(env, extra...)
}

func awsVars(endpoint, accessKey, secretKey string) []string {
	none := filepath.Join(os.TempDir(), "sagefit-s3test-no-such-file")
	return []string{
		"AWS_ENDPOINT_URL_S3=" + endpoint,
		"AWS_ACCESS_KEY_ID=" + accessKey,
		"AWS_SECRET_ACCESS_KEY=" + secretKey,
		"AWS_REGION=" + Region,
		"AWS_CONFIG_FILE=" + none,
		"AWS_SHARED_CREDENTIALS_FILE=" + none,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// SetEnv sets, for the rest of t, the AWS_ variables of [Server.Env] in
// this process (for code that reads the SDK's default chain in-process),
// then extra ("KEY=value") on top; other AWS_ variables are unset.
func (s *Server) SetEnv(t testing.TB, extra ...string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "") // restored when t ends
			os.Unsetenv(k)
		}
	}
	for _, kv := range append(awsVars(s.Endpoint, s.AccessKey, s.SecretKey), extra...) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Client is an SDK client for the server with the test user's keys.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}, nil
		}),
	})
}

// CreateBucket makes a bucket.
func (s *Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
}

// Put stores an object, in one part, with a CRC32 checksum.
func (s *Server) Put(t testing.TB, bucket, key string, body []byte) {
	t.Helper()
	_, err := s.Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		t.Fatalf("put s3://%s/%s: %v", bucket, key, err)
	}
}

// Get reads an object.
func (s *Server) Get(t testing.TB, bucket, key string) []byte {
	t.Helper()
	out, err := s.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("get s3://%s/%s: %v", bucket, key, err)
	}
	return b
}

// Keys lists the keys under prefix, sorted.
func (s *Server) Keys(t testing.TB, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

// CutProxy listens on a loopback port and forwards each connection to
// target (host:port), but closes it once `after` bytes have come back from
// target: a transfer cut off halfway, on every connection. It returns the
// proxy's http:// endpoint and stops when t ends.
func CutProxy(t testing.TB, target string, after int64) string {
	t.Helper()
	return proxy(t, target, after, false)
}

// StallProxy is CutProxy that, once `after` bytes have come back, passes
// no more back and keeps the connection open: an endpoint that froze (a
// stopped process, a black hole) halfway through every transfer.
func StallProxy(t testing.TB, target string, after int64) string {
	t.Helper()
	return proxy(t, target, after, true)
}

func proxy(t testing.TB, target string, after int64, stall bool) string {
	t.Helper()
	stop := make(chan struct{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				client.Close()
				continue
			}
			track(client, true)
			track(server, true)
			wg.Add(2)
			go func() {
				defer wg.Done()
				io.Copy(server, client)
				server.Close()
			}()
			go func() {
				defer wg.Done()
				io.CopyN(client, server, after)
				if stall {
					<-stop // neither closed nor read: the client's bytes pile up unread
				}
				client.Close()
				server.Close()
				track(client, false)
				track(server, false)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		close(stop)
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + l.Addr().String()
}

// Host is the host:port of an http:// endpoint.
func Host(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	return u.Host
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
