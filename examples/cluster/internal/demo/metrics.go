package demo

import (
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/latency"
)

// metricsWindow is the span of the recent latency quantiles in Metrics.
const metricsWindow = 10 * time.Second

// Metrics is the main metrics of every app server and node (GET
// /demo/metrics). The counters are totals since each process started; the
// latency quantiles are the upper bounds of the histogram buckets (16 µs
// doubling) that hold them, over the last WindowSeconds.
type Metrics struct {
	// WindowSeconds is the span of the latency quantiles.
	WindowSeconds float64 `json:"windowSeconds"`
	// Apps holds every app server, in order.
	Apps []AppMetrics `json:"apps"`
	// Nodes holds every memcached node, in order.
	Nodes []NodeMetrics `json:"nodes"`
}

// AppMetrics is one app server's session counters and latencies, from its
// GET /api/stats (store.Stats and httpsession.Stats).
type AppMetrics struct {
	// Name is the app server's name.
	Name string `json:"name"`
	// Up reports whether it answered its last GET /api/stats.
	Up bool `json:"up"`
	// Requests counts requests that used a session; Locked those that held
	// its lock; LockTimeouts the lock waits that timed out (503); Errors
	// the requests whose session failed, conflicts and lock timeouts
	// included.
	Requests     uint64 `json:"requests"`
	Locked       uint64 `json:"locked"`
	LockTimeouts uint64 `json:"lockTimeouts"`
	Errors       uint64 `json:"errors"`
	// Loads, Saves, Conflicts, Relocations, Restores, SingleCopySaves and
	// BackupFailures are store.Stats' counters.
	Loads           uint64 `json:"loads"`
	Saves           uint64 `json:"saves"`
	Conflicts       uint64 `json:"conflicts"`
	Relocations     uint64 `json:"relocations"`
	Restores        uint64 `json:"restores"`
	SingleCopySaves uint64 `json:"singleCopySaves"`
	BackupFailures  uint64 `json:"backupFailures"`
	// AsyncPending is the number of queued session writes (-async-backup).
	AsyncPending int `json:"asyncPending"`
	// LoadP50 ... SaveP99 are the load (a lock wait included) and save
	// latencies over the window, in milliseconds; 0 without loads or saves
	// in it.
	LoadP50 float64 `json:"loadP50"`
	LoadP99 float64 `json:"loadP99"`
	SaveP50 float64 `json:"saveP50"`
	SaveP99 float64 `json:"saveP99"`
	// WindowLoads and WindowSaves count the loads and saves in the window.
	WindowLoads uint64 `json:"windowLoads"`
	WindowSaves uint64 `json:"windowSaves"`
}

// NodeMetrics is one memcached node: its process, the demo's breaker and
// the round trips of the demo's own probes (replica.PoolStats).
type NodeMetrics struct {
	// ID is the node id.
	ID string `json:"id"`
	// Running and Paused are the process state; Breaker the demo's
	// breaker state.
	Running bool   `json:"running"`
	Paused  bool   `json:"paused"`
	Breaker string `json:"breaker"`
	// Apps maps each app's name to the node's breaker state in that app.
	Apps map[string]string `json:"apps"`
	// RoundTripP50 and RoundTripP99 are the round trips of the demo's
	// probes over the window, in milliseconds (the probes of a paused
	// node end at their 500 ms timeout); Probes counts them.
	RoundTripP50 float64 `json:"roundTripP50"`
	RoundTripP99 float64 `json:"roundTripP99"`
	Probes       uint64  `json:"probes"`
	// Timeouts and Broken are the demo's connection pool's totals for the
	// node: round trips that ran out of time, connections closed after a
	// failed round trip.
	Timeouts uint64 `json:"timeouts"`
	Broken   uint64 `json:"broken"`
}

// recent keeps the last metricsWindow of one process's cumulative
// histograms, to take their quantiles over the window.
type recent struct {
	pts []recentPoint
}

type recentPoint struct {
	at time.Time
	h  []latency.Snapshot
}

// add records the histograms h at time at. A histogram whose count went
// down (the process restarted) starts the window anew.
func (r *recent) add(at time.Time, h ...latency.Snapshot) {
	if n := len(r.pts); n > 0 {
		for i, s := range r.pts[n-1].h {
			if i >= len(h) || h[i].Count < s.Count {
				r.pts = r.pts[:0]
				break
			}
		}
	}
	r.pts = append(r.pts, recentPoint{at: at, h: h})
	// Keep one point at least metricsWindow old as the window's base.
	for len(r.pts) > 2 && at.Sub(r.pts[1].at) >= metricsWindow {
		r.pts = r.pts[1:]
	}
}

