package mcsessionotel_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/mcsession/mcsession/extra/mcsessionotel"
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/latency"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

var discard = slog.New(slog.DiscardHandler)

// newStore builds a store with its own cluster client (as one app server
// has) over the memcached nodes of spec. A failed round trip opens a
// node's breaker at once and it stays open for the test, so that which
// node is up never depends on timing.
func newStore(t *testing.T, spec string, cfg store.Config) *store.Store {
	t.Helper()
	nodes, err := replica.ParseNodes(spec)
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, FailureThreshold: 1, OpenTimeout: time.Hour, Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	cfg.Cluster, cfg.Logger = cl, discard
	st, err := store.New(cfg)
	require.NoError(t, err)
	return st
}

// reader registers src's instruments on a MeterProvider with a manual
// reader that also reads src's histogram Producer, and returns a function
// that collects them, by metric name, and the reader.
func reader(t *testing.T, src mcsessionotel.Source, opts ...mcsessionotel.Option) (func() map[string]metricdata.Metrics, *sdkmetric.ManualReader) {
	t.Helper()
	rd := sdkmetric.NewManualReader(sdkmetric.WithProducer(mcsessionotel.NewProducer(src, opts...)))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	reg, err := mcsessionotel.Register(src, append(opts, mcsessionotel.WithMeterProvider(mp))...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Unregister()) })
	return func() map[string]metricdata.Metrics {
		var rm metricdata.ResourceMetrics
		require.NoError(t, rd.Collect(context.Background(), &rm))
		out := map[string]metricdata.Metrics{}
		for _, sm := range rm.ScopeMetrics {
			require.Equal(t, mcsessionotel.ScopeName, sm.Scope.Name)
			for _, m := range sm.Metrics {
				_, dup := out[m.Name]
				require.False(t, dup, "metric %s reported twice", m.Name)
				out[m.Name] = m
			}
		}
		return out
	}, rd
}

// match reports whether set has every attribute of want.
func match(set attribute.Set, want map[string]string) bool {
	for k, v := range want {
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.AsString() != v {
			return false
		}
	}
	return true
}

// value returns the value of the data point of metric name whose
// attributes include want (a counter, up-down counter or gauge; an Int64
// or, for seconds, Float64 one), after checking its unit and kind.
func value(t *testing.T, ms map[string]metricdata.Metrics, name string, want map[string]string) float64 {
	t.Helper()
	m, ok := ms[name]
	require.True(t, ok, "metric %s missing", name)
	require.NotEmpty(t, m.Unit, name)
	require.NotEmpty(t, m.Description, name)
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		require.Equal(t, metricdata.CumulativeTemporality, d.Temporality, name)
		for _, p := range d.DataPoints {
			if match(p.Attributes, want) {
				return float64(p.Value)
			}
		}
	case metricdata.Sum[float64]:
		require.True(t, d.IsMonotonic, name)
		for _, p := range d.DataPoints {
			if match(p.Attributes, want) {
				return p.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if match(p.Attributes, want) {
				return float64(p.Value)
			}
		}
	default:
		require.Failf(t, "unexpected data", "%s: %T", name, m.Data)
	}
	require.Failf(t, "data point missing", "%s%v", name, want)
	return 0
}

// monotonic reports whether metric name is a monotonic sum (a counter).
func monotonic(ms map[string]metricdata.Metrics, name string) bool {
	switch d := ms[name].Data.(type) {
	case metricdata.Sum[int64]:
		return d.IsMonotonic
	case metricdata.Sum[float64]:
		return d.IsMonotonic
	}
	return false
}

// hist returns the histogram data point of metric name whose attributes
// include want, after checking that it is well formed.
func hist(t *testing.T, ms map[string]metricdata.Metrics, name string, want map[string]string) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := ms[name]
	require.True(t, ok, "metric %s missing", name)
	require.Equal(t, "s", m.Unit, name)
	d, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s: %T", name, m.Data)
	require.Equal(t, metricdata.CumulativeTemporality, d.Temporality)
	for _, p := range d.DataPoints {
		if !match(p.Attributes, want) {
			continue
		}
		b := latency.Bounds()
		require.Len(t, p.Bounds, len(b), name)
		for k := range b {
			require.Equal(t, b[k].Seconds(), p.Bounds[k], name)
		}
		require.Len(t, p.BucketCounts, len(b)+1, name)
		var n uint64
		for _, c := range p.BucketCounts {
			n += c
		}
		require.Equal(t, p.Count, n, "%s: the buckets add up to the count", name)
		if p.Count > 0 {
			require.Positive(t, p.Sum, name)
		}
		require.False(t, p.StartTime.After(p.Time), name)
		return p
	}
	require.Failf(t, "data point missing", "%s%v", name, want)
	return metricdata.HistogramDataPoint[float64]{}
}

