package store_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// stickyStore is one app server's Store in sticky mode over c.
func stickyStore(t *testing.T, c *mcproc.Cluster, mod func(*store.Config)) *store.Store {
	t.Helper()
	return asyncStore(t, c, 300*time.Millisecond, func(cfg *store.Config) {
		cfg.AsyncWrites, cfg.Sticky = false, true
		if mod != nil {
			mod(cfg)
		}
	})
}

// counter reads the int attribute "n" of s.
func counter(t *testing.T, s *store.Session) int {
	t.Helper()
	n, _, err := store.Get[int](s, "n")
	require.NoError(t, err)
	return n
}

// increment loads id locked, adds one to "n" and saves.
func increment(ctx context.Context, st *store.Store, id string) error {
	s, err := st.LoadLocked(ctx, id)
	if err != nil {
		return err
	}
	n, _, err := store.Get[int](s, "n")
	if err == nil {
		err = s.Set("n", n+1)
	}
	if err != nil {
		_ = st.Release(ctx, s)
		return err
	}
	return st.SaveAndRelease(ctx, s)
}

// TestStickyServesFromTheCache checks that loads of a cached session
// read no body from memcached: with the probe one small mg each (and no
// moved marker: no node is fenced), with TrustSticky nothing at all.
func TestStickyServesFromTheCache(t *testing.T) {
	for _, trust := range []bool{false, true} {
		c := mcproc.NewCluster(t, 2)
		// The fences are read once first, and not again during the
		// counts (ManualFences).
		st := stickyStore(t, c, func(cfg *store.Config) { cfg.TrustSticky = trust; quietFences(cfg) })
		store.ManualFences(st)
		ctx := context.Background()
		require.NoError(t, st.RefreshFences(ctx))
		s := saved(t, st, map[string]any{"n": 7})
		gets := sumStat(t, c, "cmd_get")
		for range 5 {
			got, err := st.Load(ctx, s.ID())
			require.NoError(t, err)
			require.Equal(t, 7, counter(t, got))
		}
		cs := st.CacheStats()
		require.Equal(t, uint64(5), cs.Hits)
		require.Zero(t, cs.Stale)
		if trust {
			require.Zero(t, cs.Probes)
			require.Equal(t, gets, sumStat(t, c, "cmd_get"), "no memcached read")
		} else {
			require.Equal(t, uint64(5), cs.Probes)
			require.Equal(t, gets+5, sumStat(t, c, "cmd_get"), "one probe per load (no node is fenced: no moved-marker read)")
		}
	}
}

// TestStickyFailback moves a user from server A to B and back: with the
// probe A notices B's newer version and serves it; trusting stickiness, A
// serves its stale copy (msm's behaviour) and its save then fails with
// ErrConflict instead of overwriting B's version, after which A reloads.
func TestStickyFailback(t *testing.T) {
	for _, trust := range []bool{false, true} {
		c := mcproc.NewCluster(t, 2)
		a := stickyStore(t, c, func(cfg *store.Config) { cfg.TrustSticky = trust })
		b := stickyStore(t, c, nil)
		ctx := context.Background()
		s := saved(t, a, map[string]any{"n": 0})
		id := s.ID()
		for range 3 {
			require.NoError(t, increment(ctx, a, id))
		}
		for range 2 { // the balancer moved the user to B
			require.NoError(t, increment(ctx, b, id))
		}
		back, err := a.Load(ctx, id) // and back to A
		require.NoError(t, err)
		if !trust {
			require.Equal(t, 5, counter(t, back))
			require.Equal(t, uint64(1), a.CacheStats().Stale)
			require.NoError(t, increment(ctx, a, id))
			got, err := b.Load(ctx, id)
			require.NoError(t, err)
			require.Equal(t, 6, counter(t, got))
			continue
		}
		require.Equal(t, 3, counter(t, back), "trusting stickiness serves the stale copy")
		require.ErrorIs(t, increment(ctx, a, id), store.ErrConflict, "and refuses to overwrite the newer version")
		require.NoError(t, increment(ctx, a, id), "the copy was dropped: reloaded from memcached")
		got, err := b.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 6, counter(t, got))
	}
}

