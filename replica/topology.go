package replica

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"
)

// DefaultDrainTimeout is how long a node removed by SetNodes keeps being
// read (drained) before it is dropped: the default idle timeout of a
// session, so that every session that is still alive when the drain ends
// has been requested, and moved, during it.
const DefaultDrainTimeout = 30 * time.Minute

// drainPrefix starts the internal name of the old incarnation of a node
// whose address changed ("~" + id); it cannot start a node id.
const drainPrefix = "~"

// topology is one node list of a Cluster. It is never changed once
// published: SetNodes builds a new one and swaps the pointer, so that every
// call sees one list or the other, never a mix.
type topology struct {
	// nodes are the active nodes, in list order: they take new sessions
	// and backup copies.
	nodes []*node
	// ids are the ids of nodes, in order (shared by every caller of the
	// ops view's ActiveNodes: never modified).
	ids []string
	// index is each active node's position in nodes.
	index map[string]int
	// draining are the nodes removed from the list and still read until
	// their drain ends, by id. An id may be both active (its new address)
	// and draining (its old one).
	draining map[string]*drain
}

// drain is a removed node being drained.
type drain struct {
	node  *node
	since time.Time
	// successors are the ids that followed the node in the list it was
	// removed from: the places its sessions' backup copies were written to.
	successors []string
	// timer drops the node when the drain timeout has passed.
	timer *time.Timer
}

// lookup returns the node that calls named name go to: an active node by
// its id, else a draining node by its id, or the old incarnation of a node
// whose address changed by "~" + id.
func (t *topology) lookup(name string) (*node, bool) {
	if id, ok := cutDrainPrefix(name); ok {
		if d, ok := t.draining[id]; ok {
			return d.node, true
		}
		return nil, false
	}
	if i, ok := t.index[name]; ok {
		return t.nodes[i], true
	}
	if d, ok := t.draining[name]; ok {
		return d.node, true
	}
	return nil, false
}

// cutDrainPrefix returns id for "~" + id.
func cutDrainPrefix(name string) (string, bool) {
	if len(name) > len(drainPrefix) && name[:len(drainPrefix)] == drainPrefix {
		return name[len(drainPrefix):], true
	}
	return "", false
}

// all returns the active nodes followed by the draining ones (sorted by
// id), for statistics and Close.
func (t *topology) all() []*node {
	out := slices.Clone(t.nodes)
	for _, id := range t.drainingIDs() {
		out = append(out, t.draining[id].node)
	}
	return out
}

