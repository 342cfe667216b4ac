package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

// Save writes s if it is new or was modified since it was loaded or last
// saved; an unchanged session sends nothing (use Touch to refresh its idle
// timeout). The primary and the backup copy are written in one round trip
// (both batches are sent before either answer is read).
//
// A loaded session is written with a compare-and-set against the CAS id it
// was loaded with (memcached returns the new CAS id of every save, so a
// second save in the same request is guarded too): a save never silently
// overwrites a newer version. When someone else wrote in between, Save
// returns ErrConflict and the newer value stays. It returns ErrTooLarge
// (nothing written) when the encoded session exceeds Config.MaxSize,
// ErrExpired past the absolute deadline, and ErrUnavailable when neither
// copy could be written. When only the primary node failed, the session is
// relocated to its backup node and s gets a new id (see Load).
//
// While two nodes are usable, Save succeeds only once the session is on
// two of them: when the backup node fails, the backup copy is written to
// the next usable node before Save returns. With a single usable node the
// save succeeds with one copy (counted in Stats.SingleCopySaves, logged).
// Config.AsyncWrites relaxes this: Save returns once the primary copy is
// written (non-sticky) or once the write is queued (sticky mode), and the
// rest follows in the background (see the package doc).
func (st *Store) Save(ctx context.Context, s *Session) error {
	defer st.stats.saveLatency.Since(time.Now())
	if st.cache == nil {
		return st.save(ctx, s)
	}
	if st.async != nil {
		if s.linkPending() {
			return st.saveLinking(ctx, s) // the user index must never list an unwritten session
		}
		p, err := st.prepare(s)
		if err != nil || p.skip {
			return err
		}
		if base, node, ok := splitID(p.id); ok && p.isNew && !st.view.Healthy(node) {
			// Not stored anywhere yet: give it a healthy node now, as save
			// would, so that its cookie names where it will be.
			if node, err = st.view.PickNew(); err != nil {
				return fmt.Errorf("%w: save %s: %w", ErrUnavailable, p.id, err)
			}
			s.setID(makeID(base, node), false)
		}
		return st.saveStickyAsync(ctx, s, p.version, p.changes)
	}
	id := s.ID()
	err := st.save(ctx, s)
	switch {
	case err == nil:
		if s.ID() != id {
			st.cache.remove(id) // relocated by the save
		}
		st.cache.put(s, s.cas(), time.Now())
	case errors.Is(err, ErrConflict):
		st.cache.remove(id) // memcached has a newer version: reload it
	}
	return err
}

// saveNow is Save that writes to memcached before it returns, also with
// AsyncWrites (the sticky cache is updated as a synchronous Save does).
func (st *Store) saveNow(ctx context.Context, s *Session) error {
	if st.cache == nil || st.async == nil {
		return st.Save(ctx, s)
	}
	id := s.ID()
	err := st.save(ctx, s)
	st.cache.remove(id)
	if err == nil {
		st.cache.put(s, s.cas(), time.Now())
	}
	return err
}

// prepared is a session encoded for a save.
type prepared struct {
	skip    bool // unchanged: nothing to write
	isNew   bool
	casID   uint64
	id      string
	raw     []byte
	version uint64 // the version raw holds
	changes uint64 // the change counter raw reflects
	exp     int32
}

// prepare checks and encodes s for a save: ErrDestroyed, ErrTooLarge,
// ErrExpired, or skip for an unchanged session (counted).
func (st *Store) prepare(s *Session) (prepared, error) {
	s.mu.Lock()
	p := prepared{isNew: s.isNew, casID: s.casID, id: s.id}
	unchanged, destroyed := s.changes == s.saved, s.destroyed
	s.mu.Unlock()
	if destroyed {
		return p, fmt.Errorf("%w: %s", ErrDestroyed, p.id)
	}
	if !p.isNew && unchanged {
		st.stats.skipped.Add(1)
		p.skip = true
		return p, nil
	}
	var err error
	if p.raw, p.version, p.changes, err = s.encode(1); err != nil {
		return p, fmt.Errorf("store: save %s: %w", p.id, err)
	}
	if len(p.raw) > st.maxSize {
		return p, fmt.Errorf("%w: %s encodes to %d bytes, limit %d", ErrTooLarge, p.id, len(p.raw), st.maxSize)
	}
	var ok bool
	if p.exp, ok = s.exptime(); !ok {
		return p, fmt.Errorf("%w: %s", ErrExpired, p.id)
	}
	return p, nil
}

