package httpsession_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
)

// TestResponseWriterCommits checks that every way of starting the response
// commits the session first (the cookie is in the headers) and that
// http.ResponseController reaches the underlying writer.
func TestResponseWriterCommits(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	m, err := httpsession.New(newStore(t, mc.Spec(), lock.Config{}), httpsession.Options{Logger: discard})
	require.NoError(t, err)
	starts := map[string]func(w http.ResponseWriter) error{
		"WriteHeader": func(w http.ResponseWriter) error { w.WriteHeader(http.StatusCreated); return nil },
		"Write":       func(w http.ResponseWriter) error { _, err := w.Write([]byte("x")); return err },
		"ReadFrom":    func(w http.ResponseWriter) error { _, err := io.Copy(w, strings.NewReader("x")); return err },
		"Flusher":     func(w http.ResponseWriter) error { w.(http.Flusher).Flush(); return nil },
		"ResponseController": func(w http.ResponseWriter) error {
			rc := http.NewResponseController(w)
			if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil { // through Unwrap
				return err
			}
			return rc.Flush()
		},
		"EarlyHints then Write": func(w http.ResponseWriter) error {
			w.Header().Set("Link", "</app.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints) // informational: no commit
			_, err := w.Write([]byte("x"))
			return err
		},
		"Nothing": func(w http.ResponseWriter) error { return nil },
	}
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s := m.Session(r)
				require.NoError(t, s.Set("k", 1))
				require.NoError(t, start(w))
				require.NoError(t, s.Set("after", 2)) // saved at the end
			})))
			defer srv.Close()
			resp, err := http.Post(srv.URL, "text/plain", nil)
			require.NoError(t, err)
			_, err = io.ReadAll(resp.Body) // the body ends after the handler's final save
			require.NoError(t, err)
			resp.Body.Close()
			ck := sessionCookie(resp.Header)
			require.NotNil(t, ck, "no cookie: the response started before the commit")
			loaded, err := m.Store().Load(context.Background(), ck.Value)
			require.NoError(t, err)
			require.Equal(t, []string{"after", "k"}, loaded.Keys())
		})
	}
}

// TestHijack checks that Hijack commits the session first.
func TestHijack(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	m, err := httpsession.New(newStore(t, mc.Spec(), lock.Config{}), httpsession.Options{Logger: discard})
	require.NoError(t, err)
	srv := httptest.NewServer(m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		require.NoError(t, s.Set("k", 1))
		conn, buf, err := http.NewResponseController(w).Hijack()
		require.NoError(t, err)
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nX-Id: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", s.ID())
		require.NoError(t, buf.Flush())
	})))
	defer srv.Close()
	resp, err := http.Post(srv.URL, "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	id := resp.Header.Get("X-Id")
	require.NotEmpty(t, id)
	loaded, err := m.Store().Load(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, []string{"k"}, loaded.Keys())
}

// TestSessionMethods covers the attribute methods, the timeouts given to
// new sessions and Session.Lock under LockAll and with FailOpen.
func TestSessionMethods(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	st := newStore(t, mc.Spec(), lock.Config{})
	m, err := httpsession.New(st, httpsession.Options{Logger: discard, IdleTimeout: 5 * time.Minute, Lifetime: time.Hour})
	require.NoError(t, err)
	serve := func(ck *http.Cookie, h func(s *httpsession.Session, r *http.Request)) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/", nil)
		if ck != nil {
			req.AddCookie(ck)
		}
		m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(m.Session(r), r) })).ServeHTTP(rec, req)
		return rec
	}
	rec := serve(nil, func(s *httpsession.Session, r *http.Request) {
		ok, err := s.Exists()
		require.NoError(t, err)
		require.False(t, ok)
		require.Empty(t, s.ID())
		require.NoError(t, s.Remove("nothing"))
		require.NoError(t, s.Clear())
		require.NoError(t, s.Set("a", "x"))
		require.NoError(t, s.Set("b", []int{1, 2}))
		ok, err = s.Exists()
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, s.Lock(r.Context()), "a new session needs no lock")
		require.False(t, s.Locked())
	})
	ck := sessionCookie(rec.Header())
	require.NotNil(t, ck)
	loaded, err := st.Load(context.Background(), ck.Value)
	require.NoError(t, err)
	require.Equal(t, 5*time.Minute, loaded.IdleTimeout())
	require.WithinDuration(t, loaded.Created().Add(time.Hour), loaded.Deadline(), time.Second)

	ck = &http.Cookie{Name: ck.Name, Value: ck.Value}
	serve(ck, func(s *httpsession.Session, r *http.Request) {
		ok, err := s.Has("a")
		require.NoError(t, err)
		require.True(t, ok)
		b, ok, err := httpsession.Get[[]int](s, "b")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, []int{1, 2}, b)
		require.True(t, s.Locked(), "LockAll")
		require.NoError(t, s.Lock(r.Context()), "already locked")
		require.NoError(t, s.Remove("a"))
		require.NoError(t, s.SetIdleTimeout(time.Minute))
		require.NoError(t, s.SetLifetime(2*time.Hour))
	})
	serve(ck, func(s *httpsession.Session, r *http.Request) {
		keys, err := s.Keys()
		require.NoError(t, err)
		require.Equal(t, []string{"b"}, keys)
		require.NoError(t, s.Clear())
	})
	loaded, err = st.Load(context.Background(), ck.Value)
	require.NoError(t, err)
	require.Zero(t, loaded.Len())
	require.Equal(t, time.Minute, loaded.IdleTimeout())

	// Session.Lock with FailOpen while another request holds the lock.
	fo, err := httpsession.New(st, httpsession.Options{Logger: discard, Locking: httpsession.LockNone,
		FailOpen: true, LockTimeout: 50 * time.Millisecond})
	require.NoError(t, err)
	held, err := st.LoadLocked(context.Background(), ck.Value)
	require.NoError(t, err)
	defer func() { require.NoError(t, st.Release(context.Background(), held)) }()
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(ck)
	fo.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := fo.Session(r)
		_, _, err := httpsession.Get[int](s, "k")
		require.NoError(t, err)
		require.NoError(t, s.Lock(r.Context()), "FailOpen")
		require.False(t, s.Locked())
	})).ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, httpsession.Stats{Requests: 1, LockTimeouts: 1, FailOpens: 1}, withoutTouches(fo.Stats()))
}

func withoutTouches(s httpsession.Stats) httpsession.Stats {
	s.Touches = 0
	return s
}
