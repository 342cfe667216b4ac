package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// nodesOf returns the replica nodes of the cluster's nodes with the given
// ids, in that order.
func nodesOf(t testing.TB, c *mcproc.Cluster, ids ...string) []replica.Node {
	t.Helper()
	var out []replica.Node
	for _, id := range ids {
		n := c.Node(id)
		require.NotNil(t, n, id)
		out = append(out, replica.Node{ID: id, Addr: n.Addr()})
	}
	return out
}

// storeOn builds a Store over the given nodes of c only.
func storeOn(t testing.TB, nodes []replica.Node, mod func(*store.Config)) *store.Store {
	t.Helper()
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: 300 * time.Millisecond, OpenTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	cfg := store.Config{Cluster: cl}
	if mod != nil {
		mod(&cfg)
	}
	st, err := store.New(cfg)
	require.NoError(t, err)
	return st
}

// counterOf loads id and returns its "n" attribute and its current id.
func counterOf(t testing.TB, st *store.Store, id string) (int, string) {
	t.Helper()
	s, err := st.Load(context.Background(), id)
	require.NoError(t, err, id)
	var n int
	ok, err := s.Get("n", &n)
	require.NoError(t, err)
	require.True(t, ok, id)
	return n, s.ID()
}

// An added node takes new sessions at once; the sessions already stored
// stay where they are.
func TestSetNodesAddedNodeTakesNewSessions(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := storeOn(t, nodesOf(t, c, "n1", "n2"), nil)
	ctx := context.Background()
	before := saved(t, st, map[string]any{"n": 1})

	ch, err := st.Cluster().SetNodes(nodesOf(t, c, "n1", "n2", "n3"))
	require.NoError(t, err)
	require.Equal(t, []string{"n3"}, ch.Added)
	require.Equal(t, []string{"n1", "n2"}, ch.Kept)
	require.Empty(t, ch.Removed)

	perNode := map[string]int{}
	for range 9 {
		s := saved(t, st, map[string]any{"n": 1})
		perNode[nodeOf(s.ID())]++
	}
	require.Equal(t, map[string]int{"n1": 3, "n2": 3, "n3": 3}, perNode, "round robin over the new list")
	n, id := counterOf(t, st, before.ID())
	require.Equal(t, 1, n)
	require.Equal(t, before.ID(), id, "a kept node's sessions stay")
	_, err = st.Load(ctx, before.ID())
	require.NoError(t, err)
}

// A removed node is drained: every session on it moves to a node of the
// new list on its next request, with its data, also through a second app
// server that got the same list; after the drain ends, the moved sessions
// live on without the node.
func TestSetNodesDrainMovesSessions(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	all := nodesOf(t, c, "n1", "n2", "n3")
	a, b := storeOn(t, all, nil), storeOn(t, all, nil)
	ids := map[string]int{} // id -> counter value
	for i := range 30 {
		ids[saved(t, a, map[string]any{"n": i}).ID()] = i
	}
	onN2 := 0
	for id := range ids {
		if nodeOf(id) == "n2" {
			onN2++
		}
	}
	require.Equal(t, 10, onN2)

	without := nodesOf(t, c, "n1", "n3")
	for _, st := range []*store.Store{a, b} {
		ch, err := st.Cluster().SetNodes(without)
		require.NoError(t, err)
		require.Equal(t, []string{"n2"}, ch.Removed)
		require.Equal(t, []string{"n2"}, drainingIDs(st.Cluster()))
	}
	// No new session and no backup copy goes to n2 any more.
	for range 6 {
		s := saved(t, a, map[string]any{"n": 0})
		require.NotEqual(t, "n2", nodeOf(s.ID()))
		p, bk, ok := a.Placement(s.ID())
		require.True(t, ok)
		require.NotEqual(t, "n2", p)
		require.NotEqual(t, "n2", bk)
	}

	// Half the sessions are requested through a, the other half through b,
	// each twice (the second time with the old id, as a late request with
	// the old cookie would).
	moved := map[string]string{}
	i := 0
	for id, want := range ids {
		st := a
		if i%2 == 1 {
			st = b
		}
		i++
		n, now := counterOf(t, st, id)
		require.Equal(t, want, n)
		require.NotEqual(t, "n2", nodeOf(now))
		if nodeOf(id) == "n2" {
			require.NotEqual(t, id, now, "moved off n2 under a new id")
		} else {
			require.Equal(t, id, now)
		}
		n, again := counterOf(t, st, id)
		require.Equal(t, want, n)
		require.Equal(t, now, again, "the old id finds the moved copy")
		moved[id] = now
	}
	require.Equal(t, uint64(onN2), a.Stats().Drained+b.Stats().Drained, "each session moved once")

	// End the drain and kill n2: everything moved is still there.
	require.NoError(t, a.Cluster().EndDrain("n2"))
	require.NoError(t, b.Cluster().EndDrain("n2"))
	require.ErrorIs(t, a.Cluster().EndDrain("n2"), replica.ErrNotDraining)
	require.Empty(t, drainingIDs(a.Cluster()))
	require.NoError(t, c.Node("n2").Kill())
	for id, want := range ids {
		n, _ := counterOf(t, b, moved[id])
		require.Equal(t, want, n)
	}
	// An id naming the dropped node is now simply unknown.
	for id := range ids {
		if nodeOf(id) == "n2" {
			_, err := a.Load(context.Background(), id)
			require.ErrorIs(t, err, store.ErrNotFound)
			break
		}
	}
}

