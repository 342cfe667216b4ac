package demo

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/latency"
)

// loadTimeout bounds the waits of the load test for the load to make
// progress; it guards against a hang, it measures nothing.
const loadTimeout = 3 * time.Minute

// loadState answers GET /demo/load.
func loadState(t *testing.T, c *http.Client, base string) LoadState {
	t.Helper()
	code, body := fetch(t, c, "GET", base+"demo/load")
	require.Equal(t, http.StatusOK, code, string(body))
	var ls LoadState
	require.NoError(t, json.Unmarshal(body, &ls))
	return ls
}

// waitLoad polls GET /demo/load until cond holds, and returns that state.
func waitLoad(t *testing.T, c *http.Client, base, what string, cond func(LoadState) bool) LoadState {
	t.Helper()
	deadline := time.Now().Add(loadTimeout)
	for {
		ls := loadState(t, c, base)
		if cond(ls) {
			return ls
		}
		require.True(t, ls.Running, "%s: the load stopped: %+v", what, ls)
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %+v", what, loadTimeout, ls.Counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLoadKillSharedPrimary runs the load generator with 8 virtual users,
// kills the node that is the shared counter's primary while the load runs,
// goes on for 2000 more requests, stops, and requires every counter to
// hold exactly its acknowledged increments.
func TestLoadKillSharedPrimary(t *testing.T) {
	mcproc.RequireBinary(t)
	d := startDemo(t, Config{AppBinary: buildApp(t)})
	base := d.URL()
	plain := &http.Client{Timeout: requestTimeout}

	// The page has the load panel and the metrics, drawn by its own script.
	code, body := fetch(t, plain, "GET", base)
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`id="load-users"`, `id="load-start"`, `id="load-stop"`, `id="load-diff"`, `id="shared-primary"`,
		`id="chart-rps"`, `id="chart-errors"`, `id="chart-incr"`, `id="metrics-apps"`, `id="metrics-nodes"`,
		"/demo/load/start", "/demo/load/stop", "/demo/metrics", "createElementNS",
	} {
		require.Contains(t, string(body), want)
	}
	require.NotContains(t, string(body), "<script src", "the page loads nothing from elsewhere")

	ls := loadState(t, plain, base)
	require.False(t, ls.Running)
	require.Zero(t, ls.Users)
	require.Nil(t, ls.Final)
	require.Equal(t, DefaultLoadMaxDuration.Seconds(), ls.MaxDuration)
	for _, bad := range []string{"0", "-1", "201", "many"} {
		code, body := fetch(t, plain, "POST", base+"demo/load/start?users="+bad)
		require.Equal(t, http.StatusBadRequest, code, "users=%s: %s", bad, body)
	}
	code, _ = fetch(t, plain, "GET", base+"demo/load/start")
	require.Equal(t, http.StatusNotFound, code, "start needs POST")

	code, body = fetch(t, plain, "POST", base+"demo/load/start?users=8")
	require.Equal(t, http.StatusOK, code, string(body))
	require.NoError(t, json.Unmarshal(body, &ls))
	require.True(t, ls.Running)
	require.Equal(t, 8, ls.Users)
	require.Equal(t, 1, ls.Run)
	code, body = fetch(t, plain, "POST", base+"demo/load/start?users=8")
	require.Equal(t, http.StatusConflict, code, "one run at a time: %s", body)

	// The shared counter's session id names its primary node.
	ls = waitLoad(t, plain, base, "the shared counter and 500 requests", func(ls LoadState) bool {
		return ls.Shared.ID != "" && ls.Shared.Primary != "" && ls.Counts.Requests >= 500
	})
	id := ls.Shared.ID
	primary := ls.Shared.Primary
	require.True(t, strings.HasSuffix(id, "-"+primary), "%s on %s", id, primary)
	require.NotEmpty(t, ls.Shared.Backup)
	require.Equal(t, 8, ls.Users)

	// Kill it while the load runs, and go on for 2000 more requests and
	// two more samples of the time series.
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+primary+"/kill")
	require.Equal(t, http.StatusOK, code, string(body))
	require.False(t, d.Nodes().Node(primary).Running())
	killedAt, samples := ls.Counts.Requests, len(ls.Series)
	ls = waitLoad(t, plain, base, "2000 requests after the kill", func(ls LoadState) bool {
		return ls.Counts.Requests >= killedAt+2000 && len(ls.Series) >= samples+2 && ls.Shared.Primary != primary
	})
	require.True(t, strings.HasSuffix(ls.Shared.ID, "-"+ls.Shared.Primary), ls.Shared.ID)
	require.Equal(t, id[:strings.LastIndex(id, "-")], ls.Shared.ID[:strings.LastIndex(ls.Shared.ID, "-")],
		"the shared session was relocated: same random part, new node")
	require.NotEmpty(t, ls.Events)
	require.Equal(t, "kill "+primary, ls.Events[0].What, "the chart marks the kill")

	// The metrics: both apps answered; the shared session was relocated.
	code, body = fetch(t, plain, "GET", base+"demo/metrics")
	require.Equal(t, http.StatusOK, code, string(body))
	var m Metrics
	require.NoError(t, json.Unmarshal(body, &m))
	require.Len(t, m.Apps, 2)
	require.Len(t, m.Nodes, 3)
	var relocations uint64
	for _, a := range m.Apps {
		require.True(t, a.Up, a.Name)
		require.NotZero(t, a.Requests, a.Name)
		require.NotZero(t, a.Saves, a.Name)
		relocations += a.Relocations
	}
	require.NotZero(t, relocations)
	for _, n := range m.Nodes {
		require.Equal(t, n.ID != primary, n.Running, n.ID)
	}

	// Stop: the answer comes after the final read.
	code, body = fetch(t, plain, "POST", base+"demo/load/stop")
	require.Equal(t, http.StatusOK, code, string(body))
	require.NoError(t, json.Unmarshal(body, &ls))
	require.False(t, ls.Running)
	require.False(t, ls.Settling)
	require.Equal(t, LoadStoppedByRequest, ls.StopReason)
	f := ls.Final
	require.NotNil(t, f)
	t.Logf("after %d requests (%d × 409, %d × 503, %d other): own counters %d acknowledged (%d not), %d stored; shared %d acknowledged (%d not), %d stored",
		ls.Counts.Requests, ls.Counts.Conflicts, ls.Counts.Unavailable, ls.Counts.Other,
		f.Own.Acked, f.Own.Failed, f.Own.Stored, f.Shared.Acked, f.Shared.Failed, f.Shared.Stored)
	require.Empty(t, f.Mismatches)
	require.Zero(t, f.Own.Unread)
	require.Zero(t, f.Shared.Unread)
	require.Equal(t, f.Own.Acked, f.Own.Stored, "own counters")
	require.Equal(t, f.Shared.Acked, f.Shared.Stored, "shared counter")
	require.True(t, f.Own.Equal)
	require.True(t, f.Shared.Equal)
	require.True(t, f.Equal)
	require.NotZero(t, f.Own.Acked)
	require.NotZero(t, f.Shared.Acked)
	require.Equal(t, ls.Own.Acked, f.Own.Acked)
	require.Equal(t, ls.Shared.Acked, f.Shared.Acked)
	require.Equal(t, f.Shared.Stored, ls.Shared.Stored)
	require.Zero(t, ls.Shared.InFlight)
	require.Zero(t, ls.Diff)

	// Stopping again answers the same run; the page shows it.
	code, body = fetch(t, plain, "POST", base+"demo/load/stop")
	require.Equal(t, http.StatusOK, code, string(body))
	var again LoadState
	require.NoError(t, json.Unmarshal(body, &again))
	require.Equal(t, f, again.Final)

	// Pause and resume a node (SIGSTOP, SIGCONT).
	other := "n1"
	if primary == other {
		other = "n2"
	}
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+other+"/pause")
	require.Equal(t, http.StatusOK, code, string(body))
	require.True(t, node(t, getState(t, plain, base, ""), other).Paused)
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+other+"/resume")
	require.Equal(t, http.StatusOK, code, string(body))
	ns := node(t, getState(t, plain, base, ""), other)
	require.True(t, ns.Running)
	require.False(t, ns.Paused)

	// A second run, left running (and a node left paused): Close stops it.
	code, body = fetch(t, plain, "POST", base+"demo/load/start?users=2")
	require.Equal(t, http.StatusOK, code, string(body))
	require.NoError(t, json.Unmarshal(body, &ls))
	require.Equal(t, 2, ls.Run)
	require.Nil(t, ls.Final)
	waitLoad(t, plain, base, "the second run's first requests", func(ls LoadState) bool {
		return ls.Final == nil && ls.Counts.Requests >= 10
	})
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+other+"/pause")
	require.Equal(t, http.StatusOK, code, string(body))
}

