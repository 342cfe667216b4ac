package mcproc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// TLS makes a node serve TLS only: memcached -Z -o
// ssl_chain_cert=CertFile,ssl_key=KeyFile[,ssl_ca_cert=ClientCAFile][,ssl_verify_mode=2].
// The file names must not hold commas (memcached splits -o at commas).
type TLS struct {
	// CertFile is the node's certificate chain, PEM (ssl_chain_cert).
	// Required.
	CertFile string
	// KeyFile is the node's private key, PEM (ssl_key). Required.
	KeyFile string
	// ClientCAFile holds the CAs whose client certificates the node
	// accepts, PEM (ssl_ca_cert). Default "": none given.
	ClientCAFile string
	// RequireClientCert makes the node refuse a client without a
	// certificate signed by a CA of ClientCAFile (ssl_verify_mode=2,
	// "Require"). It needs ClientCAFile, and ProbeCertFile and
	// ProbeKeyFile for Start's own readiness probe. Default false
	// (ssl_verify_mode=0: no client certificate asked for).
	RequireClientCert bool
	// ProbeCertFile and ProbeKeyFile are the client certificate that the
	// readiness probe of Start and Restart, Stats and Client present.
	// Default "": none (which a node with RequireClientCert refuses).
	ProbeCertFile, ProbeKeyFile string
}

// args returns memcached's TLS arguments.
func (t *TLS) args() []string {
	opts := []string{"ssl_chain_cert=" + t.CertFile, "ssl_key=" + t.KeyFile}
	if t.ClientCAFile != "" {
		opts = append(opts, "ssl_ca_cert="+t.ClientCAFile)
	}
	if t.RequireClientCert {
		opts = append(opts, "ssl_verify_mode=2")
	}
	return []string{"-Z", "-o", strings.Join(opts, ",")}
}

// clientConfig checks t and returns the TLS configuration of the probes:
// they do not verify the node's certificate (the probe identifies the
// node by its pid, and tests choose their own verification), but present
// the probe certificate when there is one.
func (t *TLS) clientConfig() (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("mcproc: TLS needs CertFile and KeyFile")
	}
	for _, f := range []string{t.CertFile, t.KeyFile, t.ClientCAFile} {
		if strings.Contains(f, ",") {
			return nil, fmt.Errorf("mcproc: TLS file name %q holds a comma, which memcached's -o cannot take", f)
		}
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		return nil, errors.New("mcproc: TLS.RequireClientCert needs ClientCAFile")
	}
	if (t.ProbeCertFile == "") != (t.ProbeKeyFile == "") {
		return nil, errors.New("mcproc: TLS.ProbeCertFile and ProbeKeyFile go together")
	}
	if t.RequireClientCert && t.ProbeCertFile == "" {
		return nil, errors.New("mcproc: TLS.RequireClientCert needs ProbeCertFile and ProbeKeyFile for the readiness probe")
	}
	cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a probe of our own child; see above
	if t.ProbeCertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.ProbeCertFile, t.ProbeKeyFile)
		if err != nil {
			return nil, fmt.Errorf("mcproc: TLS probe certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// SupportsTLS reports whether the memcached binary at path was built with
// TLS support (its -h lists --enable-ssl).
func SupportsTLS(path string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-h").Output()
	if err != nil {
		return false, fmt.Errorf("mcproc: %s -h: %w", path, err)
	}
	return bytes.Contains(out, []byte("--enable-ssl")), nil
}
