// Package mcproc starts and controls real memcached processes on loopback
// ports, for integration tests, demos and benchmarks.
//
// The core API (Start, StartCluster and the methods of Process and Cluster)
// needs no testing.TB; the helpers in testing.go (RequireBinary, NewProcess,
// NewCluster) wrap it for tests, and RunMain for a package's TestMain (a
// cluster shared by its tests and runnable examples). Children are started in their own process
// group, so a Ctrl-C aimed at the parent does not reach them, and on Linux
// they are killed when the parent dies.
package mcproc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"time"
)

// ErrNotInstalled is returned (wrapped) by Start and FindBinary when the
// memcached binary cannot be found or is not executable.
var ErrNotInstalled = errors.New("mcproc: memcached binary not found")

// Default values used for the zero fields of Options.
const (
	defaultHost         = "127.0.0.1"
	defaultMemoryMB     = 64
	defaultThreads      = 2
	defaultStartTimeout = 5 * time.Second
)

// Options configure one memcached process. Zero values mean the documented
// defaults.
type Options struct {
	// Binary is the path of the memcached executable. Default: the
	// "memcached" found with exec.LookPath.
	Binary string

	// Host is the listen address. Default "127.0.0.1". Only loopback IP
	// addresses (127.0.0.0/8, ::1) and "localhost" (taken as 127.0.0.1) are
	// allowed; Start rejects any other host with an error.
	Host string

	// Port is the TCP port. Default 0: a free port is chosen by listening on
	// Host:0 and closing the listener; if memcached then fails to bind it,
	// Start retries up to 5 times with a new port. A non-zero Port is tried
	// once.
	Port int

	// MemoryMB is the item memory in megabytes (memcached -m). Default 64.
	MemoryMB int

	// Threads is the number of worker threads (memcached -t). Default 2.
	Threads int

	// MaxItemSize is the maximum item size (memcached -I), e.g. "2m".
	// Default "": memcached's own default (1m).
	MaxItemSize string

	// ExtraArgs are appended to the memcached command line. Default none.
	ExtraArgs []string

	// StartTimeout is how long Start and Restart wait for the node to answer
	// "version" before killing it and returning an error. Default 5s.
	StartTimeout time.Duration

	// Stdout and Stderr receive memcached's output. Default: discarded. The
	// last few kilobytes of stderr are also kept to explain failed starts.
	Stdout, Stderr io.Writer

	// TLS, when set, makes the node serve TLS only (memcached -Z, see
	// TLS); the readiness probe, Stats and Client then speak TLS too.
	// Default nil: plaintext. The binary must be built with TLS support
	// (see SupportsTLS and RequireTLS).
	TLS *TLS

	// clientTLS is the probes' TLS configuration (see TLS.clientConfig);
	// nil for a plaintext node. Set by resolve.
	clientTLS *tls.Config
}

// FindBinary returns the path of the memcached executable found with
// exec.LookPath("memcached"), or an error wrapping ErrNotInstalled.
func FindBinary() (string, error) {
	return lookBinary("memcached")
}

func lookBinary(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotInstalled, err)
	}
	return path, nil
}

// resolve validates o and fills in the defaults.
func (o Options) resolve() (Options, error) {
	host, err := loopbackHost(o.Host)
	if err != nil {
		return o, err
	}
	o.Host = host
	if o.Port < 0 || o.Port > 65535 {
		return o, fmt.Errorf("mcproc: invalid port %d", o.Port)
	}
	if o.MemoryMB < 0 || o.Threads < 0 || o.StartTimeout < 0 {
		return o, errors.New("mcproc: MemoryMB, Threads and StartTimeout must not be negative")
	}
	if o.Binary == "" {
		o.Binary, err = FindBinary()
	} else {
		o.Binary, err = lookBinary(o.Binary)
	}
	if err != nil {
		return o, err
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = defaultMemoryMB
	}
	if o.Threads == 0 {
		o.Threads = defaultThreads
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = defaultStartTimeout
	}
	o.ExtraArgs = append([]string(nil), o.ExtraArgs...)
	if o.TLS != nil {
		t := *o.TLS
		o.TLS = &t
		if o.clientTLS, err = t.clientConfig(); err != nil {
			return o, err
		}
	}
	return o, nil
}

// loopbackHost returns host, defaulted and normalised, or an error when it
// is not a loopback IP address.
func loopbackHost(host string) (string, error) {
	switch host {
	case "":
		return defaultHost, nil
	case "localhost":
		return defaultHost, nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("mcproc: host %q is not a loopback IP address", host)
	}
	return ip.String(), nil
}
