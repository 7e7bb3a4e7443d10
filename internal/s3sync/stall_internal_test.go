package s3sync

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A steady upload that takes longer than the stall timeout goes through:
// the transport reads for the response from the moment it sends the
// request, and that read, its deadline set once, ended an upload of seconds at
// the stall (socket buffers small, as on a slow link, so the body does
// not all fit in the kernel at once). The server drains what the kernel
// holds after the last write at its own pace before it answers: that tail
// is kept a small part of the stall (a fresh clone's CI, its 50 ms sleeps
// stretched by load, took over the 1 s stall there).
func TestStallConnLetsASteadyUploadFinish(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 16<<10)
		for {
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // about 1.6 MB/s: 3.3 s for the body
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			c.(*net.TCPConn).SetReadBuffer(32 << 10)
		}
	}
	srv.Start()
	defer srv.Close()
	d := &net.Dialer{}
	small := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetWriteBuffer(32 << 10)
		}
		return c, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: stallDial(small, 2*time.Second)}}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/b/k", bytes.NewReader(make([]byte, 5<<20)))
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("a steady upload failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
}
