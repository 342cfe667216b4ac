package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

// Fences: what spares a load the moved-marker read (moved.go) while no
// session has been relocated off its node.
//
// Reading a session's moved marker costs a command on a second node in
// every load. It is needed only for sessions of a node that sessions were
// moved off (a relocation or a drain wrote markers for some of its
// sessions). So before the first move off node X, the mover writes a
// fence, key fence:X, on every other node of the list it reaches, and
// then waits FenceWindow (plus a tenth) before it goes on; every Store
// re-reads all fences, in one batch per node, every FenceWindow/2 while
// it serves loads.
//
// A load of a session on X skips the marker read only when, after the
// primary copy was read, the Store's last read of every other node of the
// list was sent less than FenceWindow ago and found no fence of X;
// otherwise it reads the marker (in the same round trip when it knows
// beforehand, in one more round trip when its knowledge went stale
// during the read).
//
// Why this is as safe as reading the marker always: the relocation is
// acknowledged (its copy written, a save answered) after f + FenceWindow,
// f the time the fence was stored. A load that starts after that and skips
// the marker read has read every other node, at a time no earlier than its
// own end minus FenceWindow, that is after f: one of those reads found the
// fence (it is on every node the mover reached, at least one), so the
// load does read the marker. The reasoning needs every app server to use
// the same FenceWindow, and durations measured with monotonic clocks (the
// margin of a tenth covers their drift); a Store whose process pauses
// mid-load finds its knowledge stale after the read and reads the marker.
// Like the markers, fences live as long as the sessions whose markers they
// announce (a fence's deadline is extended, never shortened, with CAS),
// and what a node loses by restarting empty the others still hold.

// DefaultFenceWindow is the default Config.FenceWindow.
const DefaultFenceWindow = time.Second

// fenceSlack is added to a fence's TTL beyond the life of the sessions
// it announces (clocks of app servers differ a little).
const fenceSlack = time.Minute

// fences is a Store's knowledge of the fences in memcached.
type fences struct {
	// window is Config.FenceWindow; 0 turns fences off (every load reads
	// the marker).
	window time.Duration
	snap   atomic.Pointer[fenceSnap]
	// refreshing is set while a refresh runs (one at a time).
	refreshing atomic.Bool
	// mu serializes the writers of snap.
	mu sync.Mutex
}

// fenceSnap is one immutable state of a Store's knowledge of the fences.
type fenceSnap struct {
	// taken is when the last refresh was sent.
	taken time.Time
	// nodes is the node list (view.ActiveNodes) the refresh read; readAt[i]
	// is when the last read of nodes[i] that succeeded was sent (zero: never).
	nodes  []string
	readAt []time.Time
	// found[i] are the fences the last successful read of nodes[i] found.
	found [][]string
	// fenced are the nodes known to be fenced, until their fence's
	// deadline.
	fenced map[string]fenceInfo
}

// fenceInfo is what a Store knows of the fence of one node.
type fenceInfo struct {
	// since is the earliest time the fence is known to have been in
	// memcached without a break; until is its deadline.
	since, until time.Time
	// confirmed is set when the last refresh (or this Store's own write
	// since) found the fence on a node; a fence only remembered from
	// earlier still counts as present for loads, but a mover writes it
	// again.
	confirmed bool
}

// fkey is the key of node's fence.
func (st *Store) fkey(node string) string { return st.prefix + "fence:" + node }

// markerNotNeeded reports whether a load of a session on node may skip
// its moved marker: fences are on, node is not fenced, and every other
// node of the list was read less than the window ago (see the comment at
// the top of this file). Call it after the primary copy was read; it
// also starts a refresh when the last one is half a window old.
func (st *Store) markerNotNeeded(node string) bool {
	f := &st.fences
	if f.window <= 0 {
		return false
	}
	sn := f.snap.Load()
	now := time.Now()
	if sn == nil || now.Sub(sn.taken) >= f.window/2 {
		st.refreshFences()
	}
	if sn == nil {
		return false
	}
	if info, ok := sn.fenced[node]; ok && now.Before(info.until) {
		return false
	}
	nodes := st.view.ActiveNodes()
	if len(nodes) != len(sn.nodes) || len(nodes) == 0 || &nodes[0] != &sn.nodes[0] {
		return false // the list changed since the last refresh
	}
	for i, n := range sn.nodes {
		if n != node && now.Sub(sn.readAt[i]) >= f.window {
			return false
		}
	}
	return true
}

// refreshFences starts a read of every node's fences in the background,
// unless one runs already.
func (st *Store) refreshFences() {
	if !st.fences.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer st.fences.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), st.fences.window)
		defer cancel()
		_ = st.readFences(ctx) // a node that did not answer makes loads read the markers
	}()
}