// TestScenario runs a scripted sequence on app server A (a store with its
// own cluster client) while app server B, over the same three memcached
// nodes, causes a CAS conflict and holds a lock, and checks every data
// point the sequence moves, with values derived from it.
func TestScenario(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	a := newStore(t, mc.Spec(), store.Config{})
	b := newStore(t, mc.Spec(), store.Config{})
	collect, _ := reader(t, mcsessionotel.FromStore(a))
	ctx := context.Background()

	// 1 save of a new session, 3 loads, 1 load with an unchanged (skipped) save.
	s, err := a.NewSession(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, a.Save(ctx, s))
	id := s.ID()
	for range 3 {
		_, err := a.Load(ctx, id)
		require.NoError(t, err)
	}
	s, err = a.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, a.Save(ctx, s))

	// A CAS conflict: A and B load the session, B saves first.
	sa, err := a.Load(ctx, id)
	require.NoError(t, err)
	sb, err := b.Load(ctx, id)
	require.NoError(t, err)
	require.NoError(t, sb.Set("n", 2))
	require.NoError(t, b.Save(ctx, sb))
	require.NoError(t, sa.Set("n", 3))
	require.ErrorIs(t, a.Save(ctx, sa), store.ErrConflict)

	// A lock timeout: B holds the lock, A waits for it 50 ms and gives up.
	held, err := b.LoadLocked(ctx, id)
	require.NoError(t, err)
	_, err = a.LoadLocked(lock.WithWaitTimeout(ctx, 50*time.Millisecond), id)
	require.ErrorIs(t, err, lock.ErrLockTimeout)
	require.NoError(t, b.Release(ctx, held))

	// A locked load and save.
	sl, err := a.LoadLocked(ctx, id)
	require.NoError(t, err)
	require.NoError(t, sl.Set("n", 4))
	require.NoError(t, a.SaveAndRelease(ctx, sl))

	// A relocation: the session's primary node dies; the next load reads
	// the backup copy and moves the session to the backup node.
	primary, _, ok := a.Placement(id)
	require.True(t, ok)
	require.NoError(t, mc.Node(primary).Kill())
	sr, err := a.Load(ctx, id)
	require.NoError(t, err)
	require.NotEqual(t, id, sr.ID(), "relocated: new id")
	require.NoError(t, sr.Set("n", 5))
	require.NoError(t, a.Save(ctx, sr))

	ms := collect()
	for name, want := range map[string]float64{
		"mcsession.session.loads":                 7, // 3, 1 before the skipped save, the conflict's, the locked one, the relocating one
		"mcsession.session.saves":                 3, // new, locked, relocated
		"mcsession.session.skipped_saves":         1,
		"mcsession.session.conflicts":             1,
		"mcsession.session.relocations":           1,
		"mcsession.session.restores":              0,
		"mcsession.session.backup_failures":       0,
		"mcsession.session.corrupt_records":       0,
		"mcsession.session.undecryptable_records": 0,
		"mcsession.async.writes.queued":           0,
		"mcsession.async.writes.pending":          0,
		"mcsession.lock.acquired":                 1,
		"mcsession.lock.released":                 1,
		"mcsession.lock.timeouts":                 1,
		"mcsession.lock.waits":                    1,
		"mcsession.lock.lost":                     0,
		// Calls timed: every Load and LoadLocked (failures included), every
		// Save, every lock acquisition.
		"mcsession.session.load.calls": 8,
		"mcsession.session.save.calls": 5,
		"mcsession.lock.acquire.calls": 2,
	} {
		require.Equal(t, want, value(t, ms, name, nil), name)
		require.True(t, monotonic(ms, name) == !strings.HasSuffix(name, ".pending"), name)
	}
	for _, name := range []string{"mcsession.lock.wait.time", "mcsession.session.load.time", "mcsession.session.save.time", "mcsession.lock.acquire.time"} {
		require.Positive(t, value(t, ms, name, nil), name)
		require.Equal(t, "s", ms[name].Unit, name)
	}
	require.Equal(t, "{load}", ms["mcsession.session.loads"].Unit)

	// The Producer's histograms: the same counts, with buckets.
	loadH := hist(t, ms, "mcsession.session.load.duration", nil)
	require.Equal(t, uint64(8), loadH.Count)
	require.InDelta(t, value(t, ms, "mcsession.session.load.time", nil), loadH.Sum, 1e-9)
	require.Equal(t, uint64(5), hist(t, ms, "mcsession.session.save.duration", nil).Count)
	require.Equal(t, uint64(2), hist(t, ms, "mcsession.lock.acquire.duration", nil).Count)

	// Per node: every node has its data points; the dead one is down.
	var rtts uint64
	for _, p := range a.Cluster().PoolStats() {
		node := map[string]string{"node": p.Node}
		h := hist(t, ms, "mcsession.memcached.round_trip.duration", node)
		require.Equal(t, p.RoundTrip.Count, h.Count, p.Node)
		rtts += h.Count
		require.Equal(t, float64(p.RoundTrip.Count), value(t, ms, "mcsession.memcached.round_trip.calls", node), p.Node)
		require.Equal(t, float64(p.RoundTrips), value(t, ms, "mcsession.memcached.round_trips", node), p.Node)
		require.Equal(t, float64(p.Idle), value(t, ms, "mcsession.memcached.connection.count", map[string]string{"node": p.Node, "state": "idle"}), p.Node)
		require.Equal(t, float64(p.Open-p.Idle), value(t, ms, "mcsession.memcached.connection.count", map[string]string{"node": p.Node, "state": "used"}), p.Node)
		value(t, ms, "mcsession.memcached.dials", node)
		value(t, ms, "mcsession.memcached.commands", node)

		up, state := 1.0, "closed"
		if p.Node == primary {
			up, state = 0, "open"
			require.Positive(t, value(t, ms, "mcsession.memcached.dial_errors", node), "the dead node refused a dial")
		}
		require.Equal(t, up, value(t, ms, "mcsession.memcached.node.up", node), p.Node)
		for _, st := range []string{"closed", "half-open", "open"} {
			want := 0.0
			if st == state {
				want = 1
			}
			require.Equal(t, want, value(t, ms, "mcsession.memcached.breaker.state", map[string]string{"node": p.Node, "state": st}), p.Node+" "+st)
		}
	}
	require.Positive(t, rtts)
	require.Len(t, ms["mcsession.memcached.node.up"].Data.(metricdata.Gauge[int64]).DataPoints, 3)

	// Neither the sticky cache's nor the middleware's metrics: not in the Source.
	for name := range ms {
		require.NotRegexp(t, `^mcsession\.(cache|http)\.`, name)
	}
}

