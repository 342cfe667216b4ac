package store_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// lkItem reads key from node with a plain client; nil when absent.
func lkItem(t testing.TB, c *mcproc.Cluster, node, key string) *memcache.Item {
	t.Helper()
	it, err := c.Node(node).Client().Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	require.NoError(t, err)
	return it
}

// lkCounter loads session id and returns its "n" attribute.
func lkCounter(t testing.TB, st *store.Store, id string) int {
	t.Helper()
	s, err := st.Load(context.Background(), id)
	require.NoError(t, err)
	n, ok, err := store.Get[int](s, "n")
	require.NoError(t, err)
	require.True(t, ok)
	return n
}

// lkIncrementResult counts the outcomes of increment attempts.
type lkIncrementResult struct {
	ok, conflicts, other atomic.Int64
	firstOther           atomic.Value // error
}

// lkRunIncrements runs attempts increments of counter "n" of session id
// from workers goroutines, alternating between the stores; cycle does one
// increment with the given store.
func lkRunIncrements(ctx context.Context, stores []*store.Store, workers, attempts int,
	cycle func(ctx context.Context, st *store.Store) error) *lkIncrementResult {
	var res lkIncrementResult
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		st := stores[w%len(stores)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(attempts) {
				err := cycle(ctx, st)
				switch {
				case err == nil:
					res.ok.Add(1)
				case errors.Is(err, store.ErrConflict):
					res.conflicts.Add(1)
				default:
					res.other.Add(1)
					res.firstOther.CompareAndSwap(nil, otherErr{err})
				}
			}
		}()
	}
	wg.Wait()
	return &res
}

// TestLockLostUpdate: 16 goroutines on two app servers increment one
// session's counter 1000 times. Under the lock every increment counts; without
// it increments are lost, but never silently: each loss is an ErrConflict.
func TestLockLostUpdate(t *testing.T) {
	t.Parallel()
	const workers, attempts = 16, 1000
	c := mcproc.NewCluster(t, 3)
	lc := lock.Config{WaitTimeout: 10 * time.Second}
	withLock := func(cfg *store.Config) { cfg.Lock = lc }
	stores := []*store.Store{newStore(t, c, withLock), newStore(t, c, withLock)}

	tests := []struct {
		name  string
		cycle func(ctx context.Context, st *store.Store, id string) error
		check func(t *testing.T, final int, res *lkIncrementResult)
	}{
		{
			name: "locked",
			cycle: func(ctx context.Context, st *store.Store, id string) error {
				s, err := st.LoadLocked(ctx, id)
				if err != nil {
					return err
				}
				n, _, err := store.Get[int](s, "n")
				if err == nil {
					err = s.Set("n", n+1)
				}
				if err != nil {
					return errors.Join(err, st.Release(ctx, s))
				}
				return st.SaveAndRelease(ctx, s)
			},
			check: func(t *testing.T, final int, res *lkIncrementResult) {
				require.Zero(t, res.conflicts.Load(), "no conflicts under the lock")
				require.Equal(t, int64(attempts), res.ok.Load(), "no cycle failed")
				require.Equal(t, attempts, final, "every increment counted")
			},
		},
		{
			name: "unlocked",
			cycle: func(ctx context.Context, st *store.Store, id string) error {
				s, err := st.Load(ctx, id)
				if err != nil {
					return err
				}
				n, _, err := store.Get[int](s, "n")
				if err != nil {
					return err
				}
				if err := s.Set("n", n+1); err != nil {
					return err
				}
				return st.Save(ctx, s)
			},
			check: func(t *testing.T, final int, res *lkIncrementResult) {
				require.Less(t, final, attempts, "without the lock increments are lost")
				require.Positive(t, res.conflicts.Load())
				require.Equal(t, int64(final), res.ok.Load(), "the counter equals the saves that succeeded")
				require.Equal(t, int64(attempts)-res.ok.Load(), res.conflicts.Load(),
					"every other attempt got ErrConflict: no silent loss")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := saved(t, stores[0], map[string]any{"n": 0}).ID()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			start := time.Now()
			res := lkRunIncrements(ctx, stores, workers, attempts, func(ctx context.Context, st *store.Store) error {
				return tt.cycle(ctx, st, id)
			})
			require.NoError(t, ctx.Err(), "ran out of time")
			if e, ok := res.firstOther.Load().(otherErr); ok {
				err := e.err
				require.NoError(t, err, "%d unexpected failures", res.other.Load())
			}
			final := lkCounter(t, stores[1], id)
			t.Logf("%s: %d attempts in %v: counter %d, %d saves ok, %d conflicts",
				tt.name, attempts, time.Since(start).Round(time.Millisecond), final, res.ok.Load(), res.conflicts.Load())
			tt.check(t, final, res)
			require.Nil(t, lkItem(t, c, nodeOf(id), "lock:"+id), "no lock left behind")
		})
	}
	var lm lock.Stats
	for _, st := range stores {
		m := st.Locker().Stats()
		lm.Acquired += m.Acquired
		lm.Released += m.Released
		lm.Lost += m.Lost
		lm.Timeouts += m.Timeouts
	}
	require.Equal(t, lock.Stats{Acquired: attempts, Released: attempts}, lm)
}

