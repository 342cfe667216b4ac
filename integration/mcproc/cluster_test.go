package mcproc

import (
	"regexp"
	"strings"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"
)

func TestStartCluster(t *testing.T) {
	c := NewCluster(t, 3)
	require.Len(t, c.Nodes, 3)

	ports := map[string]bool{}
	for i, n := range c.Nodes {
		require.Equal(t, "n"+string(rune('1'+i)), n.ID)
		require.True(t, n.Running())
		ports[n.Addr()] = true
	}
	require.Len(t, ports, 3, "distinct addresses")

	spec := c.Spec()
	m := regexp.MustCompile(`^n1=127\.0\.0\.1:(\d+),n2=127\.0\.0\.1:(\d+),n3=127\.0\.0\.1:(\d+)$`).FindStringSubmatch(spec)
	require.NotNil(t, m, spec)
	for i, part := range strings.Split(spec, ",") {
		id, addr, ok := strings.Cut(part, "=")
		require.True(t, ok, part)
		require.Equal(t, c.Nodes[i].ID, id)
		require.Equal(t, c.Nodes[i].Addr(), addr)
		require.Equal(t, "127.0.0.1:"+m[i+1], addr)
	}

	n2 := c.Node("n2")
	require.NotNil(t, n2)
	require.Same(t, c.Nodes[1], n2)
	require.Nil(t, c.Node("n4"))
	require.Nil(t, c.Node(""))

	// Nodes are independent: a key set on n2 is only on n2.
	require.NoError(t, n2.Client().Set(&memcache.Item{Key: "k", Value: []byte("v")}))
	_, err := c.Node("n1").Client().Get("k")
	require.ErrorIs(t, err, memcache.ErrCacheMiss)
	ctx := testCtx(t)
	items, err := n2.Stat(ctx, "curr_items")
	require.NoError(t, err)
	require.EqualValues(t, 1, items)

	require.NoError(t, c.Close())
	for _, n := range c.Nodes {
		require.False(t, n.Running(), n.ID)
		requireDown(t, n.Addr())
	}
	require.NoError(t, c.Close(), "second Close")
}

func TestStartClusterInvalid(t *testing.T) {
	_, err := StartCluster(testCtx(t), 0, Options{})
	require.Error(t, err)
	_, err = StartCluster(testCtx(t), 2, Options{Port: 11211})
	require.ErrorContains(t, err, "Port must be 0")
	_, err = StartCluster(testCtx(t), 2, Options{Host: "10.1.2.3"})
	require.ErrorContains(t, err, "not a loopback")
}

func TestStartClusterPartialFailure(t *testing.T) {
	bin := RequireBinary(t)
	// Every node fails the same way, so the first failure is at n1; the
	// behaviour under test is that nothing is left running and the error
	// names the node.
	_, err := StartCluster(testCtx(t), 3, Options{Binary: bin, ExtraArgs: []string{"--no-such-flag"}})
	require.ErrorContains(t, err, "node n1")
}
