package meta

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/integration/mcproc/certs"
)

// tlsNode starts a memcached serving TLS with s.Server; with mutual, it
// requires a client certificate signed by s.CA.
func tlsNode(t *testing.T, s *certs.Set, server certs.Pair, mutual bool) *mcproc.Process {
	t.Helper()
	o := &mcproc.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile}
	if mutual {
		o.ClientCAFile, o.RequireClientCert = s.CA.CertFile, true
		o.ProbeCertFile, o.ProbeKeyFile = s.Client.CertFile, s.Client.KeyFile
	}
	return mcproc.NewProcessWith(t, mcproc.Options{TLS: o})
}

// requireRoundTrip stores and reads back a value through p.
func requireRoundTrip(t *testing.T, p *Pool) {
	t.Helper()
	out := do(t, p, Request{Command: Set, Key: "k", Value: []byte("v"), TTL: 60},
		Request{Command: Get, Key: "k", ReturnValue: true})
	require.Equal(t, StatusOK, out[0].Status)
	require.Equal(t, []byte("v"), out[1].Value)
}

// setErr sends a set through p and returns its error.
func setErr(t *testing.T, p *Pool) error {
	t.Helper()
	_, err := p.Do(testCtx(t), Request{Command: Set, Key: "k", Value: []byte("v"), TTL: 60})
	return err
}

func TestTLS(t *testing.T) {
	s := certs.New(t)
	node := tlsNode(t, s, s.Server, false)

	// ServerName defaults to the address's host: 127.0.0.1 is in the
	// certificate's IP SANs.
	cfg := &tls.Config{RootCAs: s.CA.Pool()}
	p := newPool(t, node.Addr(), Config{TLS: cfg})
	requireRoundTrip(t, p)
	requireRoundTrip(t, p)
	require.Empty(t, cfg.ServerName, "the caller's config is not changed")
	st := p.Stats()
	require.Equal(t, uint64(1), st.Dials, "the connection is reused")
	require.Zero(t, st.Stale, "a session ticket is not taken for a stale connection")

	// An explicit ServerName is kept: "localhost" is a DNS SAN.
	requireRoundTrip(t, newPool(t, node.Addr(), Config{TLS: &tls.Config{RootCAs: s.CA.Pool(), ServerName: "localhost"}}))
	err := setErr(t, newPool(t, node.Addr(), Config{TLS: &tls.Config{RootCAs: s.CA.Pool(), ServerName: "example.com"}}))
	require.ErrorIs(t, err, ErrTLS)
	var host x509.HostnameError
	require.ErrorAs(t, err, &host)

	// TLS runs over the connections of a custom Dial.
	var dials atomic.Int32
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	requireRoundTrip(t, newPool(t, node.Addr(), Config{Dial: dial, TLS: cfg}))
	require.Equal(t, int32(1), dials.Load())
}

func TestTLSFailures(t *testing.T) {
	s := certs.New(t)
	node := tlsNode(t, s, s.Server, false)
	expired := tlsNode(t, s, s.ExpiredServer, false)
	mutual := tlsNode(t, s, s.Server, true)
	plain := mcproc.NewProcess(t)

	tests := []struct {
		name string
		addr string
		cfg  *tls.Config
		want func(t *testing.T, err error)
	}{
		{"wrong CA", node.Addr(), &tls.Config{RootCAs: s.OtherCA.Pool()}, func(t *testing.T, err error) {
			var unknown x509.UnknownAuthorityError
			require.ErrorAs(t, err, &unknown)
			require.ErrorContains(t, err, "certificate signed by unknown authority")
		}},
		{"expired", expired.Addr(), &tls.Config{RootCAs: s.CA.Pool()}, func(t *testing.T, err error) {
			var invalid x509.CertificateInvalidError
			require.ErrorAs(t, err, &invalid)
			require.Equal(t, x509.Expired, invalid.Reason)
			require.ErrorContains(t, err, "expired")
		}},
		{"no client certificate", mutual.Addr(), &tls.Config{RootCAs: s.CA.Pool()}, func(t *testing.T, err error) {
			require.ErrorContains(t, err, "certificate required")
		}},
		{"plaintext node", plain.Addr(), &tls.Config{RootCAs: s.CA.Pool()}, func(t *testing.T, err error) {
			var rh tls.RecordHeaderError
			require.ErrorAs(t, err, &rh)
			require.ErrorContains(t, err, "does not speak TLS")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(t, tt.addr, Config{TLS: tt.cfg})
			for range 2 {
				err := setErr(t, p)
				require.ErrorIs(t, err, ErrTLS)
				require.ErrorIs(t, err, ErrNotSent, "a failed handshake sends nothing")
				tt.want(t, err)
			}
			st := p.Stats()
			require.Equal(t, uint64(2), st.DialErrors)
			require.Zero(t, st.Open, "failed connections are closed")
		})
	}

	// With the client certificate, the mutual-TLS node answers.
	requireRoundTrip(t, newPool(t, mutual.Addr(), Config{TLS: &tls.Config{RootCAs: s.CA.Pool(), Certificates: []tls.Certificate{s.Client.TLS}}}))
}

func TestPlaintextClientTLSNode(t *testing.T) {
	s := certs.New(t)
	node := tlsNode(t, s, s.Server, false)

	// The node closes the connection at the client's first command.
	p := newPool(t, node.Addr(), Config{})
	err := setErr(t, p)
	require.ErrorIs(t, err, ErrUnknownOutcome)
	require.NotErrorIs(t, err, ErrTLS)
	require.ErrorContains(t, err, "as a memcached serving TLS does with a plaintext client")
	require.False(t, isTimeout(err), "closed, not timed out: %v", err)

	// A lone no-op is shorter than a TLS record's header: the node waits
	// for more, and the batch ends at its timeout.
	p = newPool(t, node.Addr(), Config{Timeout: 200 * time.Millisecond})
	_, err = p.Do(testCtx(t), Request{Command: NoOp})
	require.ErrorIs(t, err, ErrUnknownOutcome)
	require.True(t, isTimeout(err), "%v", err)
}
