// Package mcsessionotel exports mcsession's statistics to OpenTelemetry.
//
// mcsession keeps no metrics dependency: its packages count events and
// record latency histograms, and hand out snapshots (store.Stats,
// store.CacheStats, lock.Stats, replica.PoolStats, replica.Status,
// httpsession.Stats). Register creates observable instruments on a
// metric.MeterProvider whose one callback reads those snapshots when the
// SDK collects: counters, up-down counters and gauges, named in the
// OpenTelemetry semantic-conventions style ("mcsession.session.loads",
// unit "{load}"), with a "node" attribute on the metrics of a memcached
// node. Nothing is recorded on the request path.
//
//	sessions, err := httpsession.Open(nodes, httpsession.Options{})
//	…
//	reg, err := mcsessionotel.Register(mcsessionotel.FromManager(sessions))
//	…
//	defer reg.Unregister()
//
// # Latency histograms
//
// OpenTelemetry has no observable histogram, and a synchronous one would
// have to be fed from inside mcsession, which records its latencies in
// its own lock-free histograms (package latency). So there are two ways
// to export them, and both read the same snapshots:
//
//   - Register exports each latency as two observable counters: the time
//     spent (mcsession.session.load.time, unit "s") and the number of
//     timed calls (mcsession.session.load.calls). Their rates give the
//     mean latency with any MeterProvider, without buckets.
//   - NewProducer returns an sdk/metric Producer that reports the full
//     histograms (mcsession.session.load.duration, unit "s", with the
//     latency package's bucket bounds, 16 µs doubling to about 16.8 s) as
//     cumulative explicit-bucket histograms. Attach it to the SDK readers:
//     sdkmetric.NewPeriodicReader(exporter, sdkmetric.WithProducer(p)).
//     This needs the OpenTelemetry SDK; use it for percentiles.
//
// The README of this module lists every metric.
package mcsessionotel

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// ScopeName is the instrumentation scope of the Meter that Register uses
// and of what a Producer reports.
const ScopeName = "github.com/mcsession/mcsession/extra/mcsessionotel"

// Source names the mcsession objects whose statistics are exported. Every
// field is optional: a nil field's metrics are left out. Build it with
// FromManager or FromStore, or fill in the layers you use.
type Source struct {
	// Manager gives the HTTP middleware's counters (mcsession.http.…).
	Manager *httpsession.Manager
	// Store gives the session counters and latencies (mcsession.session.…),
	// the asynchronous writes' (mcsession.async.…) and, for a sticky-mode
	// store, the cache's (mcsession.cache.…).
	Store *store.Store
	// Locker gives the session lock's counters and wait latency
	// (mcsession.lock.…): a *lock.Locker, a *lock.Local, or (FromStore) the
	// lock the store uses, in process in sticky mode.
	Locker LockSource
	// Cluster gives the per-node connection pool, round-trip latency and
	// circuit breaker metrics (mcsession.memcached.…, attribute "node").
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

// Option configures Register and NewProducer.
type Option func(*config)

type config struct {
	provider metric.MeterProvider
	attrs    []attribute.KeyValue
}

// WithMeterProvider sets the MeterProvider Register creates its
// instruments with. Default otel.GetMeterProvider(), the global one, read
// when Register is called. NewProducer ignores it.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.provider = mp }
}

// WithAttributes adds attributes to every data point, e.g. to tell apart
// two Managers of one process. Default none.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, attrs...) }
}

func newConfig(opts []Option) config {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	return c
}

// Registration is what Register returns: the callback that reports
// src's statistics.
type Registration struct {
	reg metric.Registration
}

// Unregister stops reporting: later collections no longer call the
// callback, so the instruments report nothing. Register may be called
// again. It is safe to call more than once.
func (r *Registration) Unregister() error {
	if r == nil || r.reg == nil {
		return nil
	}
	return r.reg.Unregister()
}

