package lock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
)

// uncertainTimeout is the round-trip timeout of the clusters below.
const uncertainTimeout = 300 * time.Millisecond

// uncertainCluster starts one memcached node and a replica cluster over it
// whose breaker never opens: these tests are about the lock's handling of
// an add with an unknown outcome, not about the breaker (which would make
// the first calls after the node resumes fail fast).
func uncertainCluster(t *testing.T) (*mcproc.Cluster, *replica.Cluster) {
	t.Helper()
	mc := mcproc.NewCluster(t, 1)
	nodes, err := replica.ParseNodes(mc.Spec())
	require.NoError(t, err)
	rc, err := replica.New(replica.Config{Nodes: nodes, Timeout: uncertainTimeout, FailureThreshold: 1000})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rc.Close() })
	return mc, rc
}

// failAcquireWhilePaused pauses node n1 and makes l's Acquire of key time
// out there: its add reaches the node's socket buffer but is not answered.
// With cancelAfter 0 the cluster's timeout ends each attempt (the first one
// is retried once); otherwise the context is canceled after cancelAfter,
// during the first attempt, which then ends at the cluster's timeout and is
// not retried. The node stays paused.
func failAcquireWhilePaused(t *testing.T, mc *mcproc.Cluster, l *lock.Locker, key string, cancelAfter time.Duration) {
	t.Helper()
	n := mc.Node("n1")
	require.NoError(t, n.Pause())
	t.Cleanup(func() { _ = n.Resume() })
	ctx := context.Background()
	if cancelAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		time.AfterFunc(cancelAfter, cancel)
	}
	start := time.Now()
	lk, err := l.Acquire(ctx, "n1", key)
	if cancelAfter > 0 {
		// Cut short by the caller, not a failure of the node.
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, replica.ErrNodeDown)
	} else {
		require.ErrorIs(t, err, replica.ErrNodeDown)
	}
	require.ErrorIs(t, err, meta.ErrUnknownOutcome, "the add was sent")
	require.NotErrorIs(t, err, lock.ErrLockTimeout)
	require.Nil(t, lk)
	require.Less(t, time.Since(start), l.Config().WaitTimeout, "a hung node fails the attempt, it is not waited for as a held lock")
}

// resumeBetweenCleanupAttempts resumes node n1 right after the Locker's
// background cleanup of the uncertain add failed a third attempt against
// the paused node (each failed attempt is one pool timeout). The cleanup
// backs off between attempts (100 ms, doubling), so the steps that follow
// the resume run before its next attempt, as they do when a caller retries
// at once.
func resumeBetweenCleanupAttempts(t *testing.T, mc *mcproc.Cluster, rc *replica.Cluster) {
	t.Helper()
	timeouts := func() uint64 { return rc.PoolStats()[0].Timeouts }
	base := timeouts()
	require.Eventually(t, func() bool { return timeouts() >= base+3 }, 10*time.Second, time.Millisecond,
		"the cleanup keeps trying while the node is paused")
	require.NoError(t, mc.Node("n1").Resume())
}

// observeOrphan polls key on n1 with a plain client for up to a second and
// returns the lock item the timed-out add left, or nil when none appeared.
//
// Observed on memcached 1.6.18: the node accepts the connections of the
// timed-out attempts while paused (kernel backlog), and on resume reads and
// applies the add still in their socket buffers, although the client has
// closed them: the lock item appears with the lost attempt's token.
func observeOrphan(t *testing.T, mc *mcproc.Cluster, key string) *memcache.Item {
	t.Helper()
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if it := lockItem(t, mc, "n1", key); it != nil {
			return it
		}
	}
	t.Logf("no lock item appeared after the node resumed: the timed-out add was not applied")
	return nil
}

// requireHeldFor checks, every 50 ms for d, that the lock item of lk is on
// the node and holds lk's token.
func requireHeldFor(t *testing.T, mc *mcproc.Cluster, lk *lock.Lock, d time.Duration, why string) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		it := lockItem(t, mc, lk.Node(), lk.Key())
		require.NotNil(t, it, "%s: the lock item vanished %v into the hold", why, time.Since(start).Round(time.Millisecond))
		require.Equal(t, lk.Token(), string(it.Value), "%s: the lock item changed owner while held", why)
		time.Sleep(50 * time.Millisecond)
	}
}