// save is Save writing to memcached before it returns.
func (st *Store) save(ctx context.Context, s *Session) error {
	p, err := st.prepare(s)
	if err != nil || p.skip {
		return err
	}
	isNew, casID, id, raw, version, changes, exp := p.isNew, p.casID, p.id, p.raw, p.version, p.changes, p.exp
	start := time.Now()
	base, node, ok := splitID(id)
	if !ok {
		return fmt.Errorf("store: save: malformed id %q", id)
	}
	if isNew && !st.view.Healthy(node) {
		// Not stored anywhere yet: move the new session to a healthy node.
		if node, err = st.view.PickNew(); err != nil {
			return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
		}
		id = makeID(base, node)
		s.setID(id, false)
	}

	mode := meta.ModeSet // compare-and-set with casID
	skipPrimary := false
	switch {
	case isNew:
		mode = meta.ModeAdd
	case casID == 0:
		// The primary copy was found missing by an earlier save of this
		// request (the node restarted empty): check it still is.
		if casID, err = st.currentCAS(ctx, id, node, version-1); err != nil {
			return err
		}
		skipPrimary = casID == 0
	}
	key, bkey := st.key(id), st.bkey(id)
	backup := st.view.BackupOf(node)
	flags := flagsOf(version)
	w := write{
		primary: node,
		preq:    meta.Request{Command: meta.Set, Key: key, Value: raw, Mode: mode, CAS: casID, TTL: exp, Flags: flags, ReturnCAS: true},
		backup:  backup,
		breq:    meta.Request{Command: meta.Set, Key: bkey, Value: raw, TTL: exp, Flags: flags},
	}
	if mode == meta.ModeSet {
		// Overwrite the backup copy only where one exists, so that a stale
		// save cannot bring back a session that was deleted meanwhile.
		w.breq.Mode = meta.ModeReplace
		if st.async == nil || st.cache != nil {
			// And learn whether the session moved away meanwhile
			// (moved.go). Not with non-sticky AsyncWrites, whose save
			// does not wait for the backup node.
			w.mnode, w.mkey = st.markerNode(node), st.mkey(id)
		}
	}
	var pErr, bErr error
	var newCAS uint64
	if st.async != nil && st.cache == nil && backup != "" && !skipPrimary {
		// Non-sticky AsyncWrites: the backup copy is queued. (In sticky
		// mode the whole save is the queued write, and writes both.)
		pErr, bErr, newCAS = st.replicateAsync(ctx, &w, id, version, exp)
	} else {
		pErr, bErr, newCAS = st.replicate(ctx, &w, skipPrimary)
	}
	for tried := []string{node}; isNew && errors.Is(pErr, replica.ErrNodeDown); {
		// A new session is stored nowhere yet: try the next healthy node
		// under a matching id before giving up.
		next := st.view.BackupOf(node, tried...)
		if next == "" {
			break
		}
		tried = append(tried, next)
		node, id = next, makeID(base, next)
		key, bkey = st.key(id), st.bkey(id)
		backup = st.view.BackupOf(node, tried...)
		w.primary, w.preq.Key, w.backup, w.breq.Key = node, key, backup, bkey
		s.setID(id, false)
		pErr, bErr, newCAS = st.replicate(ctx, &w, false)
	}
	if w.mnode != "" && w.markerFailed {
		// The marker node did not answer: ask the others (a relocation
		// writes the marker on every node it reaches).
		w.marker = st.markerElsewhere(ctx, id, node, w.mnode)
	}
	if w.marker != "" {
		// This request loaded a copy that was relocated meanwhile (its
		// node hung while another app server moved it), or is being.
		if handled, err := st.savedOverMarker(ctx, id, node, key, version, newCAS, pErr, backup, bkey, bErr, w.mnode, w.marker); handled {
			return err
		}
	}
	backupMissing := errors.Is(bErr, ops.ErrNotStored)
	primaryLost := false
	if mode == meta.ModeSet && errors.Is(pErr, ops.ErrMiss) {
		if backup == "" || bErr != nil {
			// Neither copy exists any more: the session was deleted (or
			// both nodes lost it) after it was loaded. Never recreate it.
			st.stats.conflicts.Add(1)
			return fmt.Errorf("%w: %s was deleted concurrently", ErrConflict, id)
		}
		// The backup copy was there and now holds this version, but the
		// primary has none (it restarted empty, or a delete is under way).
		// The primary is not recreated here: the next Load restores it from
		// the backup, and a delete that is under way removes the backup.
		pErr, primaryLost = nil, true
	}
	if pErr == nil && backupMissing {
		// The backup node has no copy (it restarted, or the backup moved to
		// another node): write one now that the primary write succeeded,
		// then make sure the primary was not deleted meanwhile (logout), or
		// the new backup copy would bring the session back.
		if _, bErr = st.writeBackupIfNewer(ctx, backup, &w.breq, version, false); bErr == nil {
			if err := st.confirmPrimary(ctx, node, key, exp, backup, bkey); err != nil {
				st.stats.conflicts.Add(1)
				return fmt.Errorf("%w: %s", ErrConflict, err)
			}
		}
	}
	if pErr == nil && bErr != nil && !errors.Is(bErr, ops.ErrNotStored) && !nodeFault(bErr) {
		// Not the backup node's fault (the caller's context ended): no
		// second copy is confirmed, and no other node is tried.
		return fmt.Errorf("%w: save %s: backup copy: %w", ErrUnavailable, id, bErr)
	}
	if pErr == nil && bErr != nil && !errors.Is(bErr, ops.ErrNotStored) {
		// Two copies or no acknowledgement: the backup write failed, so the
		// copy goes to the next usable node before the save returns.
		st.stats.backupFailures.Add(1)
		st.log.Warn("backup write failed: writing the backup copy to the next node", "id", id, "node", backup, "err", bErr)
		backup, bErr = st.backupElsewhere(ctx, node, key, exp, &w.breq, version, backup)
		switch {
		case errors.Is(bErr, errConflict):
			st.stats.conflicts.Add(1)
			return fmt.Errorf("%w: %s was deleted concurrently", ErrConflict, id)
		case bErr != nil:
			// Stored on the primary, but no second copy is confirmed.
			return fmt.Errorf("%w: save %s: no second copy: %w", ErrUnavailable, id, bErr)
		}
	}
	switch {
	case pErr == nil:
	case errors.Is(pErr, ops.ErrCASConflict) || errors.Is(pErr, ops.ErrNotStored):
		st.stats.conflicts.Add(1)
		if backup != "" && bErr == nil {
			st.repairBackup(ctx, node, key, backup, bkey, exp)
		}
		return fmt.Errorf("%w: %s", ErrConflict, id)
	case errors.Is(pErr, replica.ErrNodeDown) && !isNew && backup != "" && bErr == nil:
		// The new version is safe on the backup node: make it the primary,
		// unless a parallel request already moved a version as new there.
		s.mu.Lock()
		s.version = version
		s.mu.Unlock()
		if err := st.moveTo(ctx, s, base, node, backup, true); err != nil {
			s.mu.Lock()
			s.version = version - 1
			s.mu.Unlock()
			if errors.Is(err, ErrConflict) {
				st.stats.conflicts.Add(1)
				return fmt.Errorf("store: save %s: %w", id, err)
			}
			return fmt.Errorf("%w: save %s: primary: %w; relocation: %w", ErrUnavailable, id, pErr, err)
		}
		newCAS = s.cas()
		st.log.Warn("session relocated on save after its primary failed", "from", id, "to", s.ID(), "cause", pErr)
	case errors.Is(pErr, replica.ErrNodeDown):
		return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, pErr)
	default:
		return fmt.Errorf("store: save %s: %w", id, pErr)
	}
	st.stats.saves.Add(1)
	if backup == "" && !primaryLost {
		st.stats.singleCopy.Add(1)
		st.log.Warn("no second node usable: session saved with one copy", "id", s.ID())
	}
	if bErr == nil && backup != "" {
		st.refreshed.note(s.ID(), start, st.touchAfter(s.IdleTimeout()))
	}
	s.mu.Lock()
	s.version, s.saved, s.isNew = version, changes, false
	s.casID = newCAS // 0 when the primary copy is missing (primaryLost)
	s.mu.Unlock()
	if primaryLost {
		st.log.Info("saved to the backup copy only: the primary had lost its copy and is restored on the next load", "id", id, "node", node)
	}
	return st.linkUser(ctx, s) // now that it is stored: list it in its user's index
}