// Register creates the observable instruments of src's metrics on the
// Meter ScopeName of the MeterProvider (WithMeterProvider) and registers
// one callback that reads src's snapshots at each collection. The
// callback keeps no state, takes each snapshot once per collection and is
// safe to run concurrently (for several readers). It fails when the
// MeterProvider refuses an instrument or the callback.
//
// The per-node data points follow the cluster's node list, which
// Cluster.SetNodes may change: a removed node keeps reporting while it
// drains (mcsession.memcached.node.draining is 1), and a node whose
// address changed reports its new address's pool and breaker while the
// old address drains.
func Register(src Source, opts ...Option) (*Registration, error) {
	cfg := newConfig(opts)
	mp := cfg.provider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	r := &registrar{src: src, attrs: cfg.attrs, common: attribute.NewSet(cfg.attrs...)}
	var err error
	if src.Store != nil {
		if r.store, err = create(m, withTimes(storeSpecs, storeLatencies)); err != nil {
			return nil, err
		}
		if r.cache, err = create(m, cacheSpecs); err != nil {
			return nil, err
		}
	}
	if src.Locker != nil {
		if r.lock, err = create(m, withTimes(lockSpecs, lockLatencies)); err != nil {
			return nil, err
		}
	}
	if src.Cluster != nil {
		if r.pool, err = create(m, withTimes(poolSpecs, poolLatencies)); err != nil {
			return nil, err
		}
		if r.status, err = create(m, statusSpecs); err != nil {
			return nil, err
		}
		if r.conns, err = m.Int64ObservableUpDownCounter("mcsession.memcached.connection.count",
			metric.WithUnit("{connection}"),
			metric.WithDescription("Connections to the node, by state: idle, or used by a round trip.")); err != nil {
			return nil, fmt.Errorf("mcsessionotel: %w", err)
		}
		if r.breaker, err = m.Int64ObservableGauge("mcsession.memcached.breaker.state",
			metric.WithUnit("1"),
			metric.WithDescription("State of the node's circuit breaker: 1 for the current state (closed, half-open or open), 0 for the others.")); err != nil {
			return nil, fmt.Errorf("mcsessionotel: %w", err)
		}
		if r.draining, err = m.Int64ObservableGauge("mcsession.memcached.node.draining",
			metric.WithUnit("1"),
			metric.WithDescription("1 while the node, or its old address after an address change, is drained after Cluster.SetNodes removed it.")); err != nil {
			return nil, fmt.Errorf("mcsessionotel: %w", err)
		}
	}
	if src.Manager != nil {
		if r.http, err = create(m, httpSpecs); err != nil {
			return nil, err
		}
	}
	var all []metric.Observable
	all = observables(all, r.store)
	all = observables(all, r.cache)
	all = observables(all, r.lock)
	all = observables(all, r.pool)
	all = observables(all, r.status)
	all = observables(all, r.http)
	if r.conns != nil {
		all = append(all, r.conns, r.breaker, r.draining)
	}
	if len(all) == 0 {
		return &Registration{}, nil
	}
	reg, err := m.RegisterCallback(r.callback, all...)
	if err != nil {
		return nil, fmt.Errorf("mcsessionotel: register callback: %w", err)
	}
	return &Registration{reg: reg}, nil
}

// registrar holds the instruments of one Register call.
type registrar struct {
	src      Source
	attrs    []attribute.KeyValue
	common   attribute.Set
	store    []inst[store.Stats]
	cache    []inst[store.CacheStats]
	lock     []inst[lock.Stats]
	pool     []inst[replica.PoolStats]
	status   []inst[replica.NodeStatus]
	http     []inst[httpsession.Stats]
	conns    metric.Int64Observable // attributes node, state
	breaker  metric.Int64Observable // attributes node, state
	draining metric.Int64Observable // attribute node
}

// breakerStates are the states mcsession.memcached.breaker.state reports.
var breakerStates = []string{"closed", "half-open", "open"}

func (r *registrar) callback(_ context.Context, o metric.Observer) error {
	common := metric.WithAttributeSet(r.common)
	if st := r.src.Store; st != nil {
		s := st.Stats()
		observe(o, r.store, &s, common)
		if cs := st.CacheStats(); cs.MaxBytes > 0 { // sticky mode
			observe(o, r.cache, &cs, common)
		}
	}
	if l := r.src.Locker; l != nil {
		s := l.Stats()
		observe(o, r.lock, &s, common)
	}
	if cl := r.src.Cluster; cl != nil {
		var seen []string
		for _, p := range cl.PoolStats() {
			if !first(&seen, p.Node) {
				continue
			}
			observe(o, r.pool, &p, metric.WithAttributeSet(r.set(attribute.String("node", p.Node))))
			o.ObserveInt64(r.conns, int64(p.Idle), metric.WithAttributeSet(r.set(
				attribute.String("node", p.Node), attribute.String("state", "idle"))))
			o.ObserveInt64(r.conns, int64(p.Open-p.Idle), metric.WithAttributeSet(r.set(
				attribute.String("node", p.Node), attribute.String("state", "used"))))
		}
		seen = seen[:0]
		status := cl.Status()
		for _, n := range status {
			if !first(&seen, n.ID) {
				continue
			}
			node := metric.WithAttributeSet(r.set(attribute.String("node", n.ID)))
			observe(o, r.status, &n, node)
			o.ObserveInt64(r.draining, boolInt(draining(status, n.ID)), node)
			for _, state := range breakerStates {
				o.ObserveInt64(r.breaker, boolInt(n.State == state), metric.WithAttributeSet(r.set(
					attribute.String("node", n.ID), attribute.String("state", state))))
			}
		}
	}
	if m := r.src.Manager; m != nil {
		s := m.Stats()
		observe(o, r.http, &s, common)
	}
	return nil
}

// set returns the attribute set of kv with the WithAttributes ones.
func (r *registrar) set(kv ...attribute.KeyValue) attribute.Set {
	return attribute.NewSet(append(kv, r.attrs...)...)
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

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// first reports whether id is not in *seen yet, and adds it: a node id
// that a snapshot lists twice (active, and draining at its old address)
// is reported once per collection, with its active node's values.
func first(seen *[]string, id string) bool {
	for _, s := range *seen {
		if s == id {
			return false
		}
	}
	*seen = append(*seen, id)
	return true
}
