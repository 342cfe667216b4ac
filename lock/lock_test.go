package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/syncbuf"
	"github.com/mcsession/mcsession/latency"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
)

// newCluster starts n memcached nodes and returns them with a replica
// cluster over them.
func newCluster(t testing.TB, n int) (*mcproc.Cluster, *replica.Cluster) {
	t.Helper()
	mc := mcproc.NewCluster(t, n)
	nodes, err := replica.ParseNodes(mc.Spec())
	require.NoError(t, err)
	rc, err := replica.New(replica.Config{Nodes: nodes})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rc.Close() })
	return mc, rc
}

func newLocker(t testing.TB, rc *replica.Cluster, cfg lock.Config) *lock.Locker {
	t.Helper()
	l, err := lock.New(rc, cfg)
	require.NoError(t, err)
	return l
}

// lockItem reads key from the node with a plain client, bypassing the
// locker; nil when absent.
func lockItem(t *testing.T, mc *mcproc.Cluster, node, key string) *memcache.Item {
	t.Helper()
	it, err := mc.Node(node).Client().Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	require.NoError(t, err)
	return it
}

func TestLockNewConfig(t *testing.T) {
	_, rc := newCluster(t, 1)
	tests := []struct {
		name    string
		cfg     lock.Config
		wantErr bool
		want    lock.Config
	}{
		{name: "defaults", cfg: lock.Config{}, want: lock.Config{
			TTL: lock.DefaultTTL, WaitTimeout: lock.DefaultWaitTimeout,
			BackoffStart: lock.DefaultBackoffStart, BackoffMax: lock.DefaultBackoffMax,
			RenewEvery: lock.DefaultTTL / 3, MaxHold: lock.DefaultMaxHold}},
		{name: "ttl under 1s", cfg: lock.Config{TTL: 999 * time.Millisecond}, wantErr: true},
		{name: "ttl 1ns", cfg: lock.Config{TTL: time.Nanosecond}, wantErr: true},
		{name: "renewal as slow as the ttl", cfg: lock.Config{TTL: 2 * time.Second, RenewEvery: 2 * time.Second}, wantErr: true},
		{name: "ttl 1s", cfg: lock.Config{TTL: time.Second, RenewEvery: -1}, want: lock.Config{
			TTL: time.Second, WaitTimeout: lock.DefaultWaitTimeout,
			BackoffStart: lock.DefaultBackoffStart, BackoffMax: lock.DefaultBackoffMax,
			RenewEvery: -1, MaxHold: lock.DefaultMaxHold}},
		{name: "backoff max raised to start", cfg: lock.Config{TTL: 3 * time.Second, BackoffStart: 80 * time.Millisecond, BackoffMax: 10 * time.Millisecond},
			want: lock.Config{TTL: 3 * time.Second, WaitTimeout: lock.DefaultWaitTimeout,
				BackoffStart: 80 * time.Millisecond, BackoffMax: 80 * time.Millisecond, RenewEvery: time.Second, MaxHold: lock.DefaultMaxHold}},
		{name: "no hold limit", cfg: lock.Config{MaxHold: -1}, want: lock.Config{
			TTL: lock.DefaultTTL, WaitTimeout: lock.DefaultWaitTimeout,
			BackoffStart: lock.DefaultBackoffStart, BackoffMax: lock.DefaultBackoffMax,
			RenewEvery: lock.DefaultTTL / 3, MaxHold: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := lock.New(rc, tt.cfg)
			if tt.wantErr {
				require.Error(t, err)
				require.Nil(t, l)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, l.Config())
		})
	}
	_, err := lock.New(nil, lock.Config{})
	require.Error(t, err, "nil cluster")
}

