package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
)

// Moved markers: how a load that reaches a node holding an old copy of a
// session learns that the session lives elsewhere now.
//
// A session relocates (gets the id base-<new node>) when an app server
// cannot reach its primary node. That node may only hang and come back
// with its copy, which is then older than the relocated one; another app
// server that never saw the outage, given the old cookie, would read that
// copy, and the change it saves there would be lost although acknowledged.
//
// So a relocation writes a marker, key moved:<old id> holding the new id,
// on every node that may hold the old id's backup copy (every candidate it
// reaches), and every load of a session reads, in the same round trip as
// the primary copy, the marker on the node where the session's backup copy
// is written (Placement's backup: the node a save would use). A marker
// found means the session moved: the copies that may exist are compared
// (findBackup: the backup copy and the relocated copies on every
// candidate) and the newest wins; an older primary copy is deleted with a
// CAS guard, so it can no longer be read. A save reads the marker too (in
// the backup write's batch) and answers ErrConflict when the session moved
// while the request held the old copy.

// markMoving is the value of a moved marker written before a relocation
// (see relocate): the session is being moved, its new id not yet known.
const markMoving = "-"

// mkey is the key of the moved marker of session id.
func (st *Store) mkey(id string) string { return st.prefix + "moved:" + id }

// markerRequest reads a moved marker's value (the new id).
func markerRequest(key string) meta.Request {
	return meta.Request{Command: meta.Get, Key: key, ReturnValue: true}
}

// markerNode returns the node that holds the moved marker a load of a
// session on node reads: the node its backup copy is written to; "" when
// there is none.
func (st *Store) markerNode(node string) string { return st.view.BackupOf(node) }

// getPrimary reads the primary copy of id (key on node) and, in the same
// round trip, the session's moved marker. movedTo is the marker's value
// (the id the session moved to), "" when there is none. When the marker
// node does not answer, the other nodes that got the marker are asked
// (markerElsewhere).
func (st *Store) getPrimary(ctx context.Context, id, node, key string) (it ops.Item, movedTo string, err error) {
	mnode := st.markerNode(node)
	if mnode == "" {
		it, err = ops.Get(ctx, st.view, node, key)
		return it, "", err
	}
	var (
		preq, mreq [1]meta.Request
		pout, mout [1]meta.Response
	)
	preq[0], mreq[0] = ops.GetRequest(key), markerRequest(st.mkey(id))
	batches := [2]ops.Batch{{Node: node, Reqs: preq[:], Out: pout[:]}, {Node: mnode, Reqs: mreq[:], Out: mout[:]}}
	st.view.ExecMany(ctx, batches[:])
	if err = batches[0].Err; err != nil {
		return ops.Item{}, "", err
	}
	if batches[1].Err != nil {
		movedTo = st.markerElsewhere(ctx, id, node, mnode)
	} else if mout[0].Status == meta.StatusOK {
		movedTo = string(mout[0].Value)
	}
	it, err = ops.ItemOf(key, &pout[0])
	return it, movedTo, err
}

// marker reads the moved marker of id from the marker node of node (see
// getPrimary): the id the session moved to, "" when there is none.
func (st *Store) marker(ctx context.Context, id, node string) string {
	mnode := st.markerNode(node)
	if mnode == "" {
		return ""
	}
	resp, err := ops.Do(ctx, st.view, mnode, markerRequest(st.mkey(id)))
	switch {
	case err == nil:
		return string(resp.Value)
	case errors.Is(err, ops.ErrMiss):
		return ""
	default:
		return st.markerElsewhere(ctx, id, node, mnode)
	}
}

