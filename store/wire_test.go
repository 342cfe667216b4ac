package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/store"
)

// wireCount is what one node's connection pool sent: batches (round trips)
// and the commands in them.
type wireCount struct{ RoundTrips, Commands uint64 }

// wireCounts returns the round trips and commands sent so far by st's
// cluster, by node id.
func wireCounts(st *store.Store) map[string]wireCount {
	out := map[string]wireCount{}
	for _, ps := range st.Cluster().PoolStats() {
		out[ps.Node] = wireCount{RoundTrips: ps.RoundTrips, Commands: ps.Commands}
	}
	return out
}

// wireDelta returns what each node was sent between two wireCounts.
func wireDelta(before, after map[string]wireCount) map[string]wireCount {
	out := map[string]wireCount{}
	for n, a := range after {
		b := before[n]
		out[n] = wireCount{RoundTrips: a.RoundTrips - b.RoundTrips, Commands: a.Commands - b.Commands}
	}
	return out
}

// thirdNode returns the node of c that is neither primary nor backup.
func thirdNode(t testing.TB, c *mcproc.Cluster, primary, backup string) string {
	t.Helper()
	for _, n := range c.Nodes {
		if n.ID != primary && n.ID != backup {
			return n.ID
		}
	}
	t.Fatalf("no third node besides %s and %s", primary, backup)
	return ""
}

// TestRoundTripsPerOperation counts the batches each node's pool sends for
// the request shapes of an app server: lock and load is one round trip on
// the primary, a save one on the primary and one on the backup node (sent
// together; the read of the moved marker rides in the backup's batch), a
// release one more on the primary; the third node is never contacted.
// With fences off, a load also reads the moved marker on the backup node,
// at the same time as the primary; with them on and no node fenced, it
// does not.
func TestRoundTripsPerOperation(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	ctx := context.Background()

	// want is the round trips sent to the primary and the backup node, and,
	// where it tells something, the commands sent to the primary; markers
	// are the backup node's round trips that read a moved marker for a
	// load (spared by fences).
	type want struct{ primary, backup, primaryCommands, markers uint64 }
	tests := []struct {
		name string
		// prepare returns the session id measured and the operation whose
		// round trips are counted; cleanup runs after the count.
		prepare func(t *testing.T, st *store.Store) (id string, op func() error, cleanup func())
		want    want
	}{
		{
			name: "read-only Load: one get on the primary",
			prepare: func(t *testing.T, st *store.Store) (string, func() error, func()) {
				id := saved(t, st, map[string]any{"n": 1}).ID()
				return id, func() error { _, err := st.Load(ctx, id); return err }, nil
			},
			want: want{primary: 1, backup: 1, primaryCommands: 1, markers: 1},
		},
		{
			name: "LoadLocked: lock add and get in one batch on the primary",
			prepare: func(t *testing.T, st *store.Store) (string, func() error, func()) {
				id := saved(t, st, map[string]any{"n": 1}).ID()
				var s *store.Session
				return id, func() error {
						var err error
						s, err = st.LoadLocked(ctx, id)
						return err
					}, func() {
						require.True(t, s.Locked())
						require.NoError(t, st.Release(ctx, s))
					}
			},
			want: want{primary: 1, backup: 1, primaryCommands: 2, markers: 1},
		},
		{
			name: "SaveAndRelease of a modified session: the save (primary and backup in one round trip), then the release",
			prepare: func(t *testing.T, st *store.Store) (string, func() error, func()) {
				id := saved(t, st, map[string]any{"n": 1}).ID()
				s, err := st.LoadLocked(ctx, id)
				require.NoError(t, err)
				require.NoError(t, s.Set("n", 2))
				return id, func() error { return st.SaveAndRelease(ctx, s) }, func() {
					require.False(t, s.Locked(), "released")
					_, _, lkey := st.MemcachedKeys(id)
					_, err := get(t, c, nodeOf(id), lkey)
					require.ErrorIs(t, err, memcache.ErrCacheMiss, "the lock item is gone")
				}
			},
			want: want{primary: 2, backup: 1, primaryCommands: 2},
		},
		{
			name: "Save of a new session: one add on its primary, one set on its backup",
			prepare: func(t *testing.T, st *store.Store) (string, func() error, func()) {
				s, err := st.NewSession(ctx)
				require.NoError(t, err)
				require.NoError(t, s.Set("n", 1))
				return s.ID(), func() error { return st.Save(ctx, s) }, nil
			},
			want: want{primary: 1, backup: 1, primaryCommands: 1},
		},
		{
			name: "load, set, save, set, save: no read between the two saves",
			prepare: func(t *testing.T, st *store.Store) (string, func() error, func()) {
				id := saved(t, st, map[string]any{"n": 1}).ID()
				return id, func() error {
						s, err := st.Load(ctx, id)
						if err != nil {
							return err
						}
						for i := 2; i <= 3; i++ {
							if err := s.Set("n", i); err != nil {
								return err
							}
							if err := st.Save(ctx, s); err != nil {
								return err
							}
						}
						return nil
					}, func() {
						got, err := st.Load(ctx, id)
						require.NoError(t, err)
						n, _, err := store.Get[int](got, "n")
						require.NoError(t, err)
						require.Equal(t, 3, n)
						require.Equal(t, uint64(3), got.Version())
					}
			},
			want: want{primary: 1 + 2, backup: 1 + 2, primaryCommands: 1 + 2, markers: 1},
		},
	}
	for _, fenced := range []bool{true, false} {
		for _, tt := range tests {
			name := tt.name + ", fences off"
			if fenced {
				name = tt.name + ", fences on"
			}
			t.Run(name, func(t *testing.T) {
				// Fences are read once first, and not again during the
				// count (ManualFences).
				st := newStore(t, c, func(cfg *store.Config) { cfg.AlwaysReadMarkers, cfg.FenceWindow = !fenced, store.MaxFenceWindow })
				store.ManualFences(st)
				require.NoError(t, st.RefreshFences(ctx))
				id, op, cleanup := tt.prepare(t, st)
				primary, backup, ok := st.Placement(id)
				require.True(t, ok)
				third := thirdNode(t, c, primary, backup)
				wantBackup := tt.want.backup
				if fenced {
					wantBackup -= tt.want.markers
				}

				before := wireCounts(st)
				require.NoError(t, op())
				got := wireDelta(before, wireCounts(st))
				require.Equal(t, tt.want.primary, got[primary].RoundTrips, "round trips to the primary %s", primary)
				require.Equal(t, wantBackup, got[backup].RoundTrips, "round trips to the backup %s", backup)
				if tt.want.primaryCommands != 0 {
					require.Equal(t, tt.want.primaryCommands, got[primary].Commands, "commands to the primary %s", primary)
				}
				require.Equal(t, wireCount{}, got[third], "third node %s", third)
				if cleanup != nil {
					cleanup()
				}
			})
		}
	}
}

