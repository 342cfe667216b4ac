package replica_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

// nodeIDs returns the ids of nodes.
func nodeIDs(nodes []replica.Node) []string {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

func TestSetNodesChanges(t *testing.T) {
	n := func(id, port string) replica.Node { return replica.Node{ID: id, Addr: "127.0.0.1:" + port} }
	c, err := replica.New(replica.Config{Nodes: []replica.Node{n("n1", "1"), n("n2", "2"), n("n3", "3")}})
	require.NoError(t, err)
	defer c.Close()

	tests := []struct {
		name     string
		nodes    []replica.Node
		want     replica.NodeChange
		list     []string
		draining []string
	}{
		{name: "unchanged", nodes: []replica.Node{n("n1", "1"), n("n2", "2"), n("n3", "3")},
			want: replica.NodeChange{Kept: []string{"n1", "n2", "n3"}}, list: []string{"n1", "n2", "n3"}},
		{name: "add", nodes: []replica.Node{n("n1", "1"), n("n2", "2"), n("n3", "3"), n("n4", "4")},
			want: replica.NodeChange{Added: []string{"n4"}, Kept: []string{"n1", "n2", "n3"}}, list: []string{"n1", "n2", "n3", "n4"}},
		{name: "remove", nodes: []replica.Node{n("n1", "1"), n("n3", "3"), n("n4", "4")},
			want: replica.NodeChange{Removed: []string{"n2"}, Kept: []string{"n1", "n3", "n4"}},
			list: []string{"n1", "n3", "n4"}, draining: []string{"n2"}},
		{name: "address change", nodes: []replica.Node{n("n1", "1"), n("n3", "33"), n("n4", "4")},
			want: replica.NodeChange{Added: []string{"n3"}, Removed: []string{"n3"}, Kept: []string{"n1", "n4"}},
			list: []string{"n1", "n3", "n4"}, draining: []string{"n2", "n3"}},
		{name: "undrain", nodes: []replica.Node{n("n2", "2"), n("n1", "1"), n("n3", "33"), n("n4", "4")},
			want: replica.NodeChange{Undrained: []string{"n2"}, Kept: []string{"n1", "n3", "n4"}},
			list: []string{"n2", "n1", "n3", "n4"}, draining: []string{"n3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := c.SetNodes(tt.nodes)
			require.NoError(t, err)
			require.Equal(t, tt.want, ch)
			require.Equal(t, tt.want.Empty(), tt.name == "unchanged")
			require.Equal(t, tt.list, c.NodeIDs())
			require.Equal(t, tt.list, nodeIDs(c.Nodes()))
			var draining []string
			for _, d := range c.Draining() {
				draining = append(draining, d.ID)
				require.True(t, d.Until.After(d.Since))
				require.True(t, c.Has(d.ID), "a draining node's sessions are still loaded")
			}
			require.Equal(t, tt.draining, draining)
			var statusDraining []string
			for _, s := range c.Status() {
				if s.Draining {
					statusDraining = append(statusDraining, s.ID)
				}
			}
			require.Equal(t, tt.draining, statusDraining)
			require.Len(t, c.PoolStats(), len(tt.list)+len(tt.draining))
		})
	}

	// A bad list changes nothing.
	_, err = c.SetNodes([]replica.Node{n("n1", "1"), n("n1", "5")})
	require.ErrorIs(t, err, replica.ErrBadNodeList)
	require.Equal(t, []string{"n2", "n1", "n3", "n4"}, c.NodeIDs())
	_, err = c.SetNodes(nil)
	require.ErrorIs(t, err, replica.ErrBadNodeList)

	require.ErrorIs(t, c.EndDrain("n1"), replica.ErrNotDraining)
	require.NoError(t, c.EndDrain("n3"))
	require.Empty(t, c.Draining())
	require.False(t, c.Has("~n3"), "internal names are never session nodes")

	require.NoError(t, c.Close())
	_, err = c.SetNodes([]replica.Node{n("n1", "1")})
	require.ErrorIs(t, err, replica.ErrClosed)
}

// Placement follows the new list: new sessions and backups only on listed
// nodes; a draining node's backups go to the nodes that followed it.
func TestSetNodesPlacement(t *testing.T) {
	n := func(id, port string) replica.Node { return replica.Node{ID: id, Addr: "127.0.0.1:" + port} }
	c, err := replica.New(replica.Config{Nodes: []replica.Node{n("n1", "1"), n("n2", "2"), n("n3", "3"), n("n4", "4")}})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.SetNodes([]replica.Node{n("n1", "1"), n("n3", "3"), n("n4", "4"), n("n5", "5")})
	require.NoError(t, err)
	v := ops.Of(c)
	seen := map[string]bool{}
	for range 8 {
		id, err := v.PickNew()
		require.NoError(t, err)
		seen[id] = true
	}
	require.Equal(t, map[string]bool{"n1": true, "n3": true, "n4": true, "n5": true}, seen)
	require.Equal(t, "n3", c.BackupOf("n1"))
	require.Equal(t, "n3", c.BackupOf("n2"), "n3 followed n2 in the old list")
	require.Equal(t, "n4", c.BackupOf("n2", "n3"))
	cands := v.BackupCandidates("n1")
	require.Equal(t, []string{"n3", "n4", "n5", "n2"}, cands, "the list after n1, then the draining nodes")
	require.Equal(t, []string{"n3", "n4", "n1", "n5"}, v.BackupCandidates("n2"), "old successors first")
	require.True(t, v.Draining("n2"))
	require.False(t, v.Draining("n1"))

	// The drain target is deterministic, spread, and never the draining node.
	targets := map[string]int{}
	for i := range 400 {
		base := string(rune('a'+i%26)) + time.Duration(i).String()
		tg := v.DrainTarget(base)
		require.Equal(t, tg, v.DrainTarget(base))
		targets[tg]++
	}
	require.Len(t, targets, 4, "%v", targets)
	require.Zero(t, targets["n2"])
}

// A drain ends by itself after DrainTimeout: the node's connections are
// closed and its id is no longer known.
func TestDrainTimeout(t *testing.T) {
	mc := mcproc.NewCluster(t, 2)
	nodes, err := replica.ParseNodes(mc.Spec())
	require.NoError(t, err)
	c, err := replica.New(replica.Config{Nodes: nodes, DrainTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Ping(context.Background(), "n2"))
	_, err = c.SetNodes(nodes[:1])
	require.NoError(t, err)
	require.True(t, c.Has("n2"))
	require.NoError(t, c.Ping(context.Background(), "n2"), "a draining node is still reachable")
	for i := 0; i < 500 && len(c.Draining()) > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	require.Empty(t, c.Draining())
	require.False(t, c.Has("n2"))
	require.ErrorIs(t, c.Ping(context.Background(), "n2"), replica.ErrUnknownNode)
}

// Concurrent calls during changes see one list or the other: a caller
// never gets a node that is in neither, and the race detector sees no
// unsynchronized access.
func TestSetNodesConcurrentCalls(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	nodes, err := replica.ParseNodes(mc.Spec())
	require.NoError(t, err)
	c, err := replica.New(replica.Config{Nodes: nodes})
	require.NoError(t, err)
	defer c.Close()
	lists := [][]replica.Node{nodes, nodes[:2], {nodes[0], nodes[2]}, nodes[1:]}
	v := ops.Of(c)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ids := c.NodeIDs()
				valid := slices.ContainsFunc(lists, func(l []replica.Node) bool { return slices.Equal(nodeIDs(l), ids) })
				if !valid {
					t.Errorf("torn node list %v", ids)
					return
				}
				id, err := v.PickNew()
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.Ping(context.Background(), id); err != nil {
					t.Error(err) // a picked node is always reachable: active or draining
					return
				}
				_ = c.BackupOf(id)
				_ = c.Status()
			}
		}()
	}
	for i := range 200 {
		_, err := c.SetNodes(lists[i%len(lists)])
		require.NoError(t, err)
	}
	close(stop)
	wg.Wait()
}

