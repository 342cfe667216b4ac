package replica

import "errors"

var (
	// ErrBadNodeList is returned by ParseNodes and New for a node list that
	// is empty, malformed or has duplicates.
	ErrBadNodeList = errors.New("replica: bad node list")

	// ErrUnknownNode is returned for an operation on a node id that is not
	// configured.
	ErrUnknownNode = errors.New("replica: unknown node")

	// ErrNodeDown is returned when a node failed to answer (connection
	// refused, timeout, broken connection) or its circuit breaker is open.
	ErrNodeDown = errors.New("replica: node down")

	// ErrTLS is wrapped, with ErrNodeDown, when the TLS handshake with a
	// node failed (see Config.TLS): its certificate did not verify (the
	// chain holds the *tls.CertificateVerificationError and its x509
	// error: unknown authority, expired, wrong host name), the node does
	// not speak TLS, or it refused the client certificate. It is a
	// failure of the node for its breaker.
	ErrTLS = errors.New("replica: TLS handshake failed")

	// ErrNodeBusy is returned when every connection to a node stayed busy
	// for the whole timeout (Config.MaxConns are open): the node is
	// overloaded, not down, so sessions are not moved off it. It wraps
	// context.DeadlineExceeded.
	ErrNodeBusy = errors.New("replica: node busy")

	// ErrClosed is returned by SetNodes after Close.
	ErrClosed = errors.New("replica: cluster closed")

	// ErrNoHealthyNode is returned when every node's breaker is open.
	ErrNoHealthyNode = errors.New("replica: no healthy node")
)