func TestLockAcquireRelease(t *testing.T) {
	mc, rc := newCluster(t, 1)
	l := newLocker(t, rc, lock.Config{})
	ctx := context.Background()

	lk, err := l.Acquire(ctx, "n1", "lock:a")
	require.NoError(t, err)
	require.Equal(t, "n1", lk.Node())
	require.Equal(t, "lock:a", lk.Key())
	require.Len(t, lk.Token(), 32)
	require.False(t, lk.Lost())

	it := lockItem(t, mc, "n1", "lock:a")
	require.NotNil(t, it, "lock item on the node")
	require.Equal(t, lk.Token(), string(it.Value))

	require.NoError(t, lk.Release(ctx))
	require.Nil(t, lockItem(t, mc, "n1", "lock:a"), "release deletes the item")
	require.NoError(t, lk.Release(ctx), "second release is harmless")

	// Free again for the next owner, with a new token.
	lk2, err := l.Acquire(ctx, "n1", "lock:a")
	require.NoError(t, err)
	require.NotEqual(t, lk.Token(), lk2.Token())
	require.NoError(t, lk2.Release(ctx))
}

func TestLockAcquireAndGetReadsExtraKeys(t *testing.T) {
	mc, rc := newCluster(t, 1)
	l := newLocker(t, rc, lock.Config{})
	ctx := context.Background()
	require.NoError(t, mc.Node("n1").Client().Set(&memcache.Item{Key: "sess", Value: []byte("data")}))

	lk, items, err := l.AcquireAndGet(ctx, "n1", "lock:sess", "sess", "absent")
	require.NoError(t, err)
	require.Len(t, items, 2, "one item per extra key, in order")
	require.True(t, items[0].Found)
	require.Equal(t, []byte("data"), items[0].Value)
	require.NotZero(t, items[0].CAS)
	require.False(t, items[1].Found)
	require.NoError(t, lk.Release(ctx))
}

func TestLockTimeoutWithinWait(t *testing.T) {
	t.Parallel()
	_, rc := newCluster(t, 1)
	ctx := context.Background()
	holder := newLocker(t, rc, lock.Config{})
	lk, err := holder.Acquire(ctx, "n1", "lock:t")
	require.NoError(t, err)
	defer lk.Release(ctx)

	tests := []struct {
		name string
		cfg  lock.Config
		ctx  context.Context
		want time.Duration
	}{
		{name: "config wait timeout", cfg: lock.Config{WaitTimeout: 300 * time.Millisecond}, ctx: ctx, want: 300 * time.Millisecond},
		{name: "WithWaitTimeout overrides config", cfg: lock.Config{WaitTimeout: 5 * time.Second},
			ctx: lock.WithWaitTimeout(ctx, 300*time.Millisecond), want: 300 * time.Millisecond},
		{name: "WithWaitTimeout longer than config", cfg: lock.Config{WaitTimeout: 100 * time.Millisecond},
			ctx: lock.WithWaitTimeout(ctx, 600*time.Millisecond), want: 600 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLocker(t, rc, tt.cfg)
			start := time.Now()
			got, err := l.Acquire(tt.ctx, "n1", "lock:t")
			elapsed := time.Since(start)
			require.ErrorIs(t, err, lock.ErrLockTimeout)
			require.Nil(t, got)
			require.GreaterOrEqual(t, elapsed, tt.want)
			require.Less(t, elapsed, tt.want+time.Second, "timeout arrives within the wait plus slack")
			m := l.Stats()
			require.Equal(t, uint64(1), m.Timeouts)
			require.Equal(t, uint64(1), m.Waited)
			require.Zero(t, m.Acquired)
		})
	}
}

func TestLockContextCancelStopsWait(t *testing.T) {
	t.Parallel()
	_, rc := newCluster(t, 1)
	ctx := context.Background()
	l := newLocker(t, rc, lock.Config{WaitTimeout: 5 * time.Second})
	lk, err := l.Acquire(ctx, "n1", "lock:c")
	require.NoError(t, err)
	defer lk.Release(ctx)

	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	got, err := l.Acquire(cctx, "n1", "lock:c")
	elapsed := time.Since(start)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, lock.ErrLockTimeout)
	require.Nil(t, got)
	require.GreaterOrEqual(t, elapsed, 50*time.Millisecond)
	require.Less(t, elapsed, time.Second, "cancellation stops the wait well before the 5 s wait timeout")

	// An already cancelled context makes no attempt at all.
	_, err = l.Acquire(cctx, "n1", "lock:other")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, uint64(0), l.Stats().Timeouts)
}

