// Package lock implements the per-session lock: a memcached add of a lock
// key holding a random owner token, acquired with exponential backoff and
// jitter, renewed while held with a compare-and-set (only its owner can
// extend it), and released only by its owner with a compare-and-delete.
// Each step is one meta-protocol round trip (renewal and release read the
// item once more when its CAS id changed under them); the acquisition can
// read other keys of the same node in its round trip (lock and load).
package lock

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/latency"
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
	// DefaultMaxHold is how long a lock is kept at most: after that its
	// renewal stops and it lapses (within TTL), so that a handler that
	// hangs cannot lock its user out for good.
	DefaultMaxHold = 5 * time.Minute
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
	// RenewEvery is how often a held lock is renewed; it must
	// be shorter than TTL (New fails otherwise). Default TTL/3. A negative
	// value turns renewal off.
	RenewEvery time.Duration
	// MaxHold bounds how long a lock is held: once it has been held this
	// long, renewal stops (the memcached lock expires within TTL; the
	// in-process lock of sticky mode is released at once), the lapse is
	// counted (Stats.Lapsed) and logged, and the next request of the
	// session may take it. The late holder's save is still CAS-guarded:
	// it gets a conflict if the next holder saved first. Default
	// DefaultMaxHold (5 min); a negative value means no limit.
	MaxHold time.Duration
	// Logger receives lock lapses. Default: logs are discarded.
	Logger *slog.Logger
}

// Locker takes and releases session locks on a cluster. It is safe for
// concurrent use.
type Locker struct {
	cluster ops.View
	cfg     Config
	log     *slog.Logger
	m       metrics

	// uncertain holds the owner tokens of adds whose outcome is unknown
	// (the connection broke after sending), by lock key, so that the next
	// acquisition of that key recognises such a lock as its own.
	mu        sync.Mutex
	uncertain map[string][]pendingToken
}

type pendingToken struct {
	token []byte
	until time.Time
}

type metrics struct {
	acquired, waited, waitNanos, timeouts, renewals, lost, released, lapsed atomic.Uint64
	acquire                                                                 latency.Histogram
}

// Stats is a snapshot of a Locker's counts since it was created.
type Stats struct {
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
	// Lapsed counts locks whose renewal stopped (or, in process, that were
	// released) because they were held for Config.MaxHold.
	Lapsed uint64
	// AcquireLatency is the time Acquire and AcquireAndGet took, waits for
	// held locks and failures included.
	AcquireLatency latency.Snapshot
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
	cfg.MaxHold = maxHold(cfg.MaxHold)
	return &Locker{cluster: ops.Of(cluster), cfg: cfg, log: logger(cfg.Logger), uncertain: make(map[string][]pendingToken)}, nil
}

// Config returns the configuration in force, defaults filled in.
func (l *Locker) Config() Config { return l.cfg }

