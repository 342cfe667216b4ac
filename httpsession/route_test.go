package httpsession_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
)

// templateKey carries the route template a toy router matched, the way
// chi and gorilla/mux keep theirs in the request's context.
type templateKey struct{}

// toyRouter routes /items/<id> to h, putting the template "/items/{id}"
// into the request's context, and anything else to h as it is.
func toyRouter(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/items/") {
			r = r.WithContext(context.WithValue(r.Context(), templateKey{}, "/items/{id}"))
		}
		h.ServeHTTP(w, r)
	})
}

// templateRoute is an Options.Route reading the toy router's template.
func templateRoute(r *http.Request) string {
	s, _ := r.Context().Value(templateKey{}).(string)
	return s
}

// TestRouteOption checks that Options.Route groups the concrete paths of
// one router template into one LockAuto route, with the router inside the
// middleware (the handler passes its request to Manager.Session) and
// outside it (the middleware's own request carries the template), and
// that without Route, or when the template is not reachable, every
// concrete path stays its own route.
func TestRouteOption(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	st := newStore(t, mc.Spec(), lock.Config{})

	// readLocked answers whether the request held the session lock;
	// "/new" creates the session.
	readLocked := func(m *httpsession.Manager, viaManager bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := httpsession.FromContext(r.Context())
			if viaManager {
				s = m.Session(r)
			}
			if r.URL.Path == "/new" {
				_ = s.Set("k", 1)
				return
			}
			if _, err := s.Has("k"); err != nil {
				return
			}
			fmt.Fprint(w, s.Locked())
		})
	}
	for _, tc := range []struct {
		name  string
		route func(*http.Request) string
		// build returns the server's handler for Manager m.
		build func(m *httpsession.Manager) http.Handler
		want  []string // lock state of /items/1 .. /items/5
	}{
		{
			name:  "router inside, Manager.Session",
			route: templateRoute,
			build: func(m *httpsession.Manager) http.Handler { return m.Middleware(toyRouter(readLocked(m, true))) },
			want:  []string{"true", "true", "true", "false", "false"},
		},
		{
			name:  "router outside",
			route: templateRoute,
			build: func(m *httpsession.Manager) http.Handler { return toyRouter(m.Middleware(readLocked(m, false))) },
			want:  []string{"true", "true", "true", "false", "false"},
		},
		{
			name:  "router inside, FromContext: the template is not reachable",
			route: templateRoute,
			build: func(m *httpsession.Manager) http.Handler { return m.Middleware(toyRouter(readLocked(m, false))) },
			want:  []string{"true", "true", "true", "true", "true"},
		},
		{
			name:  "no Route: one route per path",
			build: func(m *httpsession.Manager) http.Handler { return toyRouter(m.Middleware(readLocked(m, false))) },
			want:  []string{"true", "true", "true", "true", "true"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := httpsession.New(st, httpsession.Options{Locking: httpsession.LockAuto, Route: tc.route, Logger: discard})
			require.NoError(t, err)
			srv := &server{m: m, srv: httptest.NewServer(tc.build(m))}
			t.Cleanup(srv.srv.Close)
			c := newClient(t)
			c.ok(srv, "POST", "/new")
			var got []string
			for i := 1; i <= len(tc.want); i++ {
				got = append(got, c.ok(srv, "GET", fmt.Sprintf("/items/%d", i)))
			}
			require.Equal(t, tc.want, got)
		})
	}
}

// TestRouteFallsBackToPattern checks that a Route answering "" leaves the
// default: the ServeMux pattern, so /p/1 .. /p/4 are one route.
func TestRouteFallsBackToPattern(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	st := newStore(t, mc.Spec(), lock.Config{})
	var asked atomic.Int32
	m, err := httpsession.New(st, httpsession.Options{
		Locking: httpsession.LockAuto, Logger: discard,
		Route: func(*http.Request) string { asked.Add(1); return "" },
	})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /new", func(w http.ResponseWriter, r *http.Request) { _ = m.Session(r).Set("k", 1) })
	mux.HandleFunc("GET /p/{n}", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		if _, err := s.Has("k"); err == nil {
			fmt.Fprint(w, s.Locked())
		}
	})
	srv := &server{m: m, srv: httptest.NewServer(m.Middleware(mux))}
	t.Cleanup(srv.srv.Close)
	c := newClient(t)
	c.ok(srv, "POST", "/new")
	var got []string
	for i := 1; i <= 4; i++ {
		got = append(got, c.ok(srv, "GET", fmt.Sprintf("/p/%d", i)))
	}
	require.Equal(t, []string{"true", "true", "true", "false"}, got)
	require.Equal(t, int32(5), asked.Load(), "Route is asked once per request that uses the session")
}