// uncertainCases are two ways an Acquire ends with its add's outcome
// unknown. (A context deadline shorter than the cluster's timeout is not
// among them: the read deadline can fire just before the context reports
// its end, so that the retry is attempted and fails before it is sent, a
// case of its own: see TestUncertainAddRememberedWhenTheRetryIsNotSent.)
var uncertainCases = []struct {
	name        string
	cancelAfter time.Duration // 0: the cluster's timeout ends the attempts
}{
	{name: "cluster timeout, attempt retried once", cancelAfter: 0},
	{name: "context canceled during the attempt", cancelAfter: 100 * time.Millisecond},
}

// TestUncertainAddSameLockerReacquires: an Acquire whose add timed out on a
// hung node leaves the add in the node's socket buffer, applied when the
// node resumes. The same Locker's next Acquire of that key must not wait
// for that orphan lock (it is its own), must hold the lock it returns for
// as long as it likes, and its Release must delete it.
func TestUncertainAddSameLockerReacquires(t *testing.T) {
	t.Parallel()
	for _, tt := range uncertainCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mc, rc := uncertainCluster(t)
			l := newLocker(t, rc, lock.Config{TTL: 30 * time.Second, WaitTimeout: 5 * time.Second})
			ctx := context.Background()
			const key = "lock:u"

			failAcquireWhilePaused(t, mc, l, key, tt.cancelAfter)
			resumeBetweenCleanupAttempts(t, mc, rc)
			orphan := observeOrphan(t, mc, key)
			before := l.Stats()

			start := time.Now()
			lk, err := l.Acquire(ctx, "n1", key)
			require.NoError(t, err)
			require.Less(t, time.Since(start), l.Config().WaitTimeout)
			after := l.Stats()
			require.Equal(t, before.Waited, after.Waited, "the Locker did not wait for its own lock")
			require.Equal(t, before.Timeouts, after.Timeouts)
			require.Equal(t, before.Acquired+1, after.Acquired)

			it := lockItem(t, mc, "n1", key)
			require.NotNil(t, it)
			require.Equal(t, lk.Token(), string(it.Value), "the item holds the new Lock's token")
			require.Equal(t, lk.CAS(), it.CasID, "and the Lock knows its CAS id")
			if orphan != nil && string(orphan.Value) == lk.Token() {
				t.Logf("the Acquire adopted the lock its timed-out add left (token %s)", lk.Token())
			}

			// Held locks stay held: nothing of the Locker (its cleanup of the
			// timed-out add included, which backs off at most 2 s between
			// attempts) deletes the lock while its holder works.
			requireHeldFor(t, mc, lk, 3*time.Second, "same Locker")
			require.NoError(t, lk.Release(ctx))
			require.Nil(t, lockItem(t, mc, "n1", key), "Release deleted the lock item")
			require.Zero(t, l.Stats().Lost)
		})
	}
}

// TestUncertainAddFreedForOtherLockers: the orphan lock left by a timed-out
// add is removed by its Locker's background cleanup once the node answers,
// so another app server gets the lock within seconds rather than after the
// lock's 30 s TTL; the cleanup never deletes that other owner's lock, and
// the first Locker does not mistake it for its own.
func TestUncertainAddFreedForOtherLockers(t *testing.T) {
	t.Parallel()
	for _, tt := range uncertainCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mc, rc := uncertainCluster(t)
			const ttl = 30 * time.Second // expiry cannot be what frees the lock
			la := newLocker(t, rc, lock.Config{TTL: ttl, WaitTimeout: 5 * time.Second})
			lb := newLocker(t, rc, lock.Config{TTL: ttl, WaitTimeout: 10 * time.Second})
			ctx := context.Background()
			const key = "lock:o"

			failAcquireWhilePaused(t, mc, la, key, tt.cancelAfter)
			resumeBetweenCleanupAttempts(t, mc, rc)
			orphan := observeOrphan(t, mc, key)

			start := time.Now()
			b, err := lb.Acquire(ctx, "n1", key)
			require.NoError(t, err, "the orphan lock was freed within B's wait timeout")
			waited := time.Since(start)
			require.Less(t, waited, lb.Config().WaitTimeout)
			require.Less(t, waited, ttl/3, "freed by the cleanup, far before the orphan's TTL")
			if orphan != nil {
				require.NotEqual(t, string(orphan.Value), b.Token())
				// B either found the orphan and waited for A's cleanup, or
				// the cleanup had deleted it before B came.
				t.Logf("B waited %v (%d waits) for A's cleanup to delete the orphan lock",
					waited.Round(time.Millisecond), lb.Stats().Waited)
			}
			it := lockItem(t, mc, "n1", key)
			require.NotNil(t, it)
			require.Equal(t, b.Token(), string(it.Value))

			// A is not the owner: its next Acquire waits for B's lock.
			_, err = la.Acquire(lock.WithWaitTimeout(ctx, 200*time.Millisecond), "n1", key)
			require.ErrorIs(t, err, lock.ErrLockTimeout, "A does not take B's lock for its own")

			// A's cleanup, whatever it still does, leaves B's lock alone.
			requireHeldFor(t, mc, b, 2500*time.Millisecond, "other Locker")
			require.NoError(t, b.Release(ctx))
			require.Nil(t, lockItem(t, mc, "n1", key))
		})
	}
}