// Stats returns the Locker's counts.
func (l *Locker) Stats() Stats {
	return Stats{
		Acquired: l.m.acquired.Load(), Waited: l.m.waited.Load(),
		WaitTime: time.Duration(l.m.waitNanos.Load()), Timeouts: l.m.timeouts.Load(),
		Renewals: l.m.renewals.Load(), Lost: l.m.lost.Load(), Released: l.m.released.Load(),
		Lapsed: l.m.lapsed.Load(), AcquireLatency: l.m.acquire.Snapshot(),
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

	// op serialises the network operations on the lock item (renewal and
	// release), so that a release always uses the CAS id of the last
	// renewal.
	op       sync.Mutex
	mu       sync.Mutex
	cas      uint64 // CAS id of our lock item: from the add, then each renewal
	done     bool   // released or lost
	lost     bool
	renewal  *time.Timer
	acquired time.Time
}

// Item is a key read together with a lock acquisition.
type Item struct {
	// Found is false for a missing key.
	Found bool
	// Value is the item's data.
	Value []byte
	// CAS is the item's CAS id.
	CAS uint64
	// Flags are the item's client flags.
	Flags uint32
	// TTL is the item's remaining lifetime in seconds (-1: none).
	TTL int32
}

// Node returns the node that holds the lock item.
func (lk *Lock) Node() string { return lk.node }

// Key returns the lock item's memcached key.
func (lk *Lock) Key() string { return lk.key }

// Token returns the random owner token stored in the lock item.
func (lk *Lock) Token() string { return string(lk.token) }

// Acquire takes the lock key on node: it adds the item with a fresh owner
// token (memcached returns its CAS id, needed for the owner-checked
// renewal and release). While someone else holds the lock it retries with
// exponential backoff and jitter until Config.WaitTimeout passes
// (ErrLockTimeout) or ctx ends (the context's error). A node that fails
// returns an error wrapping replica.ErrNodeDown at once (ErrNodeBusy when
// every connection to it stayed busy).
func (l *Locker) Acquire(ctx context.Context, node, key string) (*Lock, error) {
	lk, _, err := l.AcquireAndGet(ctx, node, key)
	return lk, err
}

// AcquireAndGet is Acquire that also reads the keys extra from the same
// node in the same round trip as each attempt: it takes a session's lock
// and reads the session at once. The items are returned in the order of
// extra, read after the lock was taken (while the lock is held by someone
// else the reads are discarded).
//
// Every add carries a fresh owner token. When an add's outcome is unknown
// (the connection broke after it was sent), its token is remembered and a
// background cleanup deletes the lock item once the node answers, only
// while the item holds that token; the attempt is retried once at once.
// Attempts made while such tokens are remembered also read the lock item:
// a lock found holding one of them is ours, and is taken over under the
// fresh token with a compare-and-set (so the cleanup cannot delete it).
// So neither this call nor a later acquisition of key by this Locker waits
// for a lock its own lost add left behind, as long as that add lands while
// its token is remembered (up to the lock's TTL + 1 s after it was sent:
// an add that a hung node applies later than that is not recognised, and
// the lock then blocks the session until it expires).
func (l *Locker) AcquireAndGet(ctx context.Context, node, key string, extra ...string) (*Lock, []Item, error) {
	defer l.m.acquire.Since(time.Now())
	// Every add carries a fresh token. orphans are the tokens of adds of
	// this Locker whose outcome is unknown (earlier calls', and this
	// call's): a lock item holding one of them is ours to take over.
	token := newToken()
	orphans := l.orphansOf(key)
	exp := l.exptime()
	// reqs is the add and the reads of extra; ownReqs also reads the lock
	// item, to recognise an orphan.
	reqs := make([]meta.Request, 1, 1+len(extra))
	reqs[0] = meta.Request{Command: meta.Set, Key: key, Value: token, Mode: meta.ModeAdd, TTL: exp, ReturnCAS: true}
	for _, k := range extra {
		reqs = append(reqs, ops.GetRequest(k))
	}
	var ownReqs []meta.Request
	out := make([]meta.Response, len(reqs)+1)

	start := time.Now()
	wait := l.cfg.WaitTimeout
	if d, ok := ctx.Value(waitKey{}).(time.Duration); ok && d > 0 {
		wait = d
	}
	deadline := start.Add(wait)
	pause := l.cfg.BackoffStart
	var timer *time.Timer
	waited, retried := false, false
	var cas uint64
	first := 1 // index of the first read of extra in the answers
	for {
		batch := reqs
		first = 1
		if len(orphans) > 0 {
			if ownReqs == nil {
				ownReqs = append([]meta.Request{reqs[0], {Command: meta.Get, Key: key, ReturnValue: true, ReturnCAS: true}}, reqs[1:]...)
			}
			ownReqs[0].Value = token
			batch, first = ownReqs, 2
		}
		res := out[:len(batch)]
		err := l.cluster.Exec(ctx, node, batch, res)
		if err != nil {
			if errors.Is(err, meta.ErrUnknownOutcome) {
				// The add may land (now, or when a hung node resumes):
				// remember its token and clean it up in the background.
				l.forgetLater(node, key, token)
				orphans = append(orphans, token)
				token = newToken()
				reqs[0].Value = token
				if !retried && ctx.Err() == nil {
					retried = true
					continue
				}
			}
			return nil, nil, fmt.Errorf("lock: acquire %s: %w", key, err)
		}
		addErr := ops.Answer(&res[0])
		if addErr == nil {
			cas = res[0].CAS
			break
		}
		if !errors.Is(addErr, ops.ErrNotStored) {
			return nil, nil, fmt.Errorf("lock: acquire %s: %w", key, addErr)
		}
		if len(orphans) > 0 {
			if own := res[1]; own.Status == meta.StatusOK && containsToken(orphans, own.Value) {
				// An add of ours with an unknown outcome did land. Take it
				// over under the fresh token (compare-and-set), so that the
				// cleanup of the old one cannot delete the lock we now hold.
				newCAS, err := ops.Store(ctx, l.cluster, node, meta.ModeSet, &ops.Item{Key: key, Value: token, CAS: own.CAS}, exp)
				switch {
				case err == nil:
					l.clearToken(key, own.Value)
					cas = newCAS
				case errors.Is(err, ops.ErrCASConflict) || errors.Is(err, ops.ErrMiss):
					continue // the cleanup deleted it first, or it expired: add again
				default:
					// Unknown which token the item holds now: both are
					// remembered and cleaned up once the node answers.
					l.forgetLater(node, key, token)
					return nil, nil, fmt.Errorf("lock: acquire %s: take over: %w", key, err)
				}
				break
			}
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
	lk := &Lock{l: l, node: node, key: key, token: token, cas: cas, acquired: time.Now()}
	var items []Item
	if len(extra) > 0 {
		items = make([]Item, len(extra))
		for i := range extra {
			r := &out[first+i]
			if r.Status == meta.StatusOK {
				items[i] = Item{Found: true, Value: r.Value, CAS: r.CAS, Flags: r.Flags, TTL: r.TTL}
			} else if r.Status != meta.StatusMiss {
				_ = lk.Release(context.WithoutCancel(ctx))
				return nil, nil, fmt.Errorf("lock: acquire %s: read %s: %w", key, extra[i], ops.Answer(r))
			}
		}
	}
	lk.scheduleRenewal()
	return lk, items, nil
}

func containsToken(tokens [][]byte, v []byte) bool {
	for _, t := range tokens {
		if string(t) == string(v) {
			return true
		}
	}
	return false
}

// orphansOf returns the remembered tokens of key's adds whose outcome is
// unknown and whose lock could still exist.
func (l *Locker) orphansOf(key string) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]byte
	now := time.Now()
	for _, p := range l.uncertain[key] {
		if now.Before(p.until) {
			out = append(out, p.token)
		}
	}
	return out
}

// newToken returns a random owner token: 32 hex characters (128 bits).
func newToken() []byte {
	token := make([]byte, 32)
	var raw [16]byte
	_, _ = crand.Read(raw[:])
	hex.Encode(token, raw[:])
	return token
}

// Bounds of the remembered tokens of adds with an unknown outcome.
const (
	maxUncertainKeys   = 4096
	maxUncertainPerKey = 4
)

// forgetLater remembers token as possibly holding key (until the lock
// would have expired) and starts a cleanup that deletes the lock item,
// only while it holds token, once the node answers again.
func (l *Locker) forgetLater(node, key string, token []byte) {
	now := time.Now()
	until := now.Add(l.cfg.TTL + time.Second)
	l.mu.Lock()
	if len(l.uncertain) >= maxUncertainKeys {
		for k, ps := range l.uncertain { // drop expired entries, or any one
			if len(ps) == 0 || now.After(ps[len(ps)-1].until) || len(l.uncertain) >= maxUncertainKeys {
				delete(l.uncertain, k)
			}
		}
	}
	ps := l.uncertain[key]
	for _, p := range ps {
		if string(p.token) == string(token) {
			l.mu.Unlock()
			return // its cleanup is running already
		}
	}
	if len(ps) >= maxUncertainPerKey {
		ps = ps[1:] // the oldest: its cleanup stops at its next look
	}
	l.uncertain[key] = append(ps, pendingToken{token: token, until: until})
	l.mu.Unlock()
	go l.cleanup(node, key, token, until)
}

// clearToken forgets a remembered token once its fate is known.
func (l *Locker) clearToken(key string, token []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ps := l.uncertain[key]
	for i, p := range ps {
		if string(p.token) == string(token) {
			ps = append(ps[:i:i], ps[i+1:]...)
			break
		}
	}
	if len(ps) == 0 {
		delete(l.uncertain, key)
	} else {
		l.uncertain[key] = ps
	}
}

// cleanup deletes the lock item key on node if it holds token, polling
// with backoff until that is done, the item is seen holding another
// owner's token, the Locker took the lock over (the token is no longer
// remembered), or the lock would have expired. A miss proves nothing: an
// add still waiting in the socket of a hung node lands when it resumes,
// possibly after a read on another connection.
func (l *Locker) cleanup(node, key string, token []byte, until time.Time) {
	pause := 50 * time.Millisecond
	for time.Now().Before(until) && l.remembers(key, token) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		done, err := l.deleteIfOwner(ctx, node, key, token)
		cancel()
		if err == nil && done {
			break
		}
		time.Sleep(min(pause, time.Until(until)))
		pause = min(2*pause, time.Second)
	}
	l.clearToken(key, token)
}

