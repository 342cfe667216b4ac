package store

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/lock"
)

// DefaultCacheBytes bounds the sticky-mode cache (Config.CacheBytes).
const DefaultCacheBytes = 64 << 20

// entryOverhead is what a cached session costs besides its encoded bytes
// (the entry, the map and list bookkeeping), counted against CacheBytes.
const entryOverhead = 256

// cache is the sticky-mode session cache of a Store: the latest state of
// the sessions this app server served, least recently used first out,
// bounded by the encoded sizes of its sessions and by their idle timeouts.
// An entry with an asynchronous write queued or running is newer than
// memcached and is never dropped to make room.
type cache struct {
	max int64

	mu      sync.Mutex
	entries map[string]*entry
	lru     list.List // of *entry, most recently used first
	bytes   int64
	// moves maps the id of a session an asynchronous write relocated to
	// its new id, while the entry lives: requests that still carry the old
	// id reach the entry (and learn the new id) instead of starting a
	// second one under the old id.
	moves map[string]string

	hits, misses, probes, stale, evictions uint64
}

// entry is one cached session.
type entry struct {
	id      string
	snap    *Session // the latest state, never handed out (sessions get clones)
	cas     uint64   // CAS id of memcached's primary copy, 0 when none is known
	written bool     // memcached has a copy of this session (its CAS is cas)
	pending bool     // an asynchronous write of snap is queued or running
	failed  bool     // the last asynchronous write failed: snap is newer than memcached
	// unsure is the version of a write that failed after it may have
	// reached the primary (0: none): the next write first checks whether
	// memcached holds it, to know the CAS to write against.
	unsure    uint64
	size      int64     // counted against cache.max
	expires   time.Time // idle timeout after the last use
	elem      *list.Element
	movedFrom []string // ids in cache.moves that lead here
}

func newCache(max int64) *cache {
	return &cache{max: max, entries: make(map[string]*entry), moves: make(map[string]string)}
}

// cost is what s costs in the cache: about its encoded size (its
// attribute names and values) plus the entry's bookkeeping.
func (s *Session) cost() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(len(s.id)) + entryOverhead
	for k, v := range s.attrs {
		n += int64(len(k) + len(v))
	}
	return n
}

// get returns a clone of the cached session id with its CAS and whether
// memcached may be behind it (a write queued, running or failed); ok is
// false when id is not cached or its idle timeout passed.
func (c *cache) get(id string, now time.Time) (s *Session, cas uint64, ahead, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[c.resolveLocked(id)]
	if e == nil {
		c.misses++
		return nil, 0, false, false
	}
	if !now.Before(e.expires) && !e.pending {
		c.removeLocked(e)
		c.misses++
		return nil, 0, false, false
	}
	c.hits++
	c.lru.MoveToFront(e.elem)
	e.expires = now.Add(e.snap.idle)
	return e.snap.clone(), e.cas, e.pending || e.failed || !e.written, true
}

// put caches s (a state memcached has, with CAS cas) under its id and
// reports whether it fits; a session that does not fit is not cached (and
// a cached older state of it is dropped).
func (c *cache) put(s *Session, cas uint64, now time.Time) bool {
	snap := s.clone()
	size := snap.cost()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[snap.id]
	if e != nil && (e.pending || e.failed) {
		return false // the entry holds a newer state than memcached's
	}
	return c.setLocked(snap.id, snap, size, now, func(e *entry) {
		e.cas, e.written, e.failed, e.unsure = cas, true, false, 0
	})
}

// putPending caches snap as the latest state of id with an asynchronous
// write of it about to be queued: the entry stays until the write ran.
// base is the version the saving request loaded: when the cached state
// moved past it meanwhile (a concurrent request without the lock saved
// first) nothing is cached and conflict is true, the local counterpart of
// memcached's compare-and-set. ok is false when snap does not fit.
//
// When id has no entry (evicted since the request loaded it), the new
// entry starts from what the request loaded: memcached's copy has CAS
// loadedCAS, or none when isNew.
func (c *cache) putPending(id string, snap *Session, base, loadedCAS uint64, isNew bool, now time.Time) (ok, conflict bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e != nil && e.snap.version != base {
		return false, true
	}
	fresh := e == nil
	return c.setLocked(id, snap, snap.cost(), now, func(e *entry) {
		e.pending = true
		if fresh {
			e.cas, e.written = loadedCAS, !isNew
		}
	}), false
}

