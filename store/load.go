package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

// Load returns the session with the given id.
//
// It reads the primary copy from the node named in the id. When that node
// answers "miss" but the backup copy exists (the node restarted empty), the
// session is restored to the primary under the same id. When the primary
// node is down, the backup copy is read and the session is relocated: it
// gets the id of the same random part with the backup node's suffix
// (Session.ID changes, Session.PreviousID tells the old one), is written as
// primary there and gets a new backup.
//
// Load returns ErrNotFound for an id that does not parse, names an unknown
// node, is unknown, expired or corrupt: no memcached call is made for an id
// that does not parse. It returns ErrUnavailable when no node that could
// hold the session answered, and when the primary node times out (it may
// be hung, and come back with the session) while no backup copy is found;
// a primary that refuses connections has lost its data, and the session is
// then not found.
func (st *Store) Load(ctx context.Context, id string) (*Session, error) {
	defer st.stats.loadLatency.Since(time.Now())
	s, err := st.load(ctx, id)
	if err == nil {
		st.followUser(ctx, s, id)
	}
	return s, err
}

// load is Load without its latency record (for callers that record their
// own).
func (st *Store) load(ctx context.Context, id string) (*Session, error) {
	if st.cache != nil {
		return st.loadSticky(ctx, id)
	}
	base, node, ok := st.parse(id)
	if !ok {
		return nil, ErrNotFound
	}
	return st.loadRemote(ctx, id, base, node)
}

// loadRemote is Load reading memcached, for an id that parsed into base
// and node.
func (st *Store) loadRemote(ctx context.Context, id, base, node string) (*Session, error) {
	if st.view.Draining(node) {
		return st.loadDraining(ctx, id, base, node)
	}
	key := st.key(id)
	it, movedTo, err := st.getPrimary(ctx, id, node, key)
	switch {
	case err == nil && movedTo != "":
		return st.followMoved(ctx, id, base, node, &it, movedTo)
	case err == nil:
		return st.fromPrimary(ctx, id, base, node, &it)
	case errors.Is(err, ops.ErrMiss) && movedTo != "" && !parseMarker(movedTo).moving:
		// Relocated, and the old copy is gone: load the new id rather
		// than restore an old backup copy as a second line.
		s, err := st.loadMovedTo(ctx, parseMarker(movedTo).id)
		switch {
		case err == nil:
			s.oldID = id
			return s, nil
		case errors.Is(err, ErrNotFound):
			return nil, err
		default:
			st.stats.staleRefused.Add(1)
			return nil, fmt.Errorf("%w: %s was relocated, and its new copy cannot be read: %w", ErrUnavailable, id, err)
		}
	case errors.Is(err, ops.ErrMiss):
		return st.restore(ctx, id, node, key, st.bkey(id))
	case errors.Is(err, replica.ErrNodeDown):
		return st.relocate(ctx, id, base, node, st.bkey(id), err)
	default:
		return nil, fmt.Errorf("store: load %s: %w", id, err)
	}
}

// fromPrimary turns the primary copy of id, read from node, into a
// session; when the node had an outage lately, a relocated copy at least
// as new is returned instead (see newerMoved).
func (st *Store) fromPrimary(ctx context.Context, id, base, node string, it *ops.Item) (*Session, error) {
	s, err := st.decode(id, it)
	if err != nil {
		return nil, err
	}
	if moved := st.newerMoved(ctx, s, base, node); moved != nil {
		s = moved
	}
	st.stats.loads.Add(1)
	return s, nil
}

// decode turns a stored item into a session; corrupt, undecryptable
// (Config.Encryption) or expired records give ErrNotFound. Corrupt and
// undecryptable ones are counted and logged.
func (st *Store) decode(id string, it *ops.Item) (*Session, error) {
	rec, err := st.record(id, it.Value)
	if err != nil {
		st.noteUnreadable(it.Key, err)
		return nil, fmt.Errorf("%w: %s: %w", ErrNotFound, id, err)
	}
	return st.fromRecord(id, rec, it.CAS)
}

