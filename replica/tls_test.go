package replica_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/integration/mcproc/certs"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/internal/syncbuf"
	"github.com/mcsession/mcsession/replica"
)

const failedMsg = "memcached node failed"

// tlsCluster returns a Cluster over the processes with cfg (Nodes set
// from them, Timeout 2 s unless set, a logger writing into the returned
// buffer), closed when the test ends.
func tlsCluster(t *testing.T, cfg replica.Config, procs ...*mcproc.Process) (*replica.Cluster, *syncbuf.Buffer) {
	t.Helper()
	for i, p := range procs {
		cfg.Nodes = append(cfg.Nodes, replica.Node{ID: "n" + string(rune('1'+i)), Addr: p.Addr()})
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	logs := &syncbuf.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cl, err := replica.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	return cl, logs
}

// tlsProcess starts a memcached serving TLS with server's certificate;
// with mutual it requires a client certificate signed by s.CA.
func tlsProcess(t *testing.T, s *certs.Set, server certs.Pair, mutual bool) *mcproc.Process {
	t.Helper()
	o := &mcproc.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile}
	if mutual {
		o.ClientCAFile, o.RequireClientCert = s.CA.CertFile, true
		o.ProbeCertFile, o.ProbeKeyFile = s.Client.CertFile, s.Client.KeyFile
	}
	return mcproc.NewProcessWith(t, mcproc.Options{TLS: o})
}

func tlsCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTLS(t *testing.T) {
	s := certs.New(t)
	p1, p2 := tlsProcess(t, s, s.Server, false), tlsProcess(t, s, s.Server, true)
	ctx := tlsCtx(t)

	// The client certificate is presented to both nodes; n2 requires it.
	var dials atomic.Int32
	var d net.Dialer
	cfg := &tls.Config{RootCAs: s.CA.Pool(), Certificates: []tls.Certificate{s.Client.TLS}}
	cl, logs := tlsCluster(t, replica.Config{TLS: cfg, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1) // TLS runs over the custom dialer's connections
		return d.DialContext(ctx, network, addr)
	}}, p1, p2)
	for range 3 {
		for _, id := range cl.NodeIDs() {
			require.NoError(t, cl.Ping(ctx, id))
		}
	}
	require.Equal(t, int32(2), dials.Load(), "one pooled connection per node")
	require.Empty(t, cfg.ServerName, "the caller's config is not changed")
	for _, st := range cl.Status() {
		require.Equal(t, "closed", st.State)
	}
	require.Empty(t, logs.Lines(failedMsg))

	// Without the client certificate, n2 refuses the connection.
	cl, _ = tlsCluster(t, replica.Config{TLS: &tls.Config{RootCAs: s.CA.Pool()}}, p1, p2)
	require.NoError(t, cl.Ping(ctx, "n1"))
	err := cl.Ping(ctx, "n2")
	require.ErrorIs(t, err, replica.ErrNodeDown)
	require.ErrorIs(t, err, replica.ErrTLS)
	require.ErrorContains(t, err, "certificate required")
}

