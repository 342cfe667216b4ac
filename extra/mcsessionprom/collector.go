// Package mcsessionprom exports mcsession's statistics to Prometheus.
//
// mcsession keeps no metrics dependency: its packages count events and
// record latency histograms, and hand out snapshots (store.Stats,
// store.CacheStats, lock.Stats, replica.PoolStats, replica.Status,
// httpsession.Stats). A Collector reads those snapshots at scrape time
// and turns them into const metrics: counters (…_total), gauges for
// current values, and histograms (…_seconds) with cumulative buckets from
// the latency package's 16 µs to 16.8 s bounds. Register it with the
// registry the application already serves:
//
//	sessions, err := httpsession.Open(nodes, httpsession.Options{})
//	…
//	prometheus.MustRegister(mcsessionprom.NewCollector(mcsessionprom.FromManager(sessions)))
//
// Every metric name starts with "mcsession_" (see WithNamespace); the
// metrics of a memcached node carry a "node" label with the node's id.
// The README of this module lists them all.
package mcsessionprom

import (
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultNamespace is the prefix of every metric name unless WithNamespace
// changes it.
const DefaultNamespace = "mcsession"

// Source names the mcsession objects a Collector reads. Every field is
// optional: a nil field's metrics are left out. Build it with FromManager
// or FromStore, or fill in the layers you use.
type Source struct {
	// Manager gives the HTTP middleware's counters (mcsession_http_…).
	Manager *httpsession.Manager
	// Store gives the session counters and latencies (mcsession_session_…),
	// the asynchronous writes' (mcsession_async_…) and, for a sticky-mode
	// store, the cache's (mcsession_cache_…).
	Store *store.Store
	// Locker gives the session lock's counters and wait latency
	// (mcsession_lock_…): a *lock.Locker, a *lock.Local, or (FromStore) the
	// lock the store uses, in process in sticky mode.
	Locker LockSource
	// Cluster gives the per-node connection pool, round-trip latency and
	// circuit breaker metrics (mcsession_memcached_…, label "node").
	Cluster *replica.Cluster
}

// FromManager returns the Source of everything behind m: m itself, its
// store, the store's locker and its cluster.
func FromManager(m *httpsession.Manager) Source {
	src := FromStore(m.Store())
	src.Manager = m
	return src
}

// FromStore returns the Source of st, its lock (Store.LockStats) and its
// cluster, without the HTTP middleware's counters.
func FromStore(st *store.Store) Source {
	return Source{Store: st, Locker: storeLock{st}, Cluster: st.Cluster()}
}

// LockSource is what Source.Locker reads: *lock.Locker and *lock.Local
// are ones.
type LockSource interface {
	// Stats returns the lock's statistics.
	Stats() lock.Stats
}

// storeLock is the LockSource of a store: the lock it uses.
type storeLock struct{ st *store.Store }

// Stats returns the store's lock statistics.
func (l storeLock) Stats() lock.Stats { return l.st.LockStats() }

// Option configures a Collector.
type Option func(*options)

type options struct {
	namespace   string
	constLabels prometheus.Labels
}

// WithNamespace sets the prefix of every metric name, joined to the rest
// with "_". Default DefaultNamespace ("mcsession"); "" leaves the names
// without a prefix.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithConstLabels adds labels with fixed values to every metric. Default
// none. Use it to register two Collectors with one registry (two Managers,
// say): their metrics must differ in at least one label value, or the
// registry refuses the second one. Two Sources that share a cluster
// should name it in one of them only, or its metrics are exported twice.
func WithConstLabels(l prometheus.Labels) Option {
	return func(o *options) { o.constLabels = l }
}

// Collector is a prometheus.Collector of mcsession's statistics. It
// reads the Source's snapshots on every Collect and keeps no state of its
// own, so it is safe for concurrent use and a scrape costs a few atomic
// loads per metric (and, for a sticky-mode store, one pass over the
// cache's entries under its lock).
//
// Describe sends the descriptors of every metric the Source's fields can
// produce, so a registry checks the Collector; the cache metrics are
// described always but collected only for a sticky-mode store. A Collector
// of an empty Source describes and collects nothing.
//
// The per-node series follow the cluster's node list, which
// Cluster.SetNodes may change: a removed node keeps its series while it
// drains (mcsession_memcached_node_draining is 1), and a node whose
// address changed is reported with its new address's pool and breaker
// while the old address drains (mcsession_memcached_node_info shows both).
type Collector struct {
	src      Source
	storeM   []family[store.Stats]
	storeH   []histFamily[store.Stats]
	cacheM   []family[store.CacheStats]
	lockM    []family[lock.Stats]
	lockH    []histFamily[lock.Stats]
	poolM    []family[replica.PoolStats]
	poolH    []histFamily[replica.PoolStats]
	statusM  []family[replica.NodeStatus]
	breaker  *prometheus.Desc // labels node, state
	info     *prometheus.Desc // labels node, addr
	draining *prometheus.Desc // label node
	httpM    []family[httpsession.Stats]
}

// NewCollector returns a Collector of src's metrics, to register with a
// prometheus.Registerer.
func NewCollector(src Source, opts ...Option) *Collector {
	o := options{namespace: DefaultNamespace}
	for _, opt := range opts {
		opt(&o)
	}
	b := builder{o}
	c := &Collector{src: src}
	if src.Store != nil {
		c.storeM, c.storeH = build(b, storeSpecs, nil), buildHist(b, storeHists, nil)
		c.cacheM = build(b, cacheSpecs, nil)
	}
	if src.Locker != nil {
		c.lockM, c.lockH = build(b, lockSpecs, nil), buildHist(b, lockHists, nil)
	}
	if src.Cluster != nil {
		node := []string{"node"}
		c.poolM, c.poolH = build(b, poolSpecs, node), buildHist(b, poolHists, node)
		c.statusM = build(b, statusSpecs, node)
		c.breaker = b.desc("memcached_breaker_state",
			"State of the node's circuit breaker: 1 for the current state (closed, half-open or open), 0 for the others.",
			[]string{"node", "state"})
		c.info = b.desc("memcached_node_info",
			"Always 1: the address of each memcached node (two while a node whose address changed drains its old one).",
			[]string{"node", "addr"})
		c.draining = b.desc("memcached_node_draining",
			"1 while the node, or its old address after an address change, is drained after Cluster.SetNodes removed it.",
			[]string{"node"})
	}
	if src.Manager != nil {
		c.httpM = build(b, httpSpecs, nil)
	}
	return c
}

// breakerStates are the states mcsession_memcached_breaker_state reports.
var breakerStates = []string{"closed", "half-open", "open"}

// Describe sends the descriptors of the metrics Collect can send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	describe(ch, c.storeM)
	describeHist(ch, c.storeH)
	describe(ch, c.cacheM)
	describe(ch, c.lockM)
	describeHist(ch, c.lockH)
	describe(ch, c.poolM)
	describeHist(ch, c.poolH)
	describe(ch, c.statusM)
	if c.breaker != nil {
		ch <- c.breaker
		ch <- c.info
		ch <- c.draining
	}
	describe(ch, c.httpM)
}

