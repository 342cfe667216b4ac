package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/integration/mcproc"
)

const (
	// requestTimeout bounds every HTTP request of the test.
	requestTimeout = 20 * time.Second
	// settleTimeout bounds the waits for breakers to follow a node.
	settleTimeout = 15 * time.Second
)

// fetch sends method url with c and returns the status and body.
func fetch(t *testing.T, c *http.Client, method, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// getState returns the demo's state with the placement of session id.
func getState(t *testing.T, c *http.Client, base, id string) State {
	t.Helper()
	code, body := fetch(t, c, "GET", base+"demo/state?id="+id)
	require.Equal(t, http.StatusOK, code, string(body))
	var st State
	require.NoError(t, json.Unmarshal(body, &st))
	return st
}

// node returns the node id of st.
func node(t *testing.T, st State, id string) NodeState {
	t.Helper()
	for _, n := range st.Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("no node %s in %+v", id, st.Nodes)
	return NodeState{}
}

// eventually polls cond every 100 ms until it holds or settleTimeout passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, settleTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:8000", "127.0.0.2:0", "[::1]:80", "localhost:8000"} {
		require.NoError(t, checkLoopback(ok), ok)
	}
	for _, bad := range []string{"0.0.0.0:8000", ":8000", "10.0.0.1:80", "example.com:80", "127.0.0.1"} {
		require.Error(t, checkLoopback(bad), bad)
	}
}