// TestSecondSaveInARequestIsCASGuarded: the second save of a request uses
// the CAS id its first save got back, without reading the session again,
// and still refuses to overwrite a version another app server wrote in
// between.
func TestSecondSaveInARequestIsCASGuarded(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, quietFences), newStore(t, c, quietFences)
	store.ManualFences(a) // no fence re-read in the counts
	ctx := context.Background()
	require.NoError(t, a.RefreshFences(ctx))
	id := saved(t, a, map[string]any{"n": 0}).ID()
	primary, backup, _ := a.Placement(id)

	before := wireCounts(a)
	s, err := a.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, a.Save(ctx, s), "first save")
	got := wireDelta(before, wireCounts(a))
	require.Equal(t, wireCount{2, 2}, got[primary], "one get and one compare-and-set on the primary")

	// Another app server writes the session between the two saves.
	other, err := b.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, other.Set("n", 100))
	require.NoError(t, b.Save(ctx, other))

	require.NoError(t, s.Set("n", 2))
	err = a.Save(ctx, s)
	require.ErrorIs(t, err, store.ErrConflict, "the second save is compare-and-set against the first one's CAS id")
	require.Equal(t, uint64(1), a.Stats().Conflicts)

	// The other store's value stays, on both copies.
	for _, st := range []*store.Store{a, b} {
		cur, err := st.Load(ctx, id)
		require.NoError(t, err)
		n, _, err := store.Get[int](cur, "n")
		require.NoError(t, err)
		require.Equal(t, 100, n)
		require.Equal(t, uint64(3), cur.Version())
	}
	p, err := get(t, c, primary, id)
	require.NoError(t, err)
	bk, err := get(t, c, backup, "bak:"+id)
	require.NoError(t, err)
	require.Equal(t, p.Value, bk.Value, "the losing save's backup write was repaired")
}

// requireFlagsAreVersion checks with a plain client that key on node holds
// version in its body and in its client flags.
func requireFlagsAreVersion(t *testing.T, c *mcproc.Cluster, node, key string, version uint64) {
	t.Helper()
	it, err := get(t, c, node, key)
	require.NoError(t, err, "%s on %s", key, node)
	require.Equal(t, uint32(version), it.Flags, "flags of %s on %s", key, node)
	rec, err := codec.DecodeRecord(codec.NewCBOR(), it.Value)
	require.NoError(t, err)
	require.Equal(t, version, rec.Version, "body of %s on %s", key, node)
}

