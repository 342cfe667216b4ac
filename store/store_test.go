package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// newStore builds a Store over the nodes of c, as one app server would.
func newStore(t testing.TB, c *mcproc.Cluster, mod func(*store.Config)) *store.Store {
	t.Helper()
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	return storeOn(t, nodes, mod)
}

// saved creates and saves a session with the given attributes.
func saved(t testing.TB, st *store.Store, attrs map[string]any) *store.Session {
	t.Helper()
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	require.NoError(t, err)
	for k, v := range attrs {
		require.NoError(t, s.Set(k, v))
	}
	require.NoError(t, st.Save(ctx, s))
	return s
}

// nodeOf returns the node id suffix of a session id.
func nodeOf(id string) string { return id[strings.LastIndexByte(id, '-')+1:] }

// get reads key from one node with a plain client.
func get(t testing.TB, c *mcproc.Cluster, node, key string) (*memcache.Item, error) {
	t.Helper()
	return c.Node(node).Client().Get(key)
}

// sumStat adds one memcached stat over all running nodes.
func sumStat(t testing.TB, c *mcproc.Cluster, name string) uint64 {
	t.Helper()
	var sum uint64
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		v, err := n.Stat(context.Background(), name)
		require.NoError(t, err)
		sum += v
	}
	return sum
}

func TestTwoStoresSeeEachOthersWrites(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, nil), newStore(t, c, nil)
	ctx := context.Background()

	s := saved(t, a, map[string]any{"user": "ada", "n": 7})
	got, err := b.Load(ctx, s.ID())
	require.NoError(t, err)
	user, ok, err := store.Get[string](got, "user")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "ada", user)
	n, _, err := store.Get[int](got, "n")
	require.NoError(t, err)
	require.Equal(t, 7, n)

	require.NoError(t, got.Set("n", 8))
	require.NoError(t, b.Save(ctx, got))
	again, err := a.Load(ctx, s.ID())
	require.NoError(t, err)
	n, _, err = store.Get[int](again, "n")
	require.NoError(t, err)
	require.Equal(t, 8, n)
	require.Equal(t, uint64(2), again.Version())
}

func TestSaveWritesPrimaryAndBackup(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, func(cfg *store.Config) { cfg.KeyPrefix = "app1:" })
	s := saved(t, st, map[string]any{"k": "v"})
	primary, backup, ok := st.Placement(s.ID())
	require.True(t, ok)
	require.Equal(t, nodeOf(s.ID()), primary)
	require.NotEqual(t, primary, backup)

	p, err := get(t, c, primary, "app1:"+s.ID())
	require.NoError(t, err)
	bk, err := get(t, c, backup, "app1:bak:"+s.ID())
	require.NoError(t, err)
	require.Equal(t, p.Value, bk.Value, "backup holds the same bytes")
	for _, n := range c.Nodes {
		if n.ID != primary {
			_, err := get(t, c, n.ID, "app1:"+s.ID())
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "primary copy only on %s", primary)
		}
		if n.ID != backup {
			_, err := get(t, c, n.ID, "app1:bak:"+s.ID())
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "backup copy only on %s", backup)
		}
	}
	rec, err := codec.DecodeRecord(codec.NewCBOR(), p.Value)
	require.NoError(t, err)
	require.Equal(t, uint64(1), rec.Version)
}

func TestNewSessionsSpreadOverNodes(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	seen := map[string]int{}
	for range 30 {
		s, err := st.NewSession(context.Background())
		require.NoError(t, err)
		seen[nodeOf(s.ID())]++
	}
	require.Equal(t, map[string]int{"n1": 10, "n2": 10, "n3": 10}, seen)
}

func TestKillPrimaryRelocatesTwice(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, nil), newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, a, map[string]any{"cart": []string{"apple", "pear"}})
	id := s.ID()

	require.NoError(t, c.Node(nodeOf(id)).Kill())
	got, err := b.Load(ctx, id)
	require.NoError(t, err)
	id2 := got.ID()
	require.NotEqual(t, id, id2, "relocated to a new id")
	require.Equal(t, id, got.PreviousID())
	require.Equal(t, id[:32], id2[:32], "same random part, new node suffix")
	cart, _, err := store.Get[[]string](got, "cart")
	require.NoError(t, err)
	require.Equal(t, []string{"apple", "pear"}, cart)
	require.Equal(t, uint64(1), b.Stats().Relocations)

	// The relocated session has a primary and a backup copy on the two live nodes.
	_, err = get(t, c, nodeOf(id2), id2)
	require.NoError(t, err)
	_, backup, _ := b.Placement(id2)
	require.NotEqual(t, nodeOf(id), backup)
	_, err = get(t, c, backup, "bak:"+id2)
	require.NoError(t, err)

	// Change it, then kill the new primary too: the third node has it.
	require.NoError(t, got.Set("step", 2))
	require.NoError(t, b.Save(ctx, got))
	require.NoError(t, c.Node(nodeOf(id2)).Kill())
	third, err := a.Load(ctx, id2)
	require.NoError(t, err)
	require.Equal(t, backup, nodeOf(third.ID()))
	cart, _, err = store.Get[[]string](third, "cart")
	require.NoError(t, err)
	require.Equal(t, []string{"apple", "pear"}, cart)
	step, _, err := store.Get[int](third, "step")
	require.NoError(t, err)
	require.Equal(t, 2, step)
}

