package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
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
// So a relocation writes a marker, key moved:<old id> holding the new id
// and the version the session moved at ("-" while the move runs), on every
// node that may hold the old id's backup copy (every candidate it
// reaches), and every load of a session reads, in the same round trip as
// the primary copy, the marker on the node where the session's backup copy
// is written (Placement's backup: the node a save would use). A marker
// naming a new id means the session lives there (followMoved); the old
// copy is deleted with a CAS guard, so it can no longer be read. A save
// reads the marker too, in its backup write's batch, and does not
// acknowledge a write to a copy that was moved away (savedOverMarker).

// markMoving is the value of a moved marker written before a relocation
// (see relocate) with add, for movingMarkTTL: the session is being moved,
// its new id not yet known. The final marker overwrites it.
const markMoving = "-"

// movingMarkTTL bounds the life of a "moving" marker whose relocation
// never finished (its app server died): saves of the old copy are answered
// 503 until then, rather than acknowledged on a copy that may be left
// behind.
const movingMarkTTL = 10 * time.Second

// marker is a parsed moved marker.
type marker struct {
	// moving is true for a relocation under way (value "-").
	moving bool
	// id is the id the session moved to; version the session's version
	// when it moved (a copy of the old id written later, after the
	// session moved back to it, is newer and the marker stale).
	id      string
	version uint64
}

// parseMarker parses a marker value: "-", or "<new id> <version>".
func parseMarker(v string) marker {
	if v == markMoving {
		return marker{moving: true}
	}
	id, ver, _ := strings.Cut(v, " ")
	n, _ := strconv.ParseUint(ver, 10, 64)
	return marker{id: id, version: n}
}

// String is the marker's stored value.
func (m marker) String() string {
	if m.moving {
		return markMoving
	}
	return m.id + " " + strconv.FormatUint(m.version, 10)
}

// mkey is the key of the moved marker of session id.
func (st *Store) mkey(id string) string { return st.prefix + "moved:" + id }

// markerRequest reads a moved marker's value (see parseMarker).
func markerRequest(key string) meta.Request {
	return meta.Request{Command: meta.Get, Key: key, ReturnValue: true}
}

// markerNode returns the node that holds the moved marker a load of a
// session on node reads: the node its backup copy is written to; "" when
// there is none.
func (st *Store) markerNode(node string) string { return st.view.BackupOf(node) }