// A node id that gets a new address keeps its sessions' ids: they are
// copied from the old address on their next request.
func TestSetNodesAddressChange(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	spare := mcproc.NewProcess(t)
	st := storeOn(t, nodesOf(t, c, "n1", "n2", "n3"), nil)
	ids := map[string]int{}
	for i := range 12 {
		ids[saved(t, st, map[string]any{"n": i}).ID()] = i
	}
	nodes := nodesOf(t, c, "n1", "n2", "n3")
	nodes[1].Addr = spare.Addr()
	ch, err := st.Cluster().SetNodes(nodes)
	require.NoError(t, err)
	require.Equal(t, []string{"n2"}, ch.Added)
	require.Equal(t, []string{"n2"}, ch.Removed)
	for id, want := range ids {
		n, now := counterOf(t, st, id)
		require.Equal(t, want, n)
		require.Equal(t, id, now, "same id, new address")
	}
	require.Equal(t, uint64(4), st.Stats().Drained)
	require.NoError(t, st.Cluster().EndDrain("n2"))
	require.NoError(t, c.Node("n2").Kill()) // the old address
	for id, want := range ids {
		n, _ := counterOf(t, st, id)
		require.Equal(t, want, n)
	}
}

// A draining node that comes back into the list unchanged is active again
// with its data.
func TestSetNodesUndrain(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := storeOn(t, nodesOf(t, c, "n1", "n2"), nil)
	var onN2 string
	for onN2 == "" {
		if s := saved(t, st, map[string]any{"n": 7}); nodeOf(s.ID()) == "n2" {
			onN2 = s.ID()
		}
	}
	_, err := st.Cluster().SetNodes(nodesOf(t, c, "n1"))
	require.NoError(t, err)
	ch, err := st.Cluster().SetNodes(nodesOf(t, c, "n1", "n2"))
	require.NoError(t, err)
	require.Equal(t, []string{"n2"}, ch.Undrained)
	require.Empty(t, ch.Added)
	require.Empty(t, drainingIDs(st.Cluster()))
	n, id := counterOf(t, st, onN2)
	require.Equal(t, 7, n)
	require.Equal(t, onN2, id)
}