// TestLockExpiredHolderConflict: a holder whose lock expired while it
// slept cannot overwrite what the next holder wrote.
func TestLockExpiredHolderConflict(t *testing.T) {
	t.Parallel()
	c := mcproc.NewCluster(t, 2)
	lc := lock.Config{TTL: time.Second, RenewEvery: -1, WaitTimeout: 5 * time.Second}
	withLock := func(cfg *store.Config) { cfg.Lock = lc }
	stA, stB := newStore(t, c, withLock), newStore(t, c, withLock)
	ctx := context.Background()
	id := saved(t, stA, map[string]any{"owner": "nobody"}).ID()

	a, err := stA.LoadLocked(ctx, id)
	require.NoError(t, err)
	require.True(t, a.Locked())

	bDone := make(chan error, 1)
	go func() {
		b, err := stB.LoadLocked(ctx, id) // waits until A's lock expires
		if err != nil {
			bDone <- err
			return
		}
		if err := b.Set("owner", "B"); err != nil {
			bDone <- err
			return
		}
		bDone <- stB.SaveAndRelease(ctx, b)
	}()

	time.Sleep(2 * time.Second) // A works past its lock's TTL
	require.NoError(t, <-bDone, "B acquired the expired lock and saved")

	require.NoError(t, a.Set("owner", "A"))
	err = stA.SaveAndRelease(ctx, a)
	require.ErrorIs(t, err, store.ErrConflict)
	require.False(t, a.Locked())
	require.Equal(t, uint64(1), stA.Locker().Stats().Lost, "A's release found the lock gone")
	require.Equal(t, uint64(1), stA.Stats().Conflicts)

	got, err := stA.Load(ctx, id)
	require.NoError(t, err)
	owner, _, err := store.Get[string](got, "owner")
	require.NoError(t, err)
	require.Equal(t, "B", owner, "the newer value survives")
}

// TestLockReleaseNonOwner: A's expired lock was taken by B; A's release
// deletes nothing, and releasing twice is harmless.
func TestLockReleaseNonOwner(t *testing.T) {
	t.Parallel()
	c := mcproc.NewCluster(t, 2)
	stA := newStore(t, c, func(cfg *store.Config) { cfg.Lock = lock.Config{TTL: time.Second, RenewEvery: -1} })
	stB := newStore(t, c, func(cfg *store.Config) { cfg.Lock = lock.Config{WaitTimeout: 5 * time.Second} })
	ctx := context.Background()
	id := saved(t, stA, map[string]any{"k": "v"}).ID()
	lkey := "lock:" + id
	node := nodeOf(id)

	a, err := stA.LoadLocked(ctx, id)
	require.NoError(t, err)
	aItem := lkItem(t, c, node, lkey)
	require.NotNil(t, aItem)

	b, err := stB.LoadLocked(ctx, id) // waits for A's lock to expire
	require.NoError(t, err)
	bItem := lkItem(t, c, node, lkey)
	require.NotNil(t, bItem)
	require.NotEqual(t, string(aItem.Value), string(bItem.Value), "B's own token")

	err = stA.Release(ctx, a)
	require.ErrorIs(t, err, lock.ErrLost)
	require.NoError(t, stA.Release(ctx, a), "second release is a no-op")
	after := lkItem(t, c, node, lkey)
	require.NotNil(t, after, "A's release deleted nothing")
	require.Equal(t, bItem.Value, after.Value, "B's token is still there")
	require.Equal(t, bItem.CasID, after.CasID)

	require.NoError(t, stB.Release(ctx, b))
	require.Nil(t, lkItem(t, c, node, lkey))
	require.NoError(t, stB.Release(ctx, b), "double release is harmless")
	require.NoError(t, stB.SaveAndRelease(ctx, b), "save-and-release of an unlocked, unchanged session")
	require.Equal(t, uint64(1), stB.Locker().Stats().Released)
}

