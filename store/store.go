// Package store keeps sessions in a replicated memcached cluster: it makes
// ids, loads sessions with fallback to the backup copy (restoring a node
// that restarted empty, relocating a session whose node died), saves only
// what changed with CAS guards, refreshes idle timeouts, renews ids and
// deletes every copy. Package httpsession puts it behind net/http; use it
// directly for sessions outside HTTP handlers.
//
// # Life of a session
//
// New builds a Store over a replica.Cluster. Store.NewSession makes an
// unsaved session with a fresh id; Session.Set, Get, Remove and Clear
// change its attributes in memory; Store.Save writes it to its primary
// node and a backup node. Later requests Load it by id (one round trip),
// or LoadLocked it (lock and load in one round trip) and end with
// SaveAndRelease, or Release when nothing changed. Store.RenewID gives a
// session a new id (at login); Store.Destroy deletes a loaded session and
// Store.DestroyID any session by its id (at logout).
//
// # Ids and keys
//
// A session id is 32 lowercase hex characters from crypto/rand, a "-" and
// the id of the node that holds the primary copy ("9f2c…e1-n2"). Its items
// are the session under KeyPrefix+id on that node, the backup copy under
// KeyPrefix+"bak:"+id on the next healthy node, and the lock under
// KeyPrefix+"lock:"+id on the primary (Store.MemcachedKeys). The byte
// format is specified in docs/FORMAT.md of the repository.
//
// # Relocation
//
// When a session's primary node does not answer, Load reads the backup
// copy and relocates the session: it gets the id of the same random part
// with the backup node's suffix and is written as primary there. The node
// left behind may only hang and come back with its old copy, so the move
// writes a moved marker (key KeyPrefix+"moved:"+old id) on the nodes that
// can hold the old id's backup copy, and a load or save that reaches the
// old copy follows it to the new id instead of serving or overwriting the
// old one. Reading a marker costs a command on a second node; a load reads
// it only for a session whose node is fenced: before the first move off a
// node, the mover writes a fence (KeyPrefix+"fence:"+node) on the other
// nodes and waits Config.FenceWindow, and every Store re-reads the fences
// twice per window while it serves loads. See fence.go and moved.go for
// why this serves no copy older than one acknowledged elsewhere, as long
// as every app server uses the same FenceWindow and a copy of the marker
// and of the fence survives.
//
// # Sticky mode
//
// Non-sticky (the default) suits any load balancer: every Load reads
// memcached, every save writes it, and the session lock is a memcached
// item, so any app server may serve any request. With Config.Sticky the
// balancer must send each user to one app server (msm's default
// deployment): the Store keeps the sessions it served in a local cache
// (Config.CacheBytes, least recently used out, idle timeout honoured) and
// serves them from there, and the session lock is an in-process mutex (no
// memcached round trips). Every save is still written through to
// memcached, primary and backup, so that when the app server dies or is
// taken out another one loads the session from memcached with the usual
// failover, and keeps it from then on.
//
// When the balancer moves a user away and back, this server's copy is
// stale. Before serving a cached session the Store therefore checks its
// CAS id with a read of the item's metadata only (one small round trip,
// no body, no decoding) and reloads it when memcached holds a newer
// version. Config.TrustSticky skips that check, as msm does: the stale
// copy is served, and its next save fails with ErrConflict instead of
// overwriting the newer version (the copy is then dropped and reloaded;
// with AsyncWrites the save was acknowledged first, so its change is lost,
// counted in Stats.AsyncFailed).
//
// # Asynchronous writes
//
// With Config.AsyncWrites, Save returns before memcached has the whole new
// copy. In non-sticky mode only the backup copy is deferred: the primary is
// written before Save returns, so the next request, on any server, sees the
// change; until the queued backup write ran, the session has one copy (a
// failure of its primary node then loses that last change). In sticky mode
// the whole write is deferred: the cache serves the newer state meanwhile.
// Writes wait in a bounded queue (Config.AsyncQueue), one per session: a
// newer save of a session replaces its queued write (coalesced), and two
// writes of one session never run at once. A save that finds the queue
// full is written synchronously, never dropped. A queued write that fails
// is logged and counted (Stats.AsyncFailed), and the session's next save
// writes its whole copy again. (In sticky mode, a session whose primary
// node fails while its write is queued is relocated by that write; its old
// id leads to it from then on, and a request that still holds the old id
// saves to it and learns the new one.) Shutdown writes what is queued; a
// process
// that dies abruptly loses, for every session with a write queued or
// running (Stats.AsyncPending), the changes since its last completed write.
//
// # Users: log out everywhere
//
// Session.SetUser links a session to a user id (at login); the user is
// stored with the session, and its save lists the session in the user's
// index, a memcached item with two copies on nodes chosen from the user id
// (rendezvous hashing), updated with CAS. From any app server,
// UserSessions lists a user's sessions and DestroyUser destroys every copy
// of all of them. The index follows the session's id (RenewID, relocation),
// is bounded (Config.MaxUserSessions, 100: the oldest logins are destroyed
// beyond it), expires with the latest deadline of its sessions and drops
// the sessions that are gone. DestroyUser deletes the index with a
// compare-and-delete, so a login racing it either is destroyed with the
// others or survives as a login after the log-out (see DestroyUser).
//
// # Encryption at rest
//
// Config.Encryption (codec.NewKeyRing: AES-256-GCM) seals every value the
// Store writes, each copy of each session and each user's index, with the
// random part of the session id as associated data, and opens every value
// it reads; the key ring's first key seals, every key opens, so keys
// rotate without logging anyone out. A value that does not open is
// treated as not found and counted in Stats.Undecryptable. The layout is
// in docs/FORMAT.md, section 4.5.
//
// # Errors
//
// Load reports ErrNotFound for an id that does not parse, is unknown,
// expired, corrupt or does not open (start a fresh session), and ErrUnavailable when the
// nodes that could hold it did not answer. Save reports ErrConflict when
// someone else saved the session since it was loaded (the newer value is
// kept), ErrTooLarge, ErrExpired and ErrDestroyed.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/latency"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultIdleTimeout is how long a session lives without requests.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultLifetime is the absolute lifetime of a session.
	DefaultLifetime = 24 * time.Hour
	// DefaultMaxSize bounds an encoded session: 1000 KiB, just under
	// memcached's default item size limit of 1 MiB (which also holds the
	// key and the item header).
	DefaultMaxSize = 1000 * 1024
)

