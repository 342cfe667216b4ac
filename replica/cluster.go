// Package replica manages the memcached nodes of a session cluster: one
// pool of meta-protocol connections and one circuit breaker per node, the
// placement of new sessions and of backup copies, and node health.
//
// It knows nothing of sessions' contents or of HTTP; package store builds
// loading with fallback, restore and relocation on top of it.
package replica

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/latency"
	"github.com/sony/gobreaker/v2"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultTimeout bounds one round trip to a node (the write of a batch
	// and its answers), the wait for a free connection, and a dial.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultMaxIdleConns is the idle connections kept per node: enough
	// for the parallelism of a typical app server, so that a busy server
	// does not open and close a socket for most requests.
	DefaultMaxIdleConns = 128
	// DefaultMaxConns bounds the connections open to one node; a request
	// that finds them all busy waits (up to Timeout) for one.
	DefaultMaxConns = 256
	// DefaultFailureThreshold is how many consecutive failures open a node's breaker.
	DefaultFailureThreshold = 3
	// DefaultOpenTimeout is how long an open breaker rejects calls before it
	// lets one probe through (half-open).
	DefaultOpenTimeout = 2 * time.Second
)

// Config configures a Cluster. Only Nodes is required.
type Config struct {
	// Nodes lists the memcached servers in a fixed order; the backup of a
	// session is the next healthy node after its primary in this order.
	Nodes []Node
	// Timeout bounds each round trip to a node (dial, write, answers) and
	// the wait for a free connection. Default DefaultTimeout (500 ms).
	Timeout time.Duration
	// MaxIdleConns is the number of idle connections kept per node; set it to
	// the expected number of parallel requests. Default DefaultMaxIdleConns (128).
	MaxIdleConns int
	// MaxConns bounds the connections open to one node. Default
	// DefaultMaxConns (256), at least MaxIdleConns.
	MaxConns int
	// DialContext opens connections to the nodes, for example through a
	// proxy. Default: a net.Dialer with Timeout. With TLS set, TLS runs
	// over the connections it opens (so it must not do TLS itself).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS, when not nil, connects to every node with TLS (memcached 1.6
	// started with -Z). RootCAs verifies the nodes' certificates (nil: the
	// system's roots); Certificates holds the client certificate for nodes
	// that require one (memcached's ssl_verify_mode=2). An empty
	// ServerName is set, for each node, to the host of its address, so a
	// node given as 10.0.0.1:11211 must have 10.0.0.1 among its
	// certificate's IP addresses; a ServerName you set is used for every
	// node. The handshake happens when a connection is opened (connections
	// are pooled) and is bounded by Timeout; under TLS 1.3 it is followed
	// by one no-op round trip, so that a node refusing the client
	// certificate fails the connection rather than a command. A failed
	// handshake is a failure of the node: the error wraps ErrNodeDown,
	// ErrTLS and the tls or x509 cause, counts for the breaker, and is
	// logged once until the node answers again. The config must not be
	// changed after New. Default nil: plaintext.
	TLS *tls.Config
	// FailureThreshold is the number of consecutive failures after which a
	// node's breaker opens. Default DefaultFailureThreshold (3).
	FailureThreshold uint32
	// OpenTimeout is how long an open breaker waits before probing the node
	// again. Default DefaultOpenTimeout (2 s).
	OpenTimeout time.Duration
	// DrainTimeout is how long a node removed by SetNodes is still read,
	// so that the sessions on it move to the new nodes on their next
	// request, before it is dropped. Set it to at least the longest idle
	// timeout of your sessions. Default DefaultDrainTimeout (30 min).
	DrainTimeout time.Duration
	// Logger receives breaker state changes, node list changes and the
	// first failure of a node after it last answered (with its cause,
	// at level Error for a TLS handshake failure, Warn otherwise; the
	// failures that follow are not logged until the node answers again).
	// Default: logs are discarded.
	Logger *slog.Logger
}

// Cluster is a set of memcached nodes; SetNodes changes it while it runs.
// It is safe for concurrent use.
type Cluster struct {
	// opsHandle gives mcsession's own packages (lock, store) the
	// operations and failover helpers of the cluster (see ops.Of).
	opsHandle

	topo atomic.Pointer[topology] // the current node list; never nil
	next atomic.Uint64            // round-robin cursor for new sessions
	log  *slog.Logger
	cfg  Config // with defaults applied, for the nodes SetNodes adds

	drainTimeout time.Duration

	mu     sync.Mutex // serializes SetNodes, drain ends and Close
	closed bool
}

