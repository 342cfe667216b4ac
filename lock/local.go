package lock

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/latency"
)

// Local is an in-process lock per key, the session lock of sticky mode:
// there every request of a session reaches the same app server, so a
// mutex in its memory serialises them without a memcached round trip. It
// waits for a held key as Locker.Acquire does (Config.WaitTimeout, or
// WithWaitTimeout's value) and is safe for concurrent use.
type Local struct {
	wait    time.Duration
	maxHold time.Duration // <= 0: no limit
	log     *slog.Logger

	mu   sync.Mutex
	keys map[string]*localKey

	acquired, waited, waitNanos, timeouts, released, lapsed atomic.Uint64
	acquireLatency                                          latency.Histogram
}

// localKey is the state of one key: a token channel of capacity one
// (holding the lock = having put the token in) and how many goroutines
// hold or wait for it (the entry is dropped at zero).
type localKey struct {
	token chan struct{}
	refs  int
}

// NewLocal returns a Local with cfg's WaitTimeout (default
// DefaultWaitTimeout), MaxHold (default DefaultMaxHold: a lock held that
// long is released, counted and logged) and Logger; the other fields of
// cfg do not apply in process.
func NewLocal(cfg Config) *Local {
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	return &Local{wait: cfg.WaitTimeout, maxHold: maxHold(cfg.MaxHold), log: logger(cfg.Logger), keys: make(map[string]*localKey)}
}

// LocalLock is a held Local lock.
type LocalLock struct {
	l      *Local
	key    string
	k      *localKey
	once   sync.Once
	lapse  *time.Timer // releases the lock after Local's maxHold
	lapsed atomic.Bool
}

// Acquire takes the lock of key, waiting while another goroutine holds
// it. It returns an error wrapping ErrLockTimeout when the wait timeout
// passed, and ctx's error when ctx ended first.
func (l *Local) Acquire(ctx context.Context, key string) (*LocalLock, error) {
	defer l.acquireLatency.Since(time.Now())
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		k = &localKey{token: make(chan struct{}, 1)}
		l.keys[key] = k
	}
	k.refs++
	l.mu.Unlock()

	if err := ctx.Err(); err != nil {
		l.unref(key, k)
		return nil, err
	}
	select {
	case k.token <- struct{}{}:
		return l.held(key, k), nil
	default:
	}
	l.waited.Add(1)
	start := time.Now()
	defer func() { l.waitNanos.Add(uint64(time.Since(start))) }()
	wait := l.wait
	if d, ok := ctx.Value(waitKey{}).(time.Duration); ok && d > 0 {
		wait = d
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case k.token <- struct{}{}:
		return l.held(key, k), nil
	case <-timer.C:
		l.unref(key, k)
		l.timeouts.Add(1)
		return nil, fmt.Errorf("%w: %s (held in this process for over %v)", ErrLockTimeout, key, wait)
	case <-ctx.Done():
		l.unref(key, k)
		return nil, ctx.Err()
	}
}

// unref drops one holder or waiter of key.
func (l *Local) unref(key string, k *localKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k.refs--; k.refs == 0 {
		delete(l.keys, key)
	}
}

// Held returns how many keys are held or waited for.
func (l *Local) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// Stats returns the lock's event counts, as Locker.Stats does for the
// memcached lock; Renewals and Lost are always zero in process.
func (l *Local) Stats() Stats {
	return Stats{
		Acquired: l.acquired.Load(), Waited: l.waited.Load(), WaitTime: time.Duration(l.waitNanos.Load()),
		Timeouts: l.timeouts.Load(), Released: l.released.Load(), Lapsed: l.lapsed.Load(),
		AcquireLatency: l.acquireLatency.Snapshot(),
	}
}

// held counts an acquired lock and returns it, with its lapse timer.
func (l *Local) held(key string, k *localKey) *LocalLock {
	l.acquired.Add(1)
	lk := &LocalLock{l: l, key: key, k: k}
	if l.maxHold > 0 {
		lk.lapse = time.AfterFunc(l.maxHold, func() {
			lk.once.Do(func() {
				lk.lapsed.Store(true)
				l.lapsed.Add(1)
				l.log.Warn("session lock held too long in process: released", "key", key, "max_hold", l.maxHold)
				<-k.token
				l.unref(key, k)
			})
		})
	}
	return lk
}

// Lapsed reports whether the lock was released because it was held for
// Config.MaxHold.
func (lk *LocalLock) Lapsed() bool { return lk.lapsed.Load() }

// Key returns the locked key.
func (lk *LocalLock) Key() string { return lk.key }

// Release releases the lock; a second Release, or one after the lock
// lapsed, is a no-op.
func (lk *LocalLock) Release() {
	if lk.lapse != nil {
		lk.lapse.Stop()
	}
	lk.once.Do(func() {
		<-lk.k.token
		lk.l.released.Add(1)
		lk.l.unref(lk.key, lk.k)
	})
}