func TestPrimaryRestartedEmptyIsRestored(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"k": "v"})
	id := s.ID()
	primary := c.Node(nodeOf(id))

	// Warm the pool so stale connections exist when the node restarts.
	_, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, primary.Restart(ctx))
	_, err = get(t, c, primary.ID, id)
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "restarted empty")

	got, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, id, got.ID(), "restored under the same id")
	k, _, err := store.Get[string](got, "k")
	require.NoError(t, err)
	require.Equal(t, "v", k)
	_, err = get(t, c, primary.ID, id)
	require.NoError(t, err, "the primary holds the session again")
	require.Equal(t, uint64(1), st.Stats().Restores)

	// And it can be saved again with its CAS guard.
	require.NoError(t, got.Set("k", "w"))
	require.NoError(t, st.Save(ctx, got))
}

func TestExpiry(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	ctx := context.Background()

	t.Run("31 days idle timeout", func(t *testing.T) {
		st := newStore(t, c, func(cfg *store.Config) {
			cfg.IdleTimeout = 31 * 24 * time.Hour
			cfg.Lifetime = 60 * 24 * time.Hour
		})
		s := saved(t, st, map[string]any{"k": 1})
		time.Sleep(1100 * time.Millisecond) // a relative 31-day exptime would be a 1970 date: gone by now
		got, err := st.Load(ctx, s.ID())
		require.NoError(t, err)
		require.Equal(t, 31*24*time.Hour, got.IdleTimeout())
		require.NoError(t, st.Touch(ctx, got))
		_, err = st.Load(ctx, s.ID())
		require.NoError(t, err)
	})

	t.Run("2s idle timeout expires and touch extends it", func(t *testing.T) {
		st := newStore(t, c, func(cfg *store.Config) { cfg.IdleTimeout = 2 * time.Second })
		// An item lives at least its idle timeout and less than a second more.
		start := time.Now()
		expiring := saved(t, st, map[string]any{"k": 1})
		touched := saved(t, st, map[string]any{"k": 2})
		time.Sleep(time.Until(start.Add(1500 * time.Millisecond)))
		require.NoError(t, st.Touch(ctx, touched))
		time.Sleep(time.Until(start.Add(3200 * time.Millisecond))) // 1.7 s after the touch
		_, err := st.Load(ctx, expiring.ID())
		require.ErrorIs(t, err, store.ErrNotFound)
		got, err := st.Load(ctx, touched.ID())
		require.NoError(t, err)
		k, _, _ := store.Get[int](got, "k")
		require.Equal(t, 2, k)
	})

	t.Run("absolute lifetime", func(t *testing.T) {
		st := newStore(t, c, func(cfg *store.Config) {
			cfg.IdleTimeout = time.Hour
			cfg.Lifetime = 1500 * time.Millisecond
		})
		s := saved(t, st, map[string]any{"k": 1})
		_, err := st.Load(ctx, s.ID())
		require.NoError(t, err)
		time.Sleep(1600 * time.Millisecond)
		_, err = st.Load(ctx, s.ID())
		require.ErrorIs(t, err, store.ErrNotFound)
		require.NoError(t, s.Set("k", 2))
		require.ErrorIs(t, st.Save(ctx, s), store.ErrExpired)
	})
}

