package mcproc

import (
	"context"
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

// NewCluster starts n memcached nodes with default Options for a test, as
// StartCluster does, after RequireBinary. It registers t.Cleanup to kill
// them and fails the test if they cannot be started within 30s.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := RequireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	c, err := StartCluster(ctx, n, Options{Binary: bin})
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
	bin := RequireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	p, err := Start(ctx, Options{Binary: bin})
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

// Client returns a new plain gomemcache client for direct checks of this
// node alone, with Timeout 1s and MaxIdleConns 4. Each call returns a new
// client; its idle connections die with the node.
func (p *Process) Client() *memcache.Client {
	c := memcache.New(p.Addr())
	c.Timeout = time.Second
	c.MaxIdleConns = 4
	return c
}