// Sticky mode: a session cached in memory whose node is removed moves
// off it on its next request, with the newest version (a queued write
// runs first).
func TestSetNodesDrainSticky(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := storeOn(t, nodesOf(t, c, "n1", "n2", "n3"), func(cfg *store.Config) {
		cfg.Sticky, cfg.AsyncWrites, cfg.AsyncWorkers = true, true, 1
	})
	ctx := context.Background()
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n2" {
		s = saved(t, st, map[string]any{"n": 0})
	}
	id := s.ID()
	for i := 1; i <= 5; i++ {
		cur, err := st.LoadLocked(ctx, id)
		require.NoError(t, err)
		require.NoError(t, cur.Set("n", i))
		require.NoError(t, st.SaveAndRelease(ctx, cur))
	}
	_, err := st.Cluster().SetNodes(nodesOf(t, c, "n1", "n3"))
	require.NoError(t, err)
	cur, err := st.LoadLocked(ctx, id)
	require.NoError(t, err)
	require.NotEqual(t, "n2", nodeOf(cur.ID()))
	var n int
	_, err = cur.Get("n", &n)
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.NoError(t, st.Release(ctx, cur))
	require.Equal(t, uint64(1), st.Stats().Drained)

	// Another app server (non-sticky, same new list) finds the moved copy.
	other := storeOn(t, nodesOf(t, c, "n1", "n3"), nil)
	got, now := counterOf(t, other, cur.ID())
	require.Equal(t, 5, got)
	require.Equal(t, cur.ID(), now)
}

// Node list changes under load: two app servers increment counters with
// locked loads in parallel while a node is added and another is drained
// and dropped; every acknowledged increment is stored.
func TestSetNodesUnderLoadLosesNothing(t *testing.T) {
	c := mcproc.NewCluster(t, 4)
	first := nodesOf(t, c, "n1", "n2", "n3")
	apps := []*store.Store{storeOn(t, first, nil), storeOn(t, first, nil)}
	const users, rounds = 12, 30
	ctx := context.Background()
	ids := make([]string, users)
	for u := range ids {
		ids[u] = saved(t, apps[0], map[string]any{"n": 0}).ID()
	}
	var acked [users]atomic.Int64
	var current [users]atomic.Value
	for u := range ids {
		current[u].Store(ids[u])
	}
	var failures atomic.Int64
	var wg sync.WaitGroup
	var step atomic.Int64
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				st := apps[(u+r)%2]
				id := current[u].Load().(string)
				s, err := st.LoadLocked(ctx, id)
				if err != nil {
					failures.Add(1)
					continue
				}
				var n int
				_, _ = s.Get("n", &n)
				_ = s.Set("n", n+1)
				if err := st.SaveAndRelease(ctx, s); err != nil {
					failures.Add(1)
					continue
				}
				acked[u].Add(1)
				current[u].Store(s.ID())
				step.Add(1)
			}
		}()
	}
	// Change the lists of both app servers while the users run: add n4,
	// then remove n2 (drained), then drop it.
	waitSteps := func(n int64) {
		for i := 0; i < 2000 && step.Load() < n; i++ {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSteps(users * rounds / 4)
	for _, st := range apps {
		_, err := st.Cluster().SetNodes(nodesOf(t, c, "n1", "n2", "n3", "n4"))
		require.NoError(t, err)
	}
	waitSteps(users * rounds / 2)
	for _, st := range apps {
		_, err := st.Cluster().SetNodes(nodesOf(t, c, "n1", "n3", "n4"))
		require.NoError(t, err)
	}
	wg.Wait()
	// Every user makes one more request (moving what is still on n2), then
	// the drain ends.
	for u := range users {
		s, err := apps[0].Load(ctx, current[u].Load().(string))
		require.NoError(t, err)
		current[u].Store(s.ID())
	}
	for _, st := range apps {
		require.NoError(t, st.Cluster().EndDrain("n2"))
	}
	require.NoError(t, c.Node("n2").Kill())
	total := int64(0)
	for u := range users {
		n, id := counterOf(t, apps[1], current[u].Load().(string))
		require.Equal(t, acked[u].Load(), int64(n), "user %d (%s): acknowledged increments == stored", u, id)
		require.NotEqual(t, "n2", nodeOf(id))
		total += acked[u].Load()
	}
	t.Logf("%d increments acknowledged, %d failed requests (lock timeouts or conflicts, not acknowledged); drained: %d",
		total, failures.Load(), apps[0].Stats().Drained+apps[1].Stats().Drained)
	require.Positive(t, total)
}

// drainingIDs returns the ids of the cluster's draining nodes.
func drainingIDs(c *replica.Cluster) []string {
	var ids []string
	for _, d := range c.Draining() {
		ids = append(ids, d.ID)
	}
	return ids
}
