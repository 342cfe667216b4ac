// Package replica manages the memcached nodes of a session cluster: one
// gomemcache client and one circuit breaker per node, placement of new
// sessions, and writes that go to a primary and a backup node in parallel.
//
// It knows nothing of sessions' contents or of HTTP; package store builds
// loading with fallback, restore and relocation on top of it.
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/sony/gobreaker/v2"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultTimeout is the socket read/write (and dial) timeout per operation.
	DefaultTimeout = 500 * time.Millisecond
	// DefaultMaxIdleConns is the idle connections kept per node. gomemcache's
	// own default of 2 makes a busy server open and close a socket for most
	// requests; 128 covers the parallelism of a typical app server.
	DefaultMaxIdleConns = 128
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
	// Timeout bounds each network operation (dial, read, write) on a node.
	// Default DefaultTimeout (500 ms).
	Timeout time.Duration
	// MaxIdleConns is the number of idle connections kept per node; set it to
	// the expected number of parallel requests. Default DefaultMaxIdleConns (128).
	MaxIdleConns int
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
	nodes []*node
	byID  map[string]*node
	next  atomic.Uint64 // round-robin cursor for new sessions
	log   *slog.Logger
}

type node struct {
	Node
	index   int // position in Cluster.nodes
	client  *memcache.Client
	breaker *gobreaker.CircuitBreaker[struct{}]
	outage  atomic.Int64 // unix nanoseconds of the last outage (breaker opened, or MarkOutage); 0 = never
	refused atomic.Bool  // the last failure was a refused connection
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
	for _, n := range cfg.Nodes {
		mc := memcache.New(n.Addr)
		mc.Timeout = cfg.Timeout
		mc.MaxIdleConns = cfg.MaxIdleConns
		threshold := cfg.FailureThreshold
		nd := &node{Node: n, index: len(c.nodes), client: mc}
		nd.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        n.ID,
			MaxRequests: 1,
			Timeout:     cfg.OpenTimeout,
			ReadyToTrip: func(counts gobreaker.Counts) bool {
				return counts.ConsecutiveFailures >= threshold
			},
			IsSuccessful: func(err error) bool { return err == nil || isAnswer(err) },
			IsExcluded: func(err error) bool {
				return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
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

// Close closes the idle connections of every node.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.client.Close())
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

// MarkOutage records that the node failed badly enough for sessions to be
// moved off it (the store calls it when it relocates one). The breaker
// opening records the same.
func (c *Cluster) MarkOutage(id string) {
	if n, ok := c.byID[id]; ok {
		n.outage.Store(time.Now().UnixNano())
	}
}

// OutageWithin reports whether the node had an outage (its breaker opened,
// or MarkOutage) within the last d: a node that was away that recently may
// still hold copies of sessions that moved to other nodes meanwhile. A
// single failed operation that did not open the breaker does not count.
func (c *Cluster) OutageWithin(id string, d time.Duration) bool {
	n, ok := c.byID[id]
	if !ok {
		return false
	}
	t := n.outage.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < d
}

// Gone reports whether the node's last failure was a refused connection:
// no memcached process listens there, so whatever it held is lost (a hung
// or unreachable node, which times out instead, may still have its data).
func (c *Cluster) Gone(id string) bool {
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

// PickNew chooses the primary node of a new session: round robin over the
// nodes whose breaker is closed, or, when none is, over the half-open ones.
// It returns ErrNoHealthyNode when every breaker is open.
func (c *Cluster) PickNew() (string, error) {
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

// BackupCandidates returns every node after primary in list order, healthy
// or not: the places a backup copy may have been written to.
func (c *Cluster) BackupCandidates(primary string) []string {
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

// exec runs op against the node's client through the node's breaker.
// Answers (miss, not stored, CAS conflict) are returned as they are;
// failures are wrapped with ErrNodeDown. A connection the server closed
// (a node that restarted leaves stale pooled connections) drops the node's
// idle pool and retries once: the command never reached the new process.
func (c *Cluster) exec(ctx context.Context, id string, op func(*memcache.Client) error) error {
	n, ok := c.byID[id]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownNode, id)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := n.breaker.Execute(func() (struct{}, error) {
		err := op(n.client)
		if isConnClosed(err) {
			_ = n.client.Close()
			err = op(n.client)
		}
		return struct{}{}, err
	})
	if err == nil || isAnswer(err) {
		return err
	}
	if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
		n.refused.Store(errors.Is(err, syscall.ECONNREFUSED))
	}
	return fmt.Errorf("%w: %s (%s): %w", ErrNodeDown, n.ID, n.Addr, err)
}

// isConnClosed reports whether err means the server side of a pooled
// connection is gone.
func isConnClosed(err error) bool {
	return err != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed))
}

// Get reads key from the node with "gets", so the item carries its CAS id.
// A missing key returns ErrMiss.
func (c *Cluster) Get(ctx context.Context, nodeID, key string) (*memcache.Item, error) {
	var it *memcache.Item
	err := c.exec(ctx, nodeID, func(mc *memcache.Client) (err error) {
		it, err = mc.Get(key)
		return err
	})
	return it, err
}

// Set stores item on the node unconditionally.
func (c *Cluster) Set(ctx context.Context, nodeID string, item *memcache.Item) error {
	return c.exec(ctx, nodeID, func(mc *memcache.Client) error { return mc.Set(item) })
}

// Add stores item only when its key is absent; otherwise ErrNotStored.
func (c *Cluster) Add(ctx context.Context, nodeID string, item *memcache.Item) error {
	return c.exec(ctx, nodeID, func(mc *memcache.Client) error { return mc.Add(item) })
}

// CompareAndSwap stores item only when the stored CAS id still equals
// item.CasID: ErrCASConflict when it changed, ErrMiss when the key is gone.
// An Expiration of -1 deletes the item atomically when the CAS id matches.
func (c *Cluster) CompareAndSwap(ctx context.Context, nodeID string, item *memcache.Item) error {
	return c.exec(ctx, nodeID, func(mc *memcache.Client) error { return mc.CompareAndSwap(item) })
}

// Touch sets a new exptime on key without rewriting it; ErrMiss when absent.
func (c *Cluster) Touch(ctx context.Context, nodeID, key string, exptime int32) error {
	return c.exec(ctx, nodeID, func(mc *memcache.Client) error { return mc.Touch(key, exptime) })
}

// Delete removes key; ErrMiss when it was absent.
func (c *Cluster) Delete(ctx context.Context, nodeID, key string) error {
	return c.exec(ctx, nodeID, func(mc *memcache.Client) error { return mc.Delete(key) })
}

// GetMulti reads several keys from one node with a single "gets" command.
// The map holds the keys that were found, each with its CAS id.
func (c *Cluster) GetMulti(ctx context.Context, nodeID string, keys []string) (map[string]*memcache.Item, error) {
	var items map[string]*memcache.Item
	err := c.exec(ctx, nodeID, func(mc *memcache.Client) (err error) {
		items, err = mc.GetMulti(keys)
		return err
	})
	return items, err
}