// drainingIDs returns the ids of the draining nodes, sorted.
func (t *topology) drainingIDs() []string {
	ids := make([]string, 0, len(t.draining))
	for id := range t.draining {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// NodeChange tells what SetNodes changed. A node whose address changed is
// in both Added and Removed.
type NodeChange struct {
	// Added are the ids of nodes that were not in the list (or had another
	// address): they take new sessions from now on.
	Added []string
	// Removed are the ids of nodes that left the list (or whose address
	// changed): they are drained (see SetNodes).
	Removed []string
	// Kept are the ids of nodes that stay, with the same address.
	Kept []string
	// Undrained are the ids of draining nodes that came back into the list
	// with the same address: they are active again, with their data.
	Undrained []string
}

// Empty reports whether the change changed nothing.
func (ch NodeChange) Empty() bool {
	return len(ch.Added) == 0 && len(ch.Removed) == 0 && len(ch.Undrained) == 0
}

// ErrNotDraining is returned by EndDrain for an id that names no draining
// node.
var ErrNotDraining = errors.New("replica: node is not draining")

// SetNodes replaces the node list of the running cluster atomically: every
// call that starts afterwards sees the new list, every call that started
// before finishes with the old one, and none sees a mix.
//
// Nodes that are new in the list take new sessions and backup copies at
// once. A node that leaves the list is drained: it takes no new session
// and no backup copy, but it is still read, and a session found on it is
// moved to a node of the new list on its next request (it gets a new id,
// as after a failover, and nothing is lost). The node is dropped, and its
// connections closed, when Config.DrainTimeout (default
// DefaultDrainTimeout, 30 min) has passed or at EndDrain. A node id whose
// address changes is a removal plus an addition: its sessions keep their
// ids and are copied from the old address to the new one on their next
// request. A draining node that comes back with the same address is
// active again with its data (Undrained).
//
// The list must satisfy the rules of New (ErrBadNodeList otherwise); the
// nodes are not contacted. Every app server of a cluster should get the
// same list at about the same time: until it does, an app server with the
// old list writes new sessions to the old nodes, where the others still
// find them while those nodes drain.
func (c *Cluster) SetNodes(nodes []Node) (NodeChange, error) {
	if err := validateNodes(nodes); err != nil {
		return NodeChange{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return NodeChange{}, ErrClosed
	}
	old := c.topo.Load()
	next := &topology{index: make(map[string]int, len(nodes)), draining: make(map[string]*drain, len(old.draining))}
	var ch NodeChange
	inNew := make(map[string]string, len(nodes)) // id -> addr
	for _, n := range nodes {
		inNew[n.ID] = n.Addr
	}
	// Draining nodes stay draining unless they come back unchanged.
	for id, d := range old.draining {
		if inNew[id] == d.node.Addr {
			continue // undrained below
		}
		next.draining[id] = d
	}
	for _, n := range nodes {
		var nd *node
		if i, ok := old.index[n.ID]; ok && old.nodes[i].Addr == n.Addr {
			nd = old.nodes[i]
			ch.Kept = append(ch.Kept, n.ID)
		} else if d, ok := old.draining[n.ID]; ok && d.node.Addr == n.Addr {
			d.timer.Stop()
			nd = d.node
			ch.Undrained = append(ch.Undrained, n.ID)
		} else {
			nd = c.newNode(n)
			ch.Added = append(ch.Added, n.ID)
		}
		next.index[n.ID] = len(next.nodes)
		next.nodes = append(next.nodes, nd)
		next.ids = append(next.ids, n.ID)
	}
	now := time.Now()
	for i, nd := range old.nodes {
		if inNew[nd.ID] == nd.Addr {
			continue
		}
		ch.Removed = append(ch.Removed, nd.ID)
		if prev, ok := next.draining[nd.ID]; ok {
			// The id was draining an older address already and now leaves
			// the list again: that older incarnation ends now, since only
			// one old address per id is kept.
			c.dropNode(prev)
		}
		d := &drain{node: nd, since: now}
		for j := 1; j < len(old.nodes); j++ {
			d.successors = append(d.successors, old.nodes[(i+j)%len(old.nodes)].ID)
		}
		id := nd.ID
		d.timer = time.AfterFunc(c.drainTimeout, func() { _ = c.endDrain(id, d) })
		next.draining[nd.ID] = d
	}
	c.topo.Store(next)
	if !ch.Empty() {
		c.log.Info("memcached node list changed", "added", ch.Added, "removed", ch.Removed,
			"undrained", ch.Undrained, "nodes", len(next.nodes), "draining", next.drainingIDs())
	}
	return ch, nil
}

// Nodes returns the active node list (the last one given to New or
// SetNodes), without the draining nodes.
func (c *Cluster) Nodes() []Node {
	t := c.topo.Load()
	out := make([]Node, len(t.nodes))
	for i, n := range t.nodes {
		out[i] = n.Node
	}
	return out
}

// DrainingNode describes a node that SetNodes removed and that is still
// read until its drain ends.
type DrainingNode struct {
	Node
	// Since is when SetNodes removed it.
	Since time.Time
	// Until is when it will be dropped (Since + Config.DrainTimeout).
	Until time.Time
}

// Draining returns the nodes being drained, sorted by id.
func (c *Cluster) Draining() []DrainingNode {
	t := c.topo.Load()
	var out []DrainingNode
	for _, id := range t.drainingIDs() {
		d := t.draining[id]
		out = append(out, DrainingNode{Node: d.node.Node, Since: d.since, Until: d.since.Add(c.drainTimeout)})
	}
	return out
}

// EndDrain drops the draining node id now rather than at the end of its
// drain timeout: its connections are closed and sessions still on it are
// no longer found (their backup copies still are, while their backup
// nodes are in the list). It returns an error wrapping ErrNotDraining when
// id is not draining.
func (c *Cluster) EndDrain(id string) error {
	c.mu.Lock()
	d, ok := c.topo.Load().draining[id]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotDraining, id)
	}
	return c.endDrain(id, d)
}

// endDrain drops the draining incarnation d of node id, unless it is no
// longer the one draining (undrained or replaced meanwhile).
func (c *Cluster) endDrain(id string, d *drain) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.topo.Load()
	if old.draining[id] != d || c.closed {
		return nil
	}
	next := &topology{nodes: old.nodes, ids: old.ids, index: old.index, draining: make(map[string]*drain, len(old.draining))}
	for k, v := range old.draining {
		if k != id {
			next.draining[k] = v
		}
	}
	c.topo.Store(next)
	c.dropNode(d)
	c.log.Info("drained memcached node dropped", "node", id, "addr", d.node.Addr, "draining_since", d.since)
	return nil
}

// dropNode stops a drain's timer and closes the node's connections (calls
// in flight on them fail).
func (c *Cluster) dropNode(d *drain) {
	d.timer.Stop()
	_ = d.node.pool.Close()
}

// draining reports whether id names a node being drained (removed from
// the list, or an old address of an id still in it).
func (c *Cluster) isDraining(id string) bool {
	_, ok := c.topo.Load().draining[id]
	return ok
}

// drainTarget returns where a session with random part base that lives on
// a draining node moves to: the active node, among those whose breaker is
// not open, that ranks first for base by rendezvous hashing, so that every
// app server moves a given session to the same node and the moves spread
// over the nodes. It returns "" when no active node is healthy.
func (c *Cluster) drainTarget(base string) string {
	t := c.topo.Load()
	best, bestScore := "", uint64(0)
	for _, n := range t.nodes {
		if !n.usable() {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(base))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(n.ID))
		if s := h.Sum64(); best == "" || s > bestScore {
			best, bestScore = n.ID, s
		}
	}
	return best
}

// oldAddress returns the name under which calls reach the old address of
// node id, when id is in the list with a new address and its old one is
// still draining: "~" + id.
func (c *Cluster) oldAddress(id string) (string, bool) {
	t := c.topo.Load()
	_, active := t.index[id]
	_, draining := t.draining[id]
	if active && draining {
		return drainPrefix + id, true
	}
	return "", false
}