// A hung node does not fail the other nodes of the same call: their
// answers, which arrived while the caller waited for the hung one, are
// still read, and their breakers stay closed.
func TestExecManyHungNodeDoesNotFailOthers(t *testing.T) {
	mc := mcproc.NewCluster(t, 2)
	nodes, err := replica.ParseNodes(mc.Spec())
	require.NoError(t, err)
	c, err := replica.New(replica.Config{Nodes: nodes, Timeout: 200 * time.Millisecond})
	require.NoError(t, err)
	defer c.Close()
	v := ops.Of(c)
	require.NoError(t, mc.Node("n1").Pause())
	defer func() { _ = mc.Node("n1").Resume() }()
	for round := range 4 {
		batches := []ops.Batch{
			{Node: "n1", Reqs: []meta.Request{{Command: meta.NoOp}}, Out: make([]meta.Response, 1)},
			{Node: "n2", Reqs: []meta.Request{{Command: meta.NoOp}}, Out: make([]meta.Response, 1)},
		}
		v.ExecMany(context.Background(), batches)
		if round < 3 {
			require.ErrorIs(t, batches[0].Err, replica.ErrNodeDown, "round %d", round)
		}
		require.NoError(t, batches[1].Err, "round %d: the healthy node's answer", round)
	}
	require.False(t, c.Healthy("n1"), "the hung node's breaker opened")
	require.True(t, c.Healthy("n2"))
}