var (
	// ErrNotFound is returned by Load for an id that does not parse, names
	// an unknown node, is unknown to memcached, has expired or whose stored
	// bytes are corrupt. Callers start a fresh session.
	ErrNotFound = errors.New("store: session not found")
	// ErrUnavailable is returned when the nodes that could hold a session
	// did not answer, so it is unknown whether the session exists.
	ErrUnavailable = errors.New("store: memcached unavailable")
	// ErrConflict is returned by Save when the session was written by
	// someone else since it was loaded; the newer value is kept.
	ErrConflict = errors.New("store: session changed concurrently")
	// ErrTooLarge is returned by Save when the encoded session exceeds
	// Config.MaxSize; the stored copy is left as it was.
	ErrTooLarge = errors.New("store: session too large")
	// ErrExpired is returned by Save for a session past its absolute deadline.
	ErrExpired = errors.New("store: session expired")
	// ErrDestroyed is returned by Save for a session that was deleted.
	ErrDestroyed = errors.New("store: session destroyed")
)

// Config configures a Store. Only Cluster is required.
type Config struct {
	// Cluster is the memcached cluster that holds the sessions.
	Cluster *replica.Cluster
	// Codec encodes attribute values. Default codec.NewCBOR().
	Codec codec.Codec
	// KeyPrefix is put before every memcached key, so that several
	// applications can share a cluster. Default "". At most 64 printable
	// ASCII characters without spaces.
	KeyPrefix string
	// IdleTimeout is how long a session lives without requests; it is the
	// memcached TTL of the session's items. Default DefaultIdleTimeout (30 min).
	IdleTimeout time.Duration
	// Lifetime is the absolute lifetime of a session from its creation.
	// Default DefaultLifetime (24 h).
	Lifetime time.Duration
	// TouchAfter is how long after this Store wrote or touched a session
	// TouchIfDue skips refreshing its idle timeout again, so that a stream
	// of read-only requests does not touch memcached on every request (the
	// session may then expire up to TouchAfter earlier than its idle
	// timeout says). Default 0: a tenth of the session's idle timeout. A
	// negative value refreshes on every TouchIfDue.
	TouchAfter time.Duration
	// MaxSize is the largest encoded session Save writes. Default
	// DefaultMaxSize (1000 KiB); raise it only with memcached's -I.
	MaxSize int
	// Lock configures the per-session lock (see package lock for defaults).
	// In sticky mode the lock is an in-process mutex per session, with
	// the same wait timeout.
	Lock lock.Config

	// Sticky turns on sticky mode (see the package doc): the Store keeps
	// the sessions it loads and saves in a local cache and serves them
	// from there, and the session lock is an in-process mutex. Use it only
	// behind a load balancer that sends every request of a session to the
	// same app server. Default false: every Load reads memcached.
	Sticky bool
	// TrustSticky, with Sticky, serves a cached session without first
	// checking (one small round trip, "mg <key> c f") that memcached holds
	// no newer version: msm's behaviour. It saves that round trip, but a
	// user whom the balancer moved to another app server and back is
	// served the stale copy this server kept (even of a session logged out
	// on another server meanwhile), and its next save fails
	// with ErrConflict instead of overwriting the newer version (with
	// AsyncWrites the save was acknowledged already: its queued write is
	// refused, counted in Stats.AsyncFailed and logged, and that change is
	// lost). Default false: check.
	TrustSticky bool
	// CacheBytes bounds the sticky-mode cache: the encoded sizes of the
	// sessions it holds (least recently used ones are dropped; a session
	// also leaves it after its idle timeout). Default DefaultCacheBytes
	// (64 MiB).
	CacheBytes int64
	// AsyncWrites makes Save return before memcached has the whole new
	// copy (see the package doc): in non-sticky mode the backup copy is
	// written in the background (the primary copy is written before Save
	// returns, so that any app server sees the change), in sticky mode the
	// whole write is. Writes are queued per session, a newer save of a
	// session replacing its queued one; Shutdown writes what is queued.
	// Default false: every save is on two nodes when Save returns.
	AsyncWrites bool
	// AsyncQueue bounds the sessions with a queued write; a save that
	// finds the queue full is written synchronously, never dropped.
	// Default DefaultAsyncQueue (4096).
	AsyncQueue int
	// AsyncWorkers is how many queued writes run at once (never two of
	// one session). Default DefaultAsyncWorkers (4).
	AsyncWorkers int
	// MaxUserSessions bounds the sessions one user's index lists (see
	// Session.SetUser and DestroyUser). A login that finds the index full
	// drops the entries of sessions that no longer exist; if it is still
	// full, the oldest logins are dropped and their sessions destroyed.
	// Default DefaultMaxUserSessions (100).
	MaxUserSessions int

	// Encryption, when not nil, encrypts every session at rest: each value
	// written (the primary and backup copies, restored and relocated
	// copies, sticky-mode and asynchronous writes) is the envelope sealed
	// by Encryption with the random part of the session id as associated
	// data, and so is the value of each user's index (associated data
	// "user:" and the hash in its key). A value copied under another id
	// does not open. Use codec.NewKeyRing or codec.ParseKeyRing (AES-256-GCM
	// with a key ring that rotates keys without logging anyone out). The
	// client flags (the version) stay in clear. A value that does not open
	// (tampered, copied, sealed with a key no longer in the ring) is
	// treated as not found and counted in Stats.Undecryptable. Every store
	// sharing sessions must use the same keys. Default nil: values are
	// stored in clear.
	Encryption codec.Sealer
	// AllowPlaintext, with Encryption, also reads values stored in clear
	// (by a store without Encryption): turn it on while encryption is
	// introduced on a cluster with live sessions, and off once every
	// session in clear has been saved again (each save seals it) or has
	// expired (one IdleTimeout, at most Lifetime). Default false: a value
	// in clear is treated as not found (counted in Stats.Undecryptable),
	// since anyone who can write to memcached could otherwise forge a
	// session in clear. Values are always written sealed.
	AllowPlaintext bool

	// FenceWindow is how stale a Store's knowledge of the fences may be
	// (see Relocation in the package doc): a load skips reading the
	// session's moved marker, a command on a second node, only while the
	// Store has read every node's fences less than FenceWindow ago and
	// found none of the session's node. It re-reads them every
	// FenceWindow/2 while it serves loads, and the first move of a session
	// off a node waits FenceWindow (plus a tenth) after fencing the node.
	// Every app server of a cluster must use the same value. Default
	// DefaultFenceWindow (1 s); at most MaxFenceWindow (10 s).
	FenceWindow time.Duration
	// AlwaysReadMarkers makes every load read the session's moved marker,
	// as versions before fences did; moves still fence their node and
	// wait. Turn it on while a cluster is upgraded from such a version
	// (its app servers move sessions without fencing), and off once none
	// runs. Default false.
	AlwaysReadMarkers bool

	// Logger receives corrupt records, failed backup writes, restores and
	// relocations. Default: logs are discarded.
	Logger *slog.Logger
}

