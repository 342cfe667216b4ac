package httpsession_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// Timeouts of the test clusters: short, so that dead nodes are noticed fast.
const (
	nodeTimeout     = 250 * time.Millisecond
	nodeOpenTimeout = 500 * time.Millisecond
	clientTimeout   = 10 * time.Second
)

var discard = slog.New(slog.DiscardHandler)

// newStore builds a store (with its own cluster client and breakers, as a
// separate app server would have) over the nodes of spec.
// mod, when given, changes the store's configuration.
func newStore(t testing.TB, spec string, lockCfg lock.Config, mod ...func(*store.Config)) *store.Store {
	t.Helper()
	nodes, err := replica.ParseNodes(spec)
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: nodeTimeout, OpenTimeout: nodeOpenTimeout, Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	cfg := store.Config{Cluster: cl, Lock: lockCfg, Logger: discard}
	for _, m := range mod {
		m(&cfg)
	}
	st, err := store.New(cfg)
	require.NoError(t, err)
	return st
}

// server is one app server: a Manager over its own store, behind an
// httptest server.
type server struct {
	m   *httpsession.Manager
	st  *store.Store
	srv *httptest.Server
	rec *recorder
}

// env is a memcached cluster and two app servers, A and B.
type env struct {
	t    *testing.T
	mc   *mcproc.Cluster
	a, b *server
}

// newEnv starts nodes memcached nodes and two app servers whose Manager
// options are opts, adjusted per server by adjust (may be nil).
func newEnv(t *testing.T, nodes int, opts httpsession.Options, adjust func(i int, o *httpsession.Options)) *env {
	t.Helper()
	mc := mcproc.NewCluster(t, nodes)
	e := &env{t: t, mc: mc}
	mk := func(i int) *server {
		o := opts
		if o.Logger == nil {
			o.Logger = discard
		}
		if adjust != nil {
			adjust(i, &o)
		}
		// The store is built here: of o.Store, only FenceWindow is used.
		fences := o.Store.FenceWindow
		o.Store = store.Config{}
		st := newStore(t, mc.Spec(), lock.Config{}, func(c *store.Config) { c.FenceWindow = fences })
		m, err := httpsession.New(st, o)
		require.NoError(t, err)
		rec := &recorder{}
		srv := httptest.NewServer(m.Middleware(testMux(t, m, rec)))
		t.Cleanup(func() {
			srv.Close()
			m.Wait()
		})
		return &server{m: m, st: st, srv: srv, rec: rec}
	}
	e.a, e.b = mk(0), mk(1)
	return e
}

// recorder keeps the enter/exit times of /read requests.
type recorder struct {
	mu    sync.Mutex
	spans map[string][2]time.Time
}

func (r *recorder) enter(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spans == nil {
		r.spans = make(map[string][2]time.Time)
	}
	r.spans[id] = [2]time.Time{time.Now()}
}

func (r *recorder) exit(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.spans[id]
	s[1] = time.Now()
	r.spans[id] = s
}

func (r *recorder) span(id string) [2]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spans[id]
}

// sleepParam sleeps for the "sleep" query parameter in milliseconds.
func sleepParam(r *http.Request) {
	if ms, _ := strconv.Atoi(r.URL.Query().Get("sleep")); ms > 0 {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
}

// testMux is the application of the test servers:
//
//	GET  /get?key=k            the int attribute k, or "-" when absent
//	GET  /keys                 the attribute names
//	GET  /read?id=x&sleep=ms   reads "k", records enter/exit times under x
//	POST /incr?key=k&sleep=ms  increments k (sleeping after the load)
//	     /force/incr, /skip/incr         the same wrapped in ForceLock/SkipLock
//	     /setlocking/incr?flag=force|skip  OverrideLocking before the first use
//	     /lazy/incr            Session.Lock first, then incr
//	POST /late?key=k&flush=1   writes the body (and flushes), then increments
//	POST /login?user=u         RenewID, then sets "user"
//	POST /logout               Destroy
//	POST /big                  sets 2 MB
//	POST /maybe?write=1&sleep=ms  reads "k", writes it only when asked; answers Locked()
//	POST /panic                sets "k" to -1 and panics
//	GET  /static/...           ignored by the tests that configure it
//	GET  /nouse                never touches the session
func testMux(t testing.TB, m *httpsession.Manager, rec *recorder) http.Handler {
	incr := func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		key := r.URL.Query().Get("key")
		if key == "" {
			key = "k"
		}
		n, _, err := httpsession.Get[int](s, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError) // replaced by the ErrorHandler
			return
		}
		sleepParam(r)
		if err := s.Set(key, n+1); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, n+1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /get", func(w http.ResponseWriter, r *http.Request) {
		n, ok, err := httpsession.Get[int](m.Session(r), r.URL.Query().Get("key"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if !ok {
			fmt.Fprint(w, "-")
			return
		}
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		keys, err := m.Session(r).Keys()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, strings.Join(keys, ","))
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		_, _, err := httpsession.Get[int](m.Session(r), "k")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		rec.enter(id)
		sleepParam(r)
		rec.exit(id)
		fmt.Fprint(w, m.Session(r).Locked())
	})
	mux.HandleFunc("POST /incr", incr)
	mux.Handle("POST /force/incr", httpsession.ForceLock(http.HandlerFunc(incr)))
	mux.Handle("POST /skip/incr", httpsession.SkipLock(http.HandlerFunc(incr)))
	mux.HandleFunc("POST /setlocking/incr", func(w http.ResponseWriter, r *http.Request) {
		f := httpsession.SkipLocking
		if r.URL.Query().Get("flag") == "force" {
			f = httpsession.ForceLocking
		}
		if err := httpsession.OverrideLocking(r, f); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		incr(w, r)
	})
	mux.HandleFunc("POST /lazy/incr", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Session(r).Lock(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if !m.Session(r).Locked() && r.Header.Get("Cookie") != "" {
			http.Error(w, "Lock did not lock", http.StatusInternalServerError)
			return
		}
		incr(w, r)
	})
	mux.HandleFunc("POST /late", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		key := r.URL.Query().Get("key")
		n, _, err := httpsession.Get[int](s, key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "body first;")
		if r.URL.Query().Has("flush") {
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Errorf("flush: %v", err)
			}
		}
		if err := s.Set(key, n+1); err != nil {
			t.Errorf("late set: %v", err)
		}
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		if err := s.RenewID(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if err := s.Set("user", r.URL.Query().Get("user")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, s.ID())
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Session(r).Destroy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "bye")
	})
	mux.HandleFunc("POST /big", func(w http.ResponseWriter, r *http.Request) {
		if err := m.Session(r).Set("big", strings.Repeat("x", 2<<20)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "stored")
	})
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		if s := httpsession.FromContext(r.Context()); s != nil {
			http.Error(w, "ignored path has a session", http.StatusInternalServerError)
			return
		}
		if _, err := (*httpsession.Session)(nil).Get("k", new(int)); !errors.Is(err, httpsession.ErrNoSession) {
			http.Error(w, "nil session did not say ErrNoSession", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "static")
	})
	mux.HandleFunc("POST /maybe", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		n, _, err := httpsession.Get[int](s, "k")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		locked := s.Locked()
		sleepParam(r)
		if r.URL.Query().Has("write") {
			if err := s.Set("k", n+1); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		fmt.Fprint(w, locked)
	})
	mux.HandleFunc("POST /panic", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		_, _, _ = httpsession.Get[int](s, "k")
		_ = s.Set("k", -1)
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("GET /nouse", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "no session used")
	})
	return mux
}