func TestMalformedIDsNeverReachMemcached(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	good := saved(t, st, nil).ID()
	hex32 := good[:32]
	ids := map[string]string{
		"empty":              "",
		"no suffix":          hex32,
		"only suffix":        "-n1",
		"unknown node":       hex32 + "-n99",
		"empty node":         hex32 + "-",
		"space":              hex32[:31] + " -n1",
		"space in node":      hex32 + "-n 1",
		"newline":            hex32 + "-n1\n",
		"control char":       hex32[:31] + "\x01-n1",
		"upper-case hex":     strings.ToUpper(hex32) + "-n1",
		"short hex":          hex32[:31] + "-n1",
		"long hex":           hex32 + "a-n1",
		"non-hex":            "g" + hex32[1:] + "-n1",
		"10 KB":              strings.Repeat("a", 10240) + "-n1",
		"two suffixes":       hex32 + "-n1-n2",
		"suffix then prefix": "n1-" + hex32,
		"utf-8":              hex32[:30] + "é-n1",
	}
	before := sumStat(t, c, "cmd_get") + sumStat(t, c, "cmd_touch") + sumStat(t, c, "cmd_set")
	for name, id := range ids {
		t.Run(name, func(t *testing.T) {
			_, err := st.Load(ctx, id)
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = st.LoadLocked(ctx, id)
			require.ErrorIs(t, err, store.ErrNotFound)
			require.NoError(t, st.DestroyID(ctx, id))
		})
	}
	after := sumStat(t, c, "cmd_get") + sumStat(t, c, "cmd_touch") + sumStat(t, c, "cmd_set")
	require.Equal(t, before, after, "no memcached command for a malformed id")

	// A well-formed id that does not exist is "not found" too, and is never adopted.
	_, err := st.Load(ctx, strings.Repeat("0", 32)+"-n1")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestUnchangedSaveSendsNoBody(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"k": "v", "n": 1})

	sets := func() uint64 { return sumStat(t, c, "cmd_set") } // cas and add count as sets too
	before := sets()
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.NoError(t, got.Set("k", "v")) // same value: not a modification
	require.NoError(t, got.Set("n", 1))
	require.False(t, got.Modified())
	require.NoError(t, st.Save(ctx, got))
	require.Equal(t, before, sets(), "no body was sent")
	require.Equal(t, uint64(1), st.Stats().SkippedSaves)

	require.NoError(t, got.Set("n", 2))
	require.True(t, got.Modified())
	require.NoError(t, st.Save(ctx, got))
	require.Equal(t, before+2, sets(), "primary and backup written once each")
}

func TestRemovingAnAttributeIsPersisted(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"keep": 1, "drop": 2})
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	got.Remove("drop")
	require.True(t, got.Modified())
	require.NoError(t, st.Save(ctx, got))
	again, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.Equal(t, []string{"keep"}, again.Keys())
}

func TestTwoSavesInOneRequest(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"n": 1})
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	for i := 2; i <= 4; i++ {
		require.NoError(t, got.Set("n", i))
		require.NoError(t, st.Save(ctx, got), "save %d", i)
	}
	again, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	n, _, _ := store.Get[int](again, "n")
	require.Equal(t, 4, n)
	require.Equal(t, uint64(4), again.Version())
}

func TestConcurrentSaveConflicts(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, nil), newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, a, map[string]any{"n": 0})
	x, err := a.Load(ctx, s.ID())
	require.NoError(t, err)
	y, err := b.Load(ctx, s.ID())
	require.NoError(t, err)
	require.NoError(t, x.Set("n", 1))
	require.NoError(t, a.Save(ctx, x))
	require.NoError(t, y.Set("n", 2))
	require.ErrorIs(t, b.Save(ctx, y), store.ErrConflict)

	got, err := b.Load(ctx, s.ID())
	require.NoError(t, err)
	n, _, _ := store.Get[int](got, "n")
	require.Equal(t, 1, n, "the first writer's value stays")
	// The losing save's backup write was repaired from the primary.
	_, backup, _ := a.Placement(s.ID())
	p, err := get(t, c, nodeOf(s.ID()), s.ID())
	require.NoError(t, err)
	bk, err := get(t, c, backup, "bak:"+s.ID())
	require.NoError(t, err)
	require.Equal(t, p.Value, bk.Value)
}

func TestTooLarge(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, func(cfg *store.Config) { cfg.MaxSize = 4096 })
	ctx := context.Background()
	s := saved(t, st, map[string]any{"small": "ok"})
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.NoError(t, got.Set("big", strings.Repeat("x", 5000)))
	err = st.Save(ctx, got)
	require.ErrorIs(t, err, store.ErrTooLarge)
	require.Contains(t, err.Error(), "limit 4096")

	again, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.Equal(t, []string{"small"}, again.Keys(), "stored copy intact")

	// The default limit protects memcached's 1 MiB item size.
	def := newStore(t, c, nil)
	huge, err := def.NewSession(ctx)
	require.NoError(t, err)
	require.NoError(t, huge.Set("blob", make([]byte, 1<<20)))
	require.ErrorIs(t, def.Save(ctx, huge), store.ErrTooLarge)
}

