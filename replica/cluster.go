// Package replica manages the memcached nodes of a session cluster: one
// pool of meta-protocol connections and one circuit breaker per node, the
// placement of new sessions and of backup copies, and node health.
//
// It knows nothing of sessions' contents or of HTTP; package store builds
// loading with fallback, restore and relocation on top of it.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// *tls.Dialer. Default: a net.Dialer with Timeout.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// FailureThreshold is the number of consecutive failures after which a
	// node's breaker opens. Default DefaultFailureThreshold (3).
	FailureThreshold uint32
	// OpenTimeout is how long an open breaker waits before probing the node
	// again. Default DefaultOpenTimeout (2 s).
	OpenTimeout time.Duration
	// Logger receives breaker state changes. Default: logs are discarded.
	Logger *slog.Logger
}

// Cluster is a fixed set of memcached nodes. It is safe for concurrent use.
type Cluster struct {
	// opsHandle gives mcsession's own packages (lock, store) the
	// operations and failover helpers of the cluster (see ops.Of).
	opsHandle

	nodes []*node
	byID  map[string]*node
	next  atomic.Uint64 // round-robin cursor for new sessions
	log   *slog.Logger
}

type node struct {
	Node
	index   int // position in Cluster.nodes
	pool    *meta.Pool
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	outage  atomic.Int64 // unix nanoseconds of the last outage (breaker opened, or MarkOutage); 0 = never
	refused atomic.Bool  // the last failure was a refused connection
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
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{byID: make(map[string]*node, len(cfg.Nodes)), log: log}
	c.opsHandle = ops.NewHandle(view{c})
	for _, n := range cfg.Nodes {
		pool := meta.NewPool(meta.Config{
			Addr: n.Addr, Dial: cfg.DialContext, Timeout: cfg.Timeout, DialTimeout: cfg.Timeout,
			MaxConns: cfg.MaxConns, MaxIdle: cfg.MaxIdleConns,
		})
		threshold := cfg.FailureThreshold
		nd := &node{Node: n, index: len(c.nodes), pool: pool}
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
		c.nodes = append(c.nodes, nd)
		c.byID[n.ID] = nd
	}
	return c, nil
}

// Close closes the connections of every node; calls made after Close fail.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.pool.Close())
	}
	return errors.Join(errs...)
}

// Has reports whether id names a configured node.
func (c *Cluster) Has(id string) bool {
	_, ok := c.byID[id]
	return ok
}

// NodeIDs returns the configured node ids in list order.
func (c *Cluster) NodeIDs() []string {
	ids := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		ids[i] = n.ID
	}
	return ids
}

// Healthy reports whether the node's breaker lets calls through (closed or
// half-open). An unknown id is not healthy.
func (c *Cluster) Healthy(id string) bool {
	n, ok := c.byID[id]
	return ok && n.breaker.State() != gobreaker.StateOpen
}

// markOutage records that the node failed badly enough for sessions to be
// moved off it (the store calls it when it relocates one). The breaker
// opening records the same.
func (c *Cluster) markOutage(id string) {
	if n, ok := c.byID[id]; ok {
		n.outage.Store(time.Now().UnixNano())
	}
}

// outageWithin reports whether the node had an outage (its breaker opened,
// or markOutage) within the last d: a node that was away that recently may
// still hold copies of sessions that moved to other nodes meanwhile. A
// single failed operation that did not open the breaker does not count.
func (c *Cluster) outageWithin(id string, d time.Duration) bool {
	n, ok := c.byID[id]
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
	n, ok := c.byID[id]
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
}

// Status returns the state of every node in list order.
func (c *Cluster) Status() []NodeStatus {
	out := make([]NodeStatus, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = NodeStatus{ID: n.ID, Addr: n.Addr, State: n.breaker.State().String(),
			ConsecutiveFailures: n.breaker.Counts().ConsecutiveFailures}
	}
	return out
}

// pickNew chooses the primary node of a new session: round robin over the
// nodes whose breaker is closed, or, when none is, over the half-open ones.
// It returns ErrNoHealthyNode when every breaker is open.
func (c *Cluster) pickNew() (string, error) {
	start := c.next.Add(1)
	for _, want := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen} {
		for i := range c.nodes {
			n := c.nodes[(start+uint64(i))%uint64(len(c.nodes))]
			if n.breaker.State() == want {
				return n.ID, nil
			}
		}
	}
	return "", ErrNoHealthyNode
}

// BackupOf returns the backup node for a session whose primary is primary:
// the next node after it in list order whose breaker is not open, skipping
// the ids in exclude. It returns "" when there is none.
func (c *Cluster) BackupOf(primary string, exclude ...string) string {
	p, ok := c.byID[primary]
	if !ok {
		return ""
	}
next:
	for i := 1; i < len(c.nodes); i++ {
		n := c.nodes[(p.index+i)%len(c.nodes)]
		for _, x := range exclude {
			if n.ID == x {
				continue next
			}
		}
		if n.breaker.State() != gobreaker.StateOpen {
			return n.ID
		}
	}
	return ""
}

// backupCandidates returns every node after primary in list order, healthy
// or not: the places a backup copy may have been written to.
func (c *Cluster) backupCandidates(primary string) []string {
	p, ok := c.byID[primary]
	if !ok {
		return nil
	}
	var out []string
	for i := 1; i < len(c.nodes); i++ {
		out = append(out, c.nodes[(p.index+i)%len(c.nodes)].ID)
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
	start := time.Now()
	finish := func(i int) {
		if dones[i] == nil {
			return
		}
		err := calls[i].Finish()
		c.byID[batches[i].Node].rtt.Since(start)
		if err != nil && callerEnded(ctx) != nil {
			dones[i](errCallerContext) // not the node's fault
		} else {
			dones[i](err)
		}
		dones[i] = nil
		batches[i].Err = c.nodeError(ctx, batches[i].Node, err)
	}
	for i := range batches {
		b := &batches[i]
		b.Err = nil
		n, ok := c.byID[b.Node]
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
func (c *Cluster) nodeError(ctx context.Context, id string, err error) error {
	if err == nil || errors.Is(err, meta.ErrBadRequest) {
		return err
	}
	if cerr := callerEnded(ctx); cerr != nil {
		return fmt.Errorf("replica: %s: %w (%w)", id, cerr, err)
	}
	n := c.byID[id]
	if errors.Is(err, meta.ErrPoolTimeout) {
		return fmt.Errorf("%w: %s (%s): %w", ErrNodeBusy, n.ID, n.Addr, err)
	}
	n.refused.Store(errors.Is(err, syscall.ECONNREFUSED))
	return fmt.Errorf("%w: %s (%s): %w", ErrNodeDown, n.ID, n.Addr, err)
}

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
}

// PoolStats returns the connection statistics of every node in list order.
func (c *Cluster) PoolStats() []PoolStats {
	out := make([]PoolStats, len(c.nodes))
	for i, n := range c.nodes {
		s := n.pool.Stats()
		out[i] = PoolStats{Node: n.ID, Open: s.Open, Idle: s.Idle, Dials: s.Dials, DialErrors: s.DialErrors,
			Waits: s.Waits, Timeouts: s.Timeouts, Stale: s.Stale, Broken: s.Broken,
			RoundTrips: s.Batches, Commands: s.Requests, RoundTrip: n.rtt.Snapshot()}
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
