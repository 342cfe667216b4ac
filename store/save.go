package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/mcsession/mcsession/replica"
)

// Save writes s if it is new or was modified since it was loaded or last
// saved; an unchanged session sends nothing (use Touch to refresh its idle
// timeout). The primary and the backup copy are written in parallel.
//
// A loaded session is written with cas against the CAS id it was loaded
// with, so a save never silently overwrites a newer version: when someone
// else wrote in between, Save returns ErrConflict and the newer value
// stays. It returns ErrTooLarge (nothing written) when the encoded session
// exceeds Config.MaxSize, ErrExpired past the absolute deadline, and
// ErrUnavailable when neither copy could be written. When only the primary
// node failed, the session is relocated to its backup node and s gets a new
// id (see Load).
func (st *Store) Save(ctx context.Context, s *Session) error {
	s.mu.Lock()
	isNew, unchanged, casID, id, destroyed := s.isNew, s.changes == s.saved, s.casID, s.id, s.destroyed
	s.mu.Unlock()
	if destroyed {
		return fmt.Errorf("%w: %s", ErrDestroyed, id)
	}
	if !isNew && unchanged {
		st.stats.skipped.Add(1)
		return nil
	}
	raw, version, changes, err := s.encode(1)
	if err != nil {
		return fmt.Errorf("store: save %s: %w", id, err)
	}
	if len(raw) > st.maxSize {
		return fmt.Errorf("%w: %s encodes to %d bytes, limit %d", ErrTooLarge, id, len(raw), st.maxSize)
	}
	start := time.Now()
	exp, ok := s.exptime()
	if !ok {
		return fmt.Errorf("%w: %s", ErrExpired, id)
	}
	base, node, ok := splitID(id)
	if !ok {
		return fmt.Errorf("store: save: malformed id %q", id)
	}
	if isNew && !st.cluster.Healthy(node) {
		// Not stored anywhere yet: move the new session to a healthy node.
		if node, err = st.cluster.PickNew(); err != nil {
			return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
		}
		id = makeID(base, node)
		s.setID(id, false)
	}

	mode := replica.ModeCAS
	switch {
	case isNew:
		mode = replica.ModeAdd
	case casID == 0:
		// Saved before in this request (memcached does not return the new
		// CAS id): read it back and check the copy is still ours.
		if casID, err = st.currentCAS(ctx, id, node, version-1); err != nil {
			return err
		}
	}
	key, bkey, _ := st.Keys(id)
	backup := st.cluster.BackupOf(node)
	w := replica.Write{
		Primary: node, Item: &memcache.Item{Key: key, Value: raw, Expiration: exp, CasID: casID}, Mode: mode,
		Backup: backup, BackupItem: &memcache.Item{Key: bkey, Value: raw, Expiration: exp},
	}
	if mode == replica.ModeCAS {
		// Overwrite the backup copy only where one exists, so that a stale
		// save cannot bring back a session that was deleted meanwhile.
		w.BackupMode = replica.ModeReplace
	}
	pErr, bErr := st.cluster.Replicate(ctx, w)
	for tried := []string{node}; isNew && errors.Is(pErr, replica.ErrNodeDown); {
		// A new session is stored nowhere yet: try the next healthy node
		// under a matching id before giving up.
		next := st.cluster.BackupOf(node, tried...)
		if next == "" {
			break
		}
		tried = append(tried, next)
		node, id = next, makeID(base, next)
		key, bkey, _ = st.Keys(id)
		backup = st.cluster.BackupOf(node, tried...)
		w.Primary, w.Item.Key, w.Backup, w.BackupItem.Key = node, key, backup, bkey
		s.setID(id, false)
		pErr, bErr = st.cluster.Replicate(ctx, w)
	}
	backupMissing := errors.Is(bErr, replica.ErrNotStored)
	primaryLost := false
	if mode == replica.ModeCAS && errors.Is(pErr, replica.ErrMiss) {
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
		if bErr = st.cluster.Set(ctx, backup, w.BackupItem); bErr == nil {
			if err := st.confirmPrimary(ctx, node, key, exp, backup, bkey); err != nil {
				st.stats.conflicts.Add(1)
				return fmt.Errorf("%w: %s", ErrConflict, err)
			}
		}
	}
	if bErr != nil && !errors.Is(bErr, replica.ErrNotStored) {
		st.stats.backupFailures.Add(1)
		st.log.Warn("backup write failed: session saved on its primary only", "id", id, "node", backup, "err", bErr)
	}
	switch {
	case pErr == nil:
	case errors.Is(pErr, replica.ErrCASConflict) || errors.Is(pErr, replica.ErrNotStored):
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
		st.log.Warn("session relocated on save after its primary failed", "from", id, "to", s.ID(), "cause", pErr)
	case errors.Is(pErr, replica.ErrNodeDown):
		return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, pErr)
	default:
		return fmt.Errorf("store: save %s: %w", id, pErr)
	}
	st.stats.saves.Add(1)
	if bErr == nil {
		st.refreshed.note(s.ID(), start, st.touchAfter(s.IdleTimeout()))
	}
	s.mu.Lock()
	s.version, s.saved, s.isNew = version, changes, false
	s.casID = 0 // memcached does not tell the new CAS id
	s.mu.Unlock()
	if primaryLost {
		st.log.Info("saved to the backup copy only: the primary had lost its copy and is restored on the next load", "id", id, "node", node)
	}
	return nil
}