// TestReleaseNonOwnerDeletesNothing: A's lock expires, B takes it; A's
// release must not delete B's item.
func TestReleaseNonOwnerDeletesNothing(t *testing.T) {
	t.Parallel()
	mc, rc := newCluster(t, 1)
	ctx := context.Background()
	la := newLocker(t, rc, lock.Config{TTL: time.Second, RenewEvery: -1})
	lb := newLocker(t, rc, lock.Config{TTL: 10 * time.Second, WaitTimeout: 5 * time.Second})

	a, err := la.Acquire(ctx, "n1", "lock:x")
	require.NoError(t, err)
	start := time.Now()
	b, err := lb.Acquire(ctx, "n1", "lock:x") // waits for A's item to expire
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "A's 1 s lock lived about its TTL")
	require.NotEqual(t, a.Token(), b.Token())

	err = a.Release(ctx)
	require.ErrorIs(t, err, lock.ErrLost)
	require.True(t, a.Lost())
	require.ErrorIs(t, a.Release(ctx), lock.ErrLost, "a lost lock stays lost")

	it := lockItem(t, mc, "n1", "lock:x")
	require.NotNil(t, it, "B's lock item survives A's release")
	require.Equal(t, b.Token(), string(it.Value))

	require.NoError(t, b.Release(ctx))
	require.Nil(t, lockItem(t, mc, "n1", "lock:x"))
	require.NoError(t, b.Release(ctx), "double release is harmless")
	require.Equal(t, uint64(1), la.Stats().Lost)
	require.Equal(t, uint64(0), la.Stats().Released)
	require.Equal(t, uint64(1), lb.Stats().Released)
	require.Equal(t, uint64(0), lb.Stats().Lost)
}

// TestRenewKeepsLockPastTTL: a holder keeps a 1 s lock for 3 s thanks to
// renewal; a contender never gets it meanwhile.
func TestRenewKeepsLockPastTTL(t *testing.T) {
	t.Parallel()
	mc, rc := newCluster(t, 1)
	ctx := context.Background()
	holder := newLocker(t, rc, lock.Config{TTL: time.Second}) // renews every TTL/3
	other := newLocker(t, rc, lock.Config{TTL: time.Second, WaitTimeout: 100 * time.Millisecond})

	lk, err := holder.Acquire(ctx, "n1", "lock:r")
	require.NoError(t, err)
	hold := 3 * time.Second
	deadline := time.Now().Add(hold)
	attempts := 0
	for time.Now().Before(deadline) && attempts < 100 {
		attempts++
		got, err := other.Acquire(ctx, "n1", "lock:r")
		if got != nil {
			_ = got.Release(ctx)
		}
		require.ErrorIs(t, err, lock.ErrLockTimeout, "attempt %d after %v", attempts, lk.HeldFor())
	}
	require.GreaterOrEqual(t, lk.HeldFor(), hold)
	require.Greater(t, attempts, 5)
	require.False(t, lk.Lost())
	it := lockItem(t, mc, "n1", "lock:r")
	require.NotNil(t, it)
	require.Equal(t, lk.Token(), string(it.Value))

	require.NoError(t, lk.Release(ctx), "still the owner after 3x its TTL")
	require.GreaterOrEqual(t, holder.Stats().Renewals, uint64(2))
	require.Zero(t, holder.Stats().Lost)
	require.Equal(t, uint64(attempts), other.Stats().Timeouts)
	require.Zero(t, other.Stats().Acquired)
}