// RefreshFences reads every node's fences now (see Relocation in the
// package doc) and waits for the answers. A Store does so by itself, in
// the background, while it serves loads; call it at start-up so that the
// first loads need not read moved markers. It returns an error wrapping
// ErrUnavailable when a node did not answer (what the others answered is
// kept). With fences off (Config.FenceWindow negative) it does nothing.
func (st *Store) RefreshFences(ctx context.Context) error {
	if st.fences.window <= 0 {
		return nil
	}
	return st.readFences(ctx)
}

// readFences reads the fence of every other node from each node of the
// list, in one round trip, and records what it found. It returns the
// error of a node that did not answer.
func (st *Store) readFences(ctx context.Context) error {
	nodes := st.view.ActiveNodes()
	batches := make([]ops.Batch, len(nodes))
	for i, n := range nodes {
		reqs := make([]meta.Request, 0, len(nodes)-1)
		for _, x := range nodes {
			if x != n {
				reqs = append(reqs, meta.Request{Command: meta.Get, Key: st.fkey(x), ReturnValue: true})
			}
		}
		batches[i] = ops.Batch{Node: n, Reqs: reqs, Out: make([]meta.Response, len(reqs))}
	}
	sent := time.Now()
	if len(nodes) > 1 { // a single node holds no fence (and there is nothing to ask)
		st.view.ExecMany(ctx, batches)
	}
	recv := time.Now()

	f := &st.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.snap.Load()
	next := &fenceSnap{taken: sent, nodes: nodes, readAt: make([]time.Time, len(nodes)),
		found: make([][]string, len(nodes)), fenced: map[string]fenceInfo{}}
	seen := map[string]time.Time{} // fenced node: latest deadline found
	var err error
	for i, b := range batches {
		if b.Err != nil {
			if err == nil {
				err = fmt.Errorf("%w: reading the fences on %s: %w", ErrUnavailable, b.Node, b.Err)
			}
			if j := old.index(b.Node); j >= 0 {
				next.readAt[i], next.found[i] = old.readAt[j], old.found[j]
				for _, x := range old.found[j] {
					seen[x] = later(seen[x], old.fenced[x].until)
				}
			}
			continue
		}
		next.readAt[i] = sent
		for k, resp := range b.Out {
			if resp.Status != meta.StatusOK {
				continue
			}
			x := fencedNode(b.Reqs[k].Key, st.prefix)
			next.found[i] = append(next.found[i], x)
			seen[x] = later(seen[x], fenceDeadline(resp.Value, recv))
		}
	}
	for x, until := range seen {
		info := fenceInfo{since: recv, until: until, confirmed: true}
		if prev, ok := old.get(x); ok && prev.until.After(recv) {
			info.since, info.until = prev.since, later(until, prev.until) // present without a break
		}
		next.fenced[x] = info
	}
	if old != nil {
		for x, prev := range old.fenced {
			if _, ok := next.fenced[x]; !ok && prev.until.After(recv) {
				prev.confirmed = false // not found now (a node restarted?): still counts for loads
				next.fenced[x] = prev
			}
		}
	}
	f.snap.Store(next)
	return err
}

// index returns the position of node in sn.nodes, -1 when absent (or sn
// is nil).
func (sn *fenceSnap) index(node string) int {
	if sn == nil {
		return -1
	}
	for i, n := range sn.nodes {
		if n == node {
			return i
		}
	}
	return -1
}

// get returns what sn knows of node's fence (sn may be nil).
func (sn *fenceSnap) get(node string) (fenceInfo, bool) {
	if sn == nil {
		return fenceInfo{}, false
	}
	info, ok := sn.fenced[node]
	return info, ok
}

// fencedNode returns the node a fence key names.
func fencedNode(key, prefix string) string { return key[len(prefix)+len("fence:"):] }