// client is a browser: one cookie jar, requests to either server.
type client struct {
	t  testing.TB
	hc *http.Client
}

func newClient(t testing.TB) *client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &client{t: t, hc: &http.Client{Jar: jar, Timeout: clientTimeout}}
}

// result is a finished request.
type result struct {
	code  int
	body  string
	hdr   http.Header
	took  time.Duration
	start time.Time
}

// do sends method path to srv and returns the result; transport errors
// fail the test.
func (c *client) do(srv *server, method, path string) result {
	c.t.Helper()
	r, err := c.try(srv, method, path)
	require.NoError(c.t, err)
	return r
}

// try is do returning transport errors (safe in goroutines).
func (c *client) try(srv *server, method, path string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.srv.URL+path, nil)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	return result{code: resp.StatusCode, body: string(b), hdr: resp.Header, took: time.Since(start), start: start}, nil
}

// ok sends the request and requires a 200.
func (c *client) ok(srv *server, method, path string) string {
	c.t.Helper()
	r := c.do(srv, method, path)
	require.Equal(c.t, http.StatusOK, r.code, "%s %s: %s", method, path, r.body)
	return r.body
}

// sessionID returns the session cookie the client holds for srv.
func (c *client) sessionID(srv *server) string {
	u, _ := url.Parse(srv.srv.URL)
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == httpsession.DefaultCookieName {
			return ck.Value
		}
	}
	return ""
}

// setCookie puts a session cookie with value v into the client's jar.
func (c *client) setCookie(srv *server, v string) {
	u, _ := url.Parse(srv.srv.URL)
	c.hc.Jar.SetCookies(u, []*http.Cookie{{Name: httpsession.DefaultCookieName, Value: v, Path: "/"}})
}

// sessionCookie returns the Set-Cookie of the session cookie in h, nil
// when there is none.
func sessionCookie(h http.Header) *http.Cookie {
	for _, ck := range (&http.Response{Header: h}).Cookies() {
		if ck.Name == httpsession.DefaultCookieName {
			return ck
		}
	}
	return nil
}

// opsCount sums cmd_get, cmd_set and cmd_touch over every node.
func (e *env) opsCount() uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sum uint64
	for _, n := range e.mc.Nodes {
		for _, stat := range []string{"cmd_get", "cmd_set", "cmd_touch"} {
			v, err := n.Stat(ctx, stat)
			require.NoError(e.t, err)
			sum += v
		}
	}
	return sum
}

// anyNodeHas reports the nodes that hold key.
func (e *env) nodesWith(key string) []string {
	e.t.Helper()
	var out []string
	for _, n := range e.mc.Nodes {
		_, err := n.Client().Get(key)
		if err == nil {
			out = append(out, n.ID)
			continue
		}
		require.ErrorIs(e.t, err, memcache.ErrCacheMiss, "node %s", n.ID)
	}
	return out
}

// parallel runs n jobs on workers goroutines and returns their results;
// it fails the test when they do not finish within limit.
func parallel(t testing.TB, n, workers int, limit time.Duration, job func(i int) (result, error)) []result {
	t.Helper()
	out := make([]result, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i], errs[i] = job(i)
			}
		}()
	}
	timeout := time.After(limit)
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-timeout:
			close(next)
			wg.Wait()
			t.Fatalf("parallel jobs did not finish within %v (%d of %d started)", limit, i, n)
		}
	}
	close(next)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("parallel jobs did not finish within %v", limit)
	}
	for _, err := range errs {
		require.NoError(t, err)
	}
	return out
}