// flagsOf is the client flags value stored with a copy: the low 32 bits of
// its envelope version, so that "mg <key> f" tells a copy's version
// without its body.
func flagsOf(version uint64) uint32 { return uint32(version) }

// write is one replicated write: the primary copy, and the backup copy on
// another node.
type write struct {
	primary string
	preq    meta.Request
	backup  string // "" for no backup copy
	breq    meta.Request
	// mnode and mkey name the session's moved marker, read in the same
	// round trip (in the backup's batch when mnode is the backup node);
	// marker is its value when it was found, markerFailed true when the
	// marker node did not answer. mnode "" reads none.
	mnode, mkey  string
	marker       string
	markerFailed bool
}

// replicate sends the primary and the backup write together (both are
// on the wire before either answer is read, so they share one round trip)
// and returns the primary's error (a node failure or an answer:
// ops.ErrMiss, ErrNotStored, ErrCASConflict), the backup's, and the
// primary copy's new CAS id. With skipPrimary only the backup is written
// and the primary's error is ops.ErrMiss.
func (st *Store) replicate(ctx context.Context, w *write, skipPrimary bool) (pErr, bErr error, cas uint64) {
	var (
		preqs   [1]meta.Request
		pout    [1]meta.Response
		breqs   [2]meta.Request
		bout    [2]meta.Response
		mreqs   [1]meta.Request
		mout    [1]meta.Response
		batches [3]ops.Batch
	)
	list := batches[:0]
	if !skipPrimary {
		preqs[0] = w.preq
		list = append(list, ops.Batch{Node: w.primary, Reqs: preqs[:], Out: pout[:]})
	}
	bi, mi, mr := -1, -1, 0 // indexes of the backup's and the marker's batch, the marker's request
	if w.backup != "" {
		breqs[0] = w.breq
		bi = len(list)
		list = append(list, ops.Batch{Node: w.backup, Reqs: breqs[:1], Out: bout[:1]})
		if w.mnode == w.backup {
			breqs[1] = markerRequest(w.mkey)
			list[bi].Reqs, list[bi].Out = breqs[:2], bout[:2]
			mi, mr = bi, 1
		}
	}
	if w.mnode != "" && mi < 0 {
		mreqs[0] = markerRequest(w.mkey)
		mi = len(list)
		list = append(list, ops.Batch{Node: w.mnode, Reqs: mreqs[:], Out: mout[:]})
	}
	st.view.ExecMany(ctx, list)
	w.marker, w.markerFailed = "", false
	if mi >= 0 {
		switch {
		case list[mi].Err != nil:
			w.markerFailed = true
		case list[mi].Out[mr].Status == meta.StatusOK:
			w.marker = string(list[mi].Out[mr].Value)
		}
	}
	if skipPrimary {
		pErr = ops.ErrMiss
	} else if err := list[0].Err; err != nil {
		pErr = err
	} else {
		pErr, cas = ops.Answer(&pout[0]), pout[0].CAS
	}
	if bi >= 0 {
		if bErr = list[bi].Err; bErr == nil {
			bErr = ops.Answer(&bout[0])
		}
	}
	return pErr, bErr, cas
}

