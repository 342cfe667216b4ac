// Package lock implements the per-session lock: a memcached add of a lock
// key holding a random owner token, acquired with exponential backoff and
// jitter, renewed while held, and released only by its owner with an
// atomic compare-and-delete (cas with exptime -1).
package lock

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/mcsession/mcsession/replica"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultTTL is the lifetime of a lock item; a holder that dies frees
	// the lock after at most this long. A live holder renews it.
	DefaultTTL = 10 * time.Second
	// DefaultWaitTimeout is how long Acquire waits for a held lock.
	DefaultWaitTimeout = 2 * time.Second
	// DefaultBackoffStart is the first wait between two attempts.
	DefaultBackoffStart = 2 * time.Millisecond
	// DefaultBackoffMax caps the wait between two attempts.
	DefaultBackoffMax = 50 * time.Millisecond
)

var (
	// ErrLockTimeout is returned by Acquire when the lock stayed held by
	// someone else for the whole wait timeout.
	ErrLockTimeout = errors.New("lock: timed out waiting for the session lock")
	// ErrLost is returned by Release and Renew when the lock is no longer
	// ours: it expired and was taken by someone else, or was deleted.
	ErrLost = errors.New("lock: lock lost")
)

// Config configures a Locker. The zero value gives the documented defaults.
type Config struct {
	// TTL is the memcached lifetime of a lock item: it lives at least TTL
	// and less than TTL + 1 s (memcached counts whole seconds). At least
	// 1 s. Default DefaultTTL (10 s).
	TTL time.Duration
	// WaitTimeout bounds how long Acquire waits for a held lock. Default
	// DefaultWaitTimeout (2 s).
	WaitTimeout time.Duration
	// BackoffStart is the first pause between attempts; each pause doubles,
	// with jitter, up to BackoffMax (raised to BackoffStart when smaller).
	// Defaults DefaultBackoffStart (2 ms) and DefaultBackoffMax (50 ms).
	BackoffStart, BackoffMax time.Duration
	// RenewEvery is how often a held lock is renewed with touch; it must
	// be shorter than TTL (New fails otherwise). Default TTL/3. A negative
	// value turns renewal off.
	RenewEvery time.Duration
}

// Locker takes and releases session locks on a cluster. It is safe for
// concurrent use.
type Locker struct {
	cluster *replica.Cluster
	cfg     Config
	m       metrics
}

type metrics struct {
	acquired, waited, waitNanos, timeouts, renewals, lost, released atomic.Uint64
}

// Metrics is a snapshot of a Locker's counts since it was created.
type Metrics struct {
	// Acquired counts locks taken.
	Acquired uint64
	// Waited counts acquisitions that found the lock held and had to wait.
	Waited uint64
	// WaitTime is the total time spent waiting for held locks.
	WaitTime time.Duration
	// Timeouts counts acquisitions that gave up with ErrLockTimeout.
	Timeouts uint64
	// Renewals counts lease renewals.
	Renewals uint64
	// Lost counts locks found to belong to someone else on renewal or release.
	Lost uint64
	// Released counts locks released by their owner.
	Released uint64
}

// New returns a Locker on cluster with cfg's defaults filled in.
func New(cluster *replica.Cluster, cfg Config) (*Locker, error) {
	if cluster == nil {
		return nil, errors.New("lock: nil cluster")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("lock: TTL %v is under memcached's 1 s resolution", cfg.TTL)
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.BackoffStart <= 0 {
		cfg.BackoffStart = DefaultBackoffStart
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.BackoffMax < cfg.BackoffStart {
		cfg.BackoffMax = cfg.BackoffStart
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = cfg.TTL / 3
	}
	if cfg.RenewEvery >= cfg.TTL {
		return nil, fmt.Errorf("lock: RenewEvery %v must be shorter than TTL %v, or the lock expires between renewals", cfg.RenewEvery, cfg.TTL)
	}
	return &Locker{cluster: cluster, cfg: cfg}, nil
}

// Config returns the configuration in force, defaults filled in.
func (l *Locker) Config() Config { return l.cfg }

// Metrics returns the Locker's counts.
func (l *Locker) Metrics() Metrics {
	return Metrics{
		Acquired: l.m.acquired.Load(), Waited: l.m.waited.Load(),
		WaitTime: time.Duration(l.m.waitNanos.Load()), Timeouts: l.m.timeouts.Load(),
		Renewals: l.m.renewals.Load(), Lost: l.m.lost.Load(), Released: l.m.released.Load(),
	}
}

type waitKey struct{}

// WithWaitTimeout returns a context that makes Acquire wait at most d for
// a held lock instead of Config.WaitTimeout, for one request.
func WithWaitTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, waitKey{}, d)
}

