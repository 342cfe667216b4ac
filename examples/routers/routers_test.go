package routers_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/routers"
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
)

var discard = slog.New(slog.DiscardHandler)

// requests is how many requests of each route the scenario sends: more
// than httpsession.DefaultAutoThreshold, so that LockAuto has learned by
// the end.
const requests = 5

// routeLog wraps an Options.Route and records every answer, to check that
// Route is asked once per request and what it saw.
type routeLog struct {
	f   func(*http.Request) string
	mu  sync.Mutex
	got []string
}

func (l *routeLog) route(r *http.Request) string {
	s := l.f(r)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, s)
	return s
}

func (l *routeLog) answers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

// handlers are the application's handlers; sess is how they reach the
// session: httpsession.FromContext or Manager.Session.
type handlers struct {
	sess func(r *http.Request) *httpsession.Session
}

// login creates the session.
func (h handlers) login(w http.ResponseWriter, r *http.Request) {
	if err := h.sess(r).Set("user", "ann"); err != nil {
		return // the middleware answers
	}
	fmt.Fprint(w, "ok")
}

// read only reads the session and answers whether it held the lock.
func (h handlers) read(w http.ResponseWriter, r *http.Request) {
	s := h.sess(r)
	if _, err := s.Has("user"); err != nil {
		return
	}
	fmt.Fprint(w, s.Locked())
}

// write modifies the session and answers whether it held the lock.
func (h handlers) write(w http.ResponseWriter, r *http.Request) {
	s := h.sess(r)
	if err := s.Set("last", r.URL.Path); err != nil {
		return
	}
	fmt.Fprint(w, s.Locked())
}

// peek is a middleware that reads the session before passing the request
// on, as an authentication middleware would.
func peek(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := httpsession.FromContext(r.Context()).Has("user"); err != nil {
			return
		}
		next.ServeHTTP(w, r)
	})
}

// chiApp routes POST /login, and GET (read) and POST (write)
// prefix+"/items/{id}" with chi: with a router mounted at prefix when
// prefix is not empty. mw are installed with the top router's Use.
func chiApp(h handlers, prefix string, mw ...func(http.Handler) http.Handler) http.Handler {
	r := chi.NewRouter()
	r.Use(mw...)
	r.Post("/login", h.login)
	items := r
	if prefix != "" {
		items = chi.NewRouter()
		r.Mount(prefix, items)
	}
	items.Get("/items/{id}", h.read)
	items.Post("/items/{id}", h.write)
	return r
}

// muxApp is chiApp with gorilla/mux: with a subrouter for prefix when
// prefix is not empty. mw are installed with the top router's Use.
func muxApp(h handlers, prefix string, mw ...mux.MiddlewareFunc) http.Handler {
	r := mux.NewRouter()
	r.Use(mw...)
	r.HandleFunc("/login", h.login).Methods(http.MethodPost)
	items := r
	if prefix != "" {
		items = r.PathPrefix(prefix).Subrouter()
	}
	items.HandleFunc("/items/{id}", h.read).Methods(http.MethodGet)
	items.HandleFunc("/items/{id}", h.write).Methods(http.MethodPost)
	return r
}

// client is a browser: an HTTP client with a cookie jar.
type client struct {
	t   *testing.T
	c   *http.Client
	url string
}

func newClient(t *testing.T, url string) *client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &client{t: t, c: &http.Client{Jar: jar, Timeout: 10 * time.Second}, url: url}
}

// do sends a request, requires 200 and returns the body.
func (c *client) do(method, path string) string {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, nil)
	require.NoError(c.t, err)
	resp, err := c.c.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	require.Equal(c.t, http.StatusOK, resp.StatusCode, "%s %s: %s", method, path, body)
	return string(body)
}

// wiring is one way of putting a router and the session middleware
// together, and what LockAuto makes of it.
type wiring struct {
	name string
	// route is Options.Route; nil for the default.
	route func(*http.Request) string
	// build returns the server's handler for Manager m.
	build func(m *httpsession.Manager) http.Handler
	// prefix is the path under which the items routes are.
	prefix string
	// grouped tells whether /items/1 .. /items/5 are one LockAuto route.
	grouped bool
	// seen is what route answers for the items requests (when route is
	// not nil).
	seen string
}

