package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc/certs"
)

func TestGenerate(t *testing.T) {
	s := certs.New(t)
	verify := func(p certs.Pair, roots *x509.CertPool, usage x509.ExtKeyUsage, name string) error {
		_, err := p.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		require.NoError(t, verify(s.Server, s.CA.Pool(), x509.ExtKeyUsageServerAuth, name), name)
	}
	require.NoError(t, verify(s.Client, s.CA.Pool(), x509.ExtKeyUsageClientAuth, ""))

	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, verify(s.Server, s.OtherCA.Pool(), x509.ExtKeyUsageServerAuth, "localhost"), &unknown)
	var invalid x509.CertificateInvalidError
	require.ErrorAs(t, verify(s.ExpiredServer, s.CA.Pool(), x509.ExtKeyUsageServerAuth, "localhost"), &invalid)
	require.Equal(t, x509.Expired, invalid.Reason)

	// The files hold the same pairs.
	for _, p := range []certs.Pair{s.CA.Pair, s.OtherCA.Pair, s.Server, s.ExpiredServer, s.Client} {
		got, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		require.NoError(t, err)
		require.Equal(t, p.TLS.Certificate, got.Certificate)
		info, err := os.Stat(p.KeyFile)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	}
}
