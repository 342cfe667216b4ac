//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package meta

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// errUnexpectedRead is a pooled connection that has bytes to read before
// a request was sent: it is out of step and must not be used.
var errUnexpectedRead = errors.New("meta: unexpected data on an idle connection")

// connCheck reports whether an idle connection was closed by the server
// (or holds unexpected bytes), with a non-blocking peek of the socket, as
// go-redis does: a node that restarted leaves closed connections in the
// pool, and a command written to one would fail with an unknown outcome.
func connCheck(c net.Conn) error {
	wrapped := false
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		// Bytes waiting under TLS may be a session ticket, not an answer.
		c, wrapped = nc.NetConn(), true
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var checkErr error
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n == 0 && err == nil:
			checkErr = io.EOF
		case n > 0 && !wrapped:
			checkErr = errUnexpectedRead
		case n > 0:
			checkErr = nil
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK):
			checkErr = nil
		default:
			checkErr = err
		}
		return true
	})
	if err != nil {
		return err
	}
	return checkErr
}