// run logs in, then sends GET and POST prefix+"/items/1" .. "/items/5"
// and checks which held the session lock: with the items grouped into one
// route, the fourth and fifth GET run unlocked (AutoThreshold is 3) and
// every POST stays locked, since it modifies the session; otherwise every
// request is locked.
func (wr wiring) run(t *testing.T, nodes string) {
	t.Helper()
	var rlog *routeLog
	opts := httpsession.Options{Locking: httpsession.LockAuto, Logger: discard}
	if wr.route != nil {
		rlog = &routeLog{f: wr.route}
		opts.Route = rlog.route
	}
	m, err := httpsession.Open(nodes, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	srv := httptest.NewServer(wr.build(m)) // on 127.0.0.1
	t.Cleanup(srv.Close)                   // before m.Close
	c := newClient(t, srv.URL)

	require.Equal(t, "ok", c.do(http.MethodPost, "/login"))
	var gets, posts []string
	for i := 1; i <= requests; i++ {
		gets = append(gets, c.do(http.MethodGet, fmt.Sprintf("%s/items/%d", wr.prefix, i)))
	}
	for i := 1; i <= requests; i++ {
		posts = append(posts, c.do(http.MethodPost, fmt.Sprintf("%s/items/%d", wr.prefix, i)))
	}

	wantGets := []string{"true", "true", "true", "true", "true"}
	var unlocked uint64
	if wr.grouped {
		wantGets = []string{"true", "true", "true", "false", "false"}
		unlocked = 2
	}
	require.Equal(t, wantGets, gets, "GET %s/items/1..5 locked", wr.prefix)
	require.Equal(t, []string{"true", "true", "true", "true", "true"}, posts,
		"POST %s/items/1..5 (modifying) stay locked", wr.prefix)
	st := m.Stats()
	require.Equal(t, uint64(1+2*requests), st.Requests)
	require.Equal(t, unlocked, st.AutoUnlocked)
	require.Equal(t, uint64(2*requests)-unlocked, st.Locked)
	if rlog != nil {
		got := rlog.answers()
		require.Len(t, got, 1+2*requests, "Route is asked once per request that uses the session")
		for _, s := range got[1:] {
			require.Equal(t, wr.seen, s, "Route's answers: %q", got)
		}
	}
}

// TestChi checks the wirings of chi with the session middleware.
func TestChi(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	fromContext := handlers{sess: func(r *http.Request) *httpsession.Session { return httpsession.FromContext(r.Context()) }}
	for _, wr := range []wiring{
		{
			name:  "Use",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(fromContext, "", m.Middleware)
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			name:  "Use, Manager.Session",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(handlers{sess: m.Session}, "", m.Middleware)
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			name:  "router inside the middleware, Manager.Session",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return m.Middleware(chiApp(handlers{sess: m.Session}, ""))
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			// The middleware's request predates chi's routing context.
			name:  "router inside the middleware, FromContext: no pattern",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return m.Middleware(chiApp(fromContext, ""))
			},
			grouped: false, seen: "",
		},
		{
			name:  "mounted router, Use on the top router",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(fromContext, "/api", m.Middleware)
			},
			prefix: "/api", grouped: true, seen: "/api/items/{id}",
		},
		{
			// Here only ChiRoute finds the pattern (see the cases without
			// Route below): chi's routing context is a pointer shared by
			// the copies of the request, r.Pattern is not.
			name:  "Use, a copying middleware after it",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(fromContext, "", m.Middleware, copyRequest)
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			// A middleware that uses the session before chi routed fixes
			// the route too early: ChiRoute says "", the URL path is used.
			name:  "session used by a middleware before routing",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(fromContext, "", m.Middleware, peek)
			},
			grouped: false, seen: "",
		},
		{
			// chi's inline middlewares (With) run after routing.
			name:  "session used by an inline middleware (With)",
			route: routers.ChiRoute,
			build: func(m *httpsession.Manager) http.Handler {
				r := chi.NewRouter()
				r.Use(m.Middleware)
				r.Post("/login", fromContext.login)
				r.With(peek).Get("/items/{id}", fromContext.read)
				r.With(peek).Post("/items/{id}", fromContext.write)
				return r
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			// chi (v5.5.0 here) sets r.Pattern on the request it routes; with
			// the session middleware last in Use that is the middleware's
			// own request, so the default finds the pattern.
			name: "Use, no Route: chi's r.Pattern",
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(fromContext, "", m.Middleware)
			},
			grouped: true,
		},
		{
			// A later middleware that copies the request (WithContext)
			// hides chi's r.Pattern from the middleware's request.
			name: "Use, no Route, a copying middleware after it",
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(fromContext, "", m.Middleware, copyRequest)
			},
			grouped: false,
		},
		{
			name: "Use, no Route, a copying middleware after it, Manager.Session",
			build: func(m *httpsession.Manager) http.Handler {
				return chiApp(handlers{sess: m.Session}, "", m.Middleware, copyRequest)
			},
			grouped: true,
		},
		{
			name: "router inside the middleware, no Route, FromContext",
			build: func(m *httpsession.Manager) http.Handler {
				return m.Middleware(chiApp(fromContext, ""))
			},
			grouped: false,
		},
	} {
		t.Run(wr.name, func(t *testing.T) { wr.run(t, mc.Spec()) })
	}
}