func TestCorruptBytesAreNotFound(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	cases := map[string][]byte{
		"empty":        {},
		"garbage":      []byte("\xff\x00garbage\x13\x37"),
		"json":         []byte(`{"user":"ada"}`),
		"cbor integer": {0x18, 0x2a},
		"truncated":    nil, // filled below from a real record
	}
	s := saved(t, st, map[string]any{"k": strings.Repeat("v", 100)})
	it, err := get(t, c, nodeOf(s.ID()), s.ID())
	require.NoError(t, err)
	cases["truncated"] = it.Value[:len(it.Value)/2]
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			id := saved(t, st, map[string]any{"k": 1}).ID()
			require.NoError(t, c.Node(nodeOf(id)).Client().Set(&memcache.Item{Key: id, Value: raw, Expiration: 60}))
			var loadErr error
			require.NotPanics(t, func() { _, loadErr = st.Load(ctx, id) })
			require.ErrorIs(t, loadErr, store.ErrNotFound)
			require.ErrorIs(t, loadErr, codec.ErrCorrupt)
		})
	}
	require.Equal(t, uint64(len(cases)), st.Stats().Corrupt)
}

func TestAllNodesDown(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"k": "v"})
	for _, n := range c.Nodes {
		require.NoError(t, n.Kill())
	}
	deadline := 5 * time.Second // every call below is bounded by the 300 ms node timeout
	start := time.Now()
	for range 5 {
		_, err := st.Load(ctx, s.ID())
		require.Error(t, err)
		require.True(t, errors.Is(err, store.ErrUnavailable) || errors.Is(err, replica.ErrNodeDown), "clear error: %v", err)
	}
	fresh, err := st.NewSession(ctx)
	if err == nil { // breakers may not be open yet: then the save fails
		require.NoError(t, fresh.Set("k", 1))
		require.ErrorIs(t, st.Save(ctx, fresh), store.ErrUnavailable)
	} else {
		require.ErrorIs(t, err, store.ErrUnavailable)
	}
	require.Less(t, time.Since(start), deadline)

	for _, n := range c.Nodes {
		require.NoError(t, n.Restart(ctx))
	}
	// Breakers probe again after OpenTimeout (500 ms here): bounded wait for recovery.
	var again *store.Session
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if again, err = st.NewSession(ctx); err == nil {
			require.NoError(t, again.Set("k", 2))
			if err = st.Save(ctx, again); err == nil {
				break
			}
		}
	}
	require.NoError(t, err, "the store recovers when the nodes return")
	got, err := st.Load(ctx, again.ID())
	require.NoError(t, err)
	k, _, _ := store.Get[int](got, "k")
	require.Equal(t, 2, k)
}

func TestRenewIDAndDelete(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"user": "ada"})
	oldID := s.ID()
	got, err := st.Load(ctx, oldID)
	require.NoError(t, err)
	require.NoError(t, st.RenewID(ctx, got))
	newID := got.ID()
	require.NotEqual(t, oldID, newID)
	require.NotEqual(t, oldID[:32], newID[:32], "a new random part")
	_, err = st.Load(ctx, oldID)
	require.ErrorIs(t, err, store.ErrNotFound, "the old id is dead")
	for _, n := range c.Nodes {
		for _, k := range []string{oldID, "bak:" + oldID, "lock:" + oldID} {
			_, err := get(t, c, n.ID, k)
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "%s on %s", k, n.ID)
		}
	}
	renewed, err := st.Load(ctx, newID)
	require.NoError(t, err)
	user, _, _ := store.Get[string](renewed, "user")
	require.Equal(t, "ada", user)

	require.NoError(t, st.DestroyID(ctx, newID))
	_, err = st.Load(ctx, newID)
	require.ErrorIs(t, err, store.ErrNotFound)
	for _, n := range c.Nodes {
		for _, k := range []string{newID, "bak:" + newID, "lock:" + newID} {
			_, err := get(t, c, n.ID, k)
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "%s on %s", k, n.ID)
		}
	}
}

