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
// the 1 s stall (socket buffers small, as on a slow link, so the body does
// not all fit in the kernel at once).
func TestStallConnLetsASteadyUploadFinish(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 16<<10)
		for {
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond) // about 320 KiB/s
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			c.(*net.TCPConn).SetReadBuffer(8 << 10)
		}
	}
	srv.Start()
	defer srv.Close()
	d := &net.Dialer{}
	small := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetWriteBuffer(8 << 10)
		}
		return c, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: stallDial(small, time.Second)}}
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/b/k", bytes.NewReader(make([]byte, 512<<10)))
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
