package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

// maxDrainAttempts bounds the retries of a move off a draining node whose
// copy keeps changing under it.
const maxDrainAttempts = 3

// loadDraining is loadRemote for a session whose node is being drained
// (replica.Cluster.SetNodes removed it, or gave its id a new address).
//
// A removed node: the session moves to the node that DrainTarget names
// for it, under the id base-<target>, as after a failover; the copy on the
// draining node and one moved already (by a parallel request, or by
// another app server) are read in one round trip and the newer wins. The
// old copy is then rewritten with a CAS guard, which changes its CAS id:
// a request that loaded it before the move and saves it afterwards gets a
// conflict instead of an acknowledged write that nobody would read again.
//
// A node whose address changed: the session keeps its id and is copied
// from the old address to the new one (see loadReaddressed).
func (st *Store) loadDraining(ctx context.Context, id, base, node string) (*Session, error) {
	if old, ok := st.view.OldAddress(node); ok {
		return st.loadReaddressed(ctx, id, base, node, old)
	}
	target := st.view.DrainTarget(base)
	if target == "" {
		return nil, fmt.Errorf("%w: %s: no node to move it to off draining node %s: %w", ErrUnavailable, id, node, replica.ErrNoHealthyNode)
	}
	movedID := makeID(base, target)
	key, movedKey := st.key(id), st.key(movedID)
	for attempt := 0; ; attempt++ {
		batches := []ops.Batch{
			{Node: node, Reqs: []meta.Request{ops.GetRequest(key)}, Out: make([]meta.Response, 1)},
			{Node: target, Reqs: []meta.Request{ops.GetRequest(movedKey)}, Out: make([]meta.Response, 1)},
		}
		st.view.ExecMany(ctx, batches)
		var moved *Session
		if batches[1].Err == nil {
			if it, err := ops.ItemOf(movedKey, &batches[1].Out[0]); err == nil {
				if m, err := st.decode(movedID, &it); err == nil {
					m.oldID = id
					moved = m
				}
			}
		}
		if err := batches[0].Err; err != nil {
			if moved != nil {
				st.stats.loads.Add(1)
				return moved, nil
			}
			if errors.Is(err, replica.ErrNodeDown) {
				return st.restoreDraining(ctx, id, base, node, target, err)
			}
			return nil, fmt.Errorf("store: load %s: %w", id, err)
		}
		it, err := ops.ItemOf(key, &batches[0].Out[0])
		if errors.Is(err, ops.ErrMiss) {
			if moved != nil {
				st.stats.loads.Add(1)
				return moved, nil
			}
			return st.restoreDraining(ctx, id, base, node, target, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("store: load %s: %w", id, err)
		}
		s, err := st.decode(id, &it)
		if err != nil {
			if moved != nil {
				st.stats.loads.Add(1)
				return moved, nil
			}
			return nil, err
		}
		if moved == nil {
			// Relocated by a failover before the drain, if the node had
			// an outage lately (see newerMoved).
			moved = st.newerMoved(ctx, s, base, node)
		}
		if moved != nil && moved.version >= s.version {
			st.stats.loads.Add(1)
			return moved, nil
		}
		if err := st.moveTo(ctx, s, base, node, target, false); err != nil {
			return nil, fmt.Errorf("%w: move %s off draining node %s to %s: %w", ErrUnavailable, id, node, target, err)
		}
		// Change the old copy's CAS id, unless it changed since it was read
		// (a save landed meanwhile: move that newer version instead).
		old := &ops.Item{Key: key, Value: it.Value, Flags: it.Flags, CAS: it.CAS}
		_, err = ops.Store(ctx, st.view, node, meta.ModeSet, old, exptimeOfTTL(it.TTL))
		if errors.Is(err, ops.ErrCASConflict) && attempt+1 < maxDrainAttempts {
			continue
		}
		if errors.Is(err, ops.ErrCASConflict) {
			return nil, fmt.Errorf("%w: %s kept changing while it was moved off draining node %s", ErrConflict, id, node)
		}
		// Any other failure leaves the old copy as it was: a late save to
		// it is then acknowledged but only read back by requests with the
		// old id (it is the newer copy for them), and logged here.
		if err != nil && !errors.Is(err, ops.ErrMiss) {
			st.log.Warn("could not mark the old copy of a session moved off a draining node", "id", id, "node", node, "err", err)
		}
		st.stats.loads.Add(1)
		st.stats.drained.Add(1)
		st.log.Info("session moved off a draining node", "from", id, "to", s.ID())
		return s, nil
	}
}

// exptimeOfTTL turns a TTL read with an item (-1: none) into the exptime
// to write it back with.
func exptimeOfTTL(ttl int32) int32 {
	if ttl < 0 {
		return 0
	}
	return max(ttl, 1)
}

// restoreDraining handles a session whose draining node answered "miss"
// (it restarted empty; cause nil) or is down (cause is its error): its
// backup copy, found as restore and relocate do (a copy relocated
// anywhere wins when it is as new), moves to target. As in relocate, a
// down node that may come back with the session (it timed out rather than
// refused) and no backup found give ErrUnavailable, not ErrNotFound.
func (st *Store) restoreDraining(ctx context.Context, id, base, node, target string, cause error) (*Session, error) {
	s, _, moved, err := st.findBackup(ctx, id, base, node, st.bkey(id))
	if moved {
		st.stats.loads.Add(1)
		return s, nil
	}
	switch {
	case cause != nil && errors.Is(err, ErrNotFound) && !st.view.ConnRefused(node):
		return nil, fmt.Errorf("%w: %s: draining node not answering, no backup copy: %w", ErrUnavailable, id, cause)
	case cause == nil && errors.Is(err, ErrUnavailable) && !errors.Is(err, errIncomplete):
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	case err != nil:
		return nil, err
	}
	if err := st.moveTo(ctx, s, base, node, target, false); err != nil {
		return nil, fmt.Errorf("%w: move %s off draining node %s to %s: %w", ErrUnavailable, id, node, target, err)
	}
	st.stats.loads.Add(1)
	st.stats.drained.Add(1)
	st.log.Info("session moved off a draining node from its backup copy", "from", id, "to", s.ID())
	return s, nil
}

// loadReaddressed is loadRemote for a session whose node id got a new
// address while the old one drains (named old in calls): both addresses
// are read in one round trip; a copy only at the old one, or newer there,
// is written to the new one under the same id (the higher version wins,
// as on restore). Nothing writes to the old address any more (calls for
// the id go to the new one), so its copy is left to expire.
func (st *Store) loadReaddressed(ctx context.Context, id, base, node, old string) (*Session, error) {
	key := st.key(id)
	batches := []ops.Batch{
		{Node: node, Reqs: []meta.Request{ops.GetRequest(key)}, Out: make([]meta.Response, 1)},
		{Node: old, Reqs: []meta.Request{ops.GetRequest(key)}, Out: make([]meta.Response, 1)},
	}
	st.view.ExecMany(ctx, batches)
	var prev *Session
	if batches[1].Err == nil {
		if it, err := ops.ItemOf(key, &batches[1].Out[0]); err == nil {
			if s, err := st.decode(id, &it); err == nil {
				prev = s
			}
		}
	}
	if err := batches[0].Err; err != nil {
		if errors.Is(err, replica.ErrNodeDown) {
			return st.relocate(ctx, id, base, node, st.bkey(id), err)
		}
		return nil, fmt.Errorf("store: load %s: %w", id, err)
	}
	it, err := ops.ItemOf(key, &batches[0].Out[0])
	switch {
	case err == nil:
		cur, derr := st.decode(id, &it)
		if derr == nil && (prev == nil || cur.version >= prev.version) {
			if moved := st.newerMoved(ctx, cur, base, node); moved != nil {
				cur = moved
			}
			st.stats.loads.Add(1)
			return cur, nil
		}
		if prev == nil {
			return nil, derr
		}
	case errors.Is(err, ops.ErrMiss):
		if prev == nil {
			return st.restore(ctx, id, node, key, st.bkey(id))
		}
	default:
		return nil, fmt.Errorf("store: load %s: %w", id, err)
	}
	prev.casID = 0
	if err := st.putPrimary(ctx, prev, node, key, false); err != nil {
		return nil, fmt.Errorf("%w: copy %s to the new address of node %s: %w", ErrUnavailable, id, node, err)
	}
	st.stats.loads.Add(1)
	st.stats.drained.Add(1)
	st.log.Info("session copied to its node's new address", "id", id, "node", node)
	return prev, nil
}