// replicateAsync is replicate for Config.AsyncWrites in non-sticky mode:
// the primary copy is written now and, when that succeeded, the backup
// copy is queued (bErr nil). When the primary write failed, or the queue
// is full, the backup copy is written now too, so that the caller's
// failover logic sees both answers as replicate gives them.
func (st *Store) replicateAsync(ctx context.Context, w *write, id string, version uint64, exp int32) (pErr, bErr error, cas uint64) {
	primaryOnly := *w
	primaryOnly.backup = ""
	pErr, _, cas = st.replicate(ctx, &primaryOnly, false)
	if pErr == nil && st.async.enqueue(id, st.backupWrite(w.primary, w.preq.Key, w.backup, w.breq, version, exp)) {
		return nil, nil, cas
	}
	_, bErr, _ = st.replicate(ctx, w, true)
	return pErr, bErr, cas
}

// backupWrite returns the queued write of a backup copy (Config.AsyncWrites,
// non-sticky mode): written only where no copy as new is (a later save's
// synchronous backup write may have overtaken it), moved to the next
// usable node when its node fails, and removed again when the primary
// copy was deleted meanwhile.
func (st *Store) backupWrite(primary, key, backup string, breq meta.Request, version uint64, exp int32) func(context.Context) error {
	return func(ctx context.Context) error {
		added, err := st.writeBackupIfNewer(ctx, backup, &breq, version, true)
		if err == nil {
			if added {
				_ = st.confirmPrimary(ctx, primary, key, exp, backup, breq.Key)
			}
			return nil
		}
		if !nodeFault(err) {
			return err
		}
		st.stats.backupFailures.Add(1)
		alt, err := st.backupElsewhere(ctx, primary, key, exp, &breq, version, backup)
		switch {
		case errors.Is(err, errConflict):
			return nil // the session was deleted meanwhile
		case err != nil:
			return err
		case alt == "":
			st.stats.singleCopy.Add(1)
			return fmt.Errorf("backup copy of %s: no usable node", key)
		}
		return nil
	}
}

