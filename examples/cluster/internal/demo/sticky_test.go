package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/examples/internal/appproc"
	"github.com/mcsession/mcsession/integration/mcproc"
)

// buildApp builds examples/app once for the tests that share it.
func buildApp(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultStartTimeout)
	defer cancel()
	bin, err := appproc.Build(ctx, t.TempDir())
	require.NoError(t, err)
	return bin
}

// startDemo starts a demo on a free loopback port and closes it at the end
// of the test.
func startDemo(t *testing.T, cfg Config) *Demo {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	cfg.PollInterval = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), DefaultStartTimeout)
	defer cancel()
	d, err := Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

// browser is an HTTP client with its own cookies, as one browser.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: requestTimeout}}
}

// do sends method path through the demo and returns the status, the
// response's headers and its body.
func (b *browser) do(method, path string) (int, http.Header, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, nil)
	require.NoError(b.t, err)
	resp, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return resp.StatusCode, resp.Header, body
}

// increment clicks the counter and returns the answer and the proxy's
// headers.
func (b *browser) increment() (server.Response, http.Header) {
	b.t.Helper()
	code, h, body := b.do("POST", "api/counter")
	require.Equal(b.t, http.StatusOK, code, string(body))
	var r server.Response
	require.NoError(b.t, json.Unmarshal(body, &r))
	require.Equal(b.t, r.Instance, h.Get(RouteHeader), "the proxy names the app that answered")
	return r, h
}

// route returns the value of the browser's RouteCookie, "" without one.
func (b *browser) route() string {
	u, err := url.Parse(b.base)
	require.NoError(b.t, err)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == RouteCookie {
			return c.Value
		}
	}
	return ""
}

// state returns the demo's state as this browser sees it (its RouteCookie
// included).
func (b *browser) state() State {
	b.t.Helper()
	code, _, body := b.do("GET", "demo/state")
	require.Equal(b.t, http.StatusOK, code, string(body))
	var st State
	require.NoError(b.t, json.Unmarshal(body, &st))
	return st
}

// appAction posts an action on app server name and returns its AppState.
func (b *browser) appAction(name, action string) AppState {
	b.t.Helper()
	code, _, body := b.do("POST", "demo/apps/"+name+"/"+action)
	require.Equal(b.t, http.StatusOK, code, string(body))
	var as AppState
	require.NoError(b.t, json.Unmarshal(body, &as))
	require.Equal(b.t, name, as.Name)
	return as
}