// reset forgets everything (the process is gone).
func (r *recent) reset() { r.pts = r.pts[:0] }

// window returns histogram i over the window: the latest minus the base,
// or the latest alone when there is one point.
func (r *recent) window(i int) latency.Snapshot {
	switch len(r.pts) {
	case 0:
		return latency.Snapshot{}
	case 1:
		return r.pts[0].h[i]
	}
	return sub(r.pts[len(r.pts)-1].h[i], r.pts[0].h[i])
}

// sub returns the durations recorded in a and not in b (b taken before a
// from the same histogram).
func sub(a, b latency.Snapshot) latency.Snapshot {
	s := latency.Snapshot{Count: a.Count - b.Count, Sum: a.Sum - b.Sum, Buckets: make([]latency.Bucket, len(a.Buckets))}
	for i, bk := range a.Buckets {
		s.Buckets[i] = bk
		if i < len(b.Buckets) {
			s.Buckets[i].Count -= b.Buckets[i].Count
		}
	}
	return s
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// recordLatencies adds the apps' stats and the demo's probe round trips
// to their windows; d.mu is held.
func (d *Demo) recordLatencies(at time.Time, stats []*server.StatsResponse) {
	for i, s := range d.apps {
		w := d.appWindow(s.name)
		if stats[i] == nil {
			w.reset()
			continue
		}
		w.add(at, stats[i].Store.LoadLatency, stats[i].Store.SaveLatency)
	}
	for _, p := range d.cluster.PoolStats() {
		w := d.nodeWin[p.Node]
		if w == nil {
			w = &recent{}
			d.nodeWin[p.Node] = w
		}
		w.add(at, p.RoundTrip)
	}
}

// appWindow returns the latency window of app name; d.mu is held.
func (d *Demo) appWindow(name string) *recent {
	w := d.appWin[name]
	if w == nil {
		w = &recent{}
		d.appWin[name] = w
	}
	return w
}

// metrics returns the current Metrics.
func (d *Demo) metrics() Metrics {
	st := d.state("", "")
	pools := map[string]struct{ timeouts, broken uint64 }{}
	for _, p := range d.cluster.PoolStats() {
		pools[p.Node] = struct{ timeouts, broken uint64 }{p.Timeouts, p.Broken}
	}
	m := Metrics{WindowSeconds: metricsWindow.Seconds(), Apps: []AppMetrics{}, Nodes: []NodeMetrics{}}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.apps {
		am := AppMetrics{Name: s.name}
		if sr := d.stats[s.name]; sr != nil {
			am.Up = true
			am.Requests, am.Locked, am.LockTimeouts, am.Errors = sr.Manager.Requests, sr.Manager.Locked, sr.Manager.LockTimeouts, sr.Manager.Errors
			am.Loads, am.Saves, am.Conflicts, am.Relocations = sr.Store.Loads, sr.Store.Saves, sr.Store.Conflicts, sr.Store.Relocations
			am.Restores, am.SingleCopySaves, am.BackupFailures = sr.Store.Restores, sr.Store.SingleCopySaves, sr.Store.BackupFailures
			am.AsyncPending = sr.Store.AsyncPending
			w := d.appWindow(s.name)
			load, save := w.window(0), w.window(1)
			am.LoadP50, am.LoadP99 = ms(load.Quantile(0.5)), ms(load.Quantile(0.99))
			am.SaveP50, am.SaveP99 = ms(save.Quantile(0.5)), ms(save.Quantile(0.99))
			am.WindowLoads, am.WindowSaves = load.Count, save.Count
		}
		m.Apps = append(m.Apps, am)
	}
	for _, n := range st.Nodes {
		nm := NodeMetrics{ID: n.ID, Running: n.Running, Paused: n.Paused, Breaker: n.Breaker, Apps: n.Apps,
			Timeouts: pools[n.ID].timeouts, Broken: pools[n.ID].broken}
		if w := d.nodeWin[n.ID]; w != nil {
			rt := w.window(0)
			nm.RoundTripP50, nm.RoundTripP99, nm.Probes = ms(rt.Quantile(0.5)), ms(rt.Quantile(0.99)), rt.Count
		}
		m.Nodes = append(m.Nodes, nm)
	}
	return m
}