// setLocked stores snap under id with size, making room by dropping least
// recently used entries without a pending write; it reports false (and
// drops the old entry of id unless it is pending) when that is not
// enough. Callers hold c.mu.
func (c *cache) setLocked(id string, snap *Session, size int64, now time.Time, mark func(*entry)) bool {
	e := c.entries[id]
	old := int64(0)
	if e != nil {
		old = e.size
	}
	for c.bytes-old+size > c.max {
		victim := c.lruVictimLocked(id)
		if victim == nil {
			if e != nil && !e.pending {
				c.removeLocked(e)
			}
			return false
		}
		c.removeLocked(victim)
		c.evictions++
	}
	if e == nil {
		e = &entry{id: id}
		e.elem = c.lru.PushFront(e)
		c.entries[id] = e
	} else {
		c.lru.MoveToFront(e.elem)
	}
	c.bytes += size - e.size
	e.snap, e.size, e.expires = snap, size, now.Add(snap.idle)
	mark(e)
	return true
}

// lruVictimLocked returns the least recently used entry other than id
// that may be dropped (no pending write, no failed one: both hold a state
// memcached does not have), nil when there is none.
func (c *cache) lruVictimLocked(id string) *entry {
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*entry); !e.pending && !e.failed && e.id != id {
			return e
		}
	}
	return nil
}

func (c *cache) removeLocked(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.id)
	c.bytes -= e.size
	for _, from := range e.movedFrom {
		delete(c.moves, from)
	}
}

// resolveLocked returns the id the session id lives under now (id unless
// an asynchronous write relocated it). Callers hold c.mu.
func (c *cache) resolveLocked(id string) string {
	if to, ok := c.moves[id]; ok {
		return to
	}
	return id
}

// resolve is resolveLocked for callers without the lock.
func (c *cache) resolve(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resolveLocked(id)
}

// remove drops id (destroyed, renewed, relocated or stale).
func (c *cache) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[id]; e != nil {
		c.removeLocked(e)
	}
}

// forWrite returns what an asynchronous write of id must write: a clone
// of the latest state and memcached's CAS id and whether memcached has a
// copy; ok is false when the entry is gone (destroyed).
func (c *cache) forWrite(id string) (s *Session, cas uint64, written bool, unsure uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil {
		return nil, 0, false, 0, false
	}
	return e.snap.clone(), e.cas, e.written, e.unsure, true
}

// wrote records the end of an asynchronous write of id's state of
// version: on success memcached's new CAS id; the entry stays pending when
// a newer state was cached meanwhile (its write is queued). A failed
// write leaves the entry ahead of memcached (and unsure whether the
// primary got it); a conflict drops it, as a synchronous save's conflict
// does: memcached's version wins.
func (c *cache) wrote(id string, version, cas uint64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil {
		return
	}
	newer := e.snap.version > version
	switch {
	case errors.Is(err, ErrConflict) || errors.Is(err, ErrDestroyed):
		c.removeLocked(e) // a newer state's queued write finds nothing
		return
	case err != nil:
		e.failed, e.unsure = true, version
	default:
		e.cas, e.written, e.failed, e.unsure = cas, true, false, 0
	}
	e.pending = newer
}

// moved records that an asynchronous write relocated session id to newID
// (its primary node failed) with CAS cas: the entry now lives under
// newID. It reports whether a newer state is pending, whose write must be
// queued under newID.
func (c *cache) moved(id, newID string, version, cas uint64) (pending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil {
		return false
	}
	delete(c.entries, id)
	if old := c.entries[newID]; old != nil {
		c.removeLocked(old)
	}
	e.id = newID
	e.snap.setID(newID, false)
	c.entries[newID] = e
	c.moves[id] = newID
	e.movedFrom = append(e.movedFrom, id)
	e.cas, e.written, e.failed, e.unsure = cas, true, false, 0
	e.pending = e.snap.version > version
	return e.pending
}

