package s3sync

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// DefaultRegion is used when neither the environment nor the shared config
// names a region: S3's own default, and what S3-compatible stores accept.
const DefaultRegion = "us-east-1"

// Client transfers files between local folders and S3.
type Client struct {
	s3       *s3.Client
	up       *manager.Uploader
	endpoint string // custom endpoint in use, or ""
	region   string
	workers  int
	partSize int64
	attempts int           // tries per object download
	backoff  time.Duration // pause before the second try, doubled after
}

type options struct {
	endpoint string
	region   string
	workers  int
	attempts int
	partSize int64
	backoff  time.Duration
	stall    time.Duration
}

// Option configures a [Client].
type Option func(*options)

// WithEndpoint sends requests to an S3-compatible store at url (e.g.
// http://127.0.0.1:9000) with path-style addressing, instead of AWS or the
// endpoint that AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL name. Empty keeps
// the default.
func WithEndpoint(url string) Option { return func(o *options) { o.endpoint = url } }

// WithRegion sets the region, instead of the one from the environment or
// shared config. Empty keeps the default.
func WithRegion(region string) Option { return func(o *options) { o.region = region } }

// WithWorkers sets how many objects are transferred at once (default 8).
func WithWorkers(n int) Option { return func(o *options) { o.workers = n } }

// WithAttempts sets how many times a download whose bytes stop coming
// halfway is tried from the start before it fails (default 3).
func WithAttempts(n int) Option { return func(o *options) { o.attempts = n } }

// WithPartSize sets the multipart upload part size in bytes (default, and
// minimum, 5 MiB).
func WithPartSize(n int64) Option { return func(o *options) { o.partSize = n } }

// WithStallTimeout sets how long a connection may move no byte, either
// way, before its request fails and is tried again (default [StallTimeout]).
func WithStallTimeout(d time.Duration) Option { return func(o *options) { o.stall = d } }

// StallTimeout is how long a connection may move no byte before its request
// fails: an endpoint that froze mid-transfer (a stopped process, a network
// that drops packets) held a transfer forever, without a word. Two minutes
// leave a slow uplink time to drain its socket's buffer after the last
// write of a part, before the reply is due.
const StallTimeout = 2 * time.Minute

// New makes a Client from the SDK's default configuration (credential
// chain, region, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) and opts. It
// resolves the credentials once, so a machine without any fails here with
// a [NoCredentials] error rather than on the first transfer.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	o := options{workers: 8, attempts: 3, partSize: manager.DefaultUploadPartSize, backoff: 200 * time.Millisecond, stall: StallTimeout}
	for _, f := range opts {
		f(&o)
	}
	o.workers = max(o.workers, 1)
	o.attempts = max(o.attempts, 1)
	o.partSize = max(o.partSize, manager.MinUploadPartSize)

	var load []func(*config.LoadOptions) error
	if o.region != "" {
		load = append(load, config.WithRegion(o.region))
	}
	load = append(load, config.WithHTTPClient(stallingClient(o.stall)))
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("s3: AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	c := &Client{region: cfg.Region, partSize: o.partSize, workers: o.workers, attempts: o.attempts, backoff: o.backoff}
	c.s3 = s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.endpoint != "" {
			so.BaseEndpoint = aws.String(o.endpoint)
		}
		if so.BaseEndpoint != nil {
			// S3-compatible stores serve buckets as paths, not host names.
			so.UsePathStyle = true
			c.endpoint = *so.BaseEndpoint
		}
		// Multipart objects carry composite checksums the SDK cannot
		// validate; we check their size instead, quietly.
		so.DisableLogOutputChecksumValidationSkipped = true
	})
	c.up = manager.NewUploader(c.s3, func(u *manager.Uploader) {
		u.PartSize = o.partSize
		u.Concurrency = min(o.workers, manager.DefaultUploadConcurrency)
	})
	if cfg.Credentials == nil {
		return nil, &Error{URL: "s3", Kind: NoCredentials}
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, &Error{URL: "s3", Kind: NoCredentials, Err: err}
	}
	return c, nil
}

// Endpoint is the custom endpoint requests go to, or "" for AWS.
func (c *Client) Endpoint() string { return c.endpoint }

// Region is the region requests are signed for.
func (c *Client) Region() string { return c.region }

// CheckBucket fails, as an [*Error] about u, when u's bucket does not
// exist or these credentials may not use it: a check before a long job
// whose results go there.
func (c *Client) CheckBucket(ctx context.Context, u URL) error {
	_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(u.Bucket)})
	err = classify(u.String(), err)
	if IsKind(err, NotFound) { // HEAD answers 404 without a code
		err.(*Error).Kind = NoSuchBucket
	}
	return err
}

// stallingClient is the SDK's HTTP client whose connections fail once
// nothing moves for stall (stallConn).
func stallingClient(stall time.Duration) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.DialContext = stallDial(tr.DialContext, stall)
	})
}

// stallDial wraps dial's connections in stallConn.
func stallDial(dial func(ctx context.Context, network, addr string) (net.Conn, error), stall time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stallConn{Conn: c, stall: stall}, nil
	}
}

// stallConn fails a read or a write once nothing has moved either way for
// stall: a slow transfer goes on, a frozen endpoint ends it (the SDK's own
// read timeout covers reads only, and an upload to a frozen endpoint blocks
// in its writes). A write moves the read deadline on too: the transport
// reads for the response from the moment it sends the request, and a
// steady upload longer than stall failed on that read.
type stallConn struct {
	net.Conn
	stall time.Duration
}

func (c *stallConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.stall)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetDeadline(time.Now().Add(c.stall)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
