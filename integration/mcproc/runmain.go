package mcproc

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
)

// RunMain runs the tests and examples of a package that need memcached from
// its TestMain, where no testing.TB exists yet:
//
//	var nodeList string // in production: "n1=10.0.0.1:11211,n2=10.0.0.2:11211"
//
//	func TestMain(m *testing.M) {
//		os.Exit(mcproc.RunMain(m, 3, func(c *mcproc.Cluster) { nodeList = c.Spec() }))
//	}
//
// It starts a Cluster of the given number of memcached nodes ("n1" to
// "nN") with default Options, each on its own free loopback port, as
// StartCluster does (within 30s), passes it to use (which may be nil)
// before any test runs, runs m.Run, kills the nodes and returns the exit
// code for os.Exit: m.Run's code, or 1 when the cluster could not be
// started or stopped. The cluster belongs to the whole
// test binary: a test or example that stops or restarts one of its nodes
// should leave it running again for the others.
//
// A missing memcached is handled as RequireBinary handles it: when the
// environment variable CI is "true" RunMain prints an error to stderr and
// returns 1 (a missing memcached is a failure under CI); otherwise it prints
// a skip message to stderr and returns 0 without running anything (not even
// the package's tests that need no memcached). Either message says that
// `make deps` installs memcached.
func RunMain(m *testing.M, nodes int, use func(*Cluster)) int {
	return runMain(m, nodes, use, FindBinary, os.Getenv("CI"), os.Stderr)
}

// runner is the part of *testing.M that runMain uses.
type runner interface{ Run() int }

// runMain is RunMain with its environment passed in: find locates the
// memcached binary, ci is the value of $CI and out receives the messages.
func runMain(m runner, nodes int, use func(*Cluster), find func() (string, error), ci string, out io.Writer) int {
	bin, err := find()
	if err != nil {
		if missingBinaryAction(ci) == "fatal" {
			fmt.Fprintf(out, "FAIL: %v; CI=true, so this is a failure (run `make deps` to install memcached)\n", err)
			return 1
		}
		fmt.Fprintf(out, "SKIP: %v; skipping every test of this package (run `make deps` to install memcached)\n", err)
		return 0
	}

	ctx, cancel := context.WithTimeout(context.Background(), testStartTimeout)
	defer cancel()
	c, err := StartCluster(ctx, nodes, Options{Binary: bin})
	if err != nil {
		fmt.Fprintf(out, "FAIL: %v\n", err)
		return 1
	}
	code := run(m, c, use)
	if err := c.Close(); err != nil {
		fmt.Fprintf(out, "FAIL: stop the memcached nodes: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// run hands c to use and runs m. When use or m.Run panics, run kills the
// nodes before the panic goes on (a panic in a test's own goroutine ends the
// process without coming through here; on Linux the nodes die with it).
func run(m runner, c *Cluster, use func(*Cluster)) (code int) {
	defer func() {
		if r := recover(); r != nil {
			_ = c.Close()
			panic(r)
		}
	}()
	if use != nil {
		use(c)
	}
	return m.Run()
}