// errConflict is backupElsewhere's report that the primary copy was
// deleted while the backup copy was written.
var errConflict = errors.New("deleted concurrently")

// backupElsewhere writes the backup copy to the next usable node after
// primary other than failed, once the primary write succeeded, then makes
// sure the primary was not deleted meanwhile (errConflict; the new copy is
// removed again). It returns the node that holds the copy, or "" with a
// nil error when no other node is usable (every one failed, or none is
// healthy); each failed attempt is counted and logged. It stops with ctx's
// error when ctx ends.
func (st *Store) backupElsewhere(ctx context.Context, primary, key string, exp int32, breq *meta.Request, version uint64, failed string) (string, error) {
	tried := []string{failed}
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		alt := st.view.BackupOf(primary, tried...)
		if alt == "" {
			return "", nil
		}
		tried = append(tried, alt)
		_, err := st.writeBackupIfNewer(ctx, alt, breq, version, false)
		if err == nil {
			if cerr := st.confirmPrimary(ctx, primary, key, exp, alt, breq.Key); cerr != nil {
				return alt, errConflict
			}
			return alt, nil
		}
		if !nodeFault(err) {
			return "", err // the caller's context ended, or the copy kept changing
		}
		st.stats.backupFailures.Add(1)
		st.log.Warn("backup write failed", "node", alt, "err", err)
	}
}