// TestSticky checks the cache and asynchronous-write metrics of a
// sticky-mode store with AsyncWrites, and WithAttributes.
func TestSticky(t *testing.T) {
	st := newStore(t, nodeList, store.Config{Sticky: true, AsyncWrites: true, CacheBytes: 1 << 20})
	collect, _ := reader(t, mcsessionotel.FromStore(st), mcsessionotel.WithAttributes(attribute.String("app", "a")))
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, st.Save(ctx, s)) // queued
	require.NoError(t, st.Flush(ctx))   // written
	_, err = st.Load(ctx, s.ID())       // a cache hit
	require.NoError(t, err)

	ms := collect()
	cs := st.CacheStats()
	app := map[string]string{"app": "a"}
	for name, want := range map[string]float64{
		"mcsession.cache.sessions":         1,
		"mcsession.cache.usage":            float64(cs.Bytes),
		"mcsession.cache.limit":            1 << 20,
		"mcsession.cache.unwritten":        0,
		"mcsession.cache.hits":             1,
		"mcsession.cache.misses":           0,
		"mcsession.cache.evictions":        0,
		"mcsession.async.writes.queued":    1,
		"mcsession.async.writes.succeeded": 1,
		"mcsession.async.writes.failed":    0,
		"mcsession.async.writes.pending":   0,
		"mcsession.async.writes.running":   0,
		"mcsession.session.saves":          1,
	} {
		require.Equal(t, want, value(t, ms, name, app), name)
	}
	require.Positive(t, cs.Bytes)
	require.Equal(t, "By", ms["mcsession.cache.usage"].Unit)
	require.Equal(t, uint64(1), hist(t, ms, "mcsession.session.save.duration", app).Count)
	value(t, ms, "mcsession.memcached.node.up", map[string]string{"app": "a", "node": "n1"})
}

// TestManager drives a Manager through HTTP requests and checks the
// middleware's metrics next to the layers below it.
func TestManager(t *testing.T) {
	m, err := httpsession.Open(nodeList, httpsession.Options{Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	collect, _ := reader(t, mcsessionotel.FromManager(m))
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		n, _, err := httpsession.Get[int](s, "n")
		if err == nil {
			err = s.Set("n", n+1)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})))
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	for range 3 {
		resp, err := client.Post(srv.URL, "", nil)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	m.Wait()

	ms := collect()
	require.Equal(t, 3.0, value(t, ms, "mcsession.http.requests", nil))
	require.Equal(t, 1.0, value(t, ms, "mcsession.http.sessions.created", nil))
	require.Equal(t, 0.0, value(t, ms, "mcsession.http.errors", nil))
	require.Equal(t, 2.0, value(t, ms, "mcsession.session.loads", nil))
	require.Equal(t, 3.0, value(t, ms, "mcsession.session.saves", nil))
	require.Len(t, ms["mcsession.memcached.node.up"].Data.(metricdata.Gauge[int64]).DataPoints, 2)
}