// markerElsewhere reads the moved marker of id (primary node node) on
// every healthy candidate but skip, at once: the marker node did not
// answer, and a relocation writes the marker on every candidate it
// reaches. It returns the first marker found, "" for none.
func (st *Store) markerElsewhere(ctx context.Context, id, node, skip string) string {
	key := st.mkey(id)
	var batches []ops.Batch
	for _, n := range st.view.BackupCandidates(node) {
		if n != skip && st.view.Healthy(n) {
			batches = append(batches, ops.Batch{Node: n, Reqs: []meta.Request{markerRequest(key)}, Out: make([]meta.Response, 1)})
		}
	}
	st.view.ExecMany(ctx, batches)
	for _, b := range batches {
		if b.Err == nil && b.Out[0].Status == meta.StatusOK {
			return string(b.Out[0].Value)
		}
	}
	return ""
}

// followDepthKey is the context key of followMoved's recursion depth.
type followDepthKey struct{}

// maxFollowDepth bounds the chain of relocations followMoved follows by
// marker (a session relocated, then relocated again, ...).
const maxFollowDepth = 4

// followMoved handles a primary copy of id (it, read from node) whose
// moved marker was found, with the marker's value movedTo.
//
// A marker naming the new id: the session lives there now, whatever the
// version of this copy (a save that reached this copy after the marker
// was written was answered with a conflict, and one before it was moved
// along). The relocated copy is loaded (found among the candidates, or by
// its id with its own failover), and this copy is deleted with a CAS
// guard. When the relocated copy cannot be read, the load fails with
// ErrUnavailable rather than serve this copy; when it no longer exists
// (destroyed or expired), the session is not found.
//
// A marker saying "moving" (a relocation under way, or one that did not
// finish): the highest version among this copy and the others wins.
func (st *Store) followMoved(ctx context.Context, id, base, node string, it *ops.Item, movedTo string) (*Session, error) {
	primary, perr := st.decode(id, it)
	best, _, moved, err := st.findBackup(ctx, id, base, node, st.bkey(id))
	if movedTo == markMoving {
		switch {
		case err != nil && perr == nil:
			st.stats.loads.Add(1)
			return primary, nil // the only copy that can be read
		case err != nil:
			return nil, err
		case perr == nil && (primary.version > best.version || primary.version == best.version && !moved):
			st.stats.loads.Add(1)
			return primary, nil
		}
		if moved {
			st.removeStale(ctx, id, node, it)
		}
		st.stats.loads.Add(1)
		return best, nil
	}
	if err == nil && moved {
		st.removeStale(ctx, id, node, it)
		st.stats.loads.Add(1)
		st.log.Warn("old copy of a relocated session found on its former node: loading the relocated one", "id", id, "to", best.ID())
		return best, nil
	}
	if !errors.Is(err, ErrNotFound) && movedTo != id {
		// The relocated copy was not among those read: load it by its id.
		if s, ok := st.loadMovedTo(ctx, movedTo); ok {
			st.removeStale(ctx, id, node, it)
			s.oldID = id
			st.log.Warn("old copy of a relocated session found on its former node: loading the relocated one", "id", id, "to", s.ID())
			return s, nil
		}
		st.stats.staleRefused.Add(1)
		st.log.Warn("session relocated away from its node, and its relocated copy cannot be read: refused", "id", id, "to", movedTo, "err", err)
		return nil, fmt.Errorf("%w: %s was relocated to %s, which cannot be read", ErrUnavailable, id, movedTo)
	}
	st.removeStale(ctx, id, node, it)
	return nil, fmt.Errorf("%w: %s was relocated and no copy is left", ErrNotFound, id)
}

// removeStale deletes the old primary copy it of id on node, unless it
// changed since it was read, and counts it.
func (st *Store) removeStale(ctx context.Context, id, node string, it *ops.Item) {
	err := ops.Delete(ctx, st.view, node, it.Key, it.CAS)
	switch {
	case err == nil:
		st.stats.staleRemoved.Add(1)
		st.log.Info("old copy of a relocated session deleted", "id", id, "node", node)
	case errors.Is(err, ops.ErrMiss), errors.Is(err, ops.ErrCASConflict):
	default:
		st.log.Warn("could not delete the old copy of a relocated session", "id", id, "node", node, "err", err)
	}
}