type node struct {
	Node
	pool    *meta.Pool
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	outage  atomic.Int64 // unix nanoseconds of the last outage (breaker opened, or MarkOutage); 0 = never
	refused atomic.Bool  // the last failure was a refused connection
	failing atomic.Bool  // a failure was logged and the node has not answered since
	rtt     latency.Histogram
}

// New validates cfg and builds a Cluster. It does not contact the nodes.
func New(cfg Config) (*Cluster, error) {
	if err := validateNodes(cfg.Nodes); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = DefaultMaxIdleConns
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	cfg.MaxConns = max(cfg.MaxConns, cfg.MaxIdleConns)
	if cfg.FailureThreshold == 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = DefaultOpenTimeout
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{log: log, cfg: cfg, drainTimeout: cfg.DrainTimeout}
	c.opsHandle = ops.NewHandle(view{c})
	t := &topology{index: make(map[string]int, len(cfg.Nodes)), draining: map[string]*drain{}}
	for _, n := range cfg.Nodes {
		t.index[n.ID] = len(t.nodes)
		t.nodes = append(t.nodes, c.newNode(n))
		t.ids = append(t.ids, n.ID)
	}
	c.topo.Store(t)
	return c, nil
}

// newNode builds the connection pool and the breaker of node n.
func (c *Cluster) newNode(n Node) *node {
	cfg, log := c.cfg, c.log
	pool := meta.NewPool(meta.Config{
		Addr: n.Addr, Dial: cfg.DialContext, TLS: cfg.TLS, Timeout: cfg.Timeout, DialTimeout: cfg.Timeout,
		MaxConns: cfg.MaxConns, MaxIdle: cfg.MaxIdleConns,
	})
	threshold := cfg.FailureThreshold
	nd := &node{Node: n, pool: pool}
	{
		nd.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        n.ID,
			MaxRequests: 1,
			Timeout:     cfg.OpenTimeout,
			ReadyToTrip: func(counts gobreaker.Counts) bool {
				return counts.ConsecutiveFailures >= threshold
			},
			// Answers (a miss, "not stored", a CAS mismatch) are responses,
			// not errors, so only failures of the node reach the breaker.
			// So are batches cut short by the caller's context, a full pool
			// (the node is busy, not down) and requests refused before
			// sending. A dial or read timeout of the node itself counts
			// (Go's dial timeout also matches context.DeadlineExceeded, so
			// the caller's context decides, see execMany).
			IsExcluded: func(err error) bool {
				return errors.Is(err, errCallerContext) || errors.Is(err, meta.ErrPoolTimeout) ||
					errors.Is(err, meta.ErrBadRequest)
			},
			// Runs under the breaker's mutex: only log, never call the breaker.
			OnStateChange: func(name string, from, to gobreaker.State) {
				if to == gobreaker.StateOpen {
					nd.outage.Store(time.Now().UnixNano())
				}
				log.Warn("memcached node breaker changed state", "node", name, "from", from.String(), "to", to.String())
			},
		})
	}
	return nd
}

// usable reports whether the node's breaker lets calls through.
func (n *node) usable() bool { return n.breaker.State() != gobreaker.StateOpen }

// Close closes the connections of every node, draining ones included, and
// ends the drains; calls made after Close fail, and so does SetNodes.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	t := c.topo.Load()
	for _, d := range t.draining {
		d.timer.Stop()
	}
	for _, n := range t.all() {
		errs = append(errs, n.pool.Close())
	}
	return errors.Join(errs...)
}

// Has reports whether id names a node of the list or a node being drained
// (a session id naming it is loaded).
func (c *Cluster) Has(id string) bool {
	if _, ok := cutDrainPrefix(id); ok {
		return false
	}
	_, ok := c.topo.Load().lookup(id)
	return ok
}

// NodeIDs returns the ids of the node list in order (draining nodes
// excluded).
func (c *Cluster) NodeIDs() []string {
	t := c.topo.Load()
	ids := make([]string, len(t.nodes))
	for i, n := range t.nodes {
		ids[i] = n.ID
	}
	return ids
}

// Healthy reports whether the node's breaker lets calls through (closed or
// half-open). An unknown id is not healthy.
func (c *Cluster) Healthy(id string) bool {
	n, ok := c.topo.Load().lookup(id)
	return ok && n.usable()
}

// markOutage records that the node failed badly enough for sessions to be
// moved off it (the store calls it when it relocates one). The breaker
// opening records the same.
func (c *Cluster) markOutage(id string) {
	if n, ok := c.topo.Load().lookup(id); ok {
		n.outage.Store(time.Now().UnixNano())
	}
}