// CacheStats describes the sticky-mode cache (Config.Sticky).
type CacheStats struct {
	// Sessions and Bytes are what the cache holds now; MaxBytes is its
	// bound (Config.CacheBytes).
	Sessions        int
	Bytes, MaxBytes int64
	// Hits and Misses count lookups; Probes the version checks sent for
	// hits (none with Config.TrustSticky); Stale the hits memcached had a
	// newer version of (reloaded); Evictions the sessions dropped to make
	// room.
	Hits, Misses, Probes, Stale, Evictions uint64
	// Unwritten counts the cached sessions whose last asynchronous write
	// failed: newer than memcached until their next save writes them.
	Unwritten int
}

// CacheStats returns the state of the sticky-mode cache; zero without
// Config.Sticky.
func (st *Store) CacheStats() CacheStats {
	c := st.cache
	if c == nil {
		return CacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	unwritten := 0
	for _, e := range c.entries {
		if e.failed {
			unwritten++
		}
	}
	return CacheStats{
		Sessions: len(c.entries), Bytes: c.bytes, MaxBytes: c.max,
		Hits: c.hits, Misses: c.misses, Probes: c.probes, Stale: c.stale, Evictions: c.evictions,
		Unwritten: unwritten,
	}
}

// clone returns a copy of s's stored state that shares nothing mutable
// with s (attribute values are never changed in place), without lock.
func (s *Session) clone() *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Session{
		codec: s.codec, sealer: s.sealer, id: s.id, created: s.created, deadline: s.deadline, idle: s.idle,
		version: s.version, attrs: maps.Clone(s.attrs), casID: s.casID,
		user: s.user, linkedUser: s.linkedUser, linkedID: s.linkedID,
	}
}

// loadSticky is Load in sticky mode: the cached session when there is
// one that memcached has no newer version of, else Load's memcached read
// (with its failover), cached from then on.
func (st *Store) loadSticky(ctx context.Context, id string) (*Session, error) {
	base, node, ok := st.parse(id)
	if !ok {
		return nil, ErrNotFound
	}
	now := time.Now()
	if s, cas, ahead, ok := st.cache.get(id, now); ok {
		at := s.ID() // id, or where a queued write relocated it
		if atBase, atNode, _ := splitID(at); st.view.Draining(atNode) {
			return st.moveOffDraining(ctx, id, at, atBase, atNode)
		}
		if ahead || st.trust {
			s.casID = cas
			st.stats.loads.Add(1)
			return s, nil
		}
		_, atNode, _ := splitID(at)
		there, moved := st.probe(ctx, at, atNode, st.key(at))
		st.cache.mu.Lock()
		st.cache.probes++
		if there == cas && !moved {
			st.cache.mu.Unlock()
			s.casID = cas
			st.stats.loads.Add(1)
			return s, nil
		}
		st.cache.stale++
		st.cache.mu.Unlock()
	}
	s, err := st.loadRemote(ctx, id, base, node)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			st.cache.remove(id)
		}
		return nil, err
	}
	st.cacheLoaded(id, s)
	return s, nil
}

// moveOffDraining loads a cached session whose node is being drained
// (at is where it lives, id what the request asked for): its queued write
// runs first, so that memcached has the newest version, then it is moved
// off the node as loadDraining does and cached under its new id.
func (st *Store) moveOffDraining(ctx context.Context, id, at, base, node string) (*Session, error) {
	if st.async != nil {
		if err := st.async.waitFor(ctx, at); err != nil {
			return nil, fmt.Errorf("%w: %s: queued write before moving it off a draining node: %w", ErrUnavailable, id, err)
		}
	}
	s, err := st.loadRemote(ctx, at, base, node)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			st.cache.remove(id)
			st.cache.remove(at)
		}
		return nil, err
	}
	if at != id && s.ID() != at {
		st.cache.remove(at)
	}
	st.cacheLoaded(id, s)
	return s, nil
}

// cacheLoaded caches a session read from memcached under its id (which
// differs from id when it was relocated).
func (st *Store) cacheLoaded(id string, s *Session) {
	if s.ID() != id {
		st.cache.remove(id)
	}
	st.cache.put(s, s.cas(), time.Now())
}