// app returns app server name of st.
func app(t *testing.T, st State, name string) AppState {
	t.Helper()
	for _, a := range st.Apps {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no app %s in %+v", name, st.Apps)
	return AppState{}
}

// other returns the name of the app of st that is not name (2 apps).
func other(t *testing.T, st State, name string) string {
	t.Helper()
	require.Len(t, st.Apps, 2)
	if st.Apps[0].Name == name {
		return st.Apps[1].Name
	}
	require.Equal(t, name, st.Apps[1].Name)
	return st.Apps[0].Name
}

// The sticky variant end to end, with real memcached and app processes:
// a client's requests go to one app server; killing it moves the client
// to the other one with its session intact; the killed server restarts on
// its address; a graceful stop moves the client back; with no app server
// running the proxy answers 503.
func TestStickyDemo(t *testing.T) {
	mcproc.RequireBinary(t)
	bin := buildApp(t)

	t.Run("failover", func(t *testing.T) {
		t.Parallel()
		d := startDemo(t, Config{Sticky: true, AppBinary: bin})
		base := d.URL()
		alice, bob := newBrowser(t, base), newBrowser(t, base)

		// The page: the sticky parts are shown (the body is marked).
		code, _, body := alice.do("GET", "")
		require.Equal(t, http.StatusOK, code)
		html := string(body)
		for _, want := range []string{`<body class="sticky">`, `id="sticky-apps"`, `id="pinned"`, "/demo/apps/", RouteCookie, RouteHeader, FailoverHeader} {
			require.Contains(t, html, want)
		}
		st := alice.state()
		require.Equal(t, ModeState{Sticky: true, RouteCookie: RouteCookie}, st.Mode)
		require.Empty(t, st.Pinned, "no cookie yet")
		for _, a := range st.Apps {
			require.True(t, a.Running, a.Name)
			require.Equal(t, AppRunning, a.Status, a.Name)
		}

		// Alice's requests all go to one app server, which pins her.
		r, h := alice.increment()
		require.Equal(t, 1, r.Count)
		home, id := r.Instance, r.ID
		require.Empty(t, h.Get(FailoverHeader))
		require.Equal(t, home, alice.route(), "pinned with the route cookie")
		for i := 2; i <= 6; i++ {
			r, h = alice.increment()
			require.Equal(t, i, r.Count)
			require.Equal(t, home, r.Instance, "request %d stays on the pinned app", i)
			require.Equal(t, id, r.ID)
			require.Empty(t, h.Get(FailoverHeader))
		}
		away := other(t, st, home)
		require.Equal(t, home, alice.state().Pinned)

		// A new client is pinned to the next app server (round robin).
		for i := 1; i <= 3; i++ {
			r, _ = bob.increment()
			require.Equal(t, i, r.Count)
			require.Equal(t, away, r.Instance)
		}
		require.Equal(t, away, bob.state().Pinned)

		// The page shows each app's counters: Alice's app server served her
		// session from its memory, each time after a version check.
		eventually(t, "the stats of the pinned app show the cache hits", func() bool {
			s := app(t, alice.state(), home).Stats
			return s != nil && s.Sticky && s.Cache.Hits >= 5 && s.Cache.Probes >= 5 && s.Cache.Sessions >= 1
		})

		// Kill Alice's app server (a crash): her next request goes to the
		// other one, which pins her, and her session is intact.
		homePid := app(t, st, home).Pid
		as := alice.appAction(home, "kill")
		require.False(t, as.Running)
		require.Equal(t, AppKilled, as.Status)
		require.Nil(t, as.Stats)
		require.Equal(t, homePid, as.Pid)
		r, h = alice.increment()
		require.Equal(t, 7, r.Count, "nothing lost")
		require.Equal(t, away, r.Instance)
		require.Equal(t, id, r.ID, "same session, same node")
		require.Equal(t, home, h.Get(FailoverHeader), "the proxy says whose death moved her")
		require.Equal(t, away, alice.route(), "re-pinned")
		r, h = alice.increment()
		require.Equal(t, 8, r.Count)
		require.Equal(t, away, r.Instance)
		require.Empty(t, h.Get(FailoverHeader), "failover once, then pinned again")
		r, _ = bob.increment()
		require.Equal(t, 4, r.Count, "Bob, on the other app server, saw nothing")
		st = alice.state()
		require.Equal(t, away, st.Pinned)
		require.Equal(t, AppKilled, app(t, st, home).Status)
		require.False(t, d.Apps()[appIndex(t, d, home)].Running())

		// Start it again: a new process on the same address, with an empty
		// memory. Alice stays where she is (no failback). Starting a
		// running app server is a no-op.
		as = alice.appAction(home, "start")
		require.True(t, as.Running)
		require.Equal(t, AppRunning, as.Status)
		require.Equal(t, 1, as.Restarts)
		require.NotEqual(t, homePid, as.Pid)
		require.Equal(t, app(t, st, home).URL, as.URL, "the same address")
		require.Equal(t, as.Pid, alice.appAction(home, "start").Pid)
		eventually(t, "the restarted app answers with fresh counters", func() bool {
			s := app(t, alice.state(), home).Stats
			return s != nil && s.Cache.Sessions == 0 && s.Cache.Hits == 0
		})
		r, _ = alice.increment()
		require.Equal(t, 9, r.Count)
		require.Equal(t, away, r.Instance)

		// Stop (SIGTERM) the other one: both clients move to the restarted
		// app server, whose memory is empty: it loads from memcached.
		as = alice.appAction(away, "stop")
		require.False(t, as.Running)
		require.Equal(t, AppStopped, as.Status)
		r, h = alice.increment()
		require.Equal(t, 10, r.Count)
		require.Equal(t, home, r.Instance)
		require.Equal(t, away, h.Get(FailoverHeader))
		r, _ = bob.increment()
		require.Equal(t, 5, r.Count)
		require.Equal(t, home, r.Instance)
		require.Equal(t, AppRunning, alice.appAction(away, "start").Status)

		// No app server running: the proxy answers 503, and the session is
		// there again once one runs.
		alice.appAction(home, "kill")
		alice.appAction(away, "kill")
		code, _, body = alice.do("GET", "api/session")
		require.Equal(t, http.StatusServiceUnavailable, code, string(body))
		require.Contains(t, string(body), "no app server is running")
		alice.appAction(away, "start")
		r, h = alice.increment()
		require.Equal(t, 11, r.Count)
		require.Equal(t, away, r.Instance)
		require.Equal(t, home, h.Get(FailoverHeader))

		// Errors.
		code, _, _ = alice.do("POST", "demo/apps/app9/kill")
		require.Equal(t, http.StatusNotFound, code)
		code, _, _ = alice.do("POST", "demo/apps/"+away+"/explode")
		require.Equal(t, http.StatusNotFound, code)
		code, _, _ = alice.do("GET", "demo/apps/"+away+"/kill")
		require.Equal(t, http.StatusNotFound, code, "kill needs POST")
		require.Equal(t, AppRunning, app(t, alice.state(), away).Status)

		// Close stops every process, the restarted ones included.
		require.NoError(t, d.Close())
		for _, p := range d.Apps() {
			require.False(t, p.Running(), p.Name())
		}
		for _, n := range d.Nodes().Nodes {
			require.False(t, n.Running(), n.ID)
		}
	})

	t.Run("trust-async-stop", func(t *testing.T) {
		t.Parallel()
		d := startDemo(t, Config{Sticky: true, StickyTrust: true, AsyncBackup: true, AppBinary: bin})
		alice := newBrowser(t, d.URL())
		st := alice.state()
		require.Equal(t, ModeState{Sticky: true, StickyTrust: true, AsyncBackup: true, RouteCookie: RouteCookie}, st.Mode)
		var home string
		for i := 1; i <= 5; i++ {
			r, _ := alice.increment()
			require.Equal(t, i, r.Count)
			if home == "" {
				home = r.Instance
			}
			require.Equal(t, home, r.Instance)
		}
		eventually(t, "the stats show asynchronous writes and no version checks", func() bool {
			s := app(t, alice.state(), home).Stats
			return s != nil && s.Async && s.Store.AsyncQueued > 0 && s.Cache.Hits >= 4 && s.Cache.Probes == 0
		})
		// A graceful stop writes what is queued before the process exits:
		// the other app server finds the latest count in memcached.
		require.Equal(t, AppStopped, alice.appAction(home, "stop").Status)
		r, h := alice.increment()
		require.Equal(t, 6, r.Count)
		require.Equal(t, other(t, st, home), r.Instance)
		require.Equal(t, home, h.Get(FailoverHeader))
	})
}

// appIndex returns the index of app server name in d.Apps().
func appIndex(t *testing.T, d *Demo, name string) int {
	t.Helper()
	for i, p := range d.Apps() {
		if p.Name() == name {
			return i
		}
	}
	t.Fatalf("no app %s", name)
	return -1
}

// The sticky proxy's failover without memcached: app servers that are
// fake processes (they only print the line appproc waits for) in front of
// addresses the test controls.
func TestStickyProxyRetriesRefusedConnections(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs /bin/sh")
	}
	// app1's address refuses connections although its process runs (as
	// while it shuts down); app2 answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := ln.Addr().String()
	require.NoError(t, ln.Close())
	var mu sync.Mutex
	var served []string
	requests := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), served...)
	}
	app2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served = append(served, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Set-Cookie", "mcsession=abc; Path=/")
		fmt.Fprint(w, "app2")
	}))
	defer app2.Close()

	fake := filepath.Join(t.TempDir(), "fake-app")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\necho \"mcsession example app $6 listening on http://127.0.0.1:9\"\nexec sleep 60\n"), 0o755))
	d := &Demo{
		cfg:       Config{Sticky: true, Apps: 2},
		log:       slog.New(slog.DiscardHandler),
		transport: http.DefaultTransport.(*http.Transport).Clone(),
	}
	defer d.transport.CloseIdleConnections()
	for i, addr := range []string{"http://" + refused, app2.URL} {
		name := fmt.Sprintf("app%d", i+1)
		p, err := appproc.Start(context.Background(), appproc.Options{Binary: fake, Name: name, Nodes: "n1=127.0.0.1:1"})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, p.Kill()) })
		target, err := url.Parse(addr)
		require.NoError(t, err)
		d.apps = append(d.apps, &appSlot{name: name, target: target, proc: p})
	}
	proxy := d.stickyProxy()
	send := func(method, pin, body string) *http.Response {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, "http://demo/api/counter", rd)
		if pin != "" {
			req.AddCookie(&http.Cookie{Name: RouteCookie, Value: pin})
		}
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, req)
		return rec.Result()
	}
	routeCookie := func(resp *http.Response) string {
		for _, c := range resp.Cookies() {
			if c.Name == RouteCookie {
				return c.Value
			}
		}
		return ""
	}

	// Pinned to app1, which refuses: sent to app2, re-pinned there, and
	// the app's own cookie passes through.
	resp := send("POST", "app1", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "app2", resp.Header.Get(RouteHeader))
	require.Equal(t, "app1", resp.Header.Get(FailoverHeader))
	require.Equal(t, "app2", routeCookie(resp))
	require.Len(t, resp.Cookies(), 2, "the route cookie and the app's")
	require.Equal(t, []string{"POST /api/counter"}, requests())

	// Pinned to app2: no cookie set again, no failover.
	resp = send("POST", "app2", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, routeCookie(resp))
	require.Empty(t, resp.Header.Get(FailoverHeader))

	// A request with a body is not sent twice: 502.
	resp = send("POST", "app1", "x=1")
	require.Equal(t, http.StatusBadGateway, resp.StatusCode)
	require.Len(t, requests(), 2, "not sent to app2")

	// An unknown pin (another demo's cookie) is replaced without a
	// failover; a dead process is skipped without a try.
	p1, _ := d.apps[0].current()
	require.NoError(t, p1.Kill())
	require.Equal(t, AppExited, d.apps[0].status(), "gone, not by the page")
	for _, pin := range []string{"", "app7", "app1"} {
		resp = send("GET", pin, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, pin)
		require.Equal(t, "app2", routeCookie(resp), pin)
		require.Equal(t, pin == "app1", resp.Header.Get(FailoverHeader) == "app1", pin)
	}

	// Nothing running: 503.
	p2, _ := d.apps[1].current()
	require.NoError(t, p2.Kill())
	resp = send("GET", "app2", "")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}