func TestTLSErrors(t *testing.T) {
	s := certs.New(t)
	node := tlsProcess(t, s, s.Server, false)
	expired := tlsProcess(t, s, s.ExpiredServer, false)
	plain := mcproc.NewProcess(t)
	ctx := tlsCtx(t)

	tests := []struct {
		name string
		proc *mcproc.Process
		cfg  *tls.Config
		want func(t *testing.T, err error)
	}{
		{"wrong CA", node, &tls.Config{RootCAs: s.OtherCA.Pool()}, func(t *testing.T, err error) {
			var unknown x509.UnknownAuthorityError
			require.ErrorAs(t, err, &unknown)
			require.ErrorContains(t, err, "x509: certificate signed by unknown authority")
		}},
		{"expired", expired, &tls.Config{RootCAs: s.CA.Pool()}, func(t *testing.T, err error) {
			var invalid x509.CertificateInvalidError
			require.ErrorAs(t, err, &invalid)
			require.Equal(t, x509.Expired, invalid.Reason)
			require.ErrorContains(t, err, "x509: certificate has expired")
		}},
		{"wrong name", node, &tls.Config{RootCAs: s.CA.Pool(), ServerName: "memcached.example"}, func(t *testing.T, err error) {
			var host x509.HostnameError
			require.ErrorAs(t, err, &host)
		}},
		{"plaintext node", plain, &tls.Config{RootCAs: s.CA.Pool()}, func(t *testing.T, err error) {
			require.ErrorContains(t, err, "does not speak TLS")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, logs := tlsCluster(t, replica.Config{TLS: tt.cfg, FailureThreshold: 2, OpenTimeout: time.Hour}, tt.proc)
			prefix := "replica: node down: n1 (" + tt.proc.Addr() + "): "
			for range 2 {
				err := cl.Ping(ctx, "n1")
				require.ErrorIs(t, err, replica.ErrNodeDown)
				require.ErrorIs(t, err, replica.ErrTLS)
				require.True(t, strings.HasPrefix(err.Error(), prefix), "%v", err)
				tt.want(t, err)
				t.Log(err)
			}
			// Two failures opened the breaker: calls fail at once.
			require.Equal(t, "open", cl.Status()[0].State)
			err := cl.Ping(ctx, "n1")
			require.ErrorIs(t, err, replica.ErrNodeDown)
			require.NotErrorIs(t, err, replica.ErrTLS)
			require.Equal(t, uint64(2), cl.PoolStats()[0].DialErrors)

			// The cause is logged once, at level ERROR.
			lines := logs.Lines(failedMsg)
			require.Len(t, lines, 1)
			require.Contains(t, lines[0], "level=ERROR")
			require.Contains(t, lines[0], "node=n1")
			require.Contains(t, lines[0], "TLS handshake failed")
		})
	}
}

func TestPlaintextClientTLSNode(t *testing.T) {
	s := certs.New(t)
	node := tlsProcess(t, s, s.Server, false)
	ctx := tlsCtx(t)
	cl, logs := tlsCluster(t, replica.Config{Timeout: 200 * time.Millisecond, FailureThreshold: 2, OpenTimeout: time.Hour}, node)

	// A lone no-op is shorter than a TLS record header: the node waits
	// for more until the timeout ends the round trip.
	err := cl.Ping(ctx, "n1")
	require.ErrorIs(t, err, replica.ErrNodeDown)
	require.NotErrorIs(t, err, replica.ErrTLS)
	require.NoError(t, ctx.Err())

	// A command closes the connection at once, and says why it may be.
	_, err = ops.Get(ctx, ops.Of(cl), "n1", "some-key")
	require.ErrorIs(t, err, replica.ErrNodeDown)
	require.ErrorContains(t, err, "as a memcached serving TLS does with a plaintext client")
	require.Equal(t, "open", cl.Status()[0].State)
	require.Len(t, logs.Lines(failedMsg), 1)
}

// TestFailureLoggedOncePerStreak: a node's failures are logged once until
// it answers again.
func TestFailureLoggedOncePerStreak(t *testing.T) {
	p := mcproc.NewProcess(t)
	ctx := tlsCtx(t)
	cl, logs := tlsCluster(t, replica.Config{FailureThreshold: 1000}, p)
	require.NoError(t, cl.Ping(ctx, "n1"))
	for streak := 1; streak <= 2; streak++ {
		require.NoError(t, p.Kill())
		for range 3 {
			require.ErrorIs(t, cl.Ping(ctx, "n1"), replica.ErrNodeDown)
		}
		lines := logs.Lines(failedMsg)
		require.Len(t, lines, streak)
		require.Contains(t, lines[streak-1], "level=WARN")
		require.Contains(t, lines[streak-1], "connection refused")
		require.NoError(t, p.Restart(ctx))
		require.NoError(t, cl.Ping(ctx, "n1"))
	}
}
