package mcsessionprom_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/extra/mcsessionprom"
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

// gather registers c with a new pedantic registry (which also checks that
// every collected metric was described) and gathers it, by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series returns the metric of family name whose labels include want.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mf, ok := mfs[name]
	require.True(t, ok, "metric %s missing", name)
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	require.Failf(t, "series missing", "%s%v", name, want)
	return nil
}

// value returns the value of a counter or gauge series.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := series(t, mfs, name, labels)
	switch mfs[name].GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	}
	require.Failf(t, "not a counter or gauge", "%s", name)
	return 0
}

// hist returns a histogram series after checking that it is well formed:
// cumulative buckets on latency.Bounds in seconds, none above the count.
func hist(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Histogram {
	t.Helper()
	require.Equal(t, dto.MetricType_HISTOGRAM, mfs[name].GetType(), name)
	h := series(t, mfs, name, labels).GetHistogram()
	bounds := latency.Bounds()
	require.Len(t, h.GetBucket(), len(bounds), name)
	var prev uint64
	for i, b := range h.GetBucket() {
		require.Equal(t, bounds[i].Seconds(), b.GetUpperBound(), name)
		require.GreaterOrEqual(t, b.GetCumulativeCount(), prev, "%s: buckets are cumulative", name)
		prev = b.GetCumulativeCount()
	}
	require.LessOrEqual(t, prev, h.GetSampleCount(), name)
	if h.GetSampleCount() > 0 {
		require.Positive(t, h.GetSampleSum(), name)
	}
	return h
}

// TestCollectorScenario runs a scripted sequence on app server A (a
// store with its own cluster client) while app server B, over the same
// three memcached nodes, causes a CAS conflict and holds a lock, and
// checks every series the sequence moves, with values derived from it.
func TestCollectorScenario(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	a := newStore(t, mc.Spec(), store.Config{})
	b := newStore(t, mc.Spec(), store.Config{})
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

	c := mcsessionprom.NewCollector(mcsessionprom.FromStore(a))
	mfs := gather(t, c)

	for name, want := range map[string]float64{
		"mcsession_session_loads_total":                 7, // 3, 1 before the skipped save, the conflict's, the locked one, the relocating one
		"mcsession_session_saves_total":                 3, // new, locked, relocated
		"mcsession_session_saves_skipped_total":         1,
		"mcsession_session_conflicts_total":             1,
		"mcsession_session_relocations_total":           1,
		"mcsession_session_restores_total":              0,
		"mcsession_session_backup_failures_total":       0,
		"mcsession_session_corrupt_records_total":       0,
		"mcsession_session_undecryptable_records_total": 0,
		"mcsession_async_writes_queued_total":           0,
		"mcsession_async_writes_pending":                0,
		"mcsession_lock_acquired_total":                 1,
		"mcsession_lock_released_total":                 1,
		"mcsession_lock_timeouts_total":                 1,
		"mcsession_lock_waits_total":                    1,
		"mcsession_lock_lost_total":                     0,
	} {
		require.Equal(t, want, value(t, mfs, name, nil), name)
	}
	require.Positive(t, value(t, mfs, "mcsession_lock_wait_seconds_total", nil))

	// Histogram counts: every Load and LoadLocked call (failures included),
	// every Save call, every lock acquisition.
	require.Equal(t, uint64(8), hist(t, mfs, "mcsession_session_load_duration_seconds", nil).GetSampleCount())
	require.Equal(t, uint64(5), hist(t, mfs, "mcsession_session_save_duration_seconds", nil).GetSampleCount())
	require.Equal(t, uint64(2), hist(t, mfs, "mcsession_lock_acquire_duration_seconds", nil).GetSampleCount())

	// Per node: every node has its series; the dead one is down.
	pools := a.Cluster().PoolStats()
	var rtts uint64
	for _, p := range pools {
		node := map[string]string{"node": p.Node}
		h := hist(t, mfs, "mcsession_memcached_round_trip_duration_seconds", node)
		require.Equal(t, p.RoundTrip.Count, h.GetSampleCount(), p.Node)
		rtts += h.GetSampleCount()
		require.Equal(t, float64(p.RoundTrips), value(t, mfs, "mcsession_memcached_round_trips_total", node), p.Node)
		require.Equal(t, float64(p.Open), value(t, mfs, "mcsession_memcached_open_connections", node), p.Node)
		value(t, mfs, "mcsession_memcached_idle_connections", node)
		value(t, mfs, "mcsession_memcached_dials_total", node)
		value(t, mfs, "mcsession_memcached_commands_total", node)

		up, state := 1.0, "closed"
		if p.Node == primary {
			up, state = 0, "open"
			require.Positive(t, value(t, mfs, "mcsession_memcached_dial_errors_total", node), "the dead node refused a dial")
		}
		require.Equal(t, up, value(t, mfs, "mcsession_memcached_node_up", node), p.Node)
		for _, st := range []string{"closed", "half-open", "open"} {
			want := 0.0
			if st == state {
				want = 1
			}
			require.Equal(t, want, value(t, mfs, "mcsession_memcached_breaker_state", map[string]string{"node": p.Node, "state": st}), p.Node+" "+st)
		}
		require.Equal(t, 1.0, value(t, mfs, "mcsession_memcached_node_info", map[string]string{"node": p.Node, "addr": mc.Node(p.Node).Addr()}))
	}
	require.Positive(t, rtts)
	require.Len(t, mfs["mcsession_memcached_node_up"].GetMetric(), 3)

	// Neither the sticky cache's nor the middleware's series: not in the Source.
	for name := range mfs {
		require.NotRegexp(t, `^mcsession_(cache|http)_`, name)
	}

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestCollectorSticky checks the cache and asynchronous-write series of a
// sticky-mode store with AsyncWrites.
func TestCollectorSticky(t *testing.T) {
	st := newStore(t, nodeList, store.Config{Sticky: true, AsyncWrites: true, CacheBytes: 1 << 20})
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, st.Save(ctx, s)) // queued
	require.NoError(t, st.Flush(ctx))   // written
	_, err = st.Load(ctx, s.ID())       // a cache hit
	require.NoError(t, err)
	_, err = st.Load(ctx, s.ID()+"x") // malformed: no lookup
	require.ErrorIs(t, err, store.ErrNotFound)
	locked, err := st.LoadLocked(ctx, s.ID()) // the in-process lock
	require.NoError(t, err)
	require.NoError(t, st.Release(ctx, locked))

	c := mcsessionprom.NewCollector(mcsessionprom.FromStore(st), mcsessionprom.WithConstLabels(prometheus.Labels{"app": "a"}))
	mfs := gather(t, c)
	cs := st.CacheStats()
	for name, want := range map[string]float64{
		"mcsession_cache_sessions":               1,
		"mcsession_cache_bytes":                  float64(cs.Bytes),
		"mcsession_cache_max_bytes":              1 << 20,
		"mcsession_cache_unwritten_sessions":     0,
		"mcsession_cache_hits_total":             2,
		"mcsession_lock_acquired_total":          1,
		"mcsession_lock_released_total":          1,
		"mcsession_cache_misses_total":           0,
		"mcsession_cache_evictions_total":        0,
		"mcsession_async_writes_queued_total":    1,
		"mcsession_async_writes_succeeded_total": 1,
		"mcsession_async_writes_failed_total":    0,
		"mcsession_async_writes_pending":         0,
		"mcsession_async_writes_running":         0,
		"mcsession_session_saves_total":          1,
	} {
		require.Equal(t, want, value(t, mfs, name, map[string]string{"app": "a"}), name)
	}
	require.Positive(t, cs.Bytes)
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestCollectorManager drives a Manager through HTTP requests and checks
// the middleware's series next to the layers below it.
func TestCollectorManager(t *testing.T) {
	m, err := httpsession.Open(nodeList, httpsession.Options{Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
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

	mfs := gather(t, mcsessionprom.NewCollector(mcsessionprom.FromManager(m)))
	require.Equal(t, 3.0, value(t, mfs, "mcsession_http_requests_total", nil))
	require.Equal(t, 1.0, value(t, mfs, "mcsession_http_sessions_created_total", nil))
	require.Equal(t, 0.0, value(t, mfs, "mcsession_http_errors_total", nil))
	require.Equal(t, 2.0, value(t, mfs, "mcsession_session_loads_total", nil))
	require.Equal(t, 3.0, value(t, mfs, "mcsession_session_saves_total", nil))
	require.Len(t, mfs["mcsession_memcached_node_up"].GetMetric(), 2)

	problems, err := testutil.CollectAndLint(mcsessionprom.NewCollector(mcsessionprom.FromManager(m)))
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestCollectorDescribe checks that Describe names exactly the families a
// full Source can collect (a sticky store, so that the cache's are there),
// with WithNamespace applied.
func TestCollectorDescribe(t *testing.T) {
	m, err := httpsession.Open(nodeList, httpsession.Options{Logger: discard, Store: store.Config{Sticky: true}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	c := mcsessionprom.NewCollector(mcsessionprom.FromManager(m), mcsessionprom.WithNamespace("app_sessions"))

	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	described := 0
	for range ch {
		described++
	}
	mfs := gather(t, c)
	var names []string
	for name := range mfs {
		require.Regexp(t, `^app_sessions_`, name)
		names = append(names, name)
	}
	sort.Strings(names)
	require.Equal(t, described, len(names), "every described family is collected: %v", names)

	// An empty Source describes and collects nothing.
	require.Zero(t, testutil.CollectAndCount(mcsessionprom.NewCollector(mcsessionprom.Source{})))
}

// TestCollectorConcurrent scrapes while sessions are loaded and saved
// (run with -race).
func TestCollectorConcurrent(t *testing.T) {
	st := newStore(t, nodeList, store.Config{})
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(mcsessionprom.NewCollector(mcsessionprom.FromStore(st))))
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				s, err := st.NewSession(ctx)
				if !assertNoError(t, err) {
					return
				}
				_ = s.Set("i", i)
				if !assertNoError(t, st.Save(ctx, s)) {
					return
				}
				_, err = st.Load(ctx, s.ID())
				assertNoError(t, err)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, err := reg.Gather()
				assertNoError(t, err)
			}
		}()
	}
	wg.Wait()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "mcsession_session_saves_total" {
			require.Equal(t, 80.0, mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
}

// assertNoError reports err from a goroutine other than the test's.
func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestCollectorDraining changes the node list of a running cluster: n1
// moves to another address and n3 leaves. Every node id keeps one set of
// series (n1's from its new address), the drained ones say so, and the
// scrape does not fail on n1 being listed twice.
func TestCollectorDraining(t *testing.T) {
	mc := mcproc.NewCluster(t, 4)
	nodes, err := replica.ParseNodes(strings.Join([]string{
		"n1=" + mc.Nodes[0].Addr(), "n2=" + mc.Nodes[1].Addr(), "n3=" + mc.Nodes[2].Addr()}, ","))
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	st, err := store.New(store.Config{Cluster: cl, Logger: discard})
	require.NoError(t, err)
	ctx := context.Background()
	var ids []string
	for range 3 { // a session on each node
		s, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 1))
		require.NoError(t, st.Save(ctx, s))
		ids = append(ids, s.ID())
	}

	moved := "n1=" + mc.Nodes[3].Addr()
	next, err := replica.ParseNodes(moved + ",n2=" + mc.Nodes[1].Addr())
	require.NoError(t, err)
	_, err = cl.SetNodes(next)
	require.NoError(t, err)

	mfs := gather(t, mcsessionprom.NewCollector(mcsessionprom.FromStore(st)))
	for node, want := range map[string]float64{"n1": 1, "n2": 0, "n3": 1} {
		require.Equal(t, want, value(t, mfs, "mcsession_memcached_node_draining", map[string]string{"node": node}), node)
		require.Equal(t, 1.0, value(t, mfs, "mcsession_memcached_node_up", map[string]string{"node": node}), node)
	}
	require.Len(t, mfs["mcsession_memcached_node_up"].GetMetric(), 3)
	require.Len(t, mfs["mcsession_memcached_round_trips_total"].GetMetric(), 3)
	require.Len(t, mfs["mcsession_memcached_node_info"].GetMetric(), 4, "n1 at both addresses")
	value(t, mfs, "mcsession_memcached_node_info", map[string]string{"node": "n1", "addr": mc.Nodes[0].Addr()})
	value(t, mfs, "mcsession_memcached_node_info", map[string]string{"node": "n1", "addr": mc.Nodes[3].Addr()})
	active := 0
	for _, p := range cl.PoolStats() {
		if p.Node == "n1" && !p.Draining {
			active++
			require.Equal(t, float64(p.RoundTrips), value(t, mfs, "mcsession_memcached_round_trips_total", map[string]string{"node": "n1"}),
				"n1's series are its new address's")
			require.Equal(t, uint64(0), p.RoundTrips, "nothing sent to the new address yet")
		}
	}
	require.Equal(t, 1, active)
	require.Len(t, cl.PoolStats(), 4, "n1 twice, n2, n3")

	// Loading the sessions moves n3's off it and copies n1's to its new
	// address: two drained.
	require.Zero(t, value(t, mfs, "mcsession_session_drained_total", nil))
	for _, id := range ids {
		_, err := st.Load(ctx, id)
		require.NoError(t, err)
	}
	mfs = gather(t, mcsessionprom.NewCollector(mcsessionprom.FromStore(st)))
	require.Equal(t, 2.0, value(t, mfs, "mcsession_session_drained_total", nil))
}