func TestTypedAttributes(t *testing.T) {
	type profile struct {
		Name  string
		Roles []string
		Age   int
	}
	for _, cd := range []codec.Codec{codec.NewCBOR(), codec.NewJSON()} {
		t.Run(cd.Name(), func(t *testing.T) {
			c := mcproc.NewCluster(t, 1)
			st := newStore(t, c, func(cfg *store.Config) { cfg.Codec = cd })
			ctx := context.Background()
			want := profile{Name: "ada", Roles: []string{"admin"}, Age: 36}
			s := saved(t, st, map[string]any{"p": want, "i": 42, "f": 1.5, "b": true})
			got, err := st.Load(ctx, s.ID())
			require.NoError(t, err)
			p, ok, err := store.Get[profile](got, "p")
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, want, p)
			i, _, err := store.Get[int](got, "i")
			require.NoError(t, err)
			require.Equal(t, 42, i)
			f, _, _ := store.Get[float64](got, "f")
			require.Equal(t, 1.5, f)
			_, ok, err = store.Get[int](got, "absent")
			require.NoError(t, err)
			require.False(t, ok)
			_, _, err = store.Get[int](got, "p")
			require.Error(t, err, "a struct does not decode into an int")
		})
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := store.New(store.Config{})
	require.Error(t, err)
	cl, err := replica.New(replica.Config{Nodes: []replica.Node{{ID: "n1", Addr: "127.0.0.1:1"}}})
	require.NoError(t, err)
	_, err = store.New(store.Config{Cluster: cl, KeyPrefix: "has space"})
	require.Error(t, err)
	_, err = store.New(store.Config{Cluster: cl, KeyPrefix: strings.Repeat("p", 65)})
	require.Error(t, err)
}

func TestNewSessionAvoidsAJustKilledNode(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	require.NoError(t, c.Node("n1").Kill()) // its breaker is still closed
	for range 6 {
		s, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("k", "v"))
		require.NoError(t, st.Save(ctx, s), "a new session moves to a live node")
		require.NotEqual(t, "n1", nodeOf(s.ID()))
		got, err := st.Load(ctx, s.ID())
		require.NoError(t, err)
		require.True(t, got.Has("k"))
	}
}

func TestParallelRequestsWithTheOldIDAfterRelocation(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := newStore(t, c, nil), newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, a, map[string]any{"k": "v"})
	id := s.ID()
	require.NoError(t, c.Node(nodeOf(id)).Kill())

	first, err := a.Load(ctx, id) // relocates: the old backup key becomes the new primary copy
	require.NoError(t, err)
	// A request that was sent with the old cookie at the same time finds
	// the relocated copy instead of a missing backup.
	second, err := b.Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, first.ID(), second.ID())
	require.Equal(t, id, second.PreviousID())
	require.True(t, second.Has("k"))
	require.NoError(t, second.Set("k", "w"))
	require.NoError(t, b.Save(ctx, second), "saved with the CAS id of the relocated copy")
	require.Equal(t, uint64(1), a.Stats().Relocations+b.Stats().Relocations)
}

func TestOldIDAfterItsNodeRestartedEmpty(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"n": 1})
	id := s.ID()
	first := c.Node(nodeOf(id))
	require.NoError(t, first.Kill())
	moved, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, moved.Set("n", 2))
	require.NoError(t, st.Save(ctx, moved))
	require.NoError(t, first.Restart(ctx))

	// A late request still carrying the first id: the node answers "miss"
	// and the old backup key is gone, but the relocated copy is found.
	for _, load := range []func(context.Context, string) (*store.Session, error){st.Load, st.LoadLocked} {
		var got *store.Session
		require.Eventually(t, func() bool { got, err = load(ctx, id); return err == nil }, 3*time.Second, 50*time.Millisecond, "%v", err)
		require.Equal(t, moved.ID(), got.ID())
		n, _, _ := store.Get[int](got, "n")
		require.Equal(t, 2, n)
		require.NoError(t, st.SaveAndRelease(ctx, got))
	}
}

// metaTTL returns memcached's remaining TTL of key in seconds (-1: never
// expires), read with the meta get command.
func metaTTL(t *testing.T, addr, key string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "mg %s t\r\n", key)
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	var ttl int
	_, err = fmt.Sscanf(line, "HD t%d", &ttl)
	require.NoError(t, err, "answer %q", line)
	return ttl
}

func TestStaleSaveDoesNotBringBackADeletedSession(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	for name, remove := range map[string]func(*store.Session) error{
		"destroy": func(s *store.Session) error { return st.Destroy(ctx, s) },
		"renew":   func(s *store.Session) error { return st.RenewID(ctx, s) },
	} {
		t.Run(name, func(t *testing.T) {
			id := saved(t, st, map[string]any{"user": "alice"}).ID()
			stale, err := st.Load(ctx, id) // an unlocked request in parallel
			require.NoError(t, err)
			other, err := st.Load(ctx, id)
			require.NoError(t, err)
			require.NoError(t, remove(other))

			require.NoError(t, stale.Set("cart", 1))
			require.ErrorIs(t, st.Save(ctx, stale), store.ErrConflict)
			_, err = st.Load(ctx, id)
			require.ErrorIs(t, err, store.ErrNotFound, "the old id stays dead")
			for _, n := range c.Nodes {
				for _, k := range []string{id, "bak:" + id} {
					_, err := get(t, c, n.ID, k)
					require.ErrorIs(t, err, memcache.ErrCacheMiss, "%s on %s", k, n.ID)
				}
			}
		})
	}
}