// TestMaxHold: a lock held past MaxHold is no longer renewed and lapses
// within its TTL; another request then takes it, the hung holder's late
// release deletes nothing, and the lapse is counted and logged.
func TestMaxHold(t *testing.T) {
	t.Parallel()
	mc, rc := newCluster(t, 1)
	ctx := context.Background()
	var logs syncbuf.Buffer
	hung := newLocker(t, rc, lock.Config{TTL: time.Second, MaxHold: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	next := newLocker(t, rc, lock.Config{TTL: time.Second, WaitTimeout: 10 * time.Second})

	lk, err := hung.Acquire(ctx, "n1", "lock:h")
	require.NoError(t, err)
	got, err := next.Acquire(ctx, "n1", "lock:h") // waits for the lapse
	require.NoError(t, err)
	require.GreaterOrEqual(t, lk.HeldFor(), 500*time.Millisecond)
	require.ErrorIs(t, lk.Release(ctx), lock.ErrLost, "the late release deletes nothing")
	it := lockItem(t, mc, "n1", "lock:h")
	require.NotNil(t, it)
	require.Equal(t, got.Token(), string(it.Value), "the next holder's lock stays")
	require.NoError(t, got.Release(ctx))
	require.Equal(t, uint64(1), hung.Stats().Lapsed)
	require.Contains(t, logs.String(), "session lock held too long")
}

func TestRenewAfterLoss(t *testing.T) {
	mc, rc := newCluster(t, 1)
	ctx := context.Background()
	l := newLocker(t, rc, lock.Config{RenewEvery: -1})

	tests := []struct {
		name  string
		steal func(key string)
	}{
		{name: "deleted", steal: func(key string) {
			require.NoError(t, mc.Node("n1").Client().Delete(key))
		}},
		{name: "taken by another owner", steal: func(key string) {
			c := mc.Node("n1").Client()
			require.NoError(t, c.Delete(key))
			require.NoError(t, c.Add(&memcache.Item{Key: key, Value: []byte("someone-else"), Expiration: 10}))
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("lock:renew%d", i)
			lk, err := l.Acquire(ctx, "n1", key)
			require.NoError(t, err)
			require.NoError(t, lk.Renew(ctx), "renew while owned")
			tt.steal(key)
			require.ErrorIs(t, lk.Renew(ctx), lock.ErrLost)
			require.True(t, lk.Lost())
			require.ErrorIs(t, lk.Release(ctx), lock.ErrLost)
			if it := lockItem(t, mc, "n1", key); it != nil {
				require.Equal(t, "someone-else", string(it.Value), "the other owner's item is untouched")
			}
		})
	}
	m := l.Stats()
	require.Equal(t, uint64(2), m.Renewals)
	require.Equal(t, uint64(2), m.Lost, "one loss per lock, however often it is noticed")
	require.Zero(t, m.Released)
}

func TestLockStats(t *testing.T) {
	mc, rc := newCluster(t, 1)
	ctx := context.Background()
	l := newLocker(t, rc, lock.Config{TTL: 5 * time.Second, RenewEvery: -1})

	steps := []struct {
		name string
		do   func(t *testing.T)
		want lock.Stats // WaitTime is checked separately
	}{
		{name: "uncontended acquire", do: func(t *testing.T) {
			lk, err := l.Acquire(ctx, "n1", "lock:m1")
			require.NoError(t, err)
			require.NoError(t, lk.Release(ctx))
			require.NoError(t, lk.Release(ctx)) // not counted twice
		}, want: lock.Stats{Acquired: 1, Released: 1}},
		{name: "timeout", do: func(t *testing.T) {
			lk, err := l.Acquire(ctx, "n1", "lock:m2")
			require.NoError(t, err)
			_, err = l.Acquire(lock.WithWaitTimeout(ctx, 100*time.Millisecond), "n1", "lock:m2")
			require.ErrorIs(t, err, lock.ErrLockTimeout)
			require.NoError(t, lk.Release(ctx))
		}, want: lock.Stats{Acquired: 2, Waited: 1, Timeouts: 1, Released: 2}},
		{name: "wait then acquire", do: func(t *testing.T) {
			lk, err := l.Acquire(ctx, "n1", "lock:m3")
			require.NoError(t, err)
			time.AfterFunc(100*time.Millisecond, func() { _ = lk.Release(ctx) })
			lk2, err := l.Acquire(ctx, "n1", "lock:m3")
			require.NoError(t, err)
			require.NoError(t, lk2.Release(ctx))
		}, want: lock.Stats{Acquired: 4, Waited: 2, Timeouts: 1, Released: 4}},
		{name: "manual renewals", do: func(t *testing.T) {
			lk, err := l.Acquire(ctx, "n1", "lock:m4")
			require.NoError(t, err)
			require.NoError(t, lk.Renew(ctx))
			require.NoError(t, lk.Renew(ctx))
			require.NoError(t, lk.Release(ctx))
			require.NoError(t, lk.Renew(ctx), "renewing a released lock is a no-op")
		}, want: lock.Stats{Acquired: 5, Waited: 2, Timeouts: 1, Renewals: 2, Released: 5}},
		{name: "lost on release", do: func(t *testing.T) {
			lk, err := l.Acquire(ctx, "n1", "lock:m5")
			require.NoError(t, err)
			require.NoError(t, mc.Node("n1").Client().Delete(lk.Key()))
			require.ErrorIs(t, lk.Release(ctx), lock.ErrLost)
		}, want: lock.Stats{Acquired: 6, Waited: 2, Timeouts: 1, Renewals: 2, Released: 5, Lost: 1}},
	}
	var prevWait time.Duration
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			got := l.Stats()
			wait, acquires := got.WaitTime, got.AcquireLatency
			got.WaitTime, got.AcquireLatency = 0, latency.Snapshot{}
			require.Equal(t, st.want, got)
			// Every Acquire is timed, the ones that timed out included.
			require.Equal(t, st.want.Acquired+st.want.Timeouts, acquires.Count)
			switch st.name {
			case "uncontended acquire":
				require.Zero(t, wait, "no wait time without a held lock")
			case "timeout", "wait then acquire":
				require.GreaterOrEqual(t, wait-prevWait, 100*time.Millisecond)
			default:
				require.Equal(t, prevWait, wait)
			}
			prevWait = wait
		})
	}
}

