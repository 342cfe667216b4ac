package store_test

import (
	"context"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/store"
)

// incr loads id (locked or not), adds one to "n", saves, and returns
// the session's id afterwards.
func incr(t *testing.T, st *store.Store, id string, locked bool) (string, error) {
	t.Helper()
	ctx := context.Background()
	load := st.Load
	if locked {
		load = st.LoadLocked
	}
	s, err := load(ctx, id)
	if err != nil {
		return "", err
	}
	n, _, err := store.Get[int](s, "n")
	require.NoError(t, err)
	require.NoError(t, s.Set("n", n+1))
	if locked {
		err = st.SaveAndRelease(ctx, s)
	} else {
		err = st.Save(ctx, s)
	}
	return s.ID(), err
}

// The known limit of earlier versions, closed: the primary node hangs
// (SIGSTOP) while app server A relocates the session and writes to it;
// the node resumes with its old copy; a request with the old cookie then
// reaches app server B, which never saw the outage. B must load A's copy,
// not the old one, so that nothing acknowledged is lost.
func TestNoForkAfterAHungNode(t *testing.T) {
	for _, tt := range []struct {
		name           string
		locked, sticky bool
	}{{"unlocked", false, false}, {"locked", true, false}, {"sticky B", true, true}} {
		locked := tt.locked
		t.Run(tt.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			a, b := newStore(t, c, nil), newStore(t, c, func(cfg *store.Config) { cfg.Sticky = tt.sticky })
			var s *store.Session
			for s == nil || nodeOf(s.ID()) != "n1" {
				s = saved(t, a, map[string]any{"n": 0})
			}
			oldID := s.ID()
			acked := 0
			for range 2 { // both app servers know the session
				_, err := incr(t, b, oldID, locked)
				require.NoError(t, err)
				acked++
			}

			require.NoError(t, c.Node("n1").Pause())
			id := oldID
			for range 5 { // A relocates it (n1 does not answer) and writes
				var err error
				id, err = incr(t, a, id, locked)
				require.NoError(t, err)
				acked++
			}
			require.NotEqual(t, oldID, id, "relocated")
			require.NoError(t, c.Node("n1").Resume())
			// n1 still holds the old copy.
			item, err := c.Node("n1").Client().Get(oldID)
			require.NoError(t, err, "the resumed node has its old copy")
			require.NotNil(t, item)

			// B, with the old cookie.
			got, err := incr(t, b, oldID, locked)
			require.NoError(t, err)
			acked++
			require.Equal(t, id, got, "B followed the session to where A moved it")
			n, _ := counterOf(t, a, id)
			require.Equal(t, acked, n, "acknowledged increments == stored")
			require.Positive(t, b.Stats().StaleRemoved, "B deleted the old copy")
			_, err = c.Node("n1").Client().Get(oldID)
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "the old copy is deleted")

			// The old id keeps leading to the live copy, on either server.
			for _, st := range []*store.Store{a, b} {
				got, err := incr(t, st, oldID, locked)
				require.NoError(t, err)
				acked++
				require.Equal(t, id, got)
			}
			n, _ = counterOf(t, b, id)
			require.Equal(t, acked, n)

		})
	}
}

// A request that loaded the session before its node hung, and saves after
// the node resumed and another app server relocated the session, gets a
// conflict: its write would otherwise land on the old copy, acknowledged
// and lost.
func TestSaveAfterRelocationConflicts(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, nil), newStore(t, c, nil)
	ctx := context.Background()
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n1" {
		s = saved(t, a, map[string]any{"n": 0})
	}
	oldID := s.ID()
	inFlight, err := b.Load(ctx, oldID) // B's request is between load and save
	require.NoError(t, err)

	require.NoError(t, c.Node("n1").Pause())
	id, err := incr(t, a, oldID, false)
	require.NoError(t, err)
	require.NotEqual(t, oldID, id)
	require.NoError(t, c.Node("n1").Resume())

	require.NoError(t, inFlight.Set("n", 100))
	require.ErrorIs(t, b.Save(ctx, inFlight), store.ErrConflict)
	n, now := counterOf(t, b, oldID)
	require.Equal(t, 1, n, "A's increment, not B's refused write")
	require.Equal(t, id, now)
	_, err = c.Node("n1").Client().Get(oldID)
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "the old copy, with the refused write, is deleted by the next load")
}

// The session moved, then the node of the moved copy (which is also the
// node that holds the marker a load of the old id reads first) hangs: a
// request with the old cookie finds the marker on another node and loads
// the newest version through the moved id's own failover.
func TestOldIDWhenTheMovedCopysNodeHangs(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, nil), newStore(t, c, nil)
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n1" {
		s = saved(t, a, map[string]any{"n": 0})
	}
	oldID := s.ID()
	require.NoError(t, c.Node("n1").Pause())
	id, err := incr(t, a, oldID, false)
	require.NoError(t, err)
	require.Equal(t, "n2", nodeOf(id), "moved to n1's backup node")
	id, err = incr(t, a, id, false)
	require.NoError(t, err)
	require.NoError(t, c.Node("n1").Resume())

	require.NoError(t, c.Node("n2").Pause())
	defer func() { require.NoError(t, c.Node("n2").Resume()) }()
	got, err := incr(t, b, oldID, false)
	require.NoError(t, err)
	require.Equal(t, "n3", nodeOf(got), "the newest copy, relocated again off the hung n2")
	n, _ := counterOf(t, b, got)
	require.Equal(t, 3, n, "acknowledged increments == stored")
	_, err = c.Node("n1").Client().Get(oldID)
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "the old copy is deleted")
}

