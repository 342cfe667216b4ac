package routers_test

import (
	"os"
	"testing"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// nodeList is the memcached cluster the examples use, started by TestMain;
// in production it is a list such as "n1=10.0.0.1:11211,n2=10.0.0.2:11211".
// The tests start clusters of their own.
var nodeList string

func TestMain(m *testing.M) {
	os.Exit(mcproc.RunMain(m, 2, func(c *mcproc.Cluster) { nodeList = c.Spec() }))
}