// fromRecord builds the session id from a decoded record with the CAS id
// of its item; a record past its absolute deadline gives ErrNotFound. A
// record without idle timeout (0: unset, or written by another program)
// gets the store's, so that its items are not written with a TTL of 0.
func (st *Store) fromRecord(id string, rec *codec.Record, casID uint64) (*Session, error) {
	if !rec.Deadline.IsZero() && !time.Now().Before(rec.Deadline) {
		return nil, fmt.Errorf("%w: %s: past its absolute lifetime", ErrNotFound, id)
	}
	idle := rec.IdleTimeout
	if idle <= 0 {
		idle = st.idle
	}
	return &Session{
		codec: st.codec, sealer: st.sealer, id: id, created: rec.Created, deadline: rec.Deadline,
		idle: idle, version: rec.Version, attrs: rec.Attrs, casID: casID, // Attrs is never nil
		user: rec.User, linkedUser: rec.User, linkedID: linkedAs(rec.User, id),
	}, nil
}

// errIncomplete marks a findBackup that found a copy while a candidate
// that may hold a newer one did not answer (it wraps ErrUnavailable).
var errIncomplete = errors.New("a node that may hold a newer copy did not answer")

// findBackup reads the backup copy of a session whose primary is node from
// the nodes after it in list order, skipping the ones whose breaker is
// open. It returns the node that had it, ErrNotFound when every candidate
// missed or has crashed (refuses connections), and ErrUnavailable when a
// candidate that may hold a copy did not answer (with the copy found, if
// any, and errIncomplete: a relocated copy found wins regardless).
//
// With base set, each candidate is also asked, in the same round trip, for the
// session relocated there (id base-<candidate>) by a parallel request or an
// earlier failure; moved then reports that the returned session is that
// primary copy, under its new id. Every reachable candidate is read and the
// highest version wins (a moved copy on a tie, since it needs no write):
// a node that hung and came back may hold an old copy of either kind.
func (st *Store) findBackup(ctx context.Context, id, base, node, bkey string) (best *Session, from string, moved bool, err error) {
	answered := false
	var lastErr error
	consider := func(s *Session, cand string, isMoved bool) {
		if best == nil || s.version > best.version || s.version == best.version && isMoved && !moved {
			best, from, moved = s, cand, isMoved
		}
	}
	unknown := false // a candidate that may hold a copy did not answer
	for _, cand := range st.view.BackupCandidates(node) {
		if !st.view.Healthy(cand) {
			unknown = unknown || !st.view.ConnRefused(cand)
			continue
		}
		keys := []string{bkey}
		movedID := ""
		if base != "" {
			movedID = makeID(base, cand)
			movedKey := st.key(movedID)
			keys = append(keys, movedKey)
		}
		items, err := ops.GetMulti(ctx, st.view, cand, keys)
		if err != nil {
			lastErr = err
			unknown = unknown || !st.view.ConnRefused(cand)
			continue
		}
		answered = true
		if len(keys) > 1 {
			if it, ok := items[keys[1]]; ok {
				if s, err := st.decode(movedID, it); err == nil {
					s.oldID = id
					consider(s, cand, true)
				}
			}
		}
		if it, ok := items[bkey]; ok {
			if s, err := st.decode(id, it); err == nil {
				s.casID = 0 // the CAS id of the backup copy means nothing on the primary
				consider(s, cand, false)
			}
		}
	}
	if best != nil && unknown && !moved {
		// A candidate that did not answer may hold a newer copy (a
		// backup written elsewhere while this one's node was away is
		// left behind, older): using this one could lose acknowledged
		// writes.
		return best, from, moved, fmt.Errorf("%w: %s: %w", ErrUnavailable, id, errIncomplete)
	}
	if best != nil {
		return best, from, moved, nil
	}
	if answered && !unknown {
		// Every candidate answered "miss" or has crashed (lost its memory).
		return nil, "", false, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if lastErr == nil {
		lastErr = replica.ErrNoHealthyNode
	}
	return nil, "", false, fmt.Errorf("%w: backup of %s: %w", ErrUnavailable, id, lastErr)
}

// newerMoved guards against a node that failed recently and came back
// with the copies it had: while a session's node is in that window (one
// idle timeout after its last outage, as seen by this Store), the nodes
// the session may have been relocated to are asked for a copy under
// base-<node>, and one at least as new found there is returned instead of s.
// Otherwise (the usual case) it costs nothing and returns nil.
func (st *Store) newerMoved(ctx context.Context, s *Session, base, node string) *Session {
	if !st.view.OutageWithin(node, s.IdleTimeout()) {
		return nil
	}
	var best *Session
	for _, cand := range st.view.BackupCandidates(node) {
		if !st.view.Healthy(cand) {
			continue
		}
		movedID := makeID(base, cand)
		key := st.key(movedID)
		it, err := ops.Get(ctx, st.view, cand, key)
		if err != nil {
			continue
		}
		m, err := st.decode(movedID, &it)
		// A tie goes to the moved copy: relocation writes the same version.
		if err != nil || m.version < s.version || best != nil && m.version <= best.version {
			continue
		}
		m.oldID = s.id
		best = m
	}
	if best != nil {
		st.log.Warn("stale copy on a node that failed recently: loading the relocated one", "id", s.id, "to", best.id)
	}
	return best
}

// restore handles a primary that answered "miss": when a backup copy
// exists, it is written back to the primary under the same id. When the
// session was relocated to another node meanwhile, that copy is returned
// under its new id instead.
func (st *Store) restore(ctx context.Context, id, node, key, bkey string) (*Session, error) {
	base, _, _ := splitID(id)
	s, _, moved, err := st.findBackup(ctx, id, base, node, bkey)
	if moved {
		// A request with an old id after the session moved away from this
		// node (which has since restarted empty): return the moved copy.
		st.stats.loads.Add(1)
		return s, nil
	}
	if err != nil {
		if errors.Is(err, ErrUnavailable) && !errors.Is(err, errIncomplete) {
			// The primary answered miss and no backup could be read: the
			// session is not there as far as anyone can tell.
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return nil, err
	}
	if err := st.putPrimary(ctx, s, node, key, false); err != nil {
		return nil, fmt.Errorf("store: restore %s: %w", id, err)
	}
	st.stats.restores.Add(1)
	st.stats.loads.Add(1)
	st.log.Info("session restored from backup to its primary", "id", id, "node", node)
	return s, nil
}

// relocate handles a primary that is down: the backup copy becomes the
// primary copy of id base-<backup node>, with a new backup.
func (st *Store) relocate(ctx context.Context, id, base, node, bkey string, cause error) (*Session, error) {
	s, from, moved, err := st.findBackup(ctx, id, base, node, bkey)
	if moved {
		st.stats.loads.Add(1)
		return s, nil // a parallel request relocated it already
	}
	if errors.Is(err, ErrNotFound) && !st.view.ConnRefused(node) {
		// The primary timed out rather than refused: it may come back with
		// the session, so a missing backup proves nothing. Answer
		// "unavailable" (retry later) rather than start a fresh session.
		st.log.Warn("primary not answering and no backup copy found", "id", id, "cause", cause)
		return nil, fmt.Errorf("%w: %s: primary not answering, no backup copy: %w", ErrUnavailable, id, cause)
	}
	if err != nil {
		return nil, err
	}
	// Fence the node first (fence.go): loads elsewhere then read the
	// markers written from here on.
	if until, ok := s.expiresAt(); !ok {
		return nil, fmt.Errorf("%w: %s: past its absolute lifetime", ErrNotFound, id)
	} else if err := st.fence(ctx, node, until); err != nil {
		return nil, err
	}
	// Mark the old id as moving before the copy that is moved is final: an
	// app server that still reaches the old node and saves there either
	// wrote its backup copy before the mark (then the second read below
	// sees that version) or reads the mark in its save's backup batch and
	// waits for the relocation's end (savedOverMarker). No save is
	// acknowledged on the copy left behind. The marks are removed again
	// when the relocation does not happen.
	marks := st.markMovingStart(ctx, id, node)
	s, from, moved, err = st.findBackup(ctx, id, base, node, bkey)
	if moved || err != nil {
		st.markMovingEnd(context.WithoutCancel(ctx), id, marks)
	}
	if moved {
		st.stats.loads.Add(1)
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if err := st.moveTo(ctx, s, base, node, from, false); err != nil {
		st.markMovingEnd(context.WithoutCancel(ctx), id, marks)
		return nil, fmt.Errorf("store: relocate %s to %s: %w", id, from, err)
	}
	st.stats.loads.Add(1)
	st.log.Warn("session relocated after its primary failed", "from", id, "to", s.ID(), "cause", cause)
	return s, nil
}

// moveTo makes the copy of s on node target the primary copy of the id
// base-<target>, after node dead failed: it writes s there (higher version
// wins), writes a backup copy on the next healthy node other than dead,
// and deletes the old backup key on target. On return s has its new id.
//
// With saving set (a save whose primary failed), a copy already at target
// with the same or a higher version is a conflict (ErrConflict) rather than
// the copy to adopt, since s holds changes of its own.
func (st *Store) moveTo(ctx context.Context, s *Session, base, dead, target string, saving bool) error {
	if until, ok := s.expiresAt(); !ok {
		return fmt.Errorf("%w: %s: past its absolute lifetime", ErrNotFound, s.ID())
	} else if err := st.fence(ctx, dead, until); err != nil {
		return err
	}
	oldID := s.ID()
	newID := makeID(base, target)
	newKey, newBkey, oldBkey := st.key(newID), st.bkey(newID), st.bkey(oldID)
	s.setID(newID, true)
	if err := st.putPrimary(ctx, s, target, newKey, saving); err != nil {
		return err
	}
	st.view.MarkOutage(dead) // it may come back with the old copy
	if exp, ok := s.exptime(); ok {
		// A load of oldID that reaches dead's old copy finds these.
		st.writeMarkers(ctx, oldID, dead, newID, s.Version(), exp)
	}
	if b := st.view.BackupOf(target, dead); b != "" {
		raw, version, _, err := s.encode(0)
		if exp, ok := s.exptime(); ok && err == nil {
			if _, err := ops.Store(ctx, st.view, b, meta.ModeSet, &ops.Item{Key: newBkey, Value: raw, Flags: flagsOf(version)}, exp); err != nil {
				st.stats.backupFailures.Add(1)
				st.log.Warn("backup write failed", "id", newID, "node", b, "err", err)
			}
		}
	}
	_ = ops.Delete(ctx, st.view, target, oldBkey, 0) // its content is now the primary copy
	st.stats.relocations.Add(1)
	return nil
}

// putPrimary writes s (as loaded, same version) as the primary copy under
// key on node with add. When a copy is there already (a concurrent request
// restored or relocated it first, or a node came back with an old copy),
// the higher version wins: a lower stored version is replaced with cas, an
// equal or higher one is loaded instead. On return s carries the CAS id of
// the primary copy.
//
// With saving set, an equal or higher stored version is ErrConflict instead.
func (st *Store) putPrimary(ctx context.Context, s *Session, node, key string, saving bool) error {
	exp, ok := s.exptime()
	if !ok {
		return ErrNotFound
	}
	raw, version, _, err := s.encode(0)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 3; attempt++ {
		item := &ops.Item{Key: key, Value: raw, Flags: flagsOf(version)}
		cas, err := ops.Store(ctx, st.view, node, meta.ModeAdd, item, exp)
		if err == nil {
			s.setCAS(cas)
			return nil
		}
		if !errors.Is(err, ops.ErrNotStored) {
			return err
		}
		it, gerr := ops.Get(ctx, st.view, node, key)
		if errors.Is(gerr, ops.ErrMiss) {
			continue // expired between add and get: add again
		}
		if gerr != nil {
			return gerr
		}
		there, derr := st.record(s.ID(), it.Value)
		if derr == nil && there.Version >= version && saving {
			return fmt.Errorf("%w: %s: version %d is there already", ErrConflict, key, there.Version)
		}
		if derr == nil && there.Version >= version {
			cur, err := st.fromRecord(s.ID(), there, it.CAS)
			if err != nil {
				return err
			}
			s.adopt(cur)
			return nil
		}
		// Older or corrupt copy: replace it if nobody changed it meanwhile.
		item.CAS = it.CAS
		cas, cerr := ops.Store(ctx, st.view, node, meta.ModeSet, item, exp)
		if cerr == nil {
			s.setCAS(cas)
			return nil
		}
		if !errors.Is(cerr, ops.ErrCASConflict) && !errors.Is(cerr, ops.ErrMiss) {
			return cerr
		}
	}
	return fmt.Errorf("%w: %s kept changing while being restored", ErrConflict, key)
}