// Store loads and saves sessions. It is safe for concurrent use; create
// one per application and share it.
type Store struct {
	cluster *replica.Cluster
	view    ops.View
	codec   codec.Codec
	prefix  string
	idle    time.Duration
	life    time.Duration
	maxSize int
	locker  *lock.Locker
	// touchEvery is Config.TouchAfter; refreshed records recent refreshes.
	touchEvery time.Duration
	refreshed  *refreshLog
	log        *slog.Logger
	stats      counters
	async      *asyncWriter // nil without Config.AsyncWrites
	cache      *cache       // sticky mode only
	local      *lock.Local  // sticky mode only: the in-process session lock
	trust      bool         // Config.TrustSticky
	maxUser    int          // Config.MaxUserSessions
	sealer     codec.Sealer // Config.Encryption; nil: values in clear
	allowPlain bool         // Config.AllowPlaintext
	fences     fences       // Config.FenceWindow and what is known of the fences
}

// counters are the store's event counts.
type counters struct {
	loads, saves, skipped, touches, touchesSkipped, conflicts, restores, relocations, drained, corrupt, backupFailures, singleCopy, staleRemoved, staleRefused, undecryptable atomic.Uint64
	loadLatency, saveLatency                                                                                                                                                  latency.Histogram
}

// Stats is a snapshot of a Store's event counts since it was created.
type Stats struct {
	// Loads counts sessions found by Load.
	Loads uint64
	// Saves counts writes of a session body.
	Saves uint64
	// SkippedSaves counts saves of unchanged sessions that wrote nothing.
	SkippedSaves uint64
	// Touches counts idle-timeout refreshes.
	Touches uint64
	// TouchesSkipped counts refreshes TouchIfDue skipped as not yet due.
	TouchesSkipped uint64
	// Conflicts counts saves refused with ErrConflict.
	Conflicts uint64
	// Restores counts sessions copied back from the backup to a primary
	// that had restarted empty.
	Restores uint64
	// Relocations counts sessions moved to a new primary after a node
	// failure, or off a draining node (see Drained).
	Relocations uint64
	// StaleRemoved counts old copies of relocated sessions found on their
	// former node (it hung and came back) and deleted, after the load that
	// found them returned the relocated copy.
	StaleRemoved uint64
	// StaleRefused counts loads refused with ErrUnavailable because the
	// session had moved and none of the copies that may be newer than the
	// one found could be read.
	StaleRefused uint64
	// Drained counts sessions moved off a node that
	// replica.Cluster.SetNodes removed (also counted in Relocations), or
	// copied to the new address of a node whose address changed.
	Drained uint64
	// Corrupt counts stored records that did not decode.
	Corrupt uint64
	// Undecryptable counts stored values that did not open with
	// Config.Encryption (changed, copied from another session id, sealed
	// with a key that is not in the ring), values in clear refused without
	// Config.AllowPlaintext, and sealed values read without
	// Config.Encryption; each was treated as not found (a user index as
	// empty) and logged.
	Undecryptable uint64
	// BackupFailures counts backup writes that failed.
	BackupFailures uint64
	// SingleCopySaves counts saves acknowledged with the session on one
	// node only, because no second node was usable.
	SingleCopySaves uint64

	// AsyncQueued counts writes queued to run after Save returned
	// (Config.AsyncWrites); AsyncCoalesced the queued writes replaced by a
	// newer save of the same session before they ran; AsyncWritten and
	// AsyncFailed the queued writes that ran, with and without success
	// (failures are logged; the next save of the session writes its whole
	// copy again); AsyncFull the saves written synchronously because the
	// queue was full.
	AsyncQueued, AsyncCoalesced, AsyncWritten, AsyncFailed, AsyncFull uint64
	// LoadLatency is the time Load and LoadLocked took (a wait for the
	// session lock included; see lock.Stats.AcquireLatency), failures
	// included. SaveLatency is the time Save took (until it returned: with
	// AsyncWrites, not the queued part).
	LoadLatency, SaveLatency latency.Snapshot

	// AsyncPending is the number of sessions with a queued or running
	// write now: an abrupt end of the process loses, for each of them,
	// the changes since its last completed write (several saves coalesce
	// into one queued write). AsyncRunning is how many writes are running.
	AsyncPending, AsyncRunning int
}

