package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/integration/mcproc/certs"
)

// tlsNodes starts three memcached nodes serving TLS with s.Server; with
// mutual they require a client certificate signed by s.CA.
func tlsNodes(t *testing.T, s *certs.Set, mutual bool) *mcproc.Cluster {
	t.Helper()
	o := &mcproc.TLS{CertFile: s.Server.CertFile, KeyFile: s.Server.KeyFile}
	if mutual {
		o.ClientCAFile, o.RequireClientCert = s.CA.CertFile, true
		o.ProbeCertFile, o.ProbeKeyFile = s.Client.CertFile, s.Client.KeyFile
	}
	return mcproc.NewClusterWith(t, 3, mcproc.Options{TLS: o})
}

func TestTLSToMemcached(t *testing.T) {
	bin := buildApp(t)
	s := certs.New(t)

	t.Run("sessions over TLS", func(t *testing.T) {
		mc := tlsNodes(t, s, false)
		a, _ := startAppWithLog(t, bin, mc, "A", "-tls-ca", s.CA.CertFile)
		c := newClient(t)
		first := c.ok(a, "POST", "/api/counter")
		require.Equal(t, 1, first.Count)
		require.NotEmpty(t, c.cookie(a))
		got := c.ok(a, "POST", "/api/counter")
		require.Equal(t, 2, got.Count, "stored on memcached and loaded back")
		require.Equal(t, first.ID, got.ID)
	})

	t.Run("mutual TLS", func(t *testing.T) {
		mc := tlsNodes(t, s, true)
		a, _ := startAppWithLog(t, bin, mc, "A", "-tls-ca", s.CA.CertFile, "-tls-cert", s.Client.CertFile, "-tls-key", s.Client.KeyFile)
		c := newClient(t)
		require.Equal(t, 1, c.ok(a, "POST", "/api/counter").Count)
		require.Equal(t, 2, c.ok(a, "POST", "/api/counter").Count)
	})

	t.Run("wrong CA answers 503", func(t *testing.T) {
		mc := tlsNodes(t, s, false)
		a, logs := startAppWithLog(t, bin, mc, "A", "-tls-ca", s.OtherCA.CertFile)
		c := newClient(t)
		for range 5 {
			r, err := c.do(a, "POST", "/api/counter")
			require.NoError(t, err)
			require.Equal(t, http.StatusServiceUnavailable, r.status, r.raw)
			require.Empty(t, c.cookie(a))
		}
		// Each node's cause is logged once, however many requests failed.
		var failed []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "memcached node failed") {
				failed = append(failed, l)
			}
		}
		require.NotEmpty(t, failed)
		require.LessOrEqual(t, len(failed), 3, "at most once per node:\n%s", strings.Join(failed, "\n"))
		for _, l := range failed {
			require.Contains(t, l, "x509: certificate signed by unknown authority")
		}
	})
}

func TestTLSFlags(t *testing.T) {
	s := certs.New(t)
	nodes := []string{"-nodes", "n1=127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"cert without key", []string{"-tls-ca", s.CA.CertFile, "-tls-cert", s.Client.CertFile}, "go together"},
		{"key without cert", []string{"-tls-ca", s.CA.CertFile, "-tls-key", s.Client.KeyFile}, "go together"},
		{"cert without CA", []string{"-tls-cert", s.Client.CertFile, "-tls-key", s.Client.KeyFile}, "need -tls-ca"},
		{"missing CA file", []string{"-tls-ca", "/nonexistent/ca.pem"}, "-tls-ca"},
		{"CA file without certificate", []string{"-tls-ca", s.CA.KeyFile}, "no PEM certificate"},
		{"bad key", []string{"-tls-ca", s.CA.CertFile, "-tls-cert", s.Client.CertFile, "-tls-key", s.Server.KeyFile}, "-tls-cert, -tls-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(append(nodes, tc.args...), io.Discard)
			require.ErrorContains(t, err, tc.err)
		})
	}

	o, err := parseFlags(nodes, io.Discard)
	require.NoError(t, err)
	require.Nil(t, o.cfg.TLS, "plaintext without -tls-ca")
	o, err = parseFlags(append(nodes, "-tls-ca", s.CA.CertFile), io.Discard)
	require.NoError(t, err)
	require.NotNil(t, o.cfg.TLS.RootCAs)
	require.Empty(t, o.cfg.TLS.Certificates)
	o, err = parseFlags(append(nodes, "-tls-ca", s.CA.CertFile, "-tls-cert", s.Client.CertFile, "-tls-key", s.Client.KeyFile), io.Discard)
	require.NoError(t, err)
	require.Len(t, o.cfg.TLS.Certificates, 1)
}
