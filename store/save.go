package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
		s.mu.Lock()
		s.id = id
		s.mu.Unlock()
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
		s.mu.Lock()
		s.id = id
		s.mu.Unlock()
		pErr, bErr = st.cluster.Replicate(ctx, w)
	}
	if bErr != nil {
		st.stats.backupFailures.Add(1)
		st.log.Warn("backup write failed: session saved on its primary only", "id", id, "node", backup, "err", bErr)
	}
	if mode == replica.ModeCAS && errors.Is(pErr, replica.ErrMiss) {
		// The primary lost the item (restarted empty, evicted or expired):
		// create it again, unless someone else did first.
		w.Mode = replica.ModeAdd
		pErr = st.cluster.Add(ctx, node, w.Item)
	}
	switch {
	case pErr == nil:
	case errors.Is(pErr, replica.ErrCASConflict) || errors.Is(pErr, replica.ErrNotStored):
		st.stats.conflicts.Add(1)
		if backup != "" && bErr == nil {
			st.repairBackup(ctx, node, key, backup, bkey)
		}
		return fmt.Errorf("%w: %s", ErrConflict, id)
	case errors.Is(pErr, replica.ErrNodeDown) && !isNew && backup != "" && bErr == nil:
		// The new version is safe on the backup node: make it the primary.
		s.mu.Lock()
		s.version = version
		s.mu.Unlock()
		if err := st.moveTo(ctx, s, base, node, backup); err != nil {
			return fmt.Errorf("%w: save %s: primary: %w; relocation: %w", ErrUnavailable, id, pErr, err)
		}
		st.log.Warn("session relocated on save after its primary failed", "from", id, "to", s.ID(), "cause", pErr)
	case errors.Is(pErr, replica.ErrNodeDown):
		return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, pErr)
	default:
		return fmt.Errorf("store: save %s: %w", id, pErr)
	}
	st.stats.saves.Add(1)
	s.mu.Lock()
	s.version, s.saved, s.isNew = version, changes, false
	if pErr == nil {
		s.casID = 0 // memcached does not tell the new CAS id
	}
	s.mu.Unlock()
	return nil
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
// save overwrote the backup with the losing version.
func (st *Store) repairBackup(ctx context.Context, node, key, backup, bkey string) {
	it, err := st.cluster.Get(ctx, node, key)
	if err != nil {
		return
	}
	_ = st.cluster.Set(ctx, backup, &memcache.Item{Key: bkey, Value: it.Value, Expiration: it.Expiration})
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
	exp, ok := s.exptime()
	if !ok {
		return fmt.Errorf("%w: %s", ErrExpired, id)
	}
	_, node, ok := splitID(id)
	if !ok {
		return fmt.Errorf("store: touch: malformed id %q", id)
	}
	key, bkey, _ := st.Keys(id)
	var wg sync.WaitGroup
	if b := st.cluster.BackupOf(node); b != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = st.cluster.Touch(ctx, b, bkey, exp)
		}()
	}
	err := st.cluster.Touch(ctx, node, key, exp)
	wg.Wait()
	st.stats.touches.Add(1)
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
	key, bkey, lkey := st.Keys(id)
	type del struct{ node, key string }
	dels := []del{{node, key}, {node, lkey}}
	for _, n := range st.cluster.BackupCandidates(node) {
		dels = append(dels, del{n, bkey})
	}
	errs := make([]error, len(dels))
	var wg sync.WaitGroup
	for i, d := range dels {
		if !st.cluster.Healthy(d.node) {
			if d.key != bkey {
				errs[i] = fmt.Errorf("%w: %s on %s", replica.ErrNodeDown, d.key, d.node)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.cluster.Delete(ctx, d.node, d.key); err != nil && !errors.Is(err, replica.ErrMiss) {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: delete %s: %w", ErrUnavailable, id, err)
	}
	return nil
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
	s.mu.Lock()
	s.id = newID
	if s.oldID == "" {
		s.oldID = oldID
	}
	s.mu.Unlock()
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
		s.lock = &heldLock{lk: lk}
		s.mu.Unlock()
		held.release(ctx) // the old lock item is deleted below anyway
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
