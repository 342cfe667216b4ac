package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
)

// Locker returns the store's lock manager (for its metrics and settings).
func (st *Store) Locker() *lock.Locker { return st.locker }

// LoadLocked takes the session's lock and loads it in one round trip: an
// add of the lock key on the session's primary node and a read of the
// session, pipelined on one connection. It waits for a lock held by
// another request (see lock.Config) and returns an error wrapping
// lock.ErrLockTimeout when
// it stays held. When the primary is down, the session is relocated first
// and locked on its new primary. On ErrNotFound no lock is held.
//
// Release the lock with SaveAndRelease or Release.
func (st *Store) LoadLocked(ctx context.Context, id string) (*Session, error) {
	defer st.stats.loadLatency.Since(time.Now())
	s, err := st.loadLocked(ctx, id)
	if err == nil {
		st.followUser(ctx, s, id)
	}
	return s, err
}

// loadLocked is LoadLocked without its latency record and user index
// upkeep.
func (st *Store) loadLocked(ctx context.Context, id string) (*Session, error) {
	if st.local != nil {
		lk, err := st.lockSticky(ctx, id)
		if err != nil {
			return nil, err
		}
		s, err := st.loadSticky(ctx, id)
		if err != nil {
			lk.Release()
			return nil, err
		}
		s.local = lk
		return s, nil
	}
	base, node, ok := st.parse(id)
	if !ok {
		return nil, ErrNotFound
	}
	key := st.key(id)
	// The moved marker (see moved.go) is read on another node while the
	// lock is taken, so that it costs no round trip of its own.
	// It is not read when markerNotNeeded says so (see getPrimary).
	var movedc chan string
	if !st.markerNotNeeded(node) {
		movedc = make(chan string, 1)
		go func() { movedc <- st.marker(ctx, id, node) }()
	}
	lk, items, err := st.locker.AcquireAndGet(ctx, node, st.lkey(id), key)
	movedTo := ""
	switch {
	case movedc != nil:
		movedTo = <-movedc
	case err == nil && !st.markerNotNeeded(node):
		movedTo = st.marker(ctx, id, node)
	}
	if errors.Is(err, replica.ErrNodeDown) {
		// Relocate (unlocked), then lock the session where it now lives.
		s, err := st.load(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := st.Lock(ctx, s); err != nil {
			return nil, err
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", id, err)
	}
	var s *Session
	if it := items[0]; st.view.Draining(node) {
		// Moved off the draining node under the old id's lock (so two
		// requests never move it at once), then locked again below.
		s, err = st.loadDraining(ctx, id, base, node)
	} else if it.Found && movedTo != "" {
		s, err = st.followMoved(ctx, id, base, node, itemOf(key, it), movedTo) // the newest copy is locked again below
	} else if it.Found {
		s, err = st.fromPrimary(ctx, id, base, node, itemOf(key, it)) // a moved copy is locked again below
	} else {
		s, err = st.restore(ctx, id, node, key, st.bkey(id))
	}
	if err != nil {
		_ = lk.Release(context.WithoutCancel(ctx))
		return nil, err
	}
	if s.ID() != id {
		// Relocated meanwhile: lock it where it lives now.
		_ = lk.Release(context.WithoutCancel(ctx))
		if err := st.Lock(ctx, s); err != nil {
			return nil, err
		}
		return s, nil
	}
	s.lock = lk
	return s, nil
}

// Lock takes the lock of an already loaded session mid-request and reloads
// it under the lock, so the caller sees the latest data (changes made to s
// before are discarded). A session that holds its lock already, or a new
// session, is left as it is.
func (st *Store) Lock(ctx context.Context, s *Session) error {
	s.mu.Lock()
	id, isNew, held := s.id, s.isNew, s.lock != nil || s.local != nil
	s.mu.Unlock()
	if isNew || held {
		return nil
	}
	if st.local != nil {
		lk, err := st.lockSticky(ctx, id)
		if err != nil {
			return err
		}
		cur, err := st.loadSticky(ctx, id)
		if err != nil {
			lk.Release()
			return err
		}
		s.adopt(cur)
		s.mu.Lock()
		s.saved = s.changes
		s.local = lk
		s.mu.Unlock()
		return nil
	}
	_, node, ok := st.parse(id)
	if !ok {
		return ErrNotFound
	}
	key := st.key(id)
	lk, items, err := st.locker.AcquireAndGet(ctx, node, st.lkey(id), key)
	if err != nil {
		return fmt.Errorf("store: lock %s: %w", id, err)
	}
	if !items[0].Found {
		_ = lk.Release(context.WithoutCancel(ctx))
		return fmt.Errorf("%w: %s vanished before it was locked", ErrNotFound, id)
	}
	cur, err := st.decode(id, itemOf(key, items[0]))
	if err != nil {
		_ = lk.Release(context.WithoutCancel(ctx))
		return err
	}
	s.adopt(cur)
	s.mu.Lock()
	s.saved = s.changes
	s.lock = lk
	s.mu.Unlock()
	return nil
}

// Locked reports whether s holds its lock.
func (s *Session) Locked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lock != nil || s.local != nil
}

// Release releases the session's lock, if it holds one, without saving.
// It returns an error wrapping lock.ErrLost when the lock had expired and
// was taken by someone else meanwhile (nothing is deleted then).
func (st *Store) Release(ctx context.Context, s *Session) error {
	s.mu.Lock()
	lk, local := s.lock, s.local
	s.lock, s.local = nil, nil
	s.mu.Unlock()
	if local != nil {
		local.Release()
	}
	if lk == nil {
		return nil
	}
	return lk.Release(context.WithoutCancel(ctx))
}

// SaveAndRelease saves s (when modified) and then releases its lock. The
// release (the owner-checked compare-and-delete of the lock item) is sent
// only once both copies of the session are stored: released earlier, the
// next holder of the lock could save a newer version whose backup copy
// this save's backup write then overwrites (a stale backup copy that a
// failover of the primary would bring back). The lock is released even
// when the save fails; the save's error comes first. With
// Config.AsyncWrites the lock is released once Save returned: a queued
// backup copy is written version-guarded, so a later holder's newer copy
// is never replaced by it.
func (st *Store) SaveAndRelease(ctx context.Context, s *Session) error {
	saveErr := st.Save(ctx, s)
	relErr := st.Release(ctx, s)
	if saveErr != nil {
		return saveErr
	}
	if relErr != nil {
		return fmt.Errorf("store: release %s: %w", s.ID(), relErr)
	}
	return nil
}

// Destroy deletes every item of s (see DestroyID) and then drops its lock;
// a later Save of s returns ErrDestroyed. The lock is dropped after the
// delete so that no waiting request can load the session in between.
func (st *Store) Destroy(ctx context.Context, s *Session) error {
	s.mu.Lock()
	id, isNew := s.id, s.isNew
	s.destroyed = true
	s.mu.Unlock()
	var err error
	if !isNew {
		err = st.DestroyID(ctx, id)
		st.unlinkDestroyed(ctx, s)
	}
	if rerr := st.Release(ctx, s); rerr != nil && !errors.Is(rerr, lock.ErrLost) {
		err = errors.Join(err, rerr)
	}
	return err
}

// itemOf turns an item read with a lock acquisition into an ops.Item.
func itemOf(key string, it lock.Item) *ops.Item {
	return &ops.Item{Key: key, Value: it.Value, CAS: it.CAS, Flags: it.Flags, TTL: it.TTL}
}