// remembers reports whether token is a remembered uncertain token of key.
func (l *Locker) remembers(key string, token []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.uncertain[key] {
		if string(p.token) == string(token) {
			return true
		}
	}
	return false
}

// deleteIfOwner reads key and deletes it with its CAS id when it holds
// token. done is true once the item was deleted or holds another token.
func (l *Locker) deleteIfOwner(ctx context.Context, node, key string, token []byte) (done bool, err error) {
	it, err := ops.Get(ctx, l.cluster, node, key)
	if errors.Is(err, ops.ErrMiss) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if string(it.Value) != string(token) {
		return true, nil
	}
	err = ops.Delete(ctx, l.cluster, node, key, it.CAS)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ops.ErrMiss) || errors.Is(err, ops.ErrCASConflict):
		return false, nil // changed meanwhile: look again
	default:
		return false, err
	}
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
		if limit := lk.l.cfg.MaxHold; limit > 0 && lk.HeldFor() >= limit {
			lk.l.m.lapsed.Add(1)
			lk.l.log.Warn("session lock held too long: renewal stopped, it lapses within its TTL",
				"key", lk.key, "held", lk.HeldFor().Round(time.Millisecond), "max_hold", limit, "ttl", lk.l.cfg.TTL)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), lk.l.cfg.TTL/3)
		defer cancel()
		// A lost lock stops renewing; a passing network error does not:
		// the next attempt may still find the lock ours.
		if err := lk.Renew(ctx); !errors.Is(err, ErrLost) {
			lk.scheduleRenewal()
		}
	})
}