// writeMarkers records that session oldID now lives under newID: the
// marker is written on every reachable node that may hold oldID's backup
// copy (BackupCandidates of its old primary), and newID's own marker is
// removed there (a session can move back to an id it had). exp is the
// session's exptime: an old copy cannot outlive it. Failures are logged;
// a node that did not get the marker is one a load is unlikely to ask,
// since it was unreachable.
func (st *Store) writeMarkers(ctx context.Context, oldID, oldNode, newID string, exp int32) {
	cands := st.view.BackupCandidates(oldNode)
	if len(cands) == 0 {
		return
	}
	mkey, newMkey := st.mkey(oldID), st.mkey(newID)
	batches := make([]ops.Batch, 0, len(cands))
	for _, n := range cands {
		if !st.view.Healthy(n) {
			continue
		}
		reqs := []meta.Request{{Command: meta.Set, Key: mkey, Value: []byte(newID), TTL: exp}}
		if newID != markMoving {
			reqs = append(reqs, meta.Request{Command: meta.Delete, Key: newMkey})
		}
		batches = append(batches, ops.Batch{Node: n, Reqs: reqs, Out: make([]meta.Response, len(reqs))})
	}
	st.view.ExecMany(ctx, batches)
	for _, b := range batches {
		err := b.Err
		if err == nil {
			err = ops.Answer(&b.Out[0])
		}
		if err != nil {
			st.log.Warn("could not write the moved marker of a relocated session", "id", oldID, "to", newID, "node", b.Node, "err", err)
		}
	}
}

// probe reads the CAS id of the copy of id at key on node (0 when it is
// missing or the node does not answer) and, in the same round trip, the
// session's moved marker: the sticky cache's check that its copy is
// still the newest.
func (st *Store) probe(ctx context.Context, id, node, key string) (cas uint64, moved bool) {
	var (
		preq, mreq [1]meta.Request
		pout, mout [1]meta.Response
		batches    [2]ops.Batch
	)
	preq[0] = ops.VersionRequest(key)
	list := append(batches[:0], ops.Batch{Node: node, Reqs: preq[:], Out: pout[:]})
	if mnode := st.markerNode(node); mnode != "" {
		mreq[0] = markerRequest(st.mkey(id))
		list = append(list, ops.Batch{Node: mnode, Reqs: mreq[:], Out: mout[:]})
	}
	st.view.ExecMany(ctx, list)
	// A marker node that does not answer leaves the question open: the
	// copy is treated as possibly stale, and the load reads memcached.
	moved = len(list) > 1 && (list[1].Err != nil || mout[0].Status == meta.StatusOK)
	if list[0].Err != nil || pout[0].Status != meta.StatusOK {
		return 0, moved
	}
	return pout[0].CAS, moved
}

// movedWhileSaving answers a save of session id whose moved marker the
// save found with ErrConflict: the session was relocated (or is being
// relocated) while this request held the copy it loaded. What the save
// wrote stays where it is: loads follow the marker to the relocated copy,
// and a relocation under way may have taken this write along, so it may
// be stored, but it is not acknowledged.
func (st *Store) movedWhileSaving(id string) error {
	st.stats.conflicts.Add(1)
	st.log.Warn("save refused: the session was relocated while this request held its old copy", "id", id)
	return fmt.Errorf("%w: %s was relocated while this request held an old copy", ErrConflict, id)
}

// loadMovedTo loads the session a moved marker names, following at most
// maxFollowDepth markers in a row.
func (st *Store) loadMovedTo(ctx context.Context, id string) (*Session, bool) {
	depth, _ := ctx.Value(followDepthKey{}).(int)
	if depth >= maxFollowDepth {
		return nil, false
	}
	base, node, ok := st.parse(id)
	if !ok {
		return nil, false
	}
	s, err := st.loadRemote(context.WithValue(ctx, followDepthKey{}, depth+1), id, base, node)
	return s, err == nil
}