// outageWithin reports whether the node had an outage (its breaker opened,
// or markOutage) within the last d: a node that was away that recently may
// still hold copies of sessions that moved to other nodes meanwhile. A
// single failed operation that did not open the breaker does not count.
func (c *Cluster) outageWithin(id string, d time.Duration) bool {
	n, ok := c.topo.Load().lookup(id)
	if !ok {
		return false
	}
	t := n.outage.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < d
}

// connRefused reports whether the node's last failure was a refused connection:
// no memcached process listens there, so whatever it held is lost (a hung
// or unreachable node, which times out instead, may still have its data).
func (c *Cluster) connRefused(id string) bool {
	n, ok := c.topo.Load().lookup(id)
	return ok && n.refused.Load()
}

// NodeStatus describes one node for dashboards and logs.
type NodeStatus struct {
	// ID is the node id.
	ID string
	// Addr is the node's host:port.
	Addr string
	// State is the breaker state: "closed", "half-open" or "open".
	State string
	// ConsecutiveFailures is the breaker's current run of failures.
	ConsecutiveFailures uint32
	// Draining is true for a node that SetNodes removed and that is still
	// read until its drain ends.
	Draining bool
}

// Status returns the state of every node in list order, then of the
// draining nodes (sorted by id).
func (c *Cluster) Status() []NodeStatus {
	t := c.topo.Load()
	all := t.all()
	out := make([]NodeStatus, len(all))
	for i, n := range all {
		out[i] = NodeStatus{ID: n.ID, Addr: n.Addr, State: n.breaker.State().String(),
			ConsecutiveFailures: n.breaker.Counts().ConsecutiveFailures, Draining: i >= len(t.nodes)}
	}
	return out
}

// pickNew chooses the primary node of a new session: round robin over the
// nodes whose breaker is closed, or, when none is, over the half-open ones.
// It returns ErrNoHealthyNode when every breaker is open.
func (c *Cluster) pickNew() (string, error) {
	start := c.next.Add(1)
	nodes := c.topo.Load().nodes
	for _, want := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen} {
		for i := range nodes {
			n := nodes[(start+uint64(i))%uint64(len(nodes))]
			if n.breaker.State() == want {
				return n.ID, nil
			}
		}
	}
	return "", ErrNoHealthyNode
}

// BackupOf returns the backup node for a session whose primary is primary:
// the next node after it in list order whose breaker is not open, skipping
// the ids in exclude. For a draining node (see SetNodes) it is the next
// such node of the list it was removed from that is still in the list,
// else any healthy node of the list. It returns "" when there is none.
func (c *Cluster) BackupOf(primary string, exclude ...string) string {
	t := c.topo.Load()
	for _, id := range t.successors(primary) {
		i, ok := t.index[id]
		if ok && !slices.Contains(exclude, id) && t.nodes[i].usable() {
			return id
		}
	}
	return ""
}

// successors returns the active nodes that follow primary: for a node of
// the list, the next ones in list order; for a draining node, those of the
// list it was removed from that are still in the list, then the other
// nodes of the list in order.
func (t *topology) successors(primary string) []string {
	var out []string
	if p, ok := t.index[primary]; ok {
		for i := 1; i < len(t.nodes); i++ {
			out = append(out, t.nodes[(p+i)%len(t.nodes)].ID)
		}
		return out
	}
	d, ok := t.draining[primary]
	if !ok {
		return nil
	}
	for _, id := range d.successors {
		if _, ok := t.index[id]; ok {
			out = append(out, id)
		}
	}
	for _, n := range t.nodes {
		if !slices.Contains(out, n.ID) {
			out = append(out, n.ID)
		}
	}
	return out
}