// TestGorillaMux checks the wirings of gorilla/mux with the session
// middleware.
func TestGorillaMux(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	fromContext := handlers{sess: func(r *http.Request) *httpsession.Session { return httpsession.FromContext(r.Context()) }}
	for _, wr := range []wiring{
		{
			name:  "Use",
			route: routers.MuxRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return muxApp(fromContext, "", m.Middleware)
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			name:  "Use, Manager.Session",
			route: routers.MuxRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return muxApp(handlers{sess: m.Session}, "", m.Middleware)
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			name:  "router inside the middleware, Manager.Session",
			route: routers.MuxRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return m.Middleware(muxApp(handlers{sess: m.Session}, ""))
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			name:  "router inside the middleware, FromContext: no route",
			route: routers.MuxRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return m.Middleware(muxApp(fromContext, ""))
			},
			grouped: false, seen: "",
		},
		{
			name:  "subrouter, Use on the top router",
			route: routers.MuxRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return muxApp(fromContext, "/api", m.Middleware)
			},
			prefix: "/api", grouped: true, seen: "/api/items/{id}",
		},
		{
			// gorilla/mux matches before its middlewares run, so even a
			// middleware that uses the session first sees the route.
			name:  "session used by a middleware",
			route: routers.MuxRoute,
			build: func(m *httpsession.Manager) http.Handler {
				return muxApp(fromContext, "", m.Middleware, peek)
			},
			grouped: true, seen: "/items/{id}",
		},
		{
			// gorilla/mux does not set r.Pattern.
			name: "Use, no Route: one route per path",
			build: func(m *httpsession.Manager) http.Handler {
				return muxApp(fromContext, "", m.Middleware)
			},
			grouped: false,
		},
	} {
		t.Run(wr.name, func(t *testing.T) { wr.run(t, mc.Spec()) })
	}
}

// copyRequest is a middleware that passes on a copy of the request, as
// any middleware that adds a context value does.
func copyRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		type key struct{}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), key{}, true)))
	})
}

// TestChiRouteDuringRouting checks what ChiRoute says at each step of
// chi's routing, without memcached: nothing before routing, the mount
// pattern in a mounted router's middleware, the full pattern in the
// handler and, once the handler ran, from the request a middleware of the
// top router saw (chi's routing state is a shared pointer; chi also sets
// r.Pattern on that very request when no middleware copied it).
func TestChiRouteDuringRouting(t *testing.T) {
	t.Parallel()
	require.Empty(t, routers.ChiRoute(nil))
	require.Empty(t, routers.ChiRoute(httptest.NewRequest(http.MethodGet, "/items/1", nil)))

	var seen map[string]string // what each step saw, for one request
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			seen["top before"] = routers.ChiRoute(req)
			next.ServeHTTP(w, req)
			seen["top after"] = routers.ChiRoute(req)
			seen["top after, r.Pattern"] = req.Pattern
		})
	})
	api := chi.NewRouter()
	api.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			seen["mounted before"] = routers.ChiRoute(req)
			next.ServeHTTP(w, req)
		})
	})
	api.Get("/items/{id}", func(w http.ResponseWriter, req *http.Request) {
		seen["handler"] = routers.ChiRoute(req)
	})
	r.Mount("/api", api)
	r.Get("/files/*", func(w http.ResponseWriter, req *http.Request) { seen["handler"] = routers.ChiRoute(req) })

	for _, tc := range []struct {
		path string
		code int
		want map[string]string
	}{
		{"/api/items/7", http.StatusOK, map[string]string{
			"top before":           "",
			"mounted before":       "/api/*",
			"handler":              "/api/items/{id}",
			"top after":            "/api/items/{id}",
			"top after, r.Pattern": "/api/items/{id}",
		}},
		{"/files/a/b", http.StatusOK, map[string]string{
			"top before":           "",
			"handler":              "/files/*",
			"top after":            "/files/*",
			"top after, r.Pattern": "/files/*",
		}},
		{"/nowhere", http.StatusNotFound, map[string]string{
			"top before":           "",
			"top after":            "",
			"top after, r.Pattern": "",
		}},
	} {
		seen = map[string]string{}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.path, nil))
		require.Equal(t, tc.code, w.Code, tc.path)
		require.Equal(t, tc.want, seen, tc.path)
	}
}