// New builds a Store from cfg.
func New(cfg Config) (*Store, error) {
	if cfg.Cluster == nil {
		return nil, errors.New("store: Config.Cluster is required")
	}
	if !validPrefix(cfg.KeyPrefix) {
		return nil, fmt.Errorf("store: key prefix %q must be at most 64 printable ASCII characters without spaces", cfg.KeyPrefix)
	}
	if cfg.FenceWindow < 0 || cfg.FenceWindow > MaxFenceWindow {
		return nil, fmt.Errorf("store: FenceWindow %v out of range (0 for the default %v, at most %v)", cfg.FenceWindow, DefaultFenceWindow, MaxFenceWindow)
	}
	if cfg.Codec == nil {
		cfg.Codec = codec.NewCBOR()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Lock.Logger == nil {
		cfg.Lock.Logger = cfg.Logger // lock lapses (lock.Config.MaxHold)
	}
	locker, err := lock.New(cfg.Cluster, cfg.Lock)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if cfg.AsyncQueue <= 0 {
		cfg.AsyncQueue = DefaultAsyncQueue
	}
	if cfg.AsyncWorkers <= 0 {
		cfg.AsyncWorkers = DefaultAsyncWorkers
	}
	if cfg.MaxUserSessions <= 0 {
		cfg.MaxUserSessions = DefaultMaxUserSessions
	}
	st := &Store{
		cluster: cfg.Cluster, view: ops.Of(cfg.Cluster), codec: cfg.Codec, prefix: cfg.KeyPrefix,
		idle: cfg.IdleTimeout, life: cfg.Lifetime, maxSize: cfg.MaxSize,
		locker: locker, log: cfg.Logger, touchEvery: cfg.TouchAfter, refreshed: newRefreshLog(),
		maxUser: cfg.MaxUserSessions, sealer: cfg.Encryption, allowPlain: cfg.AllowPlaintext,
	}
	st.fences.window, st.fences.always = cfg.FenceWindow, cfg.AlwaysReadMarkers
	if st.fences.window == 0 {
		st.fences.window = DefaultFenceWindow
	}
	if cfg.Sticky {
		if cfg.CacheBytes <= 0 {
			cfg.CacheBytes = DefaultCacheBytes
		}
		st.cache, st.local, st.trust = newCache(cfg.CacheBytes), lock.NewLocal(cfg.Lock), cfg.TrustSticky
	}
	if cfg.AsyncWrites {
		st.async = newAsyncWriter(cfg.AsyncQueue, cfg.AsyncWorkers, DefaultAsyncWriteTimeout, func(id string, err error) {
			st.log.Warn("asynchronous session write failed: the next save writes the whole copy again", "id", id, "err", err)
		})
	}
	return st, nil
}

// Shutdown makes later saves synchronous, writes what the asynchronous
// writes queued (Config.AsyncWrites) and waits for them, or until ctx
// ends (the error then says how many were not done). Call it when the app
// server stops, after the HTTP server stopped serving; without
// AsyncWrites it returns nil at once. The cluster stays open.
func (st *Store) Shutdown(ctx context.Context) error {
	if st.async == nil {
		return nil
	}
	failedBefore := st.async.failed.Load()
	err := st.async.close(ctx)
	if n := st.async.failed.Load() - failedBefore; n > 0 {
		err = errors.Join(err, fmt.Errorf("store: %d queued writes failed while shutting down (logged)", n))
	}
	if n := st.CacheStats().Unwritten; n > 0 {
		st.log.Warn("sessions whose asynchronous write failed are not in memcached: they are lost with this process", "count", n)
	}
	return err
}

// Flush waits until no write is queued or running (Config.AsyncWrites),
// or until ctx ends; saves go on being queued meanwhile, so under steady
// traffic bound it with ctx (or use Shutdown, which stops queueing).
func (st *Store) Flush(ctx context.Context) error {
	if st.async == nil {
		return nil
	}
	return st.async.flush(ctx)
}

func validPrefix(p string) bool {
	if len(p) > 64 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Cluster returns the cluster the store writes to.
func (st *Store) Cluster() *replica.Cluster { return st.cluster }

// Stats returns the store's event counts.
func (st *Store) Stats() Stats {
	c := &st.stats
	s := Stats{
		Loads: c.loads.Load(), Saves: c.saves.Load(), SkippedSaves: c.skipped.Load(),
		Touches: c.touches.Load(), TouchesSkipped: c.touchesSkipped.Load(), Conflicts: c.conflicts.Load(), Restores: c.restores.Load(),
		Relocations: c.relocations.Load(), Drained: c.drained.Load(), Corrupt: c.corrupt.Load(), BackupFailures: c.backupFailures.Load(),
		SingleCopySaves: c.singleCopy.Load(), StaleRemoved: c.staleRemoved.Load(), StaleRefused: c.staleRefused.Load(),
		Undecryptable: c.undecryptable.Load(), LoadLatency: c.loadLatency.Snapshot(), SaveLatency: c.saveLatency.Snapshot(),
	}
	if w := st.async; w != nil {
		s.AsyncQueued, s.AsyncCoalesced, s.AsyncWritten = w.queued.Load(), w.coalesced.Load(), w.written.Load()
		s.AsyncFailed, s.AsyncFull = w.failed.Load(), w.full.Load()
		s.AsyncPending, s.AsyncRunning = w.counts()
	}
	return s
}

// MemcachedKeys returns the memcached keys of session id: the primary copy, the
// backup copy and the lock, each with the key prefix.
func (st *Store) MemcachedKeys(id string) (session, backup, lockKey string) {
	return st.key(id), st.bkey(id), st.lkey(id)
}

// key, bkey and lkey return one of the keys of Keys each.
func (st *Store) key(id string) string  { return st.prefix + id }
func (st *Store) bkey(id string) string { return st.prefix + "bak:" + id }
func (st *Store) lkey(id string) string { return st.prefix + "lock:" + id }

// Placement returns the node that holds the primary copy of session id
// and the node its next save writes the backup copy to ("" when no other
// node is healthy). ok is false for an id that does not parse or names an
// unknown node.
func (st *Store) Placement(id string) (primary, backup string, ok bool) {
	_, node, ok := st.parse(id)
	if !ok {
		return "", "", false
	}
	return node, st.view.BackupOf(node), true
}

// ValidID reports whether id is a well-formed session id naming a
// configured node. It makes no memcached call; Load answers ErrNotFound for
// every id it rejects.
func (st *Store) ValidID(id string) bool {
	_, _, ok := st.parse(id)
	return ok
}

// parse validates id and checks that its node is configured.
func (st *Store) parse(id string) (base, node string, ok bool) {
	base, node, ok = splitID(id)
	if !ok || !st.view.Has(node) {
		return "", "", false
	}
	return base, node, true
}

// NewSession returns a new, unsaved session with a fresh id on a healthy node.
// Nothing is written until Save. It fails with ErrUnavailable when every
// node's breaker is open.
func (st *Store) NewSession(ctx context.Context) (*Session, error) {
	node, err := st.view.PickNew()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	now := time.Now()
	return &Session{
		codec:    st.codec,
		sealer:   st.sealer,
		id:       makeID(newIDBase(), node),
		created:  now,
		deadline: now.Add(st.life),
		idle:     st.idle,
		isNew:    true,
	}, nil
}

// ttl returns the memcached exptime for a session: its idle timeout,
// shortened to its absolute deadline, plus one second. memcached's clock
// ticks once a second and expires an item at the first tick at or after
// now+exptime, so without that second an item could live up to a second
// less than its idle timeout. ok is false once the deadline has passed.
func ttl(idle time.Duration, deadline, now time.Time) (int32, bool) {
	d := idle
	if !deadline.IsZero() {
		left := deadline.Sub(now)
		if left <= 0 {
			return 0, false
		}
		d = min(d, left)
	}
	return replica.Expiration(d+time.Second, now), true
}