// TestUncertainAddRememberedWhenTheRetryIsNotSent: the first attempt's add
// reached the hung node (outcome unknown) and its retry failed before it
// was sent (here the retry's dial fails; a context deadline that expires
// between the two attempts does the same). The first add is still
// applied when the node resumes, so its token must still be remembered:
// the same Locker's next Acquire must not wait for its own orphan lock (for
// the whole wait timeout, and every request after it until the lock's TTL
// ends).
func TestUncertainAddRememberedWhenTheRetryIsNotSent(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	nodes, err := replica.ParseNodes(mc.Spec())
	require.NoError(t, err)
	var dials atomic.Int32
	d := &net.Dialer{Timeout: uncertainTimeout}
	rc, err := replica.New(replica.Config{
		Nodes: nodes, Timeout: uncertainTimeout, FailureThreshold: 1000,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) == 2 { // the retry of the first Acquire
				return nil, errors.New("injected dial failure")
			}
			return d.DialContext(ctx, network, addr)
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rc.Close() })
	l := newLocker(t, rc, lock.Config{TTL: 30 * time.Second, WaitTimeout: 2 * time.Second})
	ctx := context.Background()
	const key = "lock:n"

	n := mc.Node("n1")
	require.NoError(t, n.Pause())
	t.Cleanup(func() { _ = n.Resume() })
	_, err = l.Acquire(ctx, "n1", key)
	require.ErrorIs(t, err, replica.ErrNodeDown)
	ps := rc.PoolStats()[0]
	require.GreaterOrEqual(t, ps.RoundTrips, uint64(1), "the first attempt was sent")
	require.GreaterOrEqual(t, ps.DialErrors, uint64(1), "the retry was not")
	require.NoError(t, n.Resume())
	// The first add is applied on resume; the background cleanup may
	// delete the orphan before or after it is seen here. Either way the
	// next Acquire must not wait for it.
	if orphan := observeOrphan(t, mc, key); orphan == nil {
		t.Log("the orphan was gone before it was observed (cleanup, or the add was not applied)")
	}

	before := l.Stats()
	start := time.Now()
	lk, err := l.Acquire(ctx, "n1", key)
	require.NoError(t, err, "the Locker waited %v for the lock its own timed-out add left", time.Since(start).Round(time.Millisecond))
	require.Equal(t, before.Waited, l.Stats().Waited, "no wait for its own lock")
	it := lockItem(t, mc, "n1", key)
	require.NotNil(t, it)
	require.Equal(t, lk.Token(), string(it.Value))
	require.NoError(t, lk.Release(ctx))
	require.Nil(t, lockItem(t, mc, "n1", key))
}

// metaItem reads key's CAS id and remaining TTL (-1: none) with a raw meta
// get; found is false for a missing key.
func metaItem(t *testing.T, addr, key string) (cas uint64, ttl int, found bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(time.Second)))
	_, err = fmt.Fprintf(conn, "mg %s c t\r\n", key)
	require.NoError(t, err)
	line, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	if strings.HasPrefix(line, "EN") {
		return 0, 0, false
	}
	for _, f := range strings.Fields(line)[1:] {
		switch f[0] {
		case 'c':
			_, err = fmt.Sscanf(f, "c%d", &cas)
		case 't':
			_, err = fmt.Sscanf(f, "t%d", &ttl)
		}
		require.NoError(t, err, "answer %q", line)
	}
	require.True(t, strings.HasPrefix(line, "HD"), "answer %q", line)
	return cas, ttl, true
}

