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
			ctx := context.Background()
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
			_ = ctx
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
