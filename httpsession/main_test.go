package httpsession_test

import (
	"os"
	"testing"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// nodeList is the memcached cluster of the examples: two nodes that
// TestMain starts on free loopback ports. In production it comes from the
// configuration, e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211".
var nodeList string

// deadNodeList names a node where nothing listens (port 1, reserved and
// unused here: connections are refused), for the examples of failure
// handling.
const deadNodeList = "n1=127.0.0.1:1"

func TestMain(m *testing.M) {
	os.Exit(mcproc.RunMain(m, 2, func(c *mcproc.Cluster) { nodeList = c.Spec() }))
}