// TestRenewNeverExtendsAnotherOwnersLock: a renewal of a lock that expired
// fails with ErrLost and changes nothing: it neither extends the lock a
// second owner took meanwhile (value, CAS id and TTL unchanged) nor brings
// back an expired lock nobody took. The loser's Release deletes nothing.
func TestRenewNeverExtendsAnotherOwnersLock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		taken bool // a second Locker takes the lock after it expired
	}{
		{name: "taken by another Locker", taken: true},
		{name: "expired, nobody took it", taken: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mc, rc := newCluster(t, 1)
			addr := mc.Node("n1").Addr()
			ctx := context.Background()
			la := newLocker(t, rc, lock.Config{TTL: time.Second, RenewEvery: -1})
			lb := newLocker(t, rc, lock.Config{TTL: 10 * time.Second, RenewEvery: -1})
			const key = "lock:e"

			a, err := la.Acquire(ctx, "n1", key)
			require.NoError(t, err)
			require.Eventually(t, func() bool { return lockItem(t, mc, "n1", key) == nil }, 5*time.Second, 20*time.Millisecond,
				"A's 1 s lock expires without renewal")

			var b *lock.Lock
			var bCAS uint64
			var bTTL int
			if tt.taken {
				b, err = lb.Acquire(ctx, "n1", key)
				require.NoError(t, err)
				var found bool
				bCAS, bTTL, found = metaItem(t, addr, key)
				require.True(t, found)
				require.Equal(t, b.CAS(), bCAS)
				require.Greater(t, bTTL, 5, "B's 10 s lock")
			}

			require.ErrorIs(t, a.Renew(ctx), lock.ErrLost)
			require.True(t, a.Lost())
			require.ErrorIs(t, a.Release(ctx), lock.ErrLost)

			it := lockItem(t, mc, "n1", key)
			if !tt.taken {
				require.Nil(t, it, "the renewal did not recreate the expired lock")
				_, _, found := metaItem(t, addr, key)
				require.False(t, found)
				require.Zero(t, la.Stats().Renewals)
				return
			}
			require.NotNil(t, it, "A's release deleted nothing")
			require.Equal(t, b.Token(), string(it.Value), "B's token stays")
			cas, ttl, found := metaItem(t, addr, key)
			require.True(t, found)
			require.Equal(t, bCAS, cas, "B's item was not rewritten")
			require.Greater(t, ttl, 5, "nor touched down to A's 1 s TTL")
			require.LessOrEqual(t, ttl, bTTL)
			require.Zero(t, la.Stats().Renewals)
			require.Equal(t, uint64(1), la.Stats().Lost)

			require.NoError(t, b.Release(ctx), "B still owns its lock")
			require.Nil(t, lockItem(t, mc, "n1", key))
		})
	}
}

// TestReleaseAfterAutomaticRenewals: every automatic renewal changes the
// lock item's CAS id; a lock held across several of them is still released
// by its owner (the release uses the CAS id of the latest renewal).
func TestReleaseAfterAutomaticRenewals(t *testing.T) {
	t.Parallel()
	mc, rc := newCluster(t, 1)
	addr := mc.Node("n1").Addr()
	ctx := context.Background()
	l := newLocker(t, rc, lock.Config{TTL: 3 * time.Second, RenewEvery: time.Second})
	const key = "lock:rc"

	lk, err := l.Acquire(ctx, "n1", key)
	require.NoError(t, err)
	first := lk.CAS()
	require.NotZero(t, first)

	time.Sleep(2500 * time.Millisecond)
	require.Eventually(t, func() bool { return l.Stats().Renewals >= 2 }, 5*time.Second, 20*time.Millisecond,
		"renewed about every second")
	require.False(t, lk.Lost())
	require.NotEqual(t, first, lk.CAS(), "each renewal is a compare-and-set that changes the CAS id")
	// The item's CAS id is the Lock's (read again if a renewal ran in between).
	require.Eventually(t, func() bool {
		cas, _, found := metaItem(t, addr, key)
		return found && cas == lk.CAS()
	}, 2*time.Second, 10*time.Millisecond)

	require.NoError(t, lk.Release(ctx), "released with the CAS id of the latest renewal")
	require.Nil(t, lockItem(t, mc, "n1", key), "the lock item is gone")
	m := l.Stats()
	require.Equal(t, uint64(1), m.Released)
	require.Zero(t, m.Lost)
	require.GreaterOrEqual(t, m.Renewals, uint64(2))
}