// Lock is a held session lock. Its methods are safe for concurrent use.
type Lock struct {
	l     *Locker
	node  string
	key   string
	token []byte

	mu       sync.Mutex
	cas      uint64 // CAS id of our lock item, read right after the add
	done     bool   // released or lost
	lost     bool
	renewal  *time.Timer
	acquired time.Time
}

// Node returns the node that holds the lock item.
func (lk *Lock) Node() string { return lk.node }

// Key returns the lock item's memcached key.
func (lk *Lock) Key() string { return lk.key }

// Token returns the random owner token stored in the lock item.
func (lk *Lock) Token() string { return string(lk.token) }

// Acquire takes the lock key on node: it adds the item with a fresh owner
// token and reads back its CAS id (needed for the owner-checked release).
// While someone else holds the lock it retries with exponential backoff and
// jitter until Config.WaitTimeout passes (ErrLockTimeout) or ctx ends (the
// context's error). A node that fails returns an error wrapping
// replica.ErrNodeDown at once.
func (l *Locker) Acquire(ctx context.Context, node, key string) (*Lock, error) {
	lk, _, err := l.AcquireAndGet(ctx, node, key)
	return lk, err
}

// AcquireAndGet is Acquire followed by one "gets" of the lock key and the
// extra keys on the same node, in a single round trip: it takes a session's
// lock and reads the session itself at once. The returned map holds the
// extra keys that were found.
func (l *Locker) AcquireAndGet(ctx context.Context, node, key string, extra ...string) (*Lock, map[string]*memcache.Item, error) {
	token := make([]byte, 32)
	var raw [16]byte
	_, _ = crand.Read(raw[:])
	hex.Encode(token, raw[:])
	exp := l.exptime()

	start := time.Now()
	wait := l.cfg.WaitTimeout
	if d, ok := ctx.Value(waitKey{}).(time.Duration); ok && d > 0 {
		wait = d
	}
	deadline := start.Add(wait)
	pause := l.cfg.BackoffStart
	var timer *time.Timer
	waited := false
	for {
		err := l.cluster.Add(ctx, node, &memcache.Item{Key: key, Value: token, Expiration: exp})
		if err == nil {
			break
		}
		if !errors.Is(err, replica.ErrNotStored) {
			return nil, nil, fmt.Errorf("lock: acquire %s: %w", key, err)
		}
		if !waited {
			l.m.waited.Add(1)
			waited = true
		}
		now := time.Now()
		if !now.Before(deadline) {
			l.m.timeouts.Add(1)
			l.m.waitNanos.Add(uint64(now.Sub(start)))
			return nil, nil, fmt.Errorf("%w: %s after %v", ErrLockTimeout, key, now.Sub(start).Round(time.Millisecond))
		}
		// Full jitter over [pause/2, pause), never past the deadline.
		sleep := min(pause/2+rand.N(pause/2+1), deadline.Sub(now))
		if timer == nil {
			timer = time.NewTimer(sleep)
		} else {
			timer.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			l.m.waitNanos.Add(uint64(time.Since(start)))
			return nil, nil, fmt.Errorf("lock: acquire %s: %w", key, ctx.Err())
		case <-timer.C:
		}
		pause = min(pause*2, l.cfg.BackoffMax)
	}
	// WaitTime counts only acquisitions that found the lock held, not the
	// round trip of an uncontended add.
	if waited {
		l.m.waitNanos.Add(uint64(time.Since(start)))
	}
	l.m.acquired.Add(1)
	lk := &Lock{l: l, node: node, key: key, token: token, acquired: time.Now()}
	items, err := l.cluster.GetMulti(ctx, node, append([]string{key}, extra...))
	if err == nil {
		err = lk.bind(items[key])
	}
	if err != nil {
		// We hold the lock but cannot prove it on release: drop it by
		// expiring it right away with a plain touch (best effort).
		// Only when the read failed: when bind says ErrLost the item is
		// gone or holds another owner's token (ours expired in between),
		// and expiring it would delete someone else's lock.
		if !errors.Is(err, ErrLost) {
			_ = l.cluster.Touch(context.WithoutCancel(ctx), node, key, -1)
		}
		return nil, nil, fmt.Errorf("lock: acquire %s: %w", key, err)
	}
	delete(items, key)
	lk.scheduleRenewal()
	return lk, items, nil
}