func TestSaveAfterPrimaryRestartedEmptyRecreatesIt(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"n": 1}).ID()
	s, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, c.Node(nodeOf(id)).Restart(ctx))
	require.NoError(t, s.Set("n", 2))
	require.NoError(t, st.Save(ctx, s), "the backup copy proves the session lives")
	got, err := st.Load(ctx, id)
	require.NoError(t, err)
	n, _, _ := store.Get[int](got, "n")
	require.Equal(t, 2, n)
}

func TestConflictRepairKeepsTheBackupTTL(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, func(cfg *store.Config) { cfg.IdleTimeout = time.Hour })
	ctx := context.Background()
	id := saved(t, st, map[string]any{"a": 1}).ID()
	a, err := st.Load(ctx, id)
	require.NoError(t, err)
	b, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, a.Set("a", 2))
	require.NoError(t, st.Save(ctx, a))
	require.NoError(t, b.Set("a", 3))
	require.ErrorIs(t, st.Save(ctx, b), store.ErrConflict)
	_, backup, _ := st.Placement(id)
	_, bkey, _ := st.MemcachedKeys(id)
	ttl := metaTTL(t, c.Node(backup).Addr(), bkey)
	require.Greater(t, ttl, 3500)
	require.LessOrEqual(t, ttl, 3601)
	got, err := st.Load(ctx, id)
	require.NoError(t, err)
	n, _, _ := store.Get[int](got, "a")
	require.Equal(t, 2, n)
}

func TestTwoUnlockedSavesWhilePrimaryIsDown(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"n": 0}).ID()
	a, err := st.Load(ctx, id)
	require.NoError(t, err)
	b, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, c.Node(nodeOf(id)).Kill())
	require.NoError(t, a.Set("a", "A"))
	require.NoError(t, st.Save(ctx, a), "relocated on save")
	require.NotEqual(t, id, a.ID())
	require.NoError(t, b.Set("b", "B"))
	// A moved the session and removed the old backup key: B's save has no
	// copy to build on and must fail rather than drop b silently.
	err = st.Save(ctx, b)
	require.True(t, errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrUnavailable), "got %v", err)
	cur, err := st.Load(ctx, a.ID())
	require.NoError(t, err)
	require.Equal(t, []string{"a", "n"}, cur.Keys())
}

func TestTouchIfDue(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	ctx := context.Background()
	touches := func() uint64 { return sumStat(t, c, "cmd_touch") }

	t.Run("skipped right after a save or touch by the same store", func(t *testing.T) {
		st := newStore(t, c, func(cfg *store.Config) { cfg.IdleTimeout = time.Hour }) // due after 6 min
		other := newStore(t, c, nil)
		id := saved(t, st, map[string]any{"k": 1}).ID()
		s, err := st.Load(ctx, id)
		require.NoError(t, err)
		before := touches()
		touched, err := st.TouchIfDue(ctx, s)
		require.NoError(t, err)
		require.False(t, touched)
		require.Equal(t, before, touches())
		require.Equal(t, uint64(1), st.Stats().TouchesSkipped)

		// Another app server has no record: it touches once, then skips.
		s2, err := other.Load(ctx, id)
		require.NoError(t, err)
		for _, want := range []bool{true, false} {
			touched, err = other.TouchIfDue(ctx, s2)
			require.NoError(t, err)
			require.Equal(t, want, touched)
		}
		require.Equal(t, before+2, touches(), "primary and backup, once")
	})

	t.Run("due once TouchAfter passed", func(t *testing.T) {
		st := newStore(t, c, func(cfg *store.Config) { cfg.TouchAfter = 200 * time.Millisecond })
		s := saved(t, st, map[string]any{"k": 1})
		touched, err := st.TouchIfDue(ctx, s)
		require.NoError(t, err)
		require.False(t, touched)
		time.Sleep(250 * time.Millisecond)
		touched, err = st.TouchIfDue(ctx, s)
		require.NoError(t, err)
		require.True(t, touched)
	})

	t.Run("negative TouchAfter always touches", func(t *testing.T) {
		st := newStore(t, c, func(cfg *store.Config) { cfg.TouchAfter = -1 })
		s := saved(t, st, map[string]any{"k": 1})
		touched, err := st.TouchIfDue(ctx, s)
		require.NoError(t, err)
		require.True(t, touched)
	})
}