// TestVersionInClientFlags: every copy carries the low 32 bits of its
// envelope version in its client flags, after plain saves, a locked save
// and a relocation.
func TestVersionInClientFlags(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		saves  int
		locked bool
	}{
		{name: "new session", saves: 1},
		{name: "two saves", saves: 2},
		{name: "five saves", saves: 5},
		{name: "four saves under the lock", saves: 4, locked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			st := newStore(t, c, nil)
			s := saved(t, st, map[string]any{"n": 1})
			id := s.ID()
			for i := 2; i <= tt.saves; i++ {
				if tt.locked {
					cur, err := st.LoadLocked(ctx, id)
					require.NoError(t, err)
					require.NoError(t, cur.Set("n", i))
					require.NoError(t, st.SaveAndRelease(ctx, cur))
					s = cur
					continue
				}
				require.NoError(t, s.Set("n", i))
				require.NoError(t, st.Save(ctx, s))
			}
			require.Equal(t, uint64(tt.saves), s.Version())
			primary, backup, _ := st.Placement(id)
			requireFlagsAreVersion(t, c, primary, id, s.Version())
			requireFlagsAreVersion(t, c, backup, "bak:"+id, s.Version())

			// A relocation writes the same version, flags included.
			require.NoError(t, c.Node(primary).Kill())
			moved, err := newStore(t, c, nil).Load(ctx, id)
			require.NoError(t, err)
			require.NotEqual(t, id, moved.ID())
			require.Equal(t, s.Version(), moved.Version())
			requireFlagsAreVersion(t, c, nodeOf(moved.ID()), moved.ID(), s.Version())
			newBackup := thirdNode(t, c, primary, nodeOf(moved.ID()))
			requireFlagsAreVersion(t, c, newBackup, "bak:"+moved.ID(), s.Version())
		})
	}
}

// TestTwoCopiesOrNoAcknowledgement: a save whose backup node just died (its
// breaker still closed) is acknowledged only once the backup copy is on
// another node, so that losing the primary next loses nothing. With no
// other node the save is acknowledged with one copy, and counted.
func TestTwoCopiesOrNoAcknowledgement(t *testing.T) {
	ctx := context.Background()

	t.Run("three nodes: the backup copy goes to the third node", func(t *testing.T) {
		c := mcproc.NewCluster(t, 3)
		st := newStore(t, c, nil)
		id := saved(t, st, map[string]any{"n": 1}).ID()
		primary, backup, _ := st.Placement(id)
		third := thirdNode(t, c, primary, backup)

		require.NoError(t, c.Node(backup).Kill()) // no wait for its breaker to open
		s, err := st.Load(ctx, id)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 2))
		require.NoError(t, st.Save(ctx, s), "acknowledged: two copies exist")
		require.Equal(t, id, s.ID(), "the primary took the write: no relocation")
		require.Equal(t, uint64(2), s.Version())
		stats := st.Stats()
		require.GreaterOrEqual(t, stats.BackupFailures, uint64(1), "the failed backup write is counted")
		require.Zero(t, stats.SingleCopySaves)
		requireFlagsAreVersion(t, c, primary, id, 2)
		requireFlagsAreVersion(t, c, third, "bak:"+id, 2)

		// Losing the primary now loses nothing: an app server that never saw
		// the session, and the one that saved it, both load the new version.
		require.NoError(t, c.Node(primary).Kill())
		loaders := []struct {
			name string
			st   *store.Store
		}{{"fresh store", newStore(t, c, nil)}, {"same store", st}}
		for _, l := range loaders {
			name := l.name
			got, err := l.st.Load(ctx, id)
			require.NoError(t, err, name)
			require.Equal(t, makeIDOn(id, third), got.ID(), "%s: relocated to the node with the backup copy", name)
			n, _, err := store.Get[int](got, "n")
			require.NoError(t, err)
			require.Equal(t, 2, n, name)
			require.Equal(t, uint64(2), got.Version(), name)
		}
	})

	t.Run("two nodes: one copy, counted", func(t *testing.T) {
		c := mcproc.NewCluster(t, 2)
		st := newStore(t, c, nil)
		id := saved(t, st, map[string]any{"n": 1}).ID()
		primary, backup, _ := st.Placement(id)

		require.NoError(t, c.Node(backup).Kill())
		s, err := st.Load(ctx, id)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 2))
		require.NoError(t, st.Save(ctx, s), "no other node: acknowledged with one copy")
		stats := st.Stats()
		require.GreaterOrEqual(t, stats.BackupFailures, uint64(1))
		require.Equal(t, uint64(1), stats.SingleCopySaves)
		requireFlagsAreVersion(t, c, primary, id, 2)
	})
}

// makeIDOn returns session id moved to node: the same random part with
// node's suffix.
func makeIDOn(id, node string) string { return id[:len(id)-len(nodeOf(id))] + node }

