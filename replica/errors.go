package replica

import (
	"errors"

	"github.com/bradfitz/gomemcache/memcache"
)

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

	// ErrNoHealthyNode is returned when every node's breaker is open.
	ErrNoHealthyNode = errors.New("replica: no healthy node")

	// ErrMiss is memcached's answer "no such item". It is the very value
	// gomemcache returns, so errors.Is works with either name.
	ErrMiss = memcache.ErrCacheMiss

	// ErrNotStored is memcached's answer to an add whose key exists.
	ErrNotStored = memcache.ErrNotStored

	// ErrCASConflict is memcached's answer to a cas whose item changed
	// since it was read.
	ErrCASConflict = memcache.ErrCASConflict
)

// isAnswer reports whether err is a regular memcached answer rather than a
// failure of the node: a miss, "not stored", a CAS conflict or a key the
// client refused to send. Answers never count against a node's breaker.
func isAnswer(err error) bool {
	return errors.Is(err, memcache.ErrCacheMiss) ||
		errors.Is(err, memcache.ErrNotStored) ||
		errors.Is(err, memcache.ErrCASConflict) ||
		errors.Is(err, memcache.ErrMalformedKey)
}