// TestUnregister checks that an unregistered callback reports nothing,
// and that a Source without fields registers nothing.
func TestUnregister(t *testing.T) {
	st := newStore(t, nodeList, store.Config{})
	rd := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	reg, err := mcsessionotel.Register(mcsessionotel.FromStore(st), mcsessionotel.WithMeterProvider(mp))
	require.NoError(t, err)

	points := func() int {
		var rm metricdata.ResourceMetrics
		require.NoError(t, rd.Collect(context.Background(), &rm))
		n := 0
		for _, sm := range rm.ScopeMetrics {
			n += len(sm.Metrics)
		}
		return n
	}
	require.Positive(t, points())
	require.NoError(t, reg.Unregister())
	require.NoError(t, reg.Unregister(), "a second Unregister is harmless")
	require.Zero(t, points())

	empty, err := mcsessionotel.Register(mcsessionotel.Source{}, mcsessionotel.WithMeterProvider(mp))
	require.NoError(t, err)
	require.NoError(t, empty.Unregister())
	sm, err := mcsessionotel.NewProducer(mcsessionotel.Source{}).Produce(context.Background())
	require.NoError(t, err)
	require.Empty(t, sm)
}

// TestConcurrent collects while sessions are loaded and saved (run with
// -race).
func TestConcurrent(t *testing.T) {
	st := newStore(t, nodeList, store.Config{})
	collect, rd := reader(t, mcsessionotel.FromStore(st))
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for k := range 20 {
				s, err := st.NewSession(ctx)
				if !assertNoError(t, err) {
					return
				}
				_ = s.Set("k", k)
				if !assertNoError(t, st.Save(ctx, s)) {
					return
				}
				_, err = st.Load(ctx, s.ID())
				assertNoError(t, err)
			}
		}()
		go func() {
			defer wg.Done()
			for range 20 {
				var rm metricdata.ResourceMetrics
				assertNoError(t, rd.Collect(ctx, &rm))
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 80.0, value(t, collect(), "mcsession.session.saves", nil))
}

// assertNoError reports err from a goroutine other than the test's.
func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestDraining changes the node list of a running cluster: n1 moves to
// another address and n3 leaves. Every node id keeps one data point per
// metric (n1's from its new address), and the drained ones say so.
func TestDraining(t *testing.T) {
	mc := mcproc.NewCluster(t, 4)
	nodes, err := replica.ParseNodes(strings.Join([]string{
		"n1=" + mc.Nodes[0].Addr(), "n2=" + mc.Nodes[1].Addr(), "n3=" + mc.Nodes[2].Addr()}, ","))
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	st, err := store.New(store.Config{Cluster: cl, Logger: discard})
	require.NoError(t, err)
	collect, _ := reader(t, mcsessionotel.FromStore(st))
	ctx := context.Background()
	for range 3 { // a session on each node
		s, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 1))
		require.NoError(t, st.Save(ctx, s))
	}

	next, err := replica.ParseNodes("n1=" + mc.Nodes[3].Addr() + ",n2=" + mc.Nodes[1].Addr())
	require.NoError(t, err)
	_, err = cl.SetNodes(next)
	require.NoError(t, err)
	require.Len(t, cl.PoolStats(), 4, "n1 twice, n2, n3")

	ms := collect()
	for node, want := range map[string]float64{"n1": 1, "n2": 0, "n3": 1} {
		require.Equal(t, want, value(t, ms, "mcsession.memcached.node.draining", map[string]string{"node": node}), node)
		require.Equal(t, 1.0, value(t, ms, "mcsession.memcached.node.up", map[string]string{"node": node}), node)
	}
	require.Len(t, ms["mcsession.memcached.node.draining"].Data.(metricdata.Gauge[int64]).DataPoints, 3)
	require.Len(t, ms["mcsession.memcached.round_trips"].Data.(metricdata.Sum[int64]).DataPoints, 3)
	require.Len(t, ms["mcsession.memcached.round_trip.duration"].Data.(metricdata.Histogram[float64]).DataPoints, 3)
	require.Zero(t, value(t, ms, "mcsession.memcached.round_trips", map[string]string{"node": "n1"}),
		"n1's data points are its new address's, which got nothing yet")
	require.Zero(t, hist(t, ms, "mcsession.memcached.round_trip.duration", map[string]string{"node": "n1"}).Count)
}
