package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/internal/appproc"
)

// metricValue returns the value of the sample named series (with its
// labels, e.g. `mcsession_memcached_node_up{node="n1"}`) in a Prometheus
// text exposition, and whether it is there.
func metricValue(t *testing.T, body, series string) (float64, bool) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v, true
}

// scrape fetches GET /metrics from app.
func scrape(t *testing.T, app *appproc.Proc) string {
	t.Helper()
	resp, err := http.Get(app.URL() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	require.Empty(t, resp.Header.Values("Set-Cookie"), "/metrics is outside the session middleware")
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// GET /metrics serves the session metrics in the Prometheus text format,
// and they follow what the app did.
func TestMetricsEndpoint(t *testing.T) {
	e := startEnv(t, buildApp(t))
	a := e.apps[0]
	before := scrape(t, a)
	saves0, ok := metricValue(t, before, "mcsession_session_saves_total")
	require.True(t, ok, "mcsession_session_saves_total missing:\n%s", before)

	c := newClient(t)
	for range 3 {
		c.ok(a, http.MethodPost, "/api/counter")
	}
	after := scrape(t, a)
	saves, _ := metricValue(t, after, "mcsession_session_saves_total")
	require.Equal(t, saves0+3, saves)
	requests, ok := metricValue(t, after, "mcsession_http_requests_total")
	require.True(t, ok)
	require.GreaterOrEqual(t, requests, 3.0)
	for _, n := range e.mc.Nodes {
		up, ok := metricValue(t, after, `mcsession_memcached_node_up{node="`+n.ID+`"}`)
		require.True(t, ok, n.ID)
		require.Equal(t, 1.0, up, n.ID)
	}
	count, ok := metricValue(t, after, "mcsession_session_save_duration_seconds_count")
	require.True(t, ok)
	require.Equal(t, saves, count)
	require.Contains(t, after, "go_goroutines ")

	// GET /api/stats carries the lock's and the pools' figures too.
	st := appStats(t, a)
	require.Equal(t, uint64(2), st.Lock.Acquired, "the default mode locks every request but the first, which created the session")
	require.Equal(t, st.Lock.Acquired, st.Lock.AcquireLatency.Count)
	require.Len(t, st.Pools, len(e.mc.Nodes))
	var trips uint64
	for _, p := range st.Pools {
		trips += p.RoundTrips
	}
	require.Positive(t, trips)
}
