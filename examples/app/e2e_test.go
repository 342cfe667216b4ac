package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/internal/syncbuf"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/examples/internal/appproc"
	"github.com/mcsession/mcsession/integration/mcproc"
)

// These tests build examples/app, run it as two processes over three real
// memcached nodes and talk to both alternately with one cookie jar, as a
// browser behind a non-sticky load balancer would.

const (
	// buildTimeout bounds "go build".
	buildTimeout = 2 * time.Minute
	// requestTimeout bounds every HTTP request of the tests.
	requestTimeout = 20 * time.Second
)

// env is a running test setup: memcached nodes and app processes.
type env struct {
	mc   *mcproc.Cluster
	apps []*appproc.Proc
}

// buildApp compiles examples/app into a temporary directory.
func buildApp(t *testing.T) string {
	t.Helper()
	mcproc.RequireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	bin, err := appproc.Build(ctx, t.TempDir())
	require.NoError(t, err)
	return bin
}

// startEnv starts three memcached nodes and two app processes, "A" and
// "B", with the extra flags args. Cleanup stops the apps (and mcproc the
// nodes); an app's log is printed when the test failed.
func startEnv(t *testing.T, bin string, args ...string) *env {
	t.Helper()
	e := &env{mc: mcproc.NewCluster(t, 3)}
	for _, name := range []string{"A", "B"} {
		logs := &syncbuf.Buffer{}
		ctx, cancel := context.WithTimeout(context.Background(), appproc.DefaultStartTimeout)
		p, err := appproc.Start(ctx, appproc.Options{
			Binary: bin, Name: name, Nodes: e.mc.Spec(), Args: args, Stderr: logs,
		})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() {
			if err := p.Stop(); err != nil {
				t.Errorf("stop app %s: %v", name, err)
			}
			if t.Failed() {
				t.Logf("log of app %s:\n%s", name, logs.String())
			}
		})
		e.apps = append(e.apps, p)
	}
	return e
}

// client is a browser: one cookie jar for both app servers (cookies are
// per host, not per port, so both see the same session cookie).
type client struct {
	t    *testing.T
	jar  http.CookieJar
	http *http.Client
}

func newClient(t *testing.T) *client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &client{t: t, jar: jar, http: &http.Client{Jar: jar, Timeout: requestTimeout}}
}

// result is one answered request.
type result struct {
	status int
	header http.Header
	body   server.Response
	raw    string
}

// do sends method path to app and decodes a JSON answer. It reports a
// transport error instead of failing, so that goroutines may call it.
func (c *client) do(app *appproc.Proc, method, path string) (result, error) {
	req, err := http.NewRequest(method, app.URL()+path, nil)
	if err != nil {
		return result{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	r := result{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			return r, fmt.Errorf("%s %s: decode %q: %w", method, path, raw, err)
		}
	}
	return r, nil
}

// ok sends a request that must answer 200 and returns its body.
func (c *client) ok(app *appproc.Proc, method, path string) server.Response {
	c.t.Helper()
	r, err := c.do(app, method, path)
	require.NoError(c.t, err)
	require.Equal(c.t, http.StatusOK, r.status, "%s %s via %s: %s", method, path, app.Name(), r.raw)
	require.Equal(c.t, app.Name(), r.body.Instance)
	return r.body
}

// cookie returns the session cookie the jar holds for the apps, "" for none.
func (c *client) cookie(app *appproc.Proc) string {
	u, err := url.Parse(app.URL())
	require.NoError(c.t, err)
	for _, ck := range c.jar.Cookies(u) {
		if ck.Name == server.DefaultCookieName {
			return ck.Value
		}
	}
	return ""
}

// withCookie sends a request carrying the session cookie id (and no jar).
func withCookie(t *testing.T, app *appproc.Proc, method, path, id string) result {
	t.Helper()
	req, err := http.NewRequest(method, app.URL()+path, nil)
	require.NoError(t, err)
	req.AddCookie(&http.Cookie{Name: server.DefaultCookieName, Value: id})
	resp, err := (&http.Client{Timeout: requestTimeout}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := result{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal(raw, &r.body))
	}
	return r
}

// nodeOf returns the node suffix of a session id.
func nodeOf(id string) string { return id[strings.LastIndex(id, "-")+1:] }

// randomPart returns a session id without its node suffix.
func randomPart(id string) string { return id[:strings.LastIndex(id, "-")] }

// traffic sums memcached's command counters over every node of mc.
func traffic(t *testing.T, mc *mcproc.Cluster) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sum := map[string]uint64{}
	for _, n := range mc.Nodes {
		for _, stat := range []string{"cmd_get", "cmd_set", "cmd_touch", "curr_items"} {
			v, err := n.Stat(ctx, stat)
			require.NoError(t, err)
			sum[stat] += v
		}
	}
	return sum
}