// Renew extends the lock's lifetime to a full TTL from now with one
// compare-and-set of the lock item against its CAS id: only the owner's
// item is extended, never a lock someone else took after ours expired.
// It returns ErrLost when the lock is no longer ours. Held locks are
// renewed automatically every Config.RenewEvery.
func (lk *Lock) Renew(ctx context.Context) error {
	lk.op.Lock()
	defer lk.op.Unlock()
	lk.mu.Lock()
	done, lost, cas := lk.done, lk.lost, lk.cas
	lk.mu.Unlock()
	if lost {
		return ErrLost
	}
	if done {
		return nil
	}
	newCAS, err := ops.Store(ctx, lk.l.cluster, lk.node, meta.ModeSet,
		&ops.Item{Key: lk.key, Value: lk.token, CAS: cas}, lk.l.exptime())
	if errors.Is(err, ops.ErrCASConflict) {
		// A renewal whose outcome was unknown may have changed the CAS id
		// of our own item: look, and renew once more if it is ours.
		cur, ok, gerr := lk.ownCAS(ctx)
		switch {
		case gerr != nil:
			err = gerr // unknown: not lost; the next renewal looks again
		case ok:
			newCAS, err = ops.Store(ctx, lk.l.cluster, lk.node, meta.ModeSet,
				&ops.Item{Key: lk.key, Value: lk.token, CAS: cur}, lk.l.exptime())
		}
	}
	switch {
	case err == nil:
		lk.mu.Lock()
		lk.cas = newCAS
		lk.mu.Unlock()
		lk.l.m.renewals.Add(1)
		return nil
	case errors.Is(err, ops.ErrMiss) || errors.Is(err, ops.ErrCASConflict):
		lk.markLost()
		return fmt.Errorf("%w: %s", ErrLost, lk.key)
	default:
		return fmt.Errorf("lock: renew %s: %w", lk.key, err)
	}
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
// a compare-and-delete against the CAS id of our item. When the lock
// expired and someone else holds it now, nothing is deleted and ErrLost
// is returned. A second Release is a no-op.
func (lk *Lock) Release(ctx context.Context) error {
	key, cas, err := lk.beginRelease()
	if err != nil || key == "" {
		return err
	}
	return lk.endRelease(ctx, ops.Delete(ctx, lk.l.cluster, lk.node, key, cas))
}

// beginRelease stops renewal and returns what the owner-checked release
// needs: the lock key and the CAS id of our item ("md <key> C<cas>"). It
// waits for a renewal in flight. key is "" when the lock was released
// already; err is ErrLost when it was lost. Report the delete's outcome with endRelease.
func (lk *Lock) beginRelease() (key string, cas uint64, err error) {
	lk.op.Lock()
	defer lk.op.Unlock()
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.done {
		if lk.lost {
			return "", 0, fmt.Errorf("%w: %s", ErrLost, lk.key)
		}
		return "", 0, nil
	}
	lk.done = true
	if lk.renewal != nil {
		lk.renewal.Stop()
	}
	return lk.key, lk.cas, nil
}

// endRelease records the outcome of the compare-and-delete started with
// beginRelease: err is nil when it deleted our item, an error wrapping a
// CAS mismatch or a miss when the lock was no longer ours (ErrLost is
// returned), or a failure of the node (returned wrapped). On a CAS
// mismatch it reads the lock item once: when it still holds our token (a
// renewal whose outcome was unknown changed its CAS id), it is deleted
// with its current CAS id.
func (lk *Lock) endRelease(ctx context.Context, err error) error {
	if errors.Is(err, ops.ErrCASConflict) {
		cur, ok, gerr := lk.ownCAS(ctx)
		switch {
		case gerr != nil:
			err = gerr // unknown whether it is ours: reported, not taken as lost
		case ok:
			err = ops.Delete(ctx, lk.l.cluster, lk.node, lk.key, cur)
		}
	}
	switch {
	case err == nil:
		lk.l.m.released.Add(1)
		return nil
	case errors.Is(err, ops.ErrCASConflict) || errors.Is(err, ops.ErrMiss):
		lk.mu.Lock()
		lk.lost = true
		lk.mu.Unlock()
		lk.l.m.lost.Add(1)
		return fmt.Errorf("%w: %s", ErrLost, lk.key)
	default:
		return fmt.Errorf("lock: release %s: %w", lk.key, err)
	}
}

// ownCAS reads the lock item and returns its CAS id when it holds our
// token (the token is ours alone: an item holding it is our lock); ok is
// false when it is gone or someone else's, err set when the read failed.
func (lk *Lock) ownCAS(ctx context.Context) (cas uint64, ok bool, err error) {
	it, err := ops.Get(ctx, lk.l.cluster, lk.node, lk.key)
	if errors.Is(err, ops.ErrMiss) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if string(it.Value) != string(lk.token) {
		return 0, false, nil
	}
	return it.CAS, true, nil
}

// CAS returns the CAS id of the lock item as last written by us.
func (lk *Lock) CAS() uint64 {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.cas
}

// maxHold applies Config.MaxHold's default: 0 gives DefaultMaxHold; a
// negative value (no limit) stays.
func maxHold(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultMaxHold
	}
	return d
}

// logger returns l, or a logger that discards everything.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