// exptime returns the memcached exptime of a lock item: the TTL in whole
// seconds plus one. memcached's clock ticks once a second and an item
// expires at the first tick at or after now+exptime, so an exptime of n
// seconds lives between n-1 and n seconds (measured on 1.6.18: exptime 1
// lived 28 ms to 1 s). Without the extra second a 1 s lock could expire
// before its first renewal (TTL/3) or while its holder still works.
func (l *Locker) exptime() int32 {
	return replica.Expiration(l.cfg.TTL+time.Second, time.Now())
}

// bind records the CAS id of our lock item after checking it holds our token.
func (lk *Lock) bind(it *memcache.Item) error {
	if it == nil || string(it.Value) != string(lk.token) {
		return ErrLost
	}
	lk.mu.Lock()
	lk.cas = it.CasID
	lk.mu.Unlock()
	return nil
}

func (lk *Lock) scheduleRenewal() {
	every := lk.l.cfg.RenewEvery
	if every <= 0 {
		return
	}
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.done {
		return
	}
	lk.renewal = time.AfterFunc(every, func() {
		ctx, cancel := context.WithTimeout(context.Background(), lk.l.cfg.TTL/3)
		defer cancel()
		// A lost lock stops renewing; a passing network error does not:
		// the next attempt may still find the lock ours.
		if err := lk.Renew(ctx); !errors.Is(err, ErrLost) {
			lk.scheduleRenewal()
		}
	})
}

// Renew extends the lock's lifetime to a full TTL from now, after checking
// (by CAS id) that the lock is still ours; it returns ErrLost otherwise.
// Held locks are renewed automatically every Config.RenewEvery.
func (lk *Lock) Renew(ctx context.Context) error {
	lk.mu.Lock()
	done, lost, cas := lk.done, lk.lost, lk.cas
	lk.mu.Unlock()
	if lost {
		return ErrLost
	}
	if done {
		return nil
	}
	it, err := lk.l.cluster.Get(ctx, lk.node, lk.key)
	if errors.Is(err, replica.ErrMiss) || err == nil && it.CasID != cas {
		lk.markLost()
		return fmt.Errorf("%w: %s", ErrLost, lk.key)
	}
	if err != nil {
		return fmt.Errorf("lock: renew %s: %w", lk.key, err)
	}
	// touch keeps the CAS id, so the release below still matches.
	if err := lk.l.cluster.Touch(ctx, lk.node, lk.key, lk.l.exptime()); err != nil {
		if errors.Is(err, replica.ErrMiss) {
			lk.markLost()
			return fmt.Errorf("%w: %s", ErrLost, lk.key)
		}
		return fmt.Errorf("lock: renew %s: %w", lk.key, err)
	}
	lk.l.m.renewals.Add(1)
	return nil
}

func (lk *Lock) markLost() {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	// A renewal that was already running when Release deleted the item
	// finds it gone; that is not a lost lock. Only a lock that is neither
	// released nor lost yet can become lost, so a released lock is never
	// counted as lost and a second Release stays a no-op.
	if !lk.done {
		lk.lost, lk.done = true, true
		lk.l.m.lost.Add(1)
		if lk.renewal != nil {
			lk.renewal.Stop()
		}
	}
}

// Lost reports whether the lock was found to belong to someone else.
func (lk *Lock) Lost() bool {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.lost
}

// HeldFor returns how long ago the lock was acquired.
func (lk *Lock) HeldFor() time.Duration { return time.Since(lk.acquired) }

// Release stops renewal and deletes the lock item if it is still ours:
// cas with the CAS id read after acquiring and exptime -1, an atomic
// compare-and-delete. When the lock expired and someone else holds it now,
// nothing is deleted and ErrLost is returned. A second Release is a no-op.
func (lk *Lock) Release(ctx context.Context) error {
	lk.mu.Lock()
	if lk.done {
		lost := lk.lost
		lk.mu.Unlock()
		if lost {
			return fmt.Errorf("%w: %s", ErrLost, lk.key)
		}
		return nil
	}
	lk.done = true
	if lk.renewal != nil {
		lk.renewal.Stop()
	}
	cas := lk.cas
	lk.mu.Unlock()

	err := lk.l.cluster.CompareAndSwap(ctx, lk.node, &memcache.Item{Key: lk.key, Value: lk.token, Expiration: -1, CasID: cas})
	switch {
	case err == nil:
		lk.l.m.released.Add(1)
		return nil
	case errors.Is(err, replica.ErrCASConflict) || errors.Is(err, replica.ErrMiss) || errors.Is(err, replica.ErrNotStored):
		lk.mu.Lock()
		lk.lost = true
		lk.mu.Unlock()
		lk.l.m.lost.Add(1)
		return fmt.Errorf("%w: %s", ErrLost, lk.key)
	default:
		return fmt.Errorf("lock: release %s: %w", lk.key, err)
	}
}
