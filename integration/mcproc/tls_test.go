package mcproc

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc/certs"
)

func TestTLSArgs(t *testing.T) {
	tl := &TLS{CertFile: "/c.pem", KeyFile: "/k.pem"}
	require.Equal(t, []string{"-Z", "-o", "ssl_chain_cert=/c.pem,ssl_key=/k.pem"}, tl.args())
	tl.ClientCAFile, tl.RequireClientCert = "/ca.pem", true
	require.Equal(t, []string{"-Z", "-o", "ssl_chain_cert=/c.pem,ssl_key=/k.pem,ssl_ca_cert=/ca.pem,ssl_verify_mode=2"}, tl.args())
}

func TestTLSInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		tls  TLS
		want string
	}{
		{"no key", TLS{CertFile: "c"}, "needs CertFile and KeyFile"},
		{"comma", TLS{CertFile: "a,b", KeyFile: "k"}, "comma"},
		{"require without CA", TLS{CertFile: "c", KeyFile: "k", RequireClientCert: true}, "needs ClientCAFile"},
		{"require without probe cert", TLS{CertFile: "c", KeyFile: "k", ClientCAFile: "ca", RequireClientCert: true}, "ProbeCertFile"},
		{"probe cert without key", TLS{CertFile: "c", KeyFile: "k", ProbeCertFile: "p"}, "go together"},
		{"probe cert missing", TLS{CertFile: "c", KeyFile: "k", ProbeCertFile: "/nonexistent", ProbeKeyFile: "/nonexistent"}, "probe certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start(testCtx(t), Options{TLS: &tt.tls})
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// requireTLSOnly checks that the node at addr does not answer a plaintext
// client: it closes the connection instead of answering "version".
func requireTLSOnly(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = conn.Write([]byte("version\r\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.Error(t, err, "plaintext answer %q", line)
	require.False(t, isTimeout(err), "closed, not silent: %v", err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestStartTLS(t *testing.T) {
	s := certs.New(t)
	p := NewProcessWith(t, Options{TLS: &TLS{CertFile: s.Server.CertFile, KeyFile: s.Server.KeyFile}})
	ctx := testCtx(t)

	c := p.Client()
	require.NoError(t, c.Set(&memcache.Item{Key: "k", Value: []byte("v")}))
	it, err := c.Get("k")
	require.NoError(t, err)
	require.Equal(t, "v", string(it.Value))
	n, err := p.Stat(ctx, "curr_items")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	// The node's certificate is the one given, and verifies with the CA.
	conn, err := tls.Dial("tcp", p.Addr(), &tls.Config{RootCAs: s.CA.Pool()})
	require.NoError(t, err)
	require.Equal(t, s.Server.Cert.Raw, conn.ConnectionState().PeerCertificates[0].Raw)
	require.NoError(t, conn.Close())
	requireTLSOnly(t, p.Addr())

	// Restart keeps TLS.
	require.NoError(t, p.Restart(ctx))
	_, err = p.Stats(ctx)
	require.NoError(t, err)
	requireTLSOnly(t, p.Addr())
}

func TestStartTLSClientCert(t *testing.T) {
	s := certs.New(t)
	c := NewClusterWith(t, 2, Options{TLS: &TLS{
		CertFile: s.Server.CertFile, KeyFile: s.Server.KeyFile,
		ClientCAFile: s.CA.CertFile, RequireClientCert: true,
		ProbeCertFile: s.Client.CertFile, ProbeKeyFile: s.Client.KeyFile,
	}})
	for _, n := range c.Nodes {
		require.NoError(t, n.Client().Set(&memcache.Item{Key: "k", Value: []byte("v")}))

		// Without a client certificate the node refuses the connection: a
		// TLS 1.3 client learns it after its handshake, from the alert
		// ("certificate required") at its first read, or from a reset
		// when it writes after the node closed.
		conn, err := tls.Dial("tcp", n.Addr(), &tls.Config{RootCAs: s.CA.Pool()})
		if err == nil {
			require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
			_, err = conn.Write([]byte("version\r\n"))
			if err == nil {
				var line string
				line, err = bufio.NewReader(conn).ReadString('\n')
				require.Error(t, err, "answer %q", line)
			}
			conn.Close()
		}
		require.Error(t, err)
		require.False(t, isTimeout(err), "refused, not silent: %v", err)
		require.True(t, strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "reset"), "%v", err)
	}
}
