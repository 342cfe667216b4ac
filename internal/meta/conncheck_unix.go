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

// connChecker tells whether an idle connection was closed by the server
// (or holds unexpected bytes), with a non-blocking peek of the socket, as
// go-redis does: a node that restarted leaves closed connections in the
// pool, and a command written to one would fail with an unknown outcome.
// It is made once per connection so that a check allocates nothing.
type connChecker struct {
	raw     syscall.RawConn // nil: the connection has no socket to peek at
	wrapped bool            // under TLS: pending bytes may be a session ticket
	buf     [1]byte
	err     error
	fn      func(fd uintptr) bool
}

// newConnChecker returns the checker of c. A connection that is neither a
// syscall.Conn nor wraps one (NetConn, as *tls.Conn does) cannot be
// checked: a stale one then fails its next batch.
func newConnChecker(c net.Conn) *connChecker {
	k := &connChecker{}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c, k.wrapped = nc.NetConn(), true
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			k.raw = raw
		}
	}
	k.fn = k.peek
	return k
}

func (k *connChecker) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), k.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case n == 0 && err == nil:
		k.err = io.EOF
	case n > 0 && !k.wrapped:
		k.err = errUnexpectedRead
	case n > 0:
		k.err = nil
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK):
		k.err = nil
	default:
		k.err = err
	}
	return true
}

// check returns nil for a connection that is open with nothing to read.
func (k *connChecker) check() error {
	if k.raw == nil {
		return nil
	}
	if err := k.raw.Read(k.fn); err != nil {
		return err
	}
	return k.err
}

// connCheck checks c once (see connChecker).
func connCheck(c net.Conn) error { return newConnChecker(c).check() }