// TestMuxRoute checks MuxRoute without memcached: the template of the
// matched route, with a subrouter's prefix, from a middleware installed
// with Use as well as from the handler, and "" without a router, without
// a match and for a route without a path (Host only).
func TestMuxRoute(t *testing.T) {
	t.Parallel()
	require.Empty(t, routers.MuxRoute(nil))
	require.Empty(t, routers.MuxRoute(httptest.NewRequest(http.MethodGet, "/items/1", nil)))

	var seen map[string]string
	r := mux.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			seen["middleware"] = routers.MuxRoute(req)
			next.ServeHTTP(w, req)
		})
	})
	handler := func(w http.ResponseWriter, req *http.Request) { seen["handler"] = routers.MuxRoute(req) }
	r.PathPrefix("/api").Subrouter().HandleFunc("/items/{id:[0-9]+}", handler)
	r.HandleFunc("/items/{id}", handler)
	r.Host("files.example").HandlerFunc(handler) // no path
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen["not found"] = routers.MuxRoute(req)
		http.NotFound(w, req)
	})

	for _, tc := range []struct {
		method, path string
		code         int
		want         map[string]string
	}{
		{http.MethodGet, "/api/items/7", http.StatusOK, map[string]string{"middleware": "/api/items/{id:[0-9]+}", "handler": "/api/items/{id:[0-9]+}"}},
		{http.MethodGet, "/items/7", http.StatusOK, map[string]string{"middleware": "/items/{id}", "handler": "/items/{id}"}},
		{http.MethodGet, "http://files.example/anything", http.StatusOK, map[string]string{"middleware": "", "handler": ""}},
		{http.MethodGet, "/nowhere", http.StatusNotFound, map[string]string{"not found": ""}},
	} {
		seen = map[string]string{}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		require.Equal(t, tc.code, w.Code, tc.path)
		require.Equal(t, tc.want, seen, tc.path)
	}
}

// TestUnmatchedRequests checks which wirings give a session to the
// requests no route matched: chi runs the middlewares of its Use before
// routing, gorilla/mux only for a matched route.
func TestUnmatchedRequests(t *testing.T) {
	t.Parallel()
	m, err := httpsession.Open(nodeList, httpsession.Options{Locking: httpsession.LockAuto, Logger: discard})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	// report answers code and whether the request has a session.
	report := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			fmt.Fprint(w, httpsession.FromContext(r.Context()) != nil)
		}
	}
	chiUse := chi.NewRouter()
	chiUse.Use(m.Middleware)
	chiUse.NotFound(report(http.StatusNotFound))
	chiUse.MethodNotAllowed(report(http.StatusMethodNotAllowed))
	chiUse.Get("/items/{id}", report(http.StatusOK))
	muxUse := mux.NewRouter()
	muxUse.Use(m.Middleware)
	muxUse.NotFoundHandler = report(http.StatusNotFound)
	muxUse.MethodNotAllowedHandler = report(http.StatusMethodNotAllowed)
	muxUse.HandleFunc("/items/{id}", report(http.StatusOK)).Methods(http.MethodGet)
	muxInside := mux.NewRouter()
	muxInside.NotFoundHandler = report(http.StatusNotFound)
	muxInside.MethodNotAllowedHandler = report(http.StatusMethodNotAllowed)
	muxInside.HandleFunc("/items/{id}", report(http.StatusOK)).Methods(http.MethodGet)

	for _, tc := range []struct {
		name string
		h    http.Handler
		// whether the handler has a session when a route matched, when
		// none did and when the method did not match
		matched, notFound, badMethod string
	}{
		{"chi Use", chiUse, "true", "true", "true"},
		{"gorilla/mux Use", muxUse, "true", "false", "false"},
		{"gorilla/mux inside the middleware", m.Middleware(muxInside), "true", "true", "true"},
	} {
		for _, rq := range []struct {
			method, path string
			code         int
			want         string
		}{
			{http.MethodGet, "/items/1", http.StatusOK, tc.matched},
			{http.MethodGet, "/nowhere", http.StatusNotFound, tc.notFound},
			{http.MethodPost, "/items/1", http.StatusMethodNotAllowed, tc.badMethod},
		} {
			w := httptest.NewRecorder()
			tc.h.ServeHTTP(w, httptest.NewRequest(rq.method, rq.path, nil))
			require.Equal(t, rq.code, w.Code, "%s: %s %s", tc.name, rq.method, rq.path)
			require.Equal(t, rq.want, w.Body.String(), "%s: %s %s", tc.name, rq.method, rq.path)
		}
	}
}
