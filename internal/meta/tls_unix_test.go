//go:build unix

package meta

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc/certs"
)

func TestTLSHandshakeBoundedByTimeout(t *testing.T) {
	s := certs.New(t)
	node := tlsNode(t, s, s.Server, false)
	p := newPool(t, node.Addr(), Config{TLS: &tls.Config{RootCAs: s.CA.Pool()}, Timeout: 200 * time.Millisecond})
	requireRoundTrip(t, p)
	p.CloseIdle()

	// A node that accepts connections but never answers (the kernel
	// accepts for a stopped process) fails the handshake at the timeout.
	require.NoError(t, node.Pause())
	t.Cleanup(func() { _ = node.Resume() })
	err := setErr(t, p)
	require.ErrorIs(t, err, ErrTLS)
	require.ErrorIs(t, err, ErrNotSent)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
}