// lockSticky takes the in-process lock of session id (by its random part,
// which relocation keeps).
func (st *Store) lockSticky(ctx context.Context, id string) (*lock.LocalLock, error) {
	base, _, ok := splitID(id)
	if !ok {
		return nil, ErrNotFound
	}
	lk, err := st.local.Acquire(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", id, err)
	}
	return lk, nil
}

// saveStickyAsync is Save in sticky mode with AsyncWrites: s becomes the
// cached state and its memcached write is queued (after the session's
// earlier queued write, replacing one not yet started). raw, version and
// changes are what Save encoded. When the cache or the queue has no room,
// the write runs now, still after the session's earlier queued write.
func (st *Store) saveStickyAsync(ctx context.Context, s *Session, version, changes uint64) error {
	if to := st.cache.resolve(s.ID()); to != s.ID() {
		s.setID(to, true) // relocated by a queued write: the client gets the new id
	}
	s.mu.Lock()
	id, loadedCAS, isNew := s.id, s.casID, s.isNew
	s.mu.Unlock()
	snap := s.clone()
	snap.version = version
	write := st.stickyWrite(id)
	fits, conflict := st.cache.putPending(id, snap, version-1, loadedCAS, isNew, time.Now())
	if conflict {
		st.stats.conflicts.Add(1)
		return fmt.Errorf("%w: %s", ErrConflict, id)
	}
	if !fits {
		// No room: write through, after any earlier queued write of id,
		// against the CAS that write left.
		if err := st.async.waitFor(ctx, id); err != nil {
			return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
		}
		if _, cas, written, _, ok := st.cache.forWrite(id); ok && written {
			s.setCAS(cas)
		}
		err := st.save(ctx, s)
		st.cache.remove(id) // the cached state is older (or gone)
		if err == nil {
			st.cache.put(s, s.cas(), time.Now()) // when it fits now
		}
		return err
	}
	if !st.async.enqueue(id, write) {
		if err := st.async.waitFor(ctx, id); err != nil {
			return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
		}
		if err := write(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.version, s.saved, s.isNew = version, changes, false
	s.mu.Unlock()
	return nil
}

// stickyWrite returns the queued write of session id in sticky mode: the
// whole Save (both copies, with its failover) of the latest cached state,
// against the CAS id of memcached's copy as the previous write left it.
func (st *Store) stickyWrite(id string) func(context.Context) error {
	return func(ctx context.Context) error {
		s, cas, written, unsure, ok := st.cache.forWrite(id)
		if !ok {
			return nil // destroyed meanwhile
		}
		if unsure != 0 {
			cas, written = st.reconcileCAS(ctx, id, cas, written, unsure)
		}
		version := s.version
		s.version--   // Save writes version+1
		s.changes = 1 // modified
		s.isNew = !written
		s.casID = cas
		err := st.save(ctx, s)
		if newID := s.ID(); err == nil && newID != id {
			st.log.Warn("session relocated by an asynchronous write: its next request finds it through the old id", "from", id, "to", newID)
			if st.cache.moved(id, newID, version, s.cas()) {
				// A newer state waits: write it where the session lives now.
				if next := st.stickyWrite(newID); !st.async.enqueue(newID, next) {
					return next(ctx)
				}
			}
			return nil
		}
		st.cache.wrote(id, version, s.cas(), err)
		return err
	}
}

// reconcileCAS returns the CAS id to write session id against, and
// whether memcached has a copy, after a write of version unsure failed,
// maybe after the primary took it (a new session's add included): the
// primary's CAS when it holds that version (client flags), else cas and
// written as before that write. A wrong guess ends in ErrConflict.
// (Another server's save of the same version number in between would be
// taken for ours: the flags hold only the version.)
func (st *Store) reconcileCAS(ctx context.Context, id string, cas uint64, written bool, unsure uint64) (uint64, bool) {
	_, node, ok := splitID(id)
	if !ok {
		return cas, written
	}
	resp, err := ops.Do(ctx, st.view, node, ops.VersionRequest(st.key(id)))
	if err == nil && resp.Status == meta.StatusOK && resp.CAS != cas && resp.Flags == flagsOf(unsure) {
		return resp.CAS, true
	}
	return cas, written
}
