package httpsession_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
)

// probe GETs the readiness handler and decodes its answer.
func probe(t *testing.T, url string) (int, http.Header, httpsession.Readiness) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var rd httpsession.Readiness
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rd))
	return resp.StatusCode, resp.Header, rd
}

// TestReadiness checks that the readiness handler answers 200 while a node
// answers, 503 (with Retry-After and every node's error) when all are
// down, and 200 again once one is back.
func TestReadiness(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	m, err := httpsession.Open(mc.Spec(), httpsession.Options{
		Logger:  discard,
		Cluster: replica.Config{Timeout: 200 * time.Millisecond, OpenTimeout: 200 * time.Millisecond},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	srv := httptest.NewServer(m.ReadinessHandler())
	t.Cleanup(srv.Close)

	code, hdr, rd := probe(t, srv.URL)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "application/json", hdr.Get("Content-Type"))
	require.True(t, rd.Ready)
	require.Len(t, rd.Nodes, 2)
	for i, n := range rd.Nodes {
		require.Equal(t, mc.Nodes[i].ID, n.ID)
		require.Equal(t, mc.Nodes[i].Addr(), n.Addr)
		require.True(t, n.Up, "%+v", n)
		require.Equal(t, "closed", n.Breaker)
		require.Empty(t, n.Error)
	}

	for _, n := range mc.Nodes {
		require.NoError(t, n.Kill())
	}
	code, hdr, rd = probe(t, srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "1", hdr.Get("Retry-After"))
	require.False(t, rd.Ready)
	for _, n := range rd.Nodes {
		require.False(t, n.Up)
		require.NotEmpty(t, n.Error)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, mc.Node("n1").Restart(ctx))
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, rd = probe(t, srv.URL)
		if code == http.StatusOK {
			break
		}
		require.True(t, time.Now().Before(deadline), "still not ready 10 s after n1 came back: %+v", rd)
		time.Sleep(50 * time.Millisecond)
	}
	require.True(t, rd.Ready)
	require.True(t, rd.Nodes[0].Up)
	require.False(t, rd.Nodes[1].Up)
}