// TestStickyLostUpdates runs 200 parallel locked increments of one
// session on one sticky app server (the in-process lock), with
// synchronous and asynchronous writes: exactly 200, in the cache and in
// memcached.
func TestStickyLostUpdates(t *testing.T) {
	for _, async := range []bool{false, true} {
		c := mcproc.NewCluster(t, 2)
		st := stickyStore(t, c, func(cfg *store.Config) {
			cfg.AsyncWrites = async
			cfg.Lock = lock.Config{WaitTimeout: 30 * time.Second}
		})
		ctx := context.Background()
		id := saved(t, st, map[string]any{"n": 0}).ID()
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					errs <- increment(ctx, st, id)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		got, err := st.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 200, counter(t, got))
		flush(t, st)
		other := stickyStore(t, c, nil) // another app server: reads memcached
		got, err = other.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 200, counter(t, got), "async=%v", async)
	}
}

// TestStickyCacheBound saves many sessions into a small cache: it never
// holds more than its bound, drops the least recently used, and a dropped
// session loads from memcached intact.
func TestStickyCacheBound(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	const bound = 32 << 10
	st := stickyStore(t, c, func(cfg *store.Config) { cfg.CacheBytes = bound })
	ctx := context.Background()
	big := strings.Repeat("x", 1000)
	var ids []string
	for i := range 100 {
		s := saved(t, st, map[string]any{"n": i, "pad": big})
		ids = append(ids, s.ID())
		cs := st.CacheStats()
		require.LessOrEqual(t, cs.Bytes, int64(bound))
	}
	cs := st.CacheStats()
	require.Positive(t, cs.Evictions)
	require.Less(t, cs.Sessions, 100)
	got, err := st.Load(ctx, ids[0]) // long evicted
	require.NoError(t, err)
	require.Equal(t, 0, counter(t, got))
	pad, _, err := store.Get[string](got, "pad")
	require.NoError(t, err)
	require.Equal(t, big, pad)
	require.LessOrEqual(t, st.CacheStats().Bytes, int64(bound))
}

// TestStickyAsyncWrite pauses the session's primary node: Save returns at
// once, the next load is served from the cache with the change, and the
// copy reaches memcached once the node is back. (TrustSticky: a version
// probe would wait for the paused node.)
func TestStickyAsyncWrite(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := asyncStore(t, c, 30*time.Second, func(cfg *store.Config) { cfg.Sticky, cfg.TrustSticky, cfg.AsyncWorkers = true, true, 1 })
	ctx := context.Background()
	s := newOn(t, st, "n1")
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, st.Save(ctx, s)) // queued, written
	flush(t, st)
	key, _, _ := st.MemcachedKeys(s.ID())

	require.NoError(t, c.Node("n1").Pause())
	require.NoError(t, increment(ctx, st, s.ID()))
	require.Equal(t, 1, st.Stats().AsyncPending)
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.Equal(t, 2, counter(t, got), "served from the cache while memcached is behind")
	require.NoError(t, c.Node("n1").Resume())
	flush(t, st)
	requireCopy(t, c, "n1", key, 2)
}

// TestStickyDestroyWithAWriteQueued destroys sessions right after their
// first save, whose write is queued or running: none of them is in
// memcached afterwards, whichever came first.
func TestStickyDestroyWithAWriteQueued(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := asyncStore(t, c, 300*time.Millisecond, func(cfg *store.Config) { cfg.Sticky = true })
	ctx := context.Background()
	var ids []string
	for range 50 {
		s, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 1))
		require.NoError(t, st.Save(ctx, s))
		require.NoError(t, st.Destroy(ctx, s))
		ids = append(ids, s.ID())
	}
	flush(t, st)
	for _, id := range ids {
		key, bkey, _ := st.MemcachedKeys(id)
		for _, n := range c.Nodes {
			for _, k := range []string{key, bkey} {
				_, err := get(t, c, n.ID, k)
				require.ErrorIs(t, err, memcache.ErrCacheMiss, "%s on %s", k, n.ID)
			}
		}
		_, err := st.Load(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound)
	}
	require.Zero(t, st.CacheStats().Sessions)
}

