// Package certs makes the certificates of TLS tests at test time with
// crypto/x509: a CA, a server certificate signed by it for the loopback
// names (127.0.0.1, ::1, localhost), a client certificate for mutual TLS,
// an expired server certificate, and an unrelated second CA (the "wrong
// CA" of a client that must not trust the server). Keys are ECDSA P-256;
// files are PEM, keys in PKCS #8, as memcached's ssl_chain_cert and
// ssl_key options read them.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Validity of the certificates Generate makes, relative to the time it runs.
const (
	// Backdate is how far before now the valid certificates start, so that
	// a clock a little behind does not find them not yet valid.
	Backdate = time.Hour
	// Lifetime is how long after now the valid certificates last.
	Lifetime = 24 * time.Hour
)

// Pair is a certificate and its private key, in memory and as PEM files.
type Pair struct {
	// CertFile and KeyFile are the paths of the PEM files.
	CertFile, KeyFile string
	// Cert is the parsed certificate.
	Cert *x509.Certificate
	// TLS is the pair for tls.Config.Certificates.
	TLS tls.Certificate
}

// CA is a certificate authority that signs certificates.
type CA struct {
	// Pair is the CA's own certificate and key; CertFile is the file a
	// client or server is given to trust it.
	Pair
	key crypto.Signer
}

// Pool returns a cert pool holding only the CA's certificate, for
// tls.Config.RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Set is what TLS tests need, written into one directory.
type Set struct {
	// CA signs Server, ExpiredServer and Client.
	CA *CA
	// OtherCA is an unrelated CA: a client that trusts only it must
	// reject Server ("certificate signed by unknown authority").
	OtherCA *CA
	// Server is a server certificate for 127.0.0.1, ::1 and localhost,
	// valid from now-Backdate to now+Lifetime.
	Server Pair
	// ExpiredServer has Server's names but expired an hour before Generate ran.
	ExpiredServer Pair
	// Client is a client certificate (CN "mcsession-test-client") for
	// mutual TLS.
	Client Pair
}

// Generate makes a Set and writes its files into dir: ca.pem, ca-key.pem,
// other-ca.pem, other-ca-key.pem, server.pem, server-key.pem,
// expired.pem, expired-key.pem, client.pem and client-key.pem.
func Generate(dir string) (*Set, error) {
	now := time.Now()
	var s Set
	var err error
	if s.CA, err = NewCA(dir, "ca", now); err != nil {
		return nil, err
	}
	if s.OtherCA, err = NewCA(dir, "other-ca", now); err != nil {
		return nil, err
	}
	if s.Server, err = s.CA.Issue(dir, "server", Server, now.Add(-Backdate), now.Add(Lifetime)); err != nil {
		return nil, err
	}
	if s.ExpiredServer, err = s.CA.Issue(dir, "expired", Server, now.Add(-2*time.Hour), now.Add(-time.Hour)); err != nil {
		return nil, err
	}
	if s.Client, err = s.CA.Issue(dir, "client", Client, now.Add(-Backdate), now.Add(Lifetime)); err != nil {
		return nil, err
	}
	return &s, nil
}

// New is Generate into t.TempDir() for a test; it fails the test on error.
func New(t testing.TB) *Set {
	t.Helper()
	s, err := Generate(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	return s
}

// Usage is what a certificate made by Issue is for.
type Usage int

const (
	// Server certificates name 127.0.0.1, ::1 and localhost and have the
	// server-auth extended key usage.
	Server Usage = iota
	// Client certificates have the client-auth extended key usage.
	Client
)

// NewCA makes a self-signed CA valid from now-Backdate to now+Lifetime
// and writes NAME.pem and NAME-key.pem into dir.
func NewCA(dir, name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "mcsession test " + name},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(Lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	pair, err := write(dir, name, tmpl, tmpl, key, key)
	if err != nil {
		return nil, err
	}
	return &CA{Pair: pair, key: key}, nil
}

// Issue makes a certificate for usage signed by ca, valid from notBefore
// to notAfter, and writes NAME.pem and NAME-key.pem into dir.
func (ca *CA) Issue(dir, name string, usage Usage, notBefore, notAfter time.Time) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("certs: %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "mcsession-test-" + name},
		NotBefore: notBefore,
		NotAfter:  notAfter,
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	switch usage {
	case Server:
		tmpl.Subject.CommonName = "localhost"
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = []string{"localhost"}
	case Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return Pair{}, fmt.Errorf("certs: %s: unknown usage %d", name, usage)
	}
	return write(dir, name, tmpl, ca.Cert, key, ca.key)
}

// write signs tmpl with parentKey and writes the certificate and key.
func write(dir, name string, tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, parentKey crypto.Signer) (Pair, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return Pair{}, fmt.Errorf("certs: %s: %w", name, err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return Pair{}, fmt.Errorf("certs: %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Pair{}, fmt.Errorf("certs: %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("certs: %s: %w", name, err)
	}
	p := Pair{
		CertFile: filepath.Join(dir, name+".pem"),
		KeyFile:  filepath.Join(dir, name+"-key.pem"),
		Cert:     cert,
		TLS:      tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(p.CertFile, certPEM, 0o644); err != nil {
		return Pair{}, fmt.Errorf("certs: %w", err)
	}
	if err := os.WriteFile(p.KeyFile, keyPEM, 0o600); err != nil {
		return Pair{}, fmt.Errorf("certs: %w", err)
	}
	return p, nil
}