// nodeFault reports whether err is a failure of the node written to (down,
// busy, or a SERVER_ERROR answer such as out of memory), after which the
// next node may be tried; anything else (the caller's context) stops.
func nodeFault(err error) bool {
	return errors.Is(err, replica.ErrNodeDown) || errors.Is(err, replica.ErrNodeBusy) || errors.Is(err, meta.ErrServer)
}

// writeBackupIfNewer writes the backup copy req (of version) on a node
// where there is none (add), or over a copy there that is older: a
// compare-and-set only while its version (in the client flags, read
// without the body) is lower. A copy as new or newer (a concurrent save
// got there first) is left alone and counts as written. likelyThere says
// which to try first (a copy is usually there for a queued backup write,
// not for a missing one); added reports that the copy was created (the
// caller then confirms that the primary still exists: a created backup
// must not bring back a destroyed session).
func (st *Store) writeBackupIfNewer(ctx context.Context, node string, req *meta.Request, version uint64, likelyThere bool) (added bool, err error) {
	add := *req
	add.Mode, add.CAS = meta.ModeAdd, 0
	tryAdd := !likelyThere
	for attempt := 0; attempt < 3; attempt++ {
		if tryAdd {
			err := ops.Write(ctx, st.view, node, add)
			if !errors.Is(err, ops.ErrNotStored) {
				return err == nil, err
			}
		}
		resp, err := ops.Do(ctx, st.view, node, ops.VersionRequest(add.Key))
		if errors.Is(err, ops.ErrMiss) {
			tryAdd = true // none there (any more): add
			continue
		}
		if err != nil {
			return false, err
		}
		if resp.Flags >= flagsOf(version) {
			return false, nil
		}
		set := add
		set.Mode, set.CAS = meta.ModeSet, resp.CAS
		err = ops.Write(ctx, st.view, node, set)
		if err == nil || !errors.Is(err, ops.ErrCASConflict) && !errors.Is(err, ops.ErrMiss) {
			return false, err
		}
		tryAdd = errors.Is(err, ops.ErrMiss)
	}
	return false, fmt.Errorf("%w: backup copy %s kept changing", ErrConflict, add.Key)
}

// confirmPrimary checks that the primary copy still exists after a backup
// copy was (re)written, and deletes that backup copy when it does not: the
// session was deleted meanwhile, and a lone backup would bring it back.
// exp is the exptime the primary copy was just written with (a touch with
// it changes nothing else).
func (st *Store) confirmPrimary(ctx context.Context, node, key string, exp int32, backup, bkey string) error {
	err := ops.Touch(ctx, st.view, node, key, exp)
	if !errors.Is(err, ops.ErrMiss) {
		return nil
	}
	_ = ops.Delete(ctx, st.view, backup, bkey, 0)
	return fmt.Errorf("%s was deleted concurrently", key)
}

// currentCAS reads the CAS id of the primary copy and checks it still holds
// version want (the one this request saved last); 0 when it is missing.
func (st *Store) currentCAS(ctx context.Context, id, node string, want uint64) (uint64, error) {
	key := st.key(id)
	it, err := ops.Get(ctx, st.view, node, key)
	if errors.Is(err, ops.ErrMiss) {
		return 0, nil // still missing: only the backup copy is written
	}
	if err != nil {
		return 0, fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
	}
	cur, err := st.decode(id, &it)
	if err != nil || cur.version != want {
		st.stats.conflicts.Add(1)
		return 0, fmt.Errorf("%w: %s", ErrConflict, id)
	}
	return it.CAS, nil
}

// repairBackup rewrites the backup copy from the primary after a refused
// save overwrote the backup with the losing version; exp is the exptime of
// that save.
func (st *Store) repairBackup(ctx context.Context, node, key, backup, bkey string, exp int32) {
	it, err := ops.Get(ctx, st.view, node, key)
	if errors.Is(err, ops.ErrMiss) {
		_ = ops.Delete(ctx, st.view, backup, bkey, 0) // the session is gone
		return
	}
	if err != nil {
		return
	}
	_, _ = ops.Store(ctx, st.view, backup, meta.ModeSet, &ops.Item{Key: bkey, Value: it.Value, Flags: it.Flags}, exp)
}