// TestStickyAsyncUnlockedConflict saves two unlocked copies of one session
// in sticky mode with asynchronous writes: the second is refused with
// ErrConflict (the cached state moved past what it loaded), as
// memcached's compare-and-set refuses it with synchronous writes.
func TestStickyAsyncUnlockedConflict(t *testing.T) {
	for _, async := range []bool{false, true} {
		c := mcproc.NewCluster(t, 2)
		st := stickyStore(t, c, func(cfg *store.Config) { cfg.AsyncWrites = async })
		ctx := context.Background()
		id := saved(t, st, map[string]any{"n": 0}).ID()
		flush(t, st)
		first, err := st.Load(ctx, id)
		require.NoError(t, err)
		second, err := st.Load(ctx, id)
		require.NoError(t, err)
		require.NoError(t, first.Set("n", 1))
		require.NoError(t, second.Set("n", 2))
		require.NoError(t, st.Save(ctx, first))
		require.ErrorIs(t, st.Save(ctx, second), store.ErrConflict, "async=%v", async)
		flush(t, st)
		got, err := st.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 1, counter(t, got))
	}
}

// TestStickyAsyncSaveAfterEviction evicts a loaded session from a small
// cache before its request saves: the queued write starts from the CAS
// the request loaded, so it lands (it used to be written as a new session
// and refused).
func TestStickyAsyncSaveAfterEviction(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := stickyStore(t, c, func(cfg *store.Config) { cfg.AsyncWrites, cfg.CacheBytes = true, 8<<10 })
	ctx := context.Background()
	pad := strings.Repeat("p", 1000)
	id := saved(t, st, map[string]any{"n": 1, "pad": pad}).ID()
	flush(t, st)
	s, err := st.LoadLocked(ctx, id)
	require.NoError(t, err)
	for i := range 20 { // push it out of the cache
		saved(t, st, map[string]any{"n": i, "pad": pad})
		flush(t, st)
	}
	require.Positive(t, st.CacheStats().Evictions)
	require.NoError(t, s.Set("n", 2))
	require.NoError(t, st.SaveAndRelease(ctx, s))
	flush(t, st)
	require.Zero(t, st.Stats().AsyncFailed)
	got, err := stickyStore(t, c, nil).Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 2, counter(t, got))
}

// TestStickyAsyncCacheFullWritesThrough fills the cache with sessions
// whose writes wait for a paused node (they cannot be dropped): the next
// save writes through to memcached before it returns, and every session
// ends up in memcached.
func TestStickyAsyncCacheFullWritesThrough(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := asyncStore(t, c, 30*time.Second, func(cfg *store.Config) {
		cfg.Sticky, cfg.TrustSticky, cfg.CacheBytes, cfg.AsyncWorkers = true, true, 4096, 1
	})
	ctx := context.Background()
	pad := strings.Repeat("p", 1000)
	require.NoError(t, c.Node("n1").Pause())
	var pinned []*store.Session
	for range 3 { // on n1: their writes cannot run
		s := newOn(t, st, "n1")
		require.NoError(t, s.Set("pad", pad))
		require.NoError(t, st.Save(ctx, s))
		pinned = append(pinned, s)
	}
	require.Equal(t, 3, st.CacheStats().Sessions)
	x := newOn(t, st, "n2") // backup on n3
	require.NoError(t, x.Set("pad", pad))
	require.NoError(t, st.Save(ctx, x))
	key, _, _ := st.MemcachedKeys(x.ID())
	requireCopy(t, c, "n2", key, 1) // written before Save returned
	require.Equal(t, uint64(3), st.Stats().AsyncQueued)
	require.LessOrEqual(t, st.CacheStats().Bytes, int64(4096))

	require.NoError(t, c.Node("n1").Resume())
	flush(t, st)
	for _, s := range pinned {
		key, _, _ := st.MemcachedKeys(s.ID())
		requireCopy(t, c, "n1", key, 1)
	}
}