func TestLockTimeoutAndCancelLoadLocked(t *testing.T) {
	t.Parallel()
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, func(cfg *store.Config) { cfg.Lock = lock.Config{WaitTimeout: 5 * time.Second} })
	ctx := context.Background()
	id := saved(t, st, map[string]any{"k": "v"}).ID()
	held, err := st.LoadLocked(ctx, id)
	require.NoError(t, err)
	defer st.Release(ctx, held)

	cancelled, cancel := context.WithCancel(ctx)
	defer cancel()
	time.AfterFunc(50*time.Millisecond, cancel)

	tests := []struct {
		name     string
		ctx      context.Context
		want     error
		min, max time.Duration
	}{
		{name: "wait timeout", ctx: lock.WithWaitTimeout(ctx, 300*time.Millisecond),
			want: lock.ErrLockTimeout, min: 300 * time.Millisecond, max: 1300 * time.Millisecond},
		{name: "context cancelled", ctx: cancelled,
			want: context.Canceled, min: 0, max: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			s, err := st.LoadLocked(tt.ctx, id)
			elapsed := time.Since(start)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, s)
			require.GreaterOrEqual(t, elapsed, tt.min)
			require.Less(t, elapsed, tt.max)
		})
	}
	require.True(t, held.Locked())
	require.NotNil(t, lkItem(t, c, nodeOf(id), "lock:"+id), "the holder's lock is untouched")
}

// TestLockRelocatedSession: LoadLocked on a session whose primary died
// relocates it and locks it on its new primary.
func TestLockRelocatedSession(t *testing.T) {
	t.Parallel()
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, func(cfg *store.Config) { cfg.Lock = lock.Config{} })
	ctx := context.Background()
	id := saved(t, st, map[string]any{"user": "ada", "n": 7}).ID()
	dead := nodeOf(id)
	require.NoError(t, c.Node(dead).Kill())

	s, err := st.LoadLocked(ctx, id)
	require.NoError(t, err)
	require.True(t, s.Locked())
	user, ok, err := store.Get[string](s, "user")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "ada", user)

	newID := s.ID()
	require.NotEqual(t, id, newID, "relocated")
	require.Equal(t, id, s.PreviousID())
	require.Equal(t, id[:strings.LastIndexByte(id, '-')], newID[:strings.LastIndexByte(newID, '-')], "same random part")
	newNode := nodeOf(newID)
	require.NotEqual(t, dead, newNode)
	lkey := "lock:" + newID
	require.NotNil(t, lkItem(t, c, newNode, lkey), "the lock lives on the new primary")

	require.NoError(t, s.Set("n", 8))
	require.NoError(t, st.SaveAndRelease(ctx, s))
	require.False(t, s.Locked())
	require.Nil(t, lkItem(t, c, newNode, lkey), "released")
	require.Equal(t, 8, lkCounter(t, st, newID))
	require.Equal(t, uint64(1), st.Stats().Relocations)
	m := st.Locker().Stats()
	require.Equal(t, uint64(1), m.Acquired)
	require.Equal(t, uint64(1), m.Released)
}

// TestLockNotFoundHoldsNoLock: LoadLocked of an unknown session returns
// ErrNotFound and leaves no lock behind.
func TestLockNotFoundHoldsNoLock(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := newStore(t, c, func(cfg *store.Config) { cfg.Lock = lock.Config{} })
	ctx := context.Background()
	id := saved(t, st, map[string]any{"k": "v"}).ID()
	require.NoError(t, st.DestroyID(ctx, id))

	_, err := st.LoadLocked(ctx, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Nil(t, lkItem(t, c, nodeOf(id), "lock:"+id))
	m := st.Locker().Stats()
	require.Equal(t, m.Acquired, m.Released)

	_, err = st.LoadLocked(ctx, "not-an-id")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// otherErr wraps an unexpected error so that errors of any type fit one
// atomic.Value.
type otherErr struct{ err error }