// Touch refreshes the idle timeout of a saved session on its primary and
// backup copies without rewriting them (memcached touch). It is the cheap
// alternative to Save for a request that changed nothing.
func (st *Store) Touch(ctx context.Context, s *Session) error {
	s.mu.Lock()
	isNew, id := s.isNew, s.id
	s.mu.Unlock()
	if isNew {
		return nil
	}
	start := time.Now()
	exp, ok := s.exptime()
	if !ok {
		return fmt.Errorf("%w: %s", ErrExpired, id)
	}
	_, node, ok := splitID(id)
	if !ok {
		return fmt.Errorf("store: touch: malformed id %q", id)
	}
	key, bkey := st.key(id), st.bkey(id)
	var backupErr error
	b := st.view.BackupOf(node)
	reqs := [2]meta.Request{
		{Command: meta.Get, Key: key, Touch: true, TTL: exp},
		{Command: meta.Get, Key: bkey, Touch: true, TTL: exp},
	}
	var out [2]meta.Response
	batches := [2]ops.Batch{{Node: node, Reqs: reqs[:1], Out: out[:1]}, {Node: b, Reqs: reqs[1:], Out: out[1:]}}
	list := batches[:1]
	if b != "" {
		list = batches[:2]
	}
	st.view.ExecMany(ctx, list) // primary and backup in one round trip
	err := list[0].Err
	if err == nil {
		err = ops.Answer(&out[0])
	}
	if b != "" {
		if backupErr = list[1].Err; backupErr == nil {
			backupErr = ops.Answer(&out[1])
		}
	}
	st.stats.touches.Add(1)
	if err == nil && errors.Is(backupErr, ops.ErrMiss) {
		// The backup node lost its copy (it restarted): write one again,
		// unless a save wrote a newer one meanwhile, and make sure the
		// primary was not deleted in between (a lone backup would bring
		// the session back).
		var raw []byte
		var version uint64
		if raw, version, _, backupErr = s.encode(0); backupErr == nil {
			_, backupErr = ops.Store(ctx, st.view, b, meta.ModeAdd, &ops.Item{Key: bkey, Value: raw, Flags: flagsOf(version)}, exp)
			if errors.Is(backupErr, ops.ErrNotStored) {
				backupErr = nil
			} else if backupErr == nil {
				backupErr = st.confirmPrimary(ctx, node, key, exp, b, bkey)
			}
		}
	}
	if backupErr != nil {
		st.stats.backupFailures.Add(1)
		st.log.Warn("backup touch failed: the backup copy may expire before the session", "id", id, "node", b, "err", backupErr)
	}
	if err == nil && backupErr == nil {
		st.refreshed.note(id, start, st.touchAfter(s.IdleTimeout()))
	}
	if err != nil && !errors.Is(err, ops.ErrMiss) {
		return fmt.Errorf("store: touch %s: %w", id, err)
	}
	return nil
}