func TestDemo(t *testing.T) {
	mcproc.RequireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultStartTimeout)
	defer cancel()
	d, err := Start(ctx, Config{Listen: "127.0.0.1:0", PollInterval: 200 * time.Millisecond})
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			require.NoError(t, d.Close())
		}
	})
	base := d.URL()
	require.True(t, strings.HasPrefix(base, "http://127.0.0.1:"), base)
	plain := &http.Client{Timeout: requestTimeout}

	// The page: self-contained, with the elements the script fills in.
	code, body := fetch(t, plain, "GET", base)
	require.Equal(t, http.StatusOK, code)
	html := string(body)
	for _, want := range []string{
		"<title>mcsession cluster demo</title>", `id="counter-btn"`, `id="session-id"`, `id="count"`,
		`id="primary"`, `id="backup"`, `id="served-by"`, `id="nodes"`, `id="apps"`, `id="log"`,
		"/api/counter", "/demo/state", "/demo/nodes/", "setTimeout",
	} {
		require.Contains(t, html, want)
	}
	require.NotContains(t, html, "<script src", "the page loads nothing from elsewhere")
	require.NotContains(t, html, `rel="stylesheet"`)

	st := getState(t, plain, base, "")
	require.Len(t, st.Nodes, 3)
	require.Len(t, st.Apps, 2)
	require.Nil(t, st.Session)
	for _, n := range st.Nodes {
		require.True(t, n.Running, n.ID)
		require.Equal(t, "closed", n.Breaker, n.ID)
		require.Equal(t, map[string]string{"app1": "closed", "app2": "closed"}, n.Apps, n.ID)
	}
	for _, a := range st.Apps {
		require.True(t, a.Running, a.Name)
	}

	// The proxy alternates between the two app processes; the session is
	// shared, so every increment counts once.
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	browser := &http.Client{Jar: jar, Timeout: requestTimeout}
	increment := func() server.Response {
		t.Helper()
		code, body := fetch(t, browser, "POST", base+"api/counter")
		require.Equal(t, http.StatusOK, code, string(body))
		var r server.Response
		require.NoError(t, json.Unmarshal(body, &r))
		return r
	}
	var id string
	instances := map[string]int{}
	for i := 1; i <= 5; i++ {
		r := increment()
		require.Equal(t, i, r.Count)
		instances[r.Instance]++
		if id == "" {
			id = r.ID
		}
		require.Equal(t, id, r.ID)
	}
	require.Equal(t, map[string]int{"app1": 3, "app2": 2}, instances, "round robin over both apps")

	st = getState(t, plain, base, id)
	require.NotNil(t, st.Session)
	require.True(t, st.Session.Valid)
	primary := st.Session.Primary
	require.Equal(t, id[strings.LastIndex(id, "-")+1:], primary)
	require.NotEmpty(t, st.Session.Backup)
	require.NotEqual(t, primary, st.Session.Backup)
	backup := st.Session.Backup

	// Stop the session's primary: the node is down at once, the demo's
	// breaker opens after a few probes, and the next increment fails over.
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+primary+"/stop")
	require.Equal(t, http.StatusOK, code, string(body))
	var ns NodeState
	require.NoError(t, json.Unmarshal(body, &ns))
	require.Equal(t, primary, ns.ID)
	require.False(t, ns.Running)
	require.False(t, d.Nodes().Node(primary).Running())
	require.False(t, node(t, getState(t, plain, base, ""), primary).Running)

	r := increment()
	require.Equal(t, 6, r.Count, "nothing lost")
	require.Equal(t, id[:strings.LastIndex(id, "-")], r.ID[:strings.LastIndex(r.ID, "-")])
	require.True(t, strings.HasSuffix(r.ID, "-"+backup), "relocated to the backup node: %s", r.ID)
	require.Equal(t, 7, increment().Count)

	eventually(t, "the demo breaker of the stopped node opens", func() bool {
		return node(t, getState(t, plain, base, ""), primary).Breaker == "open"
	})
	st = getState(t, plain, base, r.ID)
	require.Equal(t, backup, st.Session.Primary)
	require.NotEqual(t, primary, st.Session.Backup, "no backup on the dead node")

	// Start it again: running at once, breaker closed after its next probe.
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+primary+"/start")
	require.Equal(t, http.StatusOK, code, string(body))
	require.NoError(t, json.Unmarshal(body, &ns))
	require.True(t, ns.Running)
	eventually(t, "the demo breaker of the restarted node closes", func() bool {
		return node(t, getState(t, plain, base, ""), primary).Breaker == "closed"
	})
	require.Equal(t, 8, increment().Count)

	// Kill (a crash) and start again; starting a running node is a no-op.
	code, body = fetch(t, plain, "POST", base+"demo/nodes/"+primary+"/kill")
	require.Equal(t, http.StatusOK, code, string(body))
	require.False(t, node(t, getState(t, plain, base, ""), primary).Running)
	for range 2 {
		code, body = fetch(t, plain, "POST", base+"demo/nodes/"+primary+"/start")
		require.Equal(t, http.StatusOK, code, string(body))
		require.True(t, node(t, getState(t, plain, base, ""), primary).Running)
	}

	// Errors.
	code, _ = fetch(t, plain, "POST", base+"demo/nodes/n9/stop")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = fetch(t, plain, "POST", base+"demo/nodes/n1/explode")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = fetch(t, plain, "GET", base+"demo/nodes/n1/stop")
	require.Equal(t, http.StatusNotFound, code, "stop needs POST")
	require.True(t, d.Nodes().Node("n1").Running())
	st = getState(t, plain, base, "not-a-session-id")
	require.False(t, st.Session.Valid)

	// The round-robin demo has none of the sticky variant's parts.
	require.Equal(t, ModeState{}, st.Mode)
	require.NotContains(t, html, `<body class="sticky">`)
	code, _ = fetch(t, plain, "POST", base+"demo/apps/app1/kill")
	require.Equal(t, http.StatusNotFound, code, "app servers are stopped from the page only in the sticky variant")
	require.True(t, d.Apps()[0].Running())

	// Close stops every child process.
	require.NoError(t, d.Close())
	closed = true
	for _, n := range d.Nodes().Nodes {
		require.False(t, n.Running(), n.ID)
	}
	for _, a := range d.Apps() {
		require.False(t, a.Running(), a.Name())
	}
	_, err = plain.Get(base)
	require.Error(t, err, "the demo no longer listens")
}

func TestStartRejects(t *testing.T) {
	_, err := Start(context.Background(), Config{Listen: "0.0.0.0:0"})
	require.ErrorContains(t, err, "loopback")
	_, err = Start(context.Background(), Config{Listen: "127.0.0.1:0", Nodes: 1})
	require.ErrorContains(t, err, "at least 2 nodes")
}
