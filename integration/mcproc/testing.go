package mcproc

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// testStartTimeout bounds NewProcess and NewCluster.
const testStartTimeout = 30 * time.Second

// RequireBinary returns the path of the memcached binary. When memcached is
// missing it fails the test with t.Fatalf if the environment variable CI is
// "true" (a missing memcached is a failure under CI), and otherwise skips
// the test with t.Skipf, saying that `make deps` installs it.
func RequireBinary(t testing.TB) string {
	t.Helper()
	path, err := FindBinary()
	if err == nil {
		return path
	}
	if missingBinaryAction(os.Getenv("CI")) == "fatal" {
		t.Fatalf("%v; CI=true, so this is a failure (run `make deps` to install memcached)", err)
	} else {
		t.Skipf("%v; skipping (run `make deps` to install memcached)", err)
	}
	return ""
}

// missingBinaryAction says what RequireBinary does without memcached, given
// the value of $CI: "fatal" under CI, "skip" otherwise.
func missingBinaryAction(ci string) string {
	if ci == "true" {
		return "fatal"
	}
	return "skip"
}

// RequireTLS returns the path of a memcached binary built with TLS support
// (see SupportsTLS), after RequireBinary. When the binary has no TLS
// support it fails the test under CI=true and skips it otherwise, as
// RequireBinary does for a missing binary.
func RequireTLS(t testing.TB) string {
	t.Helper()
	bin := RequireBinary(t)
	ok, err := SupportsTLS(bin)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if !ok {
		msg := bin + " was built without TLS support (-Z); Debian's memcached package has it"
		if missingBinaryAction(os.Getenv("CI")) == "fatal" {
			t.Fatalf("%s; CI=true, so this is a failure", msg)
		}
		t.Skipf("%s; skipping", msg)
	}
	return bin
}

// NewCluster starts n memcached nodes with default Options for a test, as
// StartCluster does, after RequireBinary. It registers t.Cleanup to kill
// them and fails the test if they cannot be started within 30s.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return NewClusterWith(t, n, Options{})
}

// NewClusterWith is NewCluster with opts; an empty opts.Binary is
// RequireBinary's (RequireTLS's when opts.TLS is set).
func NewClusterWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	opts.Binary = requireFor(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	c, err := StartCluster(ctx, n, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return c
}

// NewProcess starts one memcached node with default Options for a test, as
// Start does, after RequireBinary. It registers t.Cleanup to kill it and
// fails the test if it cannot be started within 30s.
func NewProcess(t testing.TB) *Process {
	t.Helper()
	return NewProcessWith(t, Options{})
}

// NewProcessWith is NewProcess with opts; an empty opts.Binary is
// RequireBinary's (RequireTLS's when opts.TLS is set).
func NewProcessWith(t testing.TB, opts Options) *Process {
	t.Helper()
	opts.Binary = requireFor(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	p, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return p
}

// requireFor returns opts.Binary, or when it is empty the binary that
// RequireTLS (with opts.TLS) or RequireBinary finds.
func requireFor(t testing.TB, opts Options) string {
	t.Helper()
	switch {
	case opts.Binary != "":
		return opts.Binary
	case opts.TLS != nil:
		return RequireTLS(t)
	default:
		return RequireBinary(t)
	}
}

// Client returns a new plain gomemcache client for direct checks of this
// node alone, with Timeout 1s and MaxIdleConns 4. Each call returns a new
// client; its idle connections die with the node. For a node with
// Options.TLS it connects with TLS as Stats does (the probe certificate,
// no verification of the node's).
func (p *Process) Client() *memcache.Client {
	c := memcache.New(p.Addr())
	c.Timeout = time.Second
	c.MaxIdleConns = 4
	if cfg := p.opts.clientTLS; cfg != nil {
		c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dial(ctx, addr, cfg)
		}
	}
	return c
}