func TestTouchRewritesALostBackupCopy(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"k": "v"})
	_, backup, _ := st.Placement(s.ID())
	require.NoError(t, c.Node(backup).Restart(ctx)) // the backup copy is gone
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		if st.Touch(ctx, got) != nil {
			return false
		}
		_, err := get(t, c, backup, "bak:"+s.ID())
		return err == nil
	}, 3*time.Second, 50*time.Millisecond, "the touch wrote the backup copy again")

	// And the session now survives the loss of its primary.
	require.NoError(t, c.Node(nodeOf(s.ID())).Kill())
	moved, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.True(t, moved.Has("k"))
}

func TestNodeBackFromAPartitionServesNoStaleCopy(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"n": 1}).ID()
	first := c.Node(nodeOf(id))

	require.NoError(t, first.Pause()) // hung: timeouts, data kept
	moved, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.NotEqual(t, id, moved.ID())
	require.NoError(t, moved.Set("n", 2))
	require.NoError(t, st.Save(ctx, moved))
	require.NoError(t, first.Resume())

	// The node is back with version 1 under the old id; a late request with
	// the old cookie must get version 2, for reading and under the lock.
	_, err = get(t, c, first.ID, id)
	require.NoError(t, err, "the stale copy is there")
	for _, load := range []func(context.Context, string) (*store.Session, error){st.Load, st.LoadLocked} {
		var got *store.Session
		require.Eventually(t, func() bool { got, err = load(ctx, id); return err == nil }, 5*time.Second, 50*time.Millisecond, "%v", err)
		require.Equal(t, moved.ID(), got.ID())
		n, _, _ := store.Get[int](got, "n")
		require.Equal(t, 2, n)
		require.NoError(t, st.SaveAndRelease(ctx, got))
	}
}