// fenceDeadline parses a fence's value, its deadline in Unix seconds; an
// unreadable one counts as lasting fenceSlack from now.
func fenceDeadline(v []byte, now time.Time) time.Time {
	secs, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || secs <= 0 {
		return now.Add(fenceSlack)
	}
	return time.Unix(secs, 0)
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// fence makes sure node is fenced until at least until, and that the
// fence has been in memcached for a whole window, before sessions move
// off node (see the comment at the top of this file): it writes or
// extends the fence on every other healthy node of the list when this
// Store does not know it to be there, then waits out the window. It fails
// with ErrUnavailable when no node took the fence, or ctx ends.
func (st *Store) fence(ctx context.Context, node string, until time.Time) error {
	f := &st.fences
	if f.window <= 0 {
		return nil
	}
	info, ok := f.snap.Load().get(node)
	if !ok || !info.confirmed || info.until.Before(until) {
		since, err := st.writeFence(ctx, node, until)
		if err != nil {
			return err
		}
		info = st.noteFence(node, since, until)
	}
	wait := time.Until(info.since.Add(f.window + f.window/10))
	if wait <= 0 {
		return nil
	}
	st.log.Debug("fenced a node before moving sessions off it: waiting until every app server knows", "node", node, "wait", wait)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: fencing node %s: %w", ErrUnavailable, node, ctx.Err())
	}
}

// noteFence records that node's fence is in memcached since since (or
// earlier, when it was known already) until until.
func (st *Store) noteFence(node string, since, until time.Time) fenceInfo {
	f := &st.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.snap.Load()
	info := fenceInfo{since: since, until: until, confirmed: true}
	if prev, ok := old.get(node); ok && prev.confirmed && prev.until.After(time.Now()) {
		info.since, info.until = earliest(prev.since, since), later(prev.until, until)
	}
	next := &fenceSnap{fenced: make(map[string]fenceInfo, 1)}
	if old != nil {
		*next = *old
		next.fenced = make(map[string]fenceInfo, len(old.fenced)+1)
		for k, v := range old.fenced {
			next.fenced[k] = v
		}
	}
	next.fenced[node] = info
	f.snap.Store(next)
	return info
}

// errNoFence is the cause of a fence no node took.
var errNoFence = errors.New("no other node took the fence")

// writeFence writes node's fence with deadline until (or keeps one with a
// later deadline) on every other healthy node of the list: add where
// there is none, a CAS-guarded set where there is an earlier one. It
// returns the earliest time at which a node is known to have held it.
func (st *Store) writeFence(ctx context.Context, node string, until time.Time) (time.Time, error) {
	key := st.fkey(node)
	value := []byte(strconv.FormatInt(until.Unix(), 10))
	ttl := replica.Expiration(time.Until(until)+fenceSlack, time.Now())
	var targets []string
	for _, n := range st.view.ActiveNodes() {
		if n != node && st.view.Healthy(n) {
			targets = append(targets, n)
		}
	}
	var since time.Time
	var lastErr error
	for attempt := 0; attempt < 3 && len(targets) > 0; attempt++ {
		reads := make([]ops.Batch, len(targets))
		for i, n := range targets {
			reads[i] = ops.Batch{Node: n, Reqs: []meta.Request{{Command: meta.Get, Key: key, ReturnValue: true, ReturnCAS: true}}, Out: make([]meta.Response, 1)}
		}
		st.view.ExecMany(ctx, reads)
		now := time.Now()
		var writes []ops.Batch
		for _, b := range reads {
			resp := &b.Out[0]
			switch {
			case b.Err != nil:
				lastErr = b.Err
			case resp.Status == meta.StatusOK && !fenceDeadline(resp.Value, now).Before(until):
				since = earliest(since, now) // long enough already
			case resp.Status == meta.StatusOK:
				writes = append(writes, ops.Batch{Node: b.Node, Reqs: []meta.Request{{Command: meta.Set, Key: key, Value: value, TTL: ttl, CAS: resp.CAS}}, Out: make([]meta.Response, 1)})
			default:
				writes = append(writes, ops.Batch{Node: b.Node, Reqs: []meta.Request{{Command: meta.Set, Mode: meta.ModeAdd, Key: key, Value: value, TTL: ttl}}, Out: make([]meta.Response, 1)})
			}
		}
		st.view.ExecMany(ctx, writes)
		now = time.Now()
		targets = targets[:0]
		for _, b := range writes {
			err := b.Err
			if err == nil {
				err = ops.Answer(&b.Out[0])
			}
			switch {
			case err == nil:
				since = earliest(since, now)
			case errors.Is(err, ops.ErrNotStored), errors.Is(err, ops.ErrCASConflict), errors.Is(err, ops.ErrMiss):
				targets = append(targets, b.Node) // changed meanwhile: read it again
			default:
				lastErr = err
			}
		}
	}
	if since.IsZero() {
		if lastErr == nil {
			lastErr = errNoFence
		}
		return time.Time{}, fmt.Errorf("%w: fencing node %s before moving sessions off it: %w", ErrUnavailable, node, lastErr)
	}
	st.log.Info("node fenced: loads of its sessions read their moved markers", "node", node, "until", until)
	return since, nil
}

// earliest returns the earlier of a and b, a zero time counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
