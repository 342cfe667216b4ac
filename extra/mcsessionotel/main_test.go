package mcsessionotel_test

import (
	"os"
	"testing"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// nodeList is the memcached cluster of the examples: two nodes that
// TestMain starts on free loopback ports. In production it comes from the
// configuration, e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211". Tests that
// stop a node start a cluster of their own.
var nodeList string

func TestMain(m *testing.M) {
	os.Exit(mcproc.RunMain(m, 2, func(c *mcproc.Cluster) { nodeList = c.Spec() }))
}
