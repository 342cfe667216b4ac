package httpsession_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
)

// TestLockedWriteRoundTrips checks how many round trips a locked request
// that modifies its session costs on the session's primary node: two when
// the response is small (lock and load; save and release together, the
// response held back until the handler returns), three when the handler
// commits earlier with a large body or a flush after the change (the save
// goes out before the first byte, the release when the handler returns).
// Either way the next request, on another app server, sees the change.
func TestLockedWriteRoundTrips(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	var servers [2]*httptest.Server
	st := newStore(t, mc.Spec(), lock.Config{})
	for i := range servers {
		s := st
		if i == 1 {
			s = newStore(t, mc.Spec(), lock.Config{})
		}
		m, err := httpsession.New(s, httpsession.Options{Locking: httpsession.LockAll, Logger: discard})
		require.NoError(t, err)
		mux := http.NewServeMux()
		incr := func(w http.ResponseWriter, r *http.Request) int {
			sess := m.Session(r)
			n, _, err := httpsession.Get[int](sess, "k")
			require.NoError(t, err)
			require.NoError(t, sess.Set("k", n+1))
			return n + 1
		}
		mux.HandleFunc("POST /small", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, incr(w, r))
		})
		mux.HandleFunc("POST /header-first", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, incr(w, r))
		})
		mux.HandleFunc("POST /large", func(w http.ResponseWriter, r *http.Request) {
			n := incr(w, r)
			fmt.Fprint(w, n, strings.Repeat(" ", 8<<10))
		})
		mux.HandleFunc("POST /late-status", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, incr(w, r))
			w.WriteHeader(http.StatusInternalServerError) // superfluous, as in net/http
		})
		mux.HandleFunc("POST /flush", func(w http.ResponseWriter, r *http.Request) {
			n := incr(w, r)
			fmt.Fprint(w, n)
			require.NoError(t, http.NewResponseController(w).Flush())
		})
		servers[i] = httptest.NewServer(m.Middleware(mux))
		t.Cleanup(func() { servers[i].Close(); m.Wait() })
	}
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: clientTimeout}
	post := func(srv *httptest.Server, path string) (int, string) {
		resp, err := c.Post(srv.URL+path, "text/plain", nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	code, body := post(servers[0], "/small")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "1", body)
	primary := ""
	u, err := url.Parse(servers[0].URL)
	require.NoError(t, err)
	for _, ck := range jar.Cookies(u) {
		primary, _, _ = st.Placement(ck.Value)
	}
	require.NotEmpty(t, primary)
	roundTrips := func() uint64 {
		for _, p := range st.Cluster().PoolStats() {
			if p.Node == primary {
				return p.RoundTrips
			}
		}
		return 0
	}
	cases := []struct {
		path string
		code int
		want uint64
	}{
		{"/small", http.StatusOK, 2},
		{"/header-first", http.StatusAccepted, 2},
		{"/late-status", http.StatusOK, 2},
		{"/large", http.StatusOK, 3},
		{"/flush", http.StatusOK, 3},
	}
	n := 1
	for _, tc := range cases {
		before := roundTrips()
		code, body = post(servers[0], tc.path)
		n++
		require.Equal(t, tc.code, code, tc.path)
		require.Equal(t, fmt.Sprint(n), body, tc.path)
		require.Equal(t, tc.want, roundTrips()-before, tc.path)
		// The change is there for the next request, on the other server.
		code, body = post(servers[1], "/small")
		n++
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, fmt.Sprint(n), body, tc.path)
	}
}