// confirmPrimary checks that the primary copy still exists after a backup
// copy was (re)written, and deletes that backup copy when it does not: the
// session was deleted meanwhile, and a lone backup would bring it back.
// exp is the exptime the primary copy was just written with (a touch with
// it changes nothing else).
func (st *Store) confirmPrimary(ctx context.Context, node, key string, exp int32, backup, bkey string) error {
	err := st.cluster.Touch(ctx, node, key, exp)
	if !errors.Is(err, replica.ErrMiss) {
		return nil
	}
	_ = st.cluster.Delete(ctx, backup, bkey)
	return fmt.Errorf("%s was deleted concurrently", key)
}

// currentCAS reads the CAS id of the primary copy and checks it still holds
// version want (the one this request saved last).
func (st *Store) currentCAS(ctx context.Context, id, node string, want uint64) (uint64, error) {
	key, _, _ := st.Keys(id)
	it, err := st.cluster.Get(ctx, node, key)
	if errors.Is(err, replica.ErrMiss) {
		return 0, nil // gone: the save below turns into an add
	}
	if err != nil {
		return 0, fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
	}
	cur, err := st.decode(id, it)
	if err != nil || cur.version != want {
		st.stats.conflicts.Add(1)
		return 0, fmt.Errorf("%w: %s", ErrConflict, id)
	}
	return it.CasID, nil
}

// repairBackup rewrites the backup copy from the primary after a refused
// save overwrote the backup with the losing version; exp is the exptime of
// that save (gomemcache does not report an item's exptime on reads).
func (st *Store) repairBackup(ctx context.Context, node, key, backup, bkey string, exp int32) {
	it, err := st.cluster.Get(ctx, node, key)
	if errors.Is(err, replica.ErrMiss) {
		_ = st.cluster.Delete(ctx, backup, bkey) // the session is gone
		return
	}
	if err != nil {
		return
	}
	_ = st.cluster.Set(ctx, backup, &memcache.Item{Key: bkey, Value: it.Value, Expiration: exp})
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
	key, bkey, _ := st.Keys(id)
	var (
		wg        sync.WaitGroup
		backupErr error
	)
	b := st.cluster.BackupOf(node)
	if b != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			backupErr = st.cluster.Touch(ctx, b, bkey, exp)
		}()
	}
	err := st.cluster.Touch(ctx, node, key, exp)
	wg.Wait()
	st.stats.touches.Add(1)
	if err == nil && errors.Is(backupErr, replica.ErrMiss) {
		// The backup node lost its copy (it restarted): write one again,
		// unless a save wrote a newer one meanwhile, and make sure the
		// primary was not deleted in between (a lone backup would bring
		// the session back).
		var raw []byte
		if raw, _, _, backupErr = s.encode(0); backupErr == nil {
			backupErr = st.cluster.Add(ctx, b, &memcache.Item{Key: bkey, Value: raw, Expiration: exp})
			if errors.Is(backupErr, replica.ErrNotStored) {
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
	if err != nil && !errors.Is(err, replica.ErrMiss) {
		return fmt.Errorf("store: touch %s: %w", id, err)
	}
	return nil
}

// Delete removes every item of session id on every node that may hold
// one: the primary copy and the lock on its primary node, the backup copy
// on every other node. An id that does not parse is ignored. It returns an
// error wrapping ErrUnavailable when a node that may hold an item did not
// answer.
func (st *Store) Delete(ctx context.Context, id string) error {
	_, node, ok := st.parse(id)
	if !ok {
		return nil
	}
	st.refreshed.forget(id)
	key, bkey, lkey := st.Keys(id)
	// Backups first, then the primary copy, then the lock, then the
	// backups once more: a request waiting for the lock finds nothing to
	// load, and a stale save or touch does not recreate the session.
	var errs []error
	backups := st.cluster.BackupCandidates(node)
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
		if !st.cluster.Healthy(n) {
			if mustAnswer {
				errs[i] = fmt.Errorf("%w: %s on %s", replica.ErrNodeDown, key, n)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.cluster.Delete(ctx, n, key); err != nil && !errors.Is(err, replica.ErrMiss) {
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
	if !st.cluster.Healthy(node) {
		var err error
		if node, err = st.cluster.PickNew(); err != nil {
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
	held := s.lock
	s.mu.Unlock()
	if held != nil {
		_, _, lkey := st.Keys(newID)
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
	if err := st.Save(ctx, s); err != nil {
		return fmt.Errorf("store: renew %s: %w", oldID, err)
	}
	if err := st.Delete(ctx, oldID); err != nil {
		st.log.Warn("renew id: old session not fully deleted", "id", oldID, "err", err)
	}
	return nil
}
