package integration_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/integration/mcproc/certs"
	"github.com/mcsession/mcsession/internal/syncbuf"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// tlsTestTimeout bounds each TLS test: a hang fails it instead of the run.
const tlsTestTimeout = 60 * time.Second

// tlsNodes starts n memcached nodes serving TLS with server's
// certificate; with mutual they require a client certificate signed by
// s.CA.
func tlsNodes(t *testing.T, n int, s *certs.Set, server certs.Pair, mutual bool) *mcproc.Cluster {
	t.Helper()
	o := &mcproc.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile}
	if mutual {
		o.ClientCAFile, o.RequireClientCert = s.CA.CertFile, true
		o.ProbeCertFile, o.ProbeKeyFile = s.Client.CertFile, s.Client.KeyFile
	}
	return mcproc.NewClusterWith(t, n, mcproc.Options{TLS: o})
}

// TestTLSStore saves and loads sessions through a cluster of nodes that
// require TLS with a client certificate, and checks that both copies are
// on the nodes.
func TestTLSStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tlsTestTimeout)
	defer cancel()
	s := certs.New(t)
	c := tlsNodes(t, 2, s, s.Server, true)
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)

	newStore := func(cfg *tls.Config) *store.Store {
		cl, err := replica.New(replica.Config{Nodes: nodes, TLS: cfg, Timeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = cl.Close() })
		st, err := store.New(store.Config{Cluster: cl, Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		return st
	}
	st := newStore(&tls.Config{RootCAs: s.CA.Pool(), Certificates: []tls.Certificate{s.Client.TLS}})
	for i := range 4 {
		sess, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, sess.Set("user", fmt.Sprint("ann", i)))
		require.NoError(t, st.Save(ctx, sess))

		got, err := st.Load(ctx, sess.ID())
		require.NoError(t, err)
		user, ok, err := store.Get[string](got, "user")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, fmt.Sprint("ann", i), user)

		primary, backup, ok := st.Placement(sess.ID())
		require.True(t, ok)
		require.NotEqual(t, primary, backup)
		key, bkey, _ := st.MemcachedKeys(sess.ID())
		_, err = c.Node(primary).Client().Get(key)
		require.NoError(t, err, "primary copy on %s", primary)
		_, err = c.Node(backup).Client().Get(bkey)
		require.NoError(t, err, "backup copy on %s", backup)
	}

	// Without the client certificate the nodes refuse the client.
	st = newStore(&tls.Config{RootCAs: s.CA.Pool()})
	sess, err := st.NewSession(ctx)
	require.NoError(t, err)
	require.NoError(t, sess.Set("user", "bob"))
	err = st.Save(ctx, sess)
	require.ErrorIs(t, err, replica.ErrTLS)
	require.ErrorContains(t, err, "certificate required")
}

// TestTLSFailuresAnswer503 runs an app whose TLS setup does not match its
// nodes': every session request is answered 503, the breakers open, and
// the cause is logged once per node.
func TestTLSFailuresAnswer503(t *testing.T) {
	s := certs.New(t)
	good := tlsNodes(t, 2, s, s.Server, false)
	expired := tlsNodes(t, 2, s, s.ExpiredServer, false)
	mutual := tlsNodes(t, 2, s, s.Server, true)
	plain := mcproc.NewCluster(t, 2)

	tests := []struct {
		name  string
		nodes *mcproc.Cluster
		tls   *tls.Config
		cause string // in the logged error
	}{
		{"wrong CA", good, &tls.Config{RootCAs: s.OtherCA.Pool()}, "x509: certificate signed by unknown authority"},
		{"expired certificate", expired, &tls.Config{RootCAs: s.CA.Pool()}, "x509: certificate has expired"},
		{"no client certificate", mutual, &tls.Config{RootCAs: s.CA.Pool()}, "certificate required"},
		{"TLS client, plaintext node", plain, &tls.Config{RootCAs: s.CA.Pool()}, "does not speak TLS"},
		{"plaintext client, TLS node", good, nil, "as a memcached serving TLS does with a plaintext client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tlsTestTimeout)
			defer cancel()
			logs := &syncbuf.Buffer{}
			m, err := httpsession.Open(tt.nodes.Spec(), httpsession.Options{
				Logger:  slog.New(slog.NewTextHandler(logs, nil)),
				Cluster: replica.Config{TLS: tt.tls, Timeout: time.Second, OpenTimeout: time.Hour},
			})
			require.NoError(t, err)
			mux := http.NewServeMux()
			mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
				if err := httpsession.FromContext(r.Context()).Set("user", "ann"); err != nil {
					return // the middleware answers
				}
				fmt.Fprintln(w, "ok")
			})
			srv := httptest.NewServer(m.Middleware(mux))
			t.Cleanup(func() {
				srv.Close()
				_ = m.Close()
			})
			jar, err := cookiejar.New(nil)
			require.NoError(t, err)
			client := &http.Client{Jar: jar, Timeout: 20 * time.Second}

			cl := m.Store().Cluster()
			open := func() bool {
				for _, st := range cl.Status() {
					if st.State != "open" {
						return false
					}
				}
				return true
			}
			for i := 0; i < 20 && !open(); i++ {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/login", nil)
				require.NoError(t, err)
				resp, err := client.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				require.Empty(t, resp.Header.Values("Set-Cookie"))
			}
			require.True(t, open(), "every breaker opened: %+v", cl.Status())

			// With every breaker open, requests are answered at once.
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/login", nil)
			require.NoError(t, err)
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

			// One line per node says why.
			lines := logs.Lines("memcached node failed")
			require.Len(t, lines, 2, "once per node:\n%s", strings.Join(lines, "\n"))
			for i, l := range lines {
				require.Contains(t, l, tt.cause)
				require.Contains(t, strings.Join(lines, "\n"), fmt.Sprintf("node=n%d", i+1))
			}
		})
	}
}