func TestRecentWindow(t *testing.T) {
	var h latency.Histogram
	var r recent
	at := time.Unix(0, 0)
	require.Zero(t, r.window(0).Count)

	for range 100 {
		h.Observe(time.Millisecond)
	}
	r.add(at, h.Snapshot())
	require.Equal(t, uint64(100), r.window(0).Count, "one point: everything so far")

	// Slow durations now: the window holds them only.
	for range 10 {
		h.Observe(time.Second)
	}
	r.add(at.Add(5*time.Second), h.Snapshot())
	w := r.window(0)
	require.Equal(t, uint64(10), w.Count)
	require.Equal(t, 10*time.Second, w.Sum)
	require.GreaterOrEqual(t, w.Quantile(0.5), time.Second)

	// Later points drop the base once a newer one is old enough.
	r.add(at.Add(16*time.Second), h.Snapshot())
	require.Len(t, r.pts, 2)
	require.Zero(t, r.window(0).Count, "nothing new in the last 10 s")

	// A restarted process (counts down) starts the window anew.
	var fresh latency.Histogram
	fresh.Observe(time.Millisecond)
	r.add(at.Add(17*time.Second), fresh.Snapshot())
	require.Len(t, r.pts, 1)
	require.Equal(t, uint64(1), r.window(0).Count)
}