// A "moving" marker whose relocation never finished (its app server died)
// holds saves of the old copy back until it expires (it is short-lived),
// then they go through: nothing refused for good, nothing lost.
func TestStuckMovingMarker(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a := newStore(t, c, nil)
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n1" {
		s = saved(t, a, map[string]any{"n": 0})
	}
	id := s.ID()
	for _, n := range []string{"n2", "n3"} {
		require.NoError(t, c.Node(n).Client().Set(&memcache.Item{Key: "moved:" + id, Value: []byte("-"), Expiration: 1}))
	}
	got, err := incr(t, a, id, false)
	require.NoError(t, err, "the save waits for the relocation, which gave up")
	require.Equal(t, id, got)
	n, _ := counterOf(t, a, id)
	require.Equal(t, 1, n)
}

// A session that moved X -> Y and back Y -> X (two nodes hung in turn)
// leaves a stale marker moved:X=Y and an old copy Y on the node that hung
// last. A fresh app server loading X must keep X (written since), not
// follow the stale marker.
func TestMoveBackCycle(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	a := newStore(t, c, nil)
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n1" {
		s = saved(t, a, map[string]any{"n": 0})
	}
	x := s.ID()
	acked := 0
	require.NoError(t, c.Node("n1").Pause())
	y, err := incr(t, a, x, false)
	require.NoError(t, err)
	acked++
	require.Equal(t, "n2", nodeOf(y))
	require.NoError(t, c.Node("n1").Resume())

	b := newStore(t, c, nil) // sees both healthy: Y's backup goes to n1
	for range 2 {
		got, err := incr(t, b, y, false)
		require.NoError(t, err)
		require.Equal(t, y, got)
		acked++
	}
	require.NoError(t, c.Node("n2").Pause())
	back, err := incr(t, b, y, false)
	require.NoError(t, err)
	acked++
	require.Equal(t, x, back, "moved back to its first id")
	for range 3 {
		back, err = incr(t, b, back, false)
		require.NoError(t, err)
		acked++
	}
	require.NoError(t, c.Node("n2").Resume())

	d := newStore(t, c, nil) // a fresh app server
	n, id := counterOf(t, d, x)
	require.Equal(t, x, id)
	require.Equal(t, acked, n, "acknowledged == loaded")
	_, err = c.Node("n1").Client().Get(x)
	require.NoError(t, err, "the current copy stays")
}

// The session moved X -> Y, then Y's node crashed (its backup is alive):
// a request with the old id follows the marker to Y, whose own failover
// restores it, rather than answer "not found".
func TestOldIDWhenTheMovedCopysNodeCrashed(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a := newStore(t, c, nil)
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n1" {
		s = saved(t, a, map[string]any{"n": 0})
	}
	x := s.ID()
	require.NoError(t, c.Node("n1").Pause())
	y, err := incr(t, a, x, false)
	require.NoError(t, err)
	require.Equal(t, "n2", nodeOf(y))
	y, err = incr(t, a, y, false)
	require.NoError(t, err)
	require.NoError(t, c.Node("n1").Resume())
	require.NoError(t, c.Node("n2").Kill())

	b := newStore(t, c, nil)
	n, now := counterOf(t, b, x)
	require.Equal(t, 2, n, "the relocated session, restored from its backup")
	require.NotEqual(t, x, now)
}

// DestroyUser reaches a session on a draining node.
func TestDestroyUserReachesDrainingNodes(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := storeOn(t, nodesOf(t, c, "n1", "n2", "n3"), nil)
	ctx := context.Background()
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n3" {
		var err error
		s, err = st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 1))
		require.NoError(t, s.SetUser("alice"))
		require.NoError(t, st.Save(ctx, s))
	}
	_, err := st.Cluster().SetNodes(nodesOf(t, c, "n1", "n2"))
	require.NoError(t, err)
	_, err = st.DestroyUser(ctx, "alice")
	require.NoError(t, err)
	_, err = st.Load(ctx, s.ID())
	require.ErrorIs(t, err, store.ErrNotFound, "logged out everywhere, draining node included")
}

// A backup copy written to another node while the usual backup node was
// down stays behind, older, once that node is back. When the primary then
// hangs and the usual backup node does not answer either, the old copy
// must not be relocated (acknowledged writes would be lost): the load is
// refused until a node with the newest copy answers.
func TestLeftBehindBackupIsNotRelocated(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	ctx := context.Background()
	a := newStore(t, c, nil)
	var s *store.Session
	for s == nil || nodeOf(s.ID()) != "n2" {
		s = saved(t, a, map[string]any{"n": 0})
	}
	id := s.ID()
	_, bk, _ := a.Placement(id)
	require.Equal(t, "n3", bk)

	require.NoError(t, c.Node("n3").Kill())
	b := newStore(t, c, nil) // n3 down: its backup goes to n1
	_, err := incr(t, b, id, false)
	require.NoError(t, err)
	require.NoError(t, c.Node("n3").Restart(ctx))
	d := newStore(t, c, nil) // n3 back: backups go there again
	for range 2 {
		_, err = incr(t, d, id, false)
		require.NoError(t, err)
	}
	_, bkey, _ := d.MemcachedKeys(id)
	_, err = c.Node("n1").Client().Get(bkey)
	require.NoError(t, err, "the older backup copy left on n1")

	require.NoError(t, c.Node("n2").Pause())
	require.NoError(t, c.Node("n3").Pause())
	e := newStore(t, c, nil)
	_, err = e.Load(ctx, id)
	require.ErrorIs(t, err, store.ErrUnavailable, "not the left-behind copy")
	require.NoError(t, c.Node("n3").Resume())
	require.NoError(t, c.Node("n2").Resume())

	f := newStore(t, c, nil)
	n, _ := counterOf(t, f, id)
	require.Equal(t, 3, n, "acknowledged increments == stored")
}