// getPrimary reads the primary copy of id (key on node) and, in the same
// round trip, the session's moved marker. movedTo is the marker's value
// (see parseMarker), "" when there is none. When the marker
// node does not answer, the other nodes that got the marker are asked
// (markerElsewhere).
//
// The marker is not read when markerNotNeeded says so (fence.go), before
// and after the primary copy is read; when only the second check fails
// (this Store's knowledge of the fences went stale during the read), the
// marker is read in a round trip of its own.
func (st *Store) getPrimary(ctx context.Context, id, node, key string) (it ops.Item, movedTo string, err error) {
	if st.markerNotNeeded(node) {
		it, err = ops.Get(ctx, st.view, node, key)
		if err != nil && !errors.Is(err, ops.ErrMiss) || st.markerNotNeeded(node) {
			return it, "", err
		}
		return it, st.marker(ctx, id, node), err
	}
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
// getPrimary): its value, "" when there is none.
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
// moved marker was found, with the marker's value.
//
// A marker naming the new id: unless this copy is newer than the version
// the session had when it moved (it moved back to this id and was written
// since: the marker is stale and is removed), the session lives at the
// new id. It is loaded there, with that id's own failover and markers, and
// this copy is deleted with a CAS guard. When the new id cannot be read,
// the load fails with ErrUnavailable rather than serve this copy; when it
// no longer exists (destroyed or expired), the session is not found.
//
// A "moving" marker (a relocation under way): the highest version among
// this copy and the others found wins.
func (st *Store) followMoved(ctx context.Context, id, base, node string, it *ops.Item, value string) (*Session, error) {
	primary, perr := st.decode(id, it)
	m := parseMarker(value)
	if m.moving {
		best, _, moved, err := st.findBackup(ctx, id, base, node, st.bkey(id))
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
	if m.id == id || perr == nil && primary.version > m.version {
		st.dropMarker(ctx, id, node)
		st.stats.loads.Add(1)
		return primary, nil
	}
	s, err := st.loadMovedTo(ctx, m.id)
	switch {
	case err == nil:
		st.removeStale(ctx, id, node, it)
		s.oldID = id
		st.log.Warn("old copy of a relocated session found on its former node: loading the relocated one", "id", id, "to", s.ID())
		return s, nil
	case errors.Is(err, ErrNotFound):
		st.removeStale(ctx, id, node, it)
		return nil, fmt.Errorf("%w: %s was relocated to %s, which no longer exists", ErrNotFound, id, m.id)
	default:
		st.stats.staleRefused.Add(1)
		st.log.Warn("session relocated away from its node, and its relocated copy cannot be read: refused", "id", id, "to", m.id, "err", err)
		return nil, fmt.Errorf("%w: %s was relocated to %s, which cannot be read: %w", ErrUnavailable, id, m.id, err)
	}
}

// dropMarker deletes the stale moved marker of id from the marker node of
// node (it names a move the session has come back from).
func (st *Store) dropMarker(ctx context.Context, id, node string) {
	if mnode := st.markerNode(node); mnode != "" {
		_ = ops.Delete(ctx, st.view, mnode, st.mkey(id), 0)
	}
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

// writeMarkers records that session oldID now lives under newID (at
// version): the marker is written on every reachable node that may hold
// oldID's backup copy (BackupCandidates of its old primary), replacing a
// "moving" one, and newID's own marker is removed there (a session can
// move back to an id it had). exp is the session's exptime: an old copy
// cannot outlive it. Failures are logged.
func (st *Store) writeMarkers(ctx context.Context, oldID, oldNode, newID string, version uint64, exp int32) {
	value := marker{id: newID, version: version}.String()
	batches := st.markerBatches(oldNode, func(string) []meta.Request {
		return []meta.Request{
			{Command: meta.Set, Key: st.mkey(oldID), Value: []byte(value), TTL: exp},
			{Command: meta.Delete, Key: st.mkey(newID)},
		}
	})
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

// moveMark is a "moving" marker this store added, for its removal.
type moveMark struct {
	node string
	cas  uint64
}

// markMovingStart adds a "moving" marker for id (primary node node) on
// every reachable backup candidate that has no marker yet, and returns
// what it added.
func (st *Store) markMovingStart(ctx context.Context, id, node string) []moveMark {
	ttl := replica.Expiration(movingMarkTTL, time.Now())
	batches := st.markerBatches(node, func(string) []meta.Request {
		return []meta.Request{{Command: meta.Set, Mode: meta.ModeAdd, Key: st.mkey(id), Value: []byte(markMoving), TTL: ttl, ReturnCAS: true}}
	})
	st.view.ExecMany(ctx, batches)
	var marks []moveMark
	for _, b := range batches {
		if b.Err == nil && b.Out[0].Status == meta.StatusOK {
			marks = append(marks, moveMark{node: b.Node, cas: b.Out[0].CAS})
		}
	}
	return marks
}

// markMovingEnd removes the "moving" markers of id that marks added,
// unless they changed since (a final marker replaced them).
func (st *Store) markMovingEnd(ctx context.Context, id string, marks []moveMark) {
	for _, m := range marks {
		_ = ops.Delete(ctx, st.view, m.node, st.mkey(id), m.cas)
	}
}

// markerBatches returns one batch of reqs(node) for every healthy backup
// candidate of oldNode.
func (st *Store) markerBatches(oldNode string, reqs func(node string) []meta.Request) []ops.Batch {
	var batches []ops.Batch
	for _, n := range st.view.BackupCandidates(oldNode) {
		if !st.view.Healthy(n) {
			continue
		}
		r := reqs(n)
		batches = append(batches, ops.Batch{Node: n, Reqs: r, Out: make([]meta.Response, len(r))})
	}
	return batches
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
	skip := st.markerNotNeeded(node) // see getPrimary
	if mnode := st.markerNode(node); mnode != "" && !skip {
		mreq[0] = markerRequest(st.mkey(id))
		list = append(list, ops.Batch{Node: mnode, Reqs: mreq[:], Out: mout[:]})
	}
	st.view.ExecMany(ctx, list)
	// A marker node that does not answer leaves the question open: the
	// copy is treated as possibly stale, and the load reads memcached.
	moved = len(list) > 1 && (list[1].Err != nil || mout[0].Status == meta.StatusOK)
	if skip && !st.markerNotNeeded(node) {
		moved = true // unknown: the load reads memcached (and the marker)
	}
	if list[0].Err != nil || pout[0].Status != meta.StatusOK {
		return 0, moved
	}
	return pout[0].CAS, moved
}

// savedOverMarker handles a save of session id whose backup batch found
// the session's moved marker (value). It returns handled false when the
// save stands after all: the marker was stale (the session moved back to
// this id since), or the relocation it announced gave up. Otherwise it
// returns the save's error:
//
//   - the session was relocated while this request held its old copy: the
//     write to the old copy is deleted again (CAS-guarded; loads follow
//     the marker, and a copy newer than the marker would look like the
//     session moving back) and the save is ErrConflict;
//   - a relocation is under way: its end is awaited (bounded); when it
//     took this write along the save is ErrUnavailable (stored, but under
//     the new id the client does not know yet), when it did not,
//     ErrConflict; when it does not end in time, ErrUnavailable.
//
// version is the version the save wrote; newCAS, pErr, backup and bErr
// what replicate returned.
func (st *Store) savedOverMarker(ctx context.Context, id, node, key string, version, newCAS uint64, pErr error,
	backup, bkey string, bErr error, mnode, value string) (handled bool, err error) {
	m := parseMarker(value)
	for wait := 0; m.moving && wait < 40; wait++ {
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("%w: %s is being relocated: %w", ErrUnavailable, id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := ops.Do(ctx, st.view, mnode, markerRequest(st.mkey(id)))
		switch {
		case errors.Is(err, ops.ErrMiss):
			return false, nil // the relocation gave up: this save stands
		case err == nil:
			m = parseMarker(string(resp.Value))
		}
	}
	if m.moving {
		st.log.Warn("save not acknowledged: a relocation of the session is under way", "id", id)
		return true, fmt.Errorf("%w: %s is being relocated", ErrUnavailable, id)
	}
	if m.id == id || version-1 > m.version {
		return false, nil // a stale marker: the session moved back here
	}
	if pErr == nil {
		if err := ops.Delete(ctx, st.view, node, key, newCAS); err != nil && !errors.Is(err, ops.ErrMiss) && !errors.Is(err, ops.ErrCASConflict) {
			st.log.Warn("could not delete a save to the old copy of a relocated session", "id", id, "node", node, "err", err)
		}
	}
	if backup != "" && bErr == nil {
		_ = ops.Delete(ctx, st.view, backup, bkey, 0)
	}
	st.stats.conflicts.Add(1)
	if m.version >= version {
		st.log.Warn("save not acknowledged: the session was relocated with this write, under a new id", "id", id, "to", m.id)
		return true, fmt.Errorf("%w: %s was relocated to %s during this save", ErrUnavailable, id, m.id)
	}
	st.log.Warn("save refused: the session was relocated while this request held its old copy", "id", id, "to", m.id)
	return true, fmt.Errorf("%w: %s was relocated while this request held an old copy", ErrConflict, id)
}

// loadMovedTo loads the session a moved marker names, following at most
// maxFollowDepth markers in a row (ErrUnavailable past that).
func (st *Store) loadMovedTo(ctx context.Context, id string) (*Session, error) {
	depth, _ := ctx.Value(followDepthKey{}).(int)
	if depth >= maxFollowDepth {
		return nil, fmt.Errorf("%w: %s: more than %d relocations in a row", ErrUnavailable, id, maxFollowDepth)
	}
	base, node, ok := st.parse(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return st.loadRemote(context.WithValue(ctx, followDepthKey{}, depth+1), id, base, node)
}