// TestOwnLockWithAChangedCAS: a renewal whose outcome was unknown can have
// changed the CAS id of our lock item behind the Lock's back (simulated
// here by rewriting the item with the same token through a plain client).
// Renew and Release then look at the item: it still holds our token, so
// it is renewed or deleted, not taken for lost (which would leave our own
// lock blocking the session until its TTL).
func TestOwnLockWithAChangedCAS(t *testing.T) {
	t.Parallel()
	mc, rc := newCluster(t, 1)
	l := newLocker(t, rc, lock.Config{TTL: 30 * time.Second, RenewEvery: -1})
	ctx := context.Background()
	rewrite := func(lk *lock.Lock) {
		t.Helper()
		it := lockItem(t, mc, "n1", lk.Key())
		require.NotNil(t, it)
		require.NoError(t, mc.Node("n1").Client().Set(&memcache.Item{Key: lk.Key(), Value: it.Value, Expiration: 30}))
		require.NotEqual(t, lk.CAS(), lockItem(t, mc, "n1", lk.Key()).CasID, "the CAS id changed")
	}

	lk, err := l.Acquire(ctx, "n1", "lock:cas-renew")
	require.NoError(t, err)
	rewrite(lk)
	require.NoError(t, lk.Renew(ctx), "our token is still there: renewed")
	require.Equal(t, lk.CAS(), lockItem(t, mc, "n1", lk.Key()).CasID)
	require.NoError(t, lk.Release(ctx))
	require.Nil(t, lockItem(t, mc, "n1", lk.Key()))

	lk, err = l.Acquire(ctx, "n1", "lock:cas-release")
	require.NoError(t, err)
	rewrite(lk)
	require.NoError(t, lk.Release(ctx), "our token is still there: deleted")
	require.Nil(t, lockItem(t, mc, "n1", lk.Key()))

	// Someone else's token is never renewed nor deleted.
	lk, err = l.Acquire(ctx, "n1", "lock:cas-other")
	require.NoError(t, err)
	require.NoError(t, mc.Node("n1").Client().Set(&memcache.Item{Key: lk.Key(), Value: []byte("someone-else"), Expiration: 30}))
	require.ErrorIs(t, lk.Renew(ctx), lock.ErrLost)
	require.ErrorIs(t, lk.Release(ctx), lock.ErrLost)
	it := lockItem(t, mc, "n1", lk.Key())
	require.NotNil(t, it)
	require.Equal(t, "someone-else", string(it.Value))
	require.Equal(t, uint64(2), l.Stats().Released, "two releases of our own locks")
}

// TestReleaseLookFailureIsNotLost: after a CAS mismatch the release looks
// at the lock item; when that look fails (here: a canceled context), the
// outcome is unknown and is reported as an error, not as a lost lock.
func TestReleaseLookFailureIsNotLost(t *testing.T) {
	t.Parallel()
	mc, rc := newCluster(t, 1)
	l := newLocker(t, rc, lock.Config{TTL: 30 * time.Second, RenewEvery: -1})
	ctx := context.Background()
	lk, err := l.Acquire(ctx, "n1", "lock:look")
	require.NoError(t, err)
	it := lockItem(t, mc, "n1", lk.Key())
	require.NoError(t, mc.Node("n1").Client().Set(&memcache.Item{Key: lk.Key(), Value: it.Value, Expiration: 30})) // CAS changes, token stays

	key, cas, err := lk.BeginRelease()
	require.NoError(t, err)
	require.Equal(t, lk.Key(), key)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	err = lk.EndRelease(canceled, fmt.Errorf("md %s C%d: %w", key, cas, ops.ErrCASConflict))
	require.Error(t, err)
	require.NotErrorIs(t, err, lock.ErrLost)
	require.False(t, lk.Lost())
	require.Zero(t, l.Stats().Lost)
}
