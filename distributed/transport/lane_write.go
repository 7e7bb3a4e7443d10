//go:build !race

package transport

import "net"

// writeFrame writes a lane frame's header and payload with one writev.
func writeFrame(conn net.Conn, hdr, payload []byte) error {
	bufs := net.Buffers{hdr, payload}
	_, err := bufs.WriteTo(conn)
	return err
}