// Collect reads the Source's snapshots and sends them as const metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if st := c.src.Store; st != nil {
		s := st.Stats()
		collect(ch, c.storeM, &s)
		collectHist(ch, c.storeH, &s)
		if cs := st.CacheStats(); cs.MaxBytes > 0 { // sticky mode
			collect(ch, c.cacheM, &cs)
		}
	}
	if l := c.src.Locker; l != nil {
		s := l.Stats()
		collect(ch, c.lockM, &s)
		collectHist(ch, c.lockH, &s)
	}
	if cl := c.src.Cluster; cl != nil {
		// Active nodes come first in both lists: an id that is also
		// draining (its old address) is reported with its active node's
		// pool and breaker.
		var seen []string
		for _, p := range cl.PoolStats() {
			if !first(&seen, p.Node) {
				continue
			}
			collect(ch, c.poolM, &p, p.Node)
			collectHist(ch, c.poolH, &p, p.Node)
		}
		seen = seen[:0]
		var seenAddr []string
		status := cl.Status()
		for _, n := range status {
			if first(&seenAddr, n.ID+"="+n.Addr) {
				ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, n.ID, n.Addr)
			}
			if !first(&seen, n.ID) {
				continue
			}
			collect(ch, c.statusM, &n, n.ID)
			for _, state := range breakerStates {
				ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, boolValue(n.State == state), n.ID, state)
			}
			ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, boolValue(draining(status, n.ID)), n.ID)
		}
	}
	if m := c.src.Manager; m != nil {
		s := m.Stats()
		collect(ch, c.httpM, &s)
	}
}

// draining reports whether an entry of status with the given id drains.
func draining(status []replica.NodeStatus, id string) bool {
	for _, n := range status {
		if n.ID == id && n.Draining {
			return true
		}
	}
	return false
}

// first reports whether id is not in *seen yet, and adds it: a node id
// that a snapshot lists twice (active, and draining at its old address)
// gets its series once (a registry fails the whole scrape on a duplicate
// series).
func first(seen *[]string, id string) bool {
	for _, s := range *seen {
		if s == id {
			return false
		}
	}
	*seen = append(*seen, id)
	return true
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