// requireNoItems checks that no node holds any item of session id.
func requireNoItems(t *testing.T, mc *mcproc.Cluster, id string) {
	t.Helper()
	for _, n := range mc.Nodes {
		c := n.Client()
		for _, key := range []string{id, "bak:" + id, "lock:" + id} {
			_, err := c.Get(key)
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "node %s still has %q", n.ID, key)
		}
	}
}

func TestTwoProcessesLockAll(t *testing.T) {
	bin := buildApp(t)
	e := startEnv(t, bin, "-locking", "all", "-lock-timeout", "10s")
	a, b := e.apps[0], e.apps[1]

	t.Run("read-only request creates no session", func(t *testing.T) {
		c := newClient(t)
		before := traffic(t, e.mc)
		r, err := c.do(a, "GET", "/api/session")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, server.Response{Instance: "A", ID: "", Attrs: map[string]any{}, Count: 0}, r.body)
		require.Empty(t, r.header.Values("Set-Cookie"))
		require.Empty(t, c.cookie(a))
		require.Equal(t, before, traffic(t, e.mc), "a request without cookie must not reach memcached")

		// A forged cookie is no session either, and is not adopted.
		r = withCookie(t, b, "GET", "/api/session", "0123456789abcdef0123456789abcdef-n1")
		require.Equal(t, http.StatusOK, r.status)
		require.Empty(t, r.body.ID)
		require.Empty(t, r.header.Values("Set-Cookie"))
	})

	t.Run("attributes are shared by both processes", func(t *testing.T) {
		c := newClient(t)
		got := c.ok(a, "POST", "/api/session?user=ada&lang=go")
		require.NotEmpty(t, got.ID)
		require.Equal(t, got.ID, c.cookie(a))
		require.Equal(t, map[string]any{"user": "ada", "lang": "go"}, got.Attrs)
		id := got.ID

		got = c.ok(b, "GET", "/api/session")
		require.Equal(t, server.Response{Instance: "B", ID: id, Attrs: map[string]any{"user": "ada", "lang": "go"}}, got)

		got = c.ok(b, "DELETE", "/api/session?key=lang")
		require.Equal(t, map[string]any{"user": "ada"}, got.Attrs)
		got = c.ok(a, "POST", "/api/counter")
		require.Equal(t, 1, got.Count)
		got = c.ok(b, "GET", "/api/session")
		require.Equal(t, server.Response{Instance: "B", ID: id, Attrs: map[string]any{"user": "ada", "count": float64(1)}, Count: 1}, got)
		require.Equal(t, id, c.cookie(a), "the id stays the same while nothing fails")

		r, err := c.do(a, "DELETE", "/api/session")
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, r.status, "DELETE without key")
	})

	t.Run("50 parallel increments over both processes", func(t *testing.T) {
		c := newClient(t)
		id := c.ok(a, "POST", "/api/session?user=bob").ID
		const n = 50
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			app := e.apps[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := c.do(app, "POST", "/api/counter")
				switch {
				case err != nil:
					errs <- err
				case r.status != http.StatusOK:
					errs <- fmt.Errorf("increment via %s: %d %s", app.Name(), r.status, r.raw)
				case r.body.ID != id:
					errs <- fmt.Errorf("increment via %s: id %q, want %q", app.Name(), r.body.ID, id)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Equal(t, n, c.ok(a, "GET", "/api/session").Count)
		require.Equal(t, n, c.ok(b, "GET", "/api/session").Count)
	})

	t.Run("login renews the id and keeps the data", func(t *testing.T) {
		c := newClient(t)
		old := c.ok(a, "POST", "/api/session?user=carol").ID
		c.ok(b, "POST", "/api/counter")
		got := c.ok(b, "POST", "/api/login")
		require.NotEmpty(t, got.ID)
		require.NotEqual(t, old, got.ID)
		require.NotEqual(t, randomPart(old), randomPart(got.ID), "a renewed id is new, not relocated")
		require.Equal(t, got.ID, c.cookie(a), "the new id reaches the client")
		require.Equal(t, map[string]any{"user": "carol", "count": float64(1)}, got.Attrs)
		require.Equal(t, 1, got.Count)

		got2 := c.ok(a, "POST", "/api/counter")
		require.Equal(t, got.ID, got2.ID)
		require.Equal(t, 2, got2.Count)

		// The old id is gone everywhere: it is no session any more.
		requireNoItems(t, e.mc, old)
		r := withCookie(t, a, "GET", "/api/session", old)
		require.Equal(t, http.StatusOK, r.status)
		require.Empty(t, r.body.ID)
	})

	t.Run("logout removes the session on every node", func(t *testing.T) {
		c := newClient(t)
		id := c.ok(a, "POST", "/api/session?user=dave").ID
		c.ok(b, "POST", "/api/counter")

		r, err := c.do(b, "POST", "/api/logout")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, server.Response{Instance: "B", ID: "", Attrs: map[string]any{}}, r.body)
		require.Contains(t, strings.Join(r.header.Values("Set-Cookie"), "\n"), "Max-Age=0", "the cookie is deleted")
		require.Empty(t, c.cookie(a))
		requireNoItems(t, e.mc, id)

		got := withCookie(t, a, "GET", "/api/session", id)
		require.Equal(t, http.StatusOK, got.status)
		require.Empty(t, got.body.ID)
		require.Empty(t, got.body.Attrs)

		// After logout, a write starts a brand-new session.
		fresh := c.ok(a, "POST", "/api/counter")
		require.NotEqual(t, randomPart(id), randomPart(fresh.ID))
		require.Equal(t, 1, fresh.Count)
	})

	t.Run("static files and health need no session", func(t *testing.T) {
		c := newClient(t)
		c.ok(a, "POST", "/api/session?user=erin") // a session cookie is sent along below
		time.Sleep(100 * time.Millisecond)        // let earlier background touches land
		before := traffic(t, e.mc)
		for _, app := range e.apps {
			for _, path := range []string{"/static/hello.txt", "/healthz"} {
				resp, err := c.http.Get(app.URL() + path)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, resp.StatusCode, path)
				require.NotEmpty(t, body)
				require.Empty(t, resp.Header.Values("Set-Cookie"), path)
				require.Empty(t, resp.Header.Values("Vary"), path)
			}
		}
		require.Equal(t, before, traffic(t, e.mc), "/static and /healthz must not reach memcached")
	})

	t.Run("a slow and a fast modification both persist under locking all", func(t *testing.T) {
		c := newClient(t)
		id := c.ok(a, "POST", "/api/session?user=frank").ID
		const sleep = 800 * time.Millisecond
		slow := make(chan result, 1)
		slowErr := make(chan error, 1)
		go func() {
			r, err := c.do(a, "POST", "/api/session?slow=1&sleep="+sleep.String())
			slow <- r
			slowErr <- err
		}()
		time.Sleep(200 * time.Millisecond) // the slow request holds the lock now
		start := time.Now()
		fast := c.ok(b, "POST", "/api/session?fast=1")
		waited := time.Since(start)
		require.GreaterOrEqual(t, waited, 300*time.Millisecond, "the fast request waits for the slow one's lock")
		require.Equal(t, map[string]any{"user": "frank", "slow": "1", "fast": "1"}, fast.Attrs,
			"the fast request ran after the slow one saved, and saw its change")
		r := <-slow
		require.NoError(t, <-slowErr)
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, map[string]any{"user": "frank", "slow": "1"}, r.body.Attrs)
		require.NotContains(t, r.body.Attrs, server.SleepParam)

		got := c.ok(a, "GET", "/api/session")
		require.Equal(t, id, got.ID)
		require.Equal(t, map[string]any{"user": "frank", "slow": "1", "fast": "1"}, got.Attrs)

		r2, err := c.do(a, "GET", "/api/session?sleep=forever")
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, r2.status)
	})

	// Last: it kills a node of the shared cluster.
	t.Run("killing the primary node relocates the session with nothing lost", func(t *testing.T) {
		c := newClient(t)
		for i := range 5 {
			c.ok(e.apps[i%2], "POST", "/api/counter")
		}
		before := c.ok(b, "GET", "/api/session")
		require.Equal(t, 5, before.Count)
		primary := nodeOf(before.ID)
		require.NoError(t, e.mc.Node(primary).Kill())

		r, err := c.do(a, "POST", "/api/counter")
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, 6, r.body.Count)
		require.NotEqual(t, primary, nodeOf(r.body.ID), "the session moved off the dead node")
		require.Equal(t, randomPart(before.ID), randomPart(r.body.ID), "relocation keeps the random part")
		require.Contains(t, strings.Join(r.header.Values("Set-Cookie"), "\n"), r.body.ID, "a new cookie is sent")
		require.Equal(t, r.body.ID, c.cookie(a))

		// The other process carries on with the new cookie.
		got := c.ok(b, "POST", "/api/counter")
		require.Equal(t, r.body.ID, got.ID)
		require.Equal(t, 7, got.Count)
		got = c.ok(a, "GET", "/api/session")
		require.Equal(t, 7, got.Count)

		// New sessions still work with one node down, on either process.
		for _, app := range e.apps {
			c2 := newClient(t)
			for range 3 {
				c2.ok(app, "POST", "/api/counter")
			}
			got := c2.ok(app, "GET", "/api/session")
			require.Equal(t, 3, got.Count)
			require.NotEqual(t, primary, nodeOf(got.ID))
		}
	})
}