// backupCandidates returns every node that may hold a backup copy of a
// session whose primary is primary, healthy or not: the nodes after it in
// list order, then the draining nodes (a backup written before a node
// list change may still be on one; the old address of a node whose
// address changed as "~" + id). For a draining primary, the nodes that
// followed it in the list it was removed from come first.
func (c *Cluster) backupCandidates(primary string) []string {
	t := c.topo.Load()
	if _, ok := t.lookup(primary); !ok {
		return nil
	}
	out := t.successors(primary)
	if d, ok := t.draining[primary]; ok {
		// Successors that are draining too were left out by successors.
		for _, id := range d.successors {
			if _, ok := t.draining[id]; ok && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	for _, id := range t.drainingIDs() {
		if _, active := t.index[id]; active {
			// The old address of a node whose address changed: reached
			// as "~" + id (its copies carry the id's keys).
			out = append(out, drainPrefix+id)
			continue
		}
		if id != primary && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// exec sends reqs as one batch to node id through the node's breaker.
// Answers (miss, not stored, CAS mismatch) are left in out; failures of
// the node are wrapped with ErrNodeDown (see nodeError). The transport never retries a
// batch that may have reached the server.
func (c *Cluster) exec(ctx context.Context, id string, reqs []meta.Request, out []meta.Response) error {
	b := [1]ops.Batch{{Node: id, Reqs: reqs, Out: out}}
	c.execMany(ctx, b[:])
	return b[0].Err
}

// execMany sends every batch to its node at once and then reads all the
// answers, so that batches to different nodes share one round trip; each
// batch's error is set in it (see exec).
//
// Only the first batch may wait for a free connection of its node: a later
// one that would have to wait first lets the batches already sent finish
// (returning their connections), so that two calls holding each other's
// last connection never wait for each other.
func (c *Cluster) execMany(ctx context.Context, batches []ops.Batch) {
	var (
		callsBuf [2]meta.Call
		donesBuf [2]func(error)
	)
	calls, dones := callsBuf[:0], donesBuf[:0]
	if len(batches) > len(callsBuf) {
		calls, dones = make([]meta.Call, 0, len(batches)), make([]func(error), 0, len(batches))
	}
	calls, dones = calls[:len(batches)], dones[:len(batches)]
	var nodesBuf [2]*node
	nodes := nodesBuf[:0]
	if len(batches) > len(nodesBuf) {
		nodes = make([]*node, 0, len(batches))
	}
	nodes = nodes[:len(batches)]
	t := c.topo.Load() // one node list for the whole call
	start := time.Now()
	finish := func(i int) {
		if dones[i] == nil {
			return
		}
		err := calls[i].Finish()
		nodes[i].rtt.Since(start)
		if err != nil && callerEnded(ctx) != nil {
			dones[i](errCallerContext) // not the node's fault
		} else {
			dones[i](err)
		}
		dones[i] = nil
		batches[i].Err = c.nodeError(ctx, nodes[i], err)
		if err == nil && nodes[i].failing.Load() {
			nodes[i].failing.Store(false)
		}
	}
	for i := range batches {
		b := &batches[i]
		b.Err = nil
		n, ok := t.lookup(b.Node)
		nodes[i] = n
		if !ok {
			b.Err = fmt.Errorf("%w: %q", ErrUnknownNode, b.Node)
			continue
		}
		if err := ctx.Err(); err != nil {
			b.Err = err
			continue
		}
		done, err := n.breaker.Allow()
		if err != nil {
			b.Err = fmt.Errorf("%w: %s (%s): %w", ErrNodeDown, n.ID, n.Addr, err)
			continue
		}
		dones[i] = done
		if !n.pool.TryStart(ctx, b.Reqs, b.Out, &calls[i]) {
			for j := range i {
				finish(j)
			}
			n.pool.Start(ctx, b.Reqs, b.Out, &calls[i])
		}
	}
	for i := range batches {
		finish(i)
	}
}

// nodeError turns the error of a batch on node id into what exec returns:
// nil, a bad request as it is, an overloaded node (every connection busy
// until the deadline) as ErrNodeBusy, any other failure as ErrNodeDown.
//
// A batch that failed while the caller's context ended is reported with
// the context's error, not as a node failure: the node is not to blame,
// and sessions must not be moved off it.
func (c *Cluster) nodeError(ctx context.Context, n *node, err error) error {
	if err == nil || errors.Is(err, meta.ErrBadRequest) {
		return err
	}
	if cerr := callerEnded(ctx); cerr != nil {
		return fmt.Errorf("replica: %s: %w (%w)", n.ID, cerr, err)
	}
	if errors.Is(err, meta.ErrPoolTimeout) {
		return fmt.Errorf("%w: %s (%s): %w", ErrNodeBusy, n.ID, n.Addr, err)
	}
	n.refused.Store(errors.Is(err, syscall.ECONNREFUSED))
	if errors.Is(err, meta.ErrTLS) {
		err = tlsError{err}
	}
	err = fmt.Errorf("%w: %s (%s): %w", ErrNodeDown, n.ID, n.Addr, err)
	c.logFailure(n, err)
	return err
}

// logFailure logs err, a failure of node n, when it is the first since the
// node last answered: a node that is down or misconfigured fails every
// request, and one line says why.
func (c *Cluster) logFailure(n *node, err error) {
	if n.failing.Load() || !n.failing.CompareAndSwap(false, true) {
		return
	}
	level := slog.LevelWarn
	if errors.Is(err, ErrTLS) {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, "memcached node failed (its next failures are not logged until it answers again)",
		"node", n.ID, "addr", n.Addr, "err", err)
}

// tlsError marks a failed TLS handshake with a node as ErrTLS, with the
// message of the transport's error.
type tlsError struct{ err error }

func (e tlsError) Error() string        { return e.err.Error() }
func (e tlsError) Unwrap() error        { return e.err }
func (e tlsError) Is(target error) bool { return target == ErrTLS }

// Ping checks that node id answers (a meta no-op through its breaker).
func (c *Cluster) Ping(ctx context.Context, id string) error {
	reqs := [1]meta.Request{{Command: meta.NoOp}}
	var out [1]meta.Response
	return c.exec(ctx, id, reqs[:], out[:])
}

// PoolStats describes the connections of one node.
type PoolStats struct {
	// Node is the node id.
	Node string
	// Open and Idle are the connections open now, and idle among them.
	Open, Idle int
	// Dials counts connections opened; DialErrors counts failed dials.
	Dials, DialErrors uint64
	// Waits counts requests that found every connection busy and waited.
	Waits uint64
	// Timeouts counts round trips and waits that ran out of time.
	Timeouts uint64
	// Stale counts idle connections found closed by the node (it
	// restarted) and dropped before use.
	Stale uint64
	// Broken counts connections closed after a failed round trip.
	Broken uint64
	// RoundTrips counts batches sent; Commands counts the commands in them.
	RoundTrips, Commands uint64
	// RoundTrip is the latency of the node's batches as callers see it:
	// from sending (a wait for a free connection included) to the last
	// answer, failures included.
	RoundTrip latency.Snapshot
	// Draining is true for a node that SetNodes removed and that is still
	// read until its drain ends.
	Draining bool
}

// PoolStats returns the connection statistics of every node in list
// order, then of the draining nodes (sorted by id).
func (c *Cluster) PoolStats() []PoolStats {
	t := c.topo.Load()
	all := t.all()
	out := make([]PoolStats, len(all))
	for i, n := range all {
		s := n.pool.Stats()
		out[i] = PoolStats{Node: n.ID, Open: s.Open, Idle: s.Idle, Dials: s.Dials, DialErrors: s.DialErrors,
			Waits: s.Waits, Timeouts: s.Timeouts, Stale: s.Stale, Broken: s.Broken,
			RoundTrips: s.Batches, Commands: s.Requests, RoundTrip: n.rtt.Snapshot(), Draining: i >= len(t.nodes)}
	}
	return out
}

// callerEnded returns ctx's error when it ended, or
// context.DeadlineExceeded once its deadline has passed (a batch's read
// deadline is ctx's deadline when that is the earlier one, and can fire
// just before ctx reports its end); nil otherwise.
func callerEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// errCallerContext marks, for the breaker, a batch cut short by the
// caller's context.
var errCallerContext = errors.New("replica: caller's context ended")

// opsHandle is ops.Handle under a name that keeps the embedded field
// unexported.
type opsHandle = ops.Handle

// view is the ops.View of a Cluster.
type view struct{ c *Cluster }

func (v view) Exec(ctx context.Context, node string, reqs []meta.Request, out []meta.Response) error {
	return v.c.exec(ctx, node, reqs, out)
}
func (v view) ExecMany(ctx context.Context, batches []ops.Batch) { v.c.execMany(ctx, batches) }
func (v view) Has(id string) bool                                { return v.c.Has(id) }
func (v view) Healthy(id string) bool                            { return v.c.Healthy(id) }
func (v view) PickNew() (string, error)                          { return v.c.pickNew() }
func (v view) BackupOf(p string, exclude ...string) string       { return v.c.BackupOf(p, exclude...) }
func (v view) BackupCandidates(p string) []string                { return v.c.backupCandidates(p) }
func (v view) MarkOutage(id string)                              { v.c.markOutage(id) }
func (v view) OutageWithin(id string, d time.Duration) bool      { return v.c.outageWithin(id, d) }
func (v view) ConnRefused(id string) bool                        { return v.c.connRefused(id) }
func (v view) Draining(id string) bool                           { return v.c.isDraining(id) }
func (v view) DrainTarget(base string) string                    { return v.c.drainTarget(base) }
func (v view) OldAddress(id string) (string, bool)               { return v.c.oldAddress(id) }
func (v view) ActiveNodes() []string                             { return v.c.topo.Load().ids }