// TestStickyTrustAsyncFailback pins down TrustSticky with AsyncWrites: the
// stale copy's save is acknowledged, its queued write is refused by
// memcached's compare-and-set (counted in AsyncFailed, never overwriting
// the newer version), and the stale copy is dropped, so the next request
// reads the newer version.
func TestStickyTrustAsyncFailback(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	a := stickyStore(t, c, func(cfg *store.Config) { cfg.TrustSticky, cfg.AsyncWrites = true, true })
	b := stickyStore(t, c, nil)
	ctx := context.Background()
	id := saved(t, a, map[string]any{"n": 0}).ID()
	for range 3 {
		require.NoError(t, increment(ctx, a, id))
	}
	flush(t, a)
	for range 2 {
		require.NoError(t, increment(ctx, b, id))
	}
	require.NoError(t, increment(ctx, a, id), "acknowledged: the write is queued")
	flush(t, a)
	require.Equal(t, uint64(1), a.Stats().AsyncFailed)
	got, err := a.Load(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 5, counter(t, got), "B's version won; A's stale increment is lost")
}

// TestStickyRenewID renews the id of a sticky session, with synchronous
// and asynchronous writes: the old id is gone everywhere, the new id
// holds the data in memcached, and the lock moved with it.
func TestStickyRenewID(t *testing.T) {
	for _, async := range []bool{false, true} {
		c := mcproc.NewCluster(t, 2)
		st := stickyStore(t, c, func(cfg *store.Config) { cfg.AsyncWrites = async })
		ctx := context.Background()
		oldID := saved(t, st, map[string]any{"n": 4}).ID()
		flush(t, st)
		s, err := st.LoadLocked(ctx, oldID)
		require.NoError(t, err)
		require.NoError(t, st.RenewID(ctx, s))
		newID := s.ID()
		require.NotEqual(t, oldID, newID)
		require.True(t, s.Locked())
		require.NoError(t, st.Release(ctx, s))
		_, err = st.Load(ctx, oldID)
		require.ErrorIs(t, err, store.ErrNotFound, "async=%v", async)
		got, err := stickyStore(t, c, nil).Load(ctx, newID) // memcached, not this cache
		require.NoError(t, err, "async=%v", async)
		require.Equal(t, 4, counter(t, got))
		require.NoError(t, increment(ctx, st, newID))
	}
}

// TestStickyAsyncRelocationKeepsLaterSaves kills a session's primary node
// while its queued write waits for it: the write relocates the session,
// and a request that loaded it under the old id before that saves after
// it: its change follows the session to its new id (it used to start a
// second cache entry under the old id whose writes failed).
func TestStickyAsyncRelocationKeepsLaterSaves(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := asyncStore(t, c, 2*time.Second, func(cfg *store.Config) { cfg.Sticky, cfg.TrustSticky, cfg.AsyncWorkers = true, true, 1 })
	ctx := context.Background()
	s := newOn(t, st, "n1")
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, st.Save(ctx, s))
	flush(t, st)
	oldID := s.ID()

	require.NoError(t, c.Node("n1").Pause())
	require.NoError(t, increment(ctx, st, oldID)) // n=2, its write waits for n1
	require.Eventually(t, func() bool { return st.Stats().AsyncRunning == 1 }, 10*time.Second, time.Millisecond)
	r2, err := st.LoadLocked(ctx, oldID) // served from the cache (write pending)
	require.NoError(t, err)
	require.Equal(t, 2, counter(t, r2))
	require.NoError(t, c.Node("n1").Kill()) // the write fails over: relocation
	flush(t, st)
	require.NoError(t, r2.Set("n", 3))
	require.NoError(t, st.SaveAndRelease(ctx, r2))
	require.NotEqual(t, oldID, r2.ID(), "the request learned the new id")
	flush(t, st)
	require.Zero(t, st.Stats().AsyncFailed)

	other := stickyStore(t, c, nil)
	got, err := other.Load(ctx, oldID) // the old cookie, on another server
	require.NoError(t, err)
	require.Equal(t, 3, counter(t, got))
	require.Equal(t, r2.ID(), got.ID())
}
