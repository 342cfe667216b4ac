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
//
// A fence lives as long as the sessions whose markers it announces: its
// value is a deadline (Unix seconds), extended, never shortened, with CAS,
// and a Store counts it until fenceSlack after that deadline (the item's
// TTL). So a mover that extends a fence its own reads have seen for a
// whole window (the last of them less than half a window ago, each less
// than a window after the one before), and that its write found still
// there, moves at once: every Store still counts the fence, by the
// deadline it saw, for fenceSlack more than any window (FenceWindow is at most
// MaxFenceWindow), and wall clocks of app servers may differ by that much
// minus a window. A mover writes the fence on every node it reaches, so a
// node that restarts empty loses only its copy; a fence that every node
// holding it lost is written again by the next mover, who then waits.

// DefaultFenceWindow is the default Config.FenceWindow.
const DefaultFenceWindow = time.Second

// MaxFenceWindow is the largest Config.FenceWindow: well under
// fenceSlack, which covers the window and the app servers' clock skew.
const MaxFenceWindow = 10 * time.Second

// fenceSlack is how long after its deadline a fence still counts, and
// lives in memcached (see the comment at the top of this file).
const fenceSlack = time.Minute

// fenceHeadroom is how much later than a move needs a fence's deadline is
// written, so that the moves right after it do not extend it each time.
const fenceHeadroom = time.Minute

// fences is a Store's knowledge of the fences in memcached.
type fences struct {
	// window is Config.FenceWindow.
	window time.Duration
	// always is Config.AlwaysReadMarkers: loads never skip the marker.
	always bool
	// manual stops loads from starting refreshes (RefreshFences only):
	// set by tests that count commands.
	manual bool
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
	// fenced are the nodes known to be fenced, until fenceSlack past
	// their fence's deadline.
	fenced map[string]fenceInfo
}

// fenceInfo is what a Store knows of the fence of one node.
type fenceInfo struct {
	// since is the earliest time the fence is known to have been in
	// memcached without a break; until is its deadline (it counts until
	// fenceSlack later).
	since, until time.Time
	// confirmed is set when the last refresh found the fence on a node
	// that answered it (or this Store wrote it since); a fence only
	// remembered (from earlier, or from a node that did not answer now)
	// still counts for loads, but a mover writes it again and waits.
	confirmed bool
	// written is when this Store's own write last found or put the fence
	// in memcached (zero: never): fresh knowledge for its next move.
	written time.Time
}

// fkey is the key of node's fence.
func (st *Store) fkey(node string) string { return st.prefix + "fence:" + node }