func TestLockNodeDown(t *testing.T) {
	mc, rc := newCluster(t, 1)
	l := newLocker(t, rc, lock.Config{})
	ctx := context.Background()
	require.NoError(t, mc.Node("n1").Kill())
	start := time.Now()
	_, err := l.Acquire(ctx, "n1", "lock:d")
	require.ErrorIs(t, err, replica.ErrNodeDown)
	require.NotErrorIs(t, err, lock.ErrLockTimeout)
	require.Less(t, time.Since(start), time.Second, "a dead node fails at once, without waiting")
	_, err = l.Acquire(ctx, "n9", "lock:d")
	require.ErrorIs(t, err, replica.ErrUnknownNode)
}

// TestLockMutualExclusion: 16 goroutines on one key never overlap in the
// critical section.
func TestLockMutualExclusion(t *testing.T) {
	t.Parallel()
	_, rc := newCluster(t, 1)
	l := newLocker(t, rc, lock.Config{WaitTimeout: 10 * time.Second, BackoffStart: 200 * time.Microsecond, BackoffMax: 5 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const workers, total = 16, 400
	var inside, overlaps, done atomic.Int64
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				lk, err := l.Acquire(ctx, "n1", "lock:mx")
				if err != nil {
					errs <- err
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				if err := lk.Release(ctx); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Zero(t, overlaps.Load())
	require.Equal(t, int64(total), done.Load())
	m := l.Stats()
	require.Equal(t, uint64(total), m.Acquired)
	require.Equal(t, uint64(total), m.Released)
	require.Zero(t, m.Lost)
	require.Zero(t, m.Timeouts)
}
