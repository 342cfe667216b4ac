package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
)

func TestParseLocking(t *testing.T) {
	for _, tc := range []struct {
		in      string
		mode    httpsession.LockMode
		pattern string
		err     bool
	}{
		{in: "all", mode: httpsession.LockAll},
		{in: "none", mode: httpsession.LockNone},
		{in: "auto", mode: httpsession.LockAuto},
		{in: "pattern:^POST /api/", mode: httpsession.LockMatching, pattern: "^POST /api/"},
		{in: "pattern:", err: true},
		{in: "pattern:(", err: true},
		{in: "All", err: true},
		{in: "", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			mode, re, err := server.ParseLocking(tc.in)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.mode, mode)
			if tc.pattern == "" {
				require.Nil(t, re)
			} else {
				require.Equal(t, tc.pattern, re.String())
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for name, cfg := range map[string]server.Config{
		"no nodes":      {},
		"bad nodes":     {Nodes: "n1"},
		"bad locking":   {Nodes: "n1=127.0.0.1:1", Locking: "maybe"},
		"bad cookie":    {Nodes: "n1=127.0.0.1:1", CookieName: "a b"},
		"negative idle": {Nodes: "n1=127.0.0.1:1", IdleTimeout: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := server.New(cfg)
			require.Error(t, err)
		})
	}
}

// One in-process server: the JSON shapes, /api/nodes, static files and
// the sleep parameter.
func TestServerInProcess(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	app, err := server.New(server.Config{Name: "solo", Nodes: mc.Spec(), Locking: "auto"})
	require.NoError(t, err)
	ts := httptest.NewServer(app)
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, app.Close())
	})
	require.Equal(t, "solo", app.Name())
	require.NotNil(t, app.Store())
	require.Equal(t, httpsession.LockAuto, app.Manager().Options().Locking)

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	call := func(method, path string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header, string(body)
	}

	code, h, body := call("GET", "/api/session")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "solo", h.Get(server.InstanceHeader))
	require.JSONEq(t, `{"instance":"solo","id":"","attrs":{},"count":0}`, body)

	start := time.Now()
	code, _, body = call("POST", "/api/session?a=1&b=two&sleep=150ms")
	require.Equal(t, http.StatusOK, code, body)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	var r server.Response
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	require.Equal(t, map[string]any{"a": "1", "b": "two"}, r.Attrs)

	for i := 1; i <= 3; i++ {
		code, _, body = call("POST", "/api/counter")
		require.Equal(t, http.StatusOK, code, body)
	}
	code, _, body = call("GET", "/api/session")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"instance":"solo","id":"`+r.ID+`","attrs":{"a":"1","b":"two","count":3},"count":3}`, body)

	code, _, body = call("GET", "/api/session?sleep=2h")
	require.Equal(t, http.StatusBadRequest, code, body)

	code, h, body = call("GET", "/api/nodes")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, h.Values("Vary"), "/api/nodes is ignored by the middleware")
	var nr server.NodesResponse
	require.NoError(t, json.Unmarshal([]byte(body), &nr))
	require.Equal(t, "solo", nr.Instance)
	require.Len(t, nr.Nodes, 3)
	for i, n := range nr.Nodes {
		require.Equal(t, mc.Nodes[i].ID, n.ID)
		require.Equal(t, mc.Nodes[i].Addr(), n.Addr)
		require.Equal(t, "closed", n.State)
	}

	code, h, body = call("GET", "/static/hello.txt")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "no session work")
	require.Empty(t, h.Values("Set-Cookie"))
	require.Empty(t, h.Values("Vary"))
	code, _, _ = call("GET", "/static/missing.txt")
	require.Equal(t, http.StatusNotFound, code)

	code, _, body = call("GET", "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)

	code, h, body = call("GET", "/readyz")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, h.Values("Set-Cookie"))
	var rd httpsession.Readiness
	require.NoError(t, json.Unmarshal([]byte(body), &rd))
	require.True(t, rd.Ready)
	require.Len(t, rd.Nodes, 3)
	require.Equal(t, uint64(5), app.Manager().Stats().Ignored, "nodes, two static files, healthz, readyz")
}