// TestLockHeldUntilBothCopiesAreStored: SaveAndRelease releases the lock
// only once the backup write has been answered. Released earlier (say,
// pipelined after the primary write), the next holder could load the new
// version, save a newer one, and have its backup copy overwritten by this
// save's late backup write: a stale backup, which a failover of the
// primary would then bring back, losing an acknowledged change. Here the
// backup node hangs during the save: the lock must stay held until the
// save has put its backup copy on a live node.
func TestLockHeldUntilBothCopiesAreStored(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"n": 1}).ID()
	primary, backup, ok := st.Placement(id)
	require.True(t, ok)
	third := thirdNode(t, c, primary, backup)
	_, bkey, lkey := st.MemcachedKeys(id)

	s, err := st.LoadLocked(ctx, id)
	require.NoError(t, err)
	require.NoError(t, s.Set("n", 2))
	require.NoError(t, c.Node(backup).Pause())
	done := make(chan error, 1)
	go func() { done <- st.SaveAndRelease(ctx, s) }()
	time.Sleep(100 * time.Millisecond) // the primary write is long done
	it, err := get(t, c, primary, lkey)
	require.NoError(t, err, "the lock is still held while the backup write is pending")
	require.NotEmpty(t, it.Value)
	require.NoError(t, <-done, "saved: the backup copy went to the third node")
	require.NoError(t, c.Node(backup).Resume())
	_, err = get(t, c, primary, lkey)
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "released after the save")
	it, err = get(t, c, third, bkey)
	require.NoError(t, err)
	require.Equal(t, uint32(2), it.Flags, "the backup copy on the third node holds version 2")
}

// TestSaveRewritesALostBackupCopy: the backup node restarted empty; the
// next save finds no copy to replace there and writes one (then checks
// that the primary still exists), so the session has two copies again.
func TestSaveRewritesALostBackupCopy(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"n": 1}).ID()
	_, backup, ok := st.Placement(id)
	require.True(t, ok)
	_, bkey, _ := st.MemcachedKeys(id)
	require.NoError(t, c.Node(backup).Restart(ctx))
	_, err := get(t, c, backup, bkey)
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "the backup copy is gone")

	var s *store.Session
	require.Eventually(t, func() bool { s, err = st.Load(ctx, id); return err == nil }, 3*time.Second, 20*time.Millisecond)
	require.NoError(t, s.Set("n", 2))
	require.NoError(t, st.Save(ctx, s))
	it, err := get(t, c, backup, bkey)
	require.NoError(t, err, "the save wrote the backup copy again")
	require.Equal(t, uint32(s.Version()), it.Flags)
}

// TestNoSingleCopyAckWhenTheContextEnds: the backup node hangs and the
// caller's context ends while the save looks for another node: the save
// must not be acknowledged as if no second node were usable.
func TestNoSingleCopyAckWhenTheContextEnds(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"n": 1}).ID()
	_, backup, ok := st.Placement(id)
	require.True(t, ok)
	s, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, s.Set("n", 2))
	require.NoError(t, c.Node(backup).Pause())
	t.Cleanup(func() { _ = c.Node(backup).Resume() })
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	err = st.Save(short, s)
	require.Error(t, err, "no second copy is confirmed")
	require.Zero(t, st.Stats().SingleCopySaves)
}

// TestBackupElsewhereKeepsANewerCopy: the copy written to the next node
// when the backup node fails never replaces a newer copy found there (a
// concurrent save put it there), and does replace an older one.
func TestBackupElsewhereKeepsANewerCopy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		there    uint32 // version of the copy already on the third node
		wantKept bool
	}{
		{"newer copy kept", 99, true},
		{"older copy replaced", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			st := newStore(t, c, nil)
			ctx := context.Background()
			id := saved(t, st, map[string]any{"n": 1}).ID()
			primary, backup, ok := st.Placement(id)
			require.True(t, ok)
			third := thirdNode(t, c, primary, backup)
			_, bkey, _ := st.MemcachedKeys(id)
			require.NoError(t, c.Node(third).Client().Set(&memcache.Item{Key: bkey, Value: []byte("there"), Flags: tc.there, Expiration: 60}))

			s, err := st.Load(ctx, id)
			require.NoError(t, err)
			require.NoError(t, s.Set("n", 2))
			require.NoError(t, c.Node(backup).Kill())
			require.NoError(t, st.Save(ctx, s))
			it, err := get(t, c, third, bkey)
			require.NoError(t, err)
			if tc.wantKept {
				require.Equal(t, "there", string(it.Value))
				require.Equal(t, tc.there, it.Flags)
			} else {
				require.Equal(t, uint32(s.Version()), it.Flags)
			}
		})
	}
}