func TestPrimaryDownWithoutBackup(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		fault func(*mcproc.Node) error
		want  error
	}{
		"hung: it may come back with the session": {(*mcproc.Node).Pause, store.ErrUnavailable},
		"crashed: its data is gone":               {(*mcproc.Node).Kill, store.ErrNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 2)
			st := newStore(t, c, nil)
			id := saved(t, st, map[string]any{"k": "v"}).ID()
			_, backup, _ := st.Placement(id)
			require.NoError(t, c.Node(backup).Client().Delete("bak:"+id))
			primary := c.Node(nodeOf(id))
			require.NoError(t, tc.fault(primary))
			t.Cleanup(func() { _ = primary.Resume() })
			_, err := st.Load(ctx, id)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestNoResurrectionRacingALogout(t *testing.T) {
	ctx := context.Background()
	t.Run("a read-only request's touch after the delete", func(t *testing.T) {
		c := mcproc.NewCluster(t, 3)
		st := newStore(t, c, nil)
		id := saved(t, st, map[string]any{"k": 1}).ID()
		reader, err := st.Load(ctx, id)
		require.NoError(t, err)
		require.NoError(t, st.DestroyID(ctx, id)) // logout in another tab
		touched, err := st.TouchIfDue(ctx, reader)
		require.NoError(t, err)
		require.True(t, touched, "the delete forgot the refresh")
		_, err = st.Load(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound, "the deleted session came back")
	})

	t.Run("a save landing between the backup and the primary delete", func(t *testing.T) {
		c := mcproc.NewCluster(t, 3)
		st := newStore(t, c, nil)
		id := saved(t, st, map[string]any{"k": 1}).ID()
		s, err := st.Load(ctx, id)
		require.NoError(t, err)
		key, bkey, lkey := st.MemcachedKeys(id)
		for _, n := range c.Nodes { // the delete's first step: backups
			_ = n.Client().Delete(bkey)
		}
		require.NoError(t, s.Set("cart", 1))
		require.NoError(t, st.Save(ctx, s)) // cas ok, replace finds no backup, set writes one
		p := c.Node(nodeOf(id)).Client()    // the delete's next steps: primary, lock
		_ = p.Delete(key)
		_ = p.Delete(lkey)
		require.NoError(t, st.DestroyID(ctx, id), "and its final sweep of the backups")
		_, err = st.Load(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound, "the deleted session came back")
	})

	t.Run("a save finding the primary deleted after writing a backup", func(t *testing.T) {
		c := mcproc.NewCluster(t, 3)
		st := newStore(t, c, nil)
		id := saved(t, st, map[string]any{"k": 1}).ID()
		s, err := st.Load(ctx, id)
		require.NoError(t, err)
		key, bkey, _ := st.MemcachedKeys(id)
		for _, n := range c.Nodes {
			_ = n.Client().Delete(bkey)
		}
		_ = c.Node(nodeOf(id)).Client().Delete(key)
		require.NoError(t, s.Set("cart", 1))
		require.ErrorIs(t, st.Save(ctx, s), store.ErrConflict)
		_, err = st.Load(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

func TestOldCookieAfterAHangGetsTheMovedCopy(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, st, map[string]any{"k": 1}).ID()
	first := c.Node(nodeOf(id))
	require.NoError(t, first.Pause())
	moved, err := st.Load(ctx, id) // relocated with the same version
	require.NoError(t, err)
	require.NotEqual(t, id, moved.ID())
	require.NoError(t, first.Resume())

	var old *store.Session
	require.Eventually(t, func() bool { old, err = st.Load(ctx, id); return err == nil }, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, moved.ID(), old.ID(), "a tie goes to the moved copy")
	require.NoError(t, old.Set("a", 1))
	require.NoError(t, st.Save(ctx, old))
	require.NoError(t, moved.Set("b", 2))
	require.ErrorIs(t, st.Save(ctx, moved), store.ErrConflict, "one copy, so the second writer hears of the first")
	cur, err := st.Load(ctx, moved.ID())
	require.NoError(t, err)
	require.True(t, cur.Has("a"))
}

func TestOneSlowAnswerDoesNotSlowLaterLoads(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, quietFences)
	store.ManualFences(st) // no fence re-read in the count
	ctx := context.Background()
	id := saved(t, st, map[string]any{"k": 1}).ID()
	n := c.Node(nodeOf(id))
	require.NoError(t, n.Pause())
	_, err := ops.Get(ctx, ops.Of(st.Cluster()), n.ID, "x")
	require.ErrorIs(t, err, replica.ErrNodeDown, "one timed-out command; the breaker stays closed")
	require.NoError(t, n.Resume())
	require.NoError(t, st.RefreshFences(ctx))
	before := sumStat(t, c, "cmd_get")
	_, err = st.Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, before+1, sumStat(t, c, "cmd_get"), "a load is still one get on the primary (and no marker read: no node is fenced)")
}

// TestRecordWithoutIdleTimeoutGetsTheStores checks that a stored record
// whose idle timeout is 0 (unset, or written by another program) loads
// with the store's idle timeout and is saved with it, instead of with a
// TTL of a second.
func TestRecordWithoutIdleTimeoutGetsTheStores(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, func(cfg *store.Config) { cfg.IdleTimeout = 7 * time.Minute })
	ctx := context.Background()
	fresh, err := st.NewSession(ctx)
	require.NoError(t, err)
	id := fresh.ID()
	key, _, _ := st.MemcachedKeys(id)
	cb := codec.NewCBOR()
	one, err := cb.Marshal(1)
	require.NoError(t, err)
	raw, err := codec.EncodeRecord(cb, &codec.Record{
		Created: time.Now(), Deadline: time.Now().Add(time.Hour), Version: 1,
		Attrs: map[string][]byte{"n": one},
	})
	require.NoError(t, err)
	require.NoError(t, c.Node(nodeOf(id)).Client().Set(&memcache.Item{Key: key, Value: raw, Flags: 1, Expiration: 60}))

	s, err := st.Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 7*time.Minute, s.IdleTimeout())
	require.NoError(t, s.Set("n", 2))
	require.NoError(t, st.Save(ctx, s))
	it, err := get(t, c, nodeOf(id), key)
	require.NoError(t, err)
	rec, err := codec.DecodeRecord(cb, it.Value)
	require.NoError(t, err)
	require.Equal(t, 7*time.Minute, rec.IdleTimeout, "saved with the store's idle timeout")
	time.Sleep(1500 * time.Millisecond) // a 1 s TTL would have expired it by now
	_, err = st.Load(ctx, id)
	require.NoError(t, err)
}

// TestLatencyStats checks that every Load, LoadLocked and Save is timed,
// failures included, and a failover's inner load is not timed twice.
func TestLatencyStats(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"n": 1}) // 1 save
	for range 3 {
		_, err := st.Load(ctx, s.ID())
		require.NoError(t, err)
	}
	_, err := st.Load(ctx, "not-an-id") // a failure is timed too
	require.ErrorIs(t, err, store.ErrNotFound)
	locked, err := st.LoadLocked(ctx, s.ID())
	require.NoError(t, err)
	require.NoError(t, locked.Set("n", 2))
	require.NoError(t, st.SaveAndRelease(ctx, locked))
	stats := st.Stats()
	require.Equal(t, uint64(5), stats.LoadLatency.Count)
	require.Equal(t, uint64(2), stats.SaveLatency.Count)
	require.Positive(t, stats.LoadLatency.Sum)
	require.Positive(t, stats.LoadLatency.Quantile(0.5))
	lockStats := st.Locker().Stats()
	require.Equal(t, uint64(1), lockStats.AcquireLatency.Count)
}
