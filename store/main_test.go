package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// nodeList is the memcached cluster of the examples: three nodes that
// TestMain starts on free loopback ports. In production it comes from the
// configuration, e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211,n3=10.0.0.3:11211".
var nodeList string

// exampleNodes are the memcached processes behind nodeList.
var exampleNodes *mcproc.Cluster

func TestMain(m *testing.M) {
	os.Exit(mcproc.RunMain(m, 3, func(c *mcproc.Cluster) {
		nodeList, exampleNodes = c.Spec(), c
	}))
}

// crashNode kills the memcached process of node id with SIGKILL, as a
// machine failure would, and returns a function that starts it again,
// empty, on the same port. Examples that crash a node defer the restart so
// that the next example finds every node up.
func crashNode(id string) (restart func()) {
	n := exampleNodes.Node(id)
	if err := n.Kill(); err != nil {
		panic(err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Restart(ctx); err != nil {
			panic(err)
		}
	}
}