// markerNotNeeded reports whether a load of a session on node may skip
// its moved marker: AlwaysReadMarkers is off, node is not fenced, and every other
// node of the list was read less than the window ago (see the comment at
// the top of this file). Call it after the primary copy was read; it
// also starts a refresh when the last one is half a window old.
func (st *Store) markerNotNeeded(node string) bool {
	f := &st.fences
	sn := f.snap.Load()
	now := time.Now()
	if (sn == nil || now.Sub(sn.taken) >= f.window/2) && !f.manual {
		st.refreshFences() // with AlwaysReadMarkers too: movers use what it finds
	}
	if sn == nil || f.always {
		return false
	}
	if info, ok := sn.fenced[node]; ok && info.counts(now) {
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
// kept).
func (st *Store) RefreshFences(ctx context.Context) error {
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
	// seen: fenced node -> latest deadline found; confirmedNow: found by a
	// node that answered now.
	seen := map[string]time.Time{}
	confirmedNow := map[string]bool{}
	var err error
	for i, b := range batches {
		berr := b.Err
		for k := range b.Out {
			if berr == nil && b.Out[k].Status != meta.StatusOK && b.Out[k].Status != meta.StatusMiss {
				berr = fmt.Errorf("fence %s: %w", b.Reqs[k].Key, ops.Answer(&b.Out[k]))
			}
		}
		if berr != nil {
			if err == nil {
				err = fmt.Errorf("%w: reading the fences on %s: %w", ErrUnavailable, b.Node, berr)
			}
			// Keep what this node said last time (its read time says how
			// old that is).
			if j := old.index(b.Node); j >= 0 {
				next.readAt[i], next.found[i] = old.readAt[j], old.found[j]
				for _, x := range old.found[j] {
					if prev, ok := old.get(x); ok {
						seen[x] = later(seen[x], prev.until)
					}
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
			confirmedNow[x] = true
		}
	}
	for x, until := range seen {
		info := fenceInfo{since: recv, until: until, confirmed: confirmedNow[x]}
		if prev, ok := old.get(x); ok && prev.confirmed && info.confirmed && prev.until.After(recv) && sent.Sub(old.taken) <= f.window {
			// Present without a break (as far as two reads less than a
			// window apart tell).
			info.since, info.until = prev.since, later(until, prev.until)
		}
		next.fenced[x] = info
	}
	if old != nil {
		for x, prev := range old.fenced {
			if _, ok := next.fenced[x]; !ok && prev.counts(recv) {
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

// counts reports whether the fence still counts at now: until fenceSlack
// after its deadline.
func (info fenceInfo) counts(now time.Time) bool { return now.Before(info.until.Add(fenceSlack)) }

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
	sn := f.snap.Load()
	info, ok := sn.get(node)
	// What this Store knows counts only when it was read lately (less
	// than half a window ago) on the node list in use, or written by this
	// Store lately (less than two windows ago: its own wait included, so
	// that a relocation's second call, in moveTo, does not fence again).
	nodes := st.view.ActiveNodes()
	fresh := sn != nil && len(nodes) > 0 && len(sn.nodes) == len(nodes) && &sn.nodes[0] == &nodes[0] &&
		time.Since(sn.taken) < f.window/2
	known := (fresh || time.Since(info.written) < 2*f.window) && ok && info.confirmed && info.until.After(time.Now())
	if !known || info.until.Before(until) {
		// A minute more than needed: the moves that follow (whose sessions
		// expire a little later) need not extend the fence again.
		until = until.Add(fenceHeadroom)
		since, existed, err := st.writeFence(ctx, node, until)
		if err != nil {
			return err
		}
		// The fence was there without a break since info.since only when
		// this Store knew it and its write found it there.
		info = st.noteFence(node, since, until, known && existed)
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

// noteFence records that node's fence is in memcached since since until
// until; with carry, since the earlier time this Store knew it from (it
// was extended before its deadline).
func (st *Store) noteFence(node string, since, until time.Time, carry bool) fenceInfo {
	f := &st.fences
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.snap.Load()
	info := fenceInfo{since: since, until: until, confirmed: true, written: time.Now()}
	if prev, ok := old.get(node); carry && ok && prev.confirmed && prev.until.After(time.Now()) {
		// Present without a break since prev.since: extended before its
		// deadline (every Store counts it fenceSlack past that).
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
// returns the earliest time at which a node is known to have held it,
// and whether a node had a fence before (existed).
func (st *Store) writeFence(ctx context.Context, node string, until time.Time) (since time.Time, existed bool, err error) {
	key := st.fkey(node)
	value := []byte(strconv.FormatInt(until.Unix(), 10))
	ttl := replica.Expiration(time.Until(until)+fenceSlack, time.Now())
	var targets []string
	for _, n := range st.view.ActiveNodes() {
		if n != node && st.view.Healthy(n) {
			targets = append(targets, n)
		}
	}
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
				since, existed = earliest(since, now), true // long enough already
			case resp.Status == meta.StatusOK:
				existed = true
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
		return time.Time{}, false, fmt.Errorf("%w: fencing node %s before moving sessions off it: %w", ErrUnavailable, node, lastErr)
	}
	st.log.Info("node fenced: loads of its sessions read their moved markers", "node", node, "until", until)
	return since, existed, nil
}

// earliest returns the earlier of a and b, a zero time counting as none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