// Without locks, a slow request that loaded the session before a fast
// one saved it cannot overwrite the fast one's change: its save fails with
// 409 (CAS conflict) and the fast change stays.
func TestTwoProcessesLockNoneConflict(t *testing.T) {
	bin := buildApp(t)
	e := startEnv(t, bin, "-locking", "none")
	a, b := e.apps[0], e.apps[1]

	c := newClient(t)
	c.ok(a, "POST", "/api/session?user=gina")
	slow := make(chan result, 1)
	go func() {
		r, err := c.do(a, "POST", "/api/session?slow=1&sleep=1500ms")
		if err != nil {
			r.status, r.raw = -1, err.Error()
		}
		slow <- r
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	fast := c.ok(b, "POST", "/api/session?fast=1")
	// Waiting for the slow request would take ~1.3 s.
	require.Less(t, time.Since(start), time.Second, "no lock: the fast request does not wait")
	require.Equal(t, map[string]any{"user": "gina", "fast": "1"}, fast.Attrs)

	r := <-slow
	require.Equal(t, http.StatusConflict, r.status, r.raw)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	got := c.ok(b, "GET", "/api/session")
	require.Equal(t, map[string]any{"user": "gina", "fast": "1"}, got.Attrs, "the fast change survives; the slow one was refused, not lost silently")
}

// The app honours -cookie and -locking pattern:, and the lock timeout
// answers 503 while another request holds the lock.
func TestTwoProcessesPatternAndLockTimeout(t *testing.T) {
	bin := buildApp(t)
	e := startEnv(t, bin, "-cookie", "sid", "-locking", "pattern:^POST /api/counter$", "-lock-timeout", "300ms")
	a, b := e.apps[0], e.apps[1]

	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	hc := &http.Client{Jar: jar, Timeout: requestTimeout}
	post := func(app *appproc.Proc, path string) (*http.Response, string) {
		resp, err := hc.Post(app.URL()+path, "", nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(body)
	}
	resp, _ := post(a, "/api/counter")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	require.Equal(t, "sid", resp.Cookies()[0].Name)

	// A slow locked increment; a second increment times out waiting (503),
	// while an unlocked attribute write (not matched by the pattern) goes
	// through at once.
	done := make(chan int, 1)
	go func() {
		resp, err := hc.Post(a.URL()+"/api/counter?sleep=1500ms", "", nil)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	time.Sleep(200 * time.Millisecond)
	resp, body := post(b, "/api/counter")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	start := time.Now()
	resp, body = post(b, "/api/session?note=x")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Less(t, time.Since(start), time.Second)
	require.Equal(t, http.StatusConflict, <-done, "the slow increment loaded before the unlocked write saved: CAS refuses it")

	resp, body = post(a, "/api/counter")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var got server.Response
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, 2, got.Count)
	require.Equal(t, "x", got.Attrs["note"])
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"nodes required", nil, "-nodes is required"},
		{"bad locking", []string{"-nodes", "n1=127.0.0.1:1", "-locking", "sometimes"}, "unknown locking mode"},
		{"bad pattern", []string{"-nodes", "n1=127.0.0.1:1", "-locking", "pattern:("}, "locking pattern"},
		{"extra args", []string{"-nodes", "n1=127.0.0.1:1", "x"}, "unexpected arguments"},
		{"ok", []string{"-nodes", "n1=127.0.0.1:1", "-locking", "pattern:^POST ", "-idle", "5m", "-cookie", "sid"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "127.0.0.1:8080", o.listen)
			require.Equal(t, 5*time.Minute, o.cfg.IdleTimeout)
			require.Equal(t, 24*time.Hour, o.cfg.Lifetime)
			require.Equal(t, 2*time.Second, o.cfg.LockTimeout)
			require.Equal(t, "sid", o.cfg.CookieName)
		})
	}
	_, err := parseFlags([]string{"-h"}, io.Discard)
	require.True(t, errors.Is(err, flag.ErrHelp))
}