// DestroyID removes every item of session id on every node that may hold
// one: the primary copy and the lock on its primary node, the backup copy
// on every other node. An id that does not parse is ignored. It returns an
// error wrapping ErrUnavailable when a node that may hold an item did not
// answer.
func (st *Store) DestroyID(ctx context.Context, id string) error {
	_, node, ok := st.parse(id)
	if !ok {
		return nil
	}
	st.refreshed.forget(id)
	if st.cache != nil {
		if to := st.cache.resolve(id); to != id {
			// A queued write relocated it: that copy goes too.
			if err := st.DestroyID(ctx, to); err != nil {
				return err
			}
		}
		st.cache.remove(id) // a queued write of id finds nothing to write
	}
	if st.async != nil {
		// A queued write must not bring the session back: drop it, and
		// wait for one that is running.
		st.async.cancel(id)
		if err := st.async.waitFor(ctx, id); err != nil {
			return fmt.Errorf("store: destroy %s: %w", id, err)
		}
	}
	key, bkey, lkey := st.MemcachedKeys(id)
	// Backups first, then the primary copy, then the lock, then the
	// backups once more: a request waiting for the lock finds nothing to
	// load, and a stale save or touch does not recreate the session.
	var errs []error
	backups := st.view.BackupCandidates(node)
	errs = append(errs, st.deleteAll(ctx, backups, bkey, false)...)
	errs = append(errs, st.deleteAll(ctx, []string{node}, key, true)...)
	errs = append(errs, st.deleteAll(ctx, []string{node}, lkey, true)...)
	// Again: a save or touch that re-created a backup copy while the
	// primary was still there is caught here (they check the primary after
	// writing one, see confirmPrimary).
	errs = append(errs, st.deleteAll(ctx, backups, bkey, false)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: delete %s: %w", ErrUnavailable, id, err)
	}
	return nil
}

// deleteAll deletes key on every node in parallel. Nodes whose breaker is
// open are skipped, and reported as errors when mustAnswer is set.
func (st *Store) deleteAll(ctx context.Context, nodes []string, key string, mustAnswer bool) []error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if !st.view.Healthy(n) {
			if mustAnswer {
				errs[i] = fmt.Errorf("%w: %s on %s", replica.ErrNodeDown, key, n)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ops.Delete(ctx, st.view, n, key, 0); err != nil && !errors.Is(err, ops.ErrMiss) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	return errs
}

// RenewID gives s a new random id (on login, against session fixation),
// writes it under the new id and deletes every item of the old one. The
// data is kept. A held lock moves to the new id. A new, unsaved session
// just gets the new id.
func (st *Store) RenewID(ctx context.Context, s *Session) error {
	s.mu.Lock()
	oldID, isNew := s.id, s.isNew
	s.mu.Unlock()
	_, node, _ := splitID(oldID)
	if !st.view.Healthy(node) {
		var err error
		if node, err = st.view.PickNew(); err != nil {
			return fmt.Errorf("%w: renew %s: %w", ErrUnavailable, oldID, err)
		}
	}
	newID := makeID(newIDBase(), node)
	s.setID(newID, true)
	if isNew {
		return nil
	}
	// Take the lock of the new id before it exists, so no one else can.
	s.mu.Lock()
	held, local := s.lock, s.local
	s.mu.Unlock()
	if local != nil {
		lk, err := st.lockSticky(ctx, newID)
		if err != nil {
			return fmt.Errorf("store: renew %s: %w", oldID, err)
		}
		s.mu.Lock()
		s.local = lk
		s.mu.Unlock()
		defer local.Release() // after the old id is deleted, as below
	}
	if held != nil {
		lkey := st.lkey(newID)
		lk, err := st.locker.Acquire(ctx, node, lkey)
		if err != nil {
			return fmt.Errorf("store: renew %s: %w", oldID, err)
		}
		s.mu.Lock()
		s.lock = lk
		s.mu.Unlock()
		// The old lock is released only after the old id is deleted below,
		// so that no waiting request can load the old id in between.
		defer func() { _ = held.Release(context.WithoutCancel(ctx)) }()
	}
	s.mu.Lock()
	s.isNew, s.casID = true, 0 // written with add under the new id
	s.changes++
	s.mu.Unlock()
	// The new id is written before Save returns even with AsyncWrites:
	// the old id is deleted next, and a crash with the new id's write only
	// queued (or failed) would lose the whole session.
	if err := st.saveNow(ctx, s); err != nil {
		return fmt.Errorf("store: renew %s: %w", oldID, err)
	}
	if err := st.DestroyID(ctx, oldID); err != nil {
		st.log.Warn("renew id: old session not fully deleted", "id", oldID, "err", err)
	}
	return nil
}
