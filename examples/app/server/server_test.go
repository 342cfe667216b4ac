package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
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

// Logins with a user, the user's sessions and log-out-everywhere, in
// process (examples/app/e2e_test.go runs them over two app processes).
func TestServerUsers(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	app, err := server.New(server.Config{Name: "solo", Nodes: mc.Spec()})
	require.NoError(t, err)
	ts := httptest.NewServer(app)
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, app.Close())
	})
	newClient := func() *http.Client {
		jar, err := cookiejar.New(nil)
		require.NoError(t, err)
		return &http.Client{Jar: jar, Timeout: 10 * time.Second}
	}
	call := func(c *http.Client, method, path string, into any) (int, http.Header) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		if into != nil {
			require.NoError(t, json.Unmarshal(body, into), string(body))
		}
		return resp.StatusCode, resp.Header
	}

	// Without a user: 401 with a JSON error, for both routes.
	anon := newClient()
	for _, route := range []string{"GET /api/sessions", "POST /api/logout-all"} {
		method, path, _ := strings.Cut(route, " ")
		var e server.ErrorResponse
		code, h := call(anon, method, path, &e)
		require.Equal(t, http.StatusUnauthorized, code, route)
		require.NotEmpty(t, h.Get("WWW-Authenticate"))
		require.Contains(t, e.Error, "no user")
	}
	var r server.Response
	code, _ := call(anon, "POST", "/api/counter", &r)
	require.Equal(t, http.StatusOK, code)
	code, _ = call(anon, "GET", "/api/sessions", nil)
	require.Equal(t, http.StatusUnauthorized, code, "a session without a user")
	code, _ = call(anon, "POST", "/api/login?user=", nil)
	require.Equal(t, http.StatusBadRequest, code)
	code, _ = call(anon, "POST", "/api/login?user="+strings.Repeat("x", 300), nil)
	require.Equal(t, http.StatusBadRequest, code)

	// Login without user: only the id changes (the old behaviour).
	var plain server.Response
	code, _ = call(anon, "POST", "/api/login", &plain)
	require.Equal(t, http.StatusOK, code)
	require.NotEqual(t, r.ID, plain.ID)
	require.Empty(t, plain.User)
	require.Equal(t, 1, plain.Count)

	// Two logins of ada (one keeps its counter), one of bob.
	var ada1, ada2, bob server.Response
	code, _ = call(anon, "POST", "/api/login?user=ada", &ada1)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ada", ada1.User)
	require.Equal(t, 1, ada1.Count, "the data is kept")
	other, bobc := newClient(), newClient()
	call(other, "POST", "/api/login?user=ada", &ada2)
	call(bobc, "POST", "/api/login?user=bob", &bob)

	var list server.UserSessionsResponse
	code, _ = call(other, "GET", "/api/sessions", &list)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ada", list.User)
	require.Len(t, list.Sessions, 2)
	byID := map[string]server.UserSession{}
	for _, us := range list.Sessions {
		byID[us.ID] = us
		require.False(t, us.Created.IsZero())
		require.False(t, us.LastSeen.IsZero())
	}
	require.True(t, byID[ada2.ID].Current)
	require.False(t, byID[ada1.ID].Current)

	var out server.LogoutAllResponse
	code, h := call(other, "POST", "/api/logout-all", &out)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, server.LogoutAllResponse{Instance: "solo", User: "ada", Destroyed: 2}, out)
	require.Contains(t, strings.Join(h.Values("Set-Cookie"), "\n"), "Max-Age=0")
	var after server.Response
	call(anon, "GET", "/api/session", &after)
	require.Empty(t, after.ID, "the other login of ada is gone too")
	code, _ = call(other, "GET", "/api/sessions", nil)
	require.Equal(t, http.StatusUnauthorized, code)
	call(bobc, "GET", "/api/sessions", &list)
	require.Len(t, list.Sessions, 1, "bob is untouched")
}
