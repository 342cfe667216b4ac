package httpsession_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// TestNoSessionWithoutWrites checks that requests that never use the
// session, and read-only requests without a cookie, make no memcached
// call and set no cookie; and that the first write creates the session.
func TestNoSessionWithoutWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{}, nil)
	c := newClient(t)
	before := e.opsCount()
	require.Equal(t, "no session used", c.ok(e.a, "GET", "/nouse"))
	r := c.do(e.b, "GET", "/get?key=k")
	require.Equal(t, "-", r.body)
	require.Nil(t, sessionCookie(r.hdr))
	require.Equal(t, "Cookie", r.hdr.Get("Vary"), "a response that read the session varies on Cookie")
	require.Equal(t, "", c.ok(e.a, "GET", "/keys"))
	require.Equal(t, before, e.opsCount(), "memcached was used")
	require.Empty(t, c.sessionID(e.a))

	r = c.do(e.a, "POST", "/incr?key=k")
	require.Equal(t, "1", r.body)
	ck := sessionCookie(r.hdr)
	require.NotNil(t, ck)
	require.True(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteLaxMode, ck.SameSite)
	require.Equal(t, "/", ck.Path)
	require.False(t, ck.Secure, "plain HTTP request with SecureAuto")
	_, _, ok := e.a.st.Placement(ck.Value)
	require.True(t, ok, "cookie %q is not a session id", ck.Value)
	require.Equal(t, uint64(1), e.a.m.Stats().Created)

	// Known session: no new cookie.
	r = c.do(e.b, "POST", "/incr?key=k")
	require.Equal(t, "2", r.body)
	require.Nil(t, sessionCookie(r.hdr))
	require.Equal(t, "Cookie", r.hdr.Get("Vary"))
}

// TestCookieOptions checks Secure, HttpOnly opt-out, name, domain and
// SameSite options.
func TestCookieOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1, httpsession.Options{
		CookieName: "sid", CookiePath: "/app", CookieDomain: "example.test",
		Secure: httpsession.SecureAlways, SameSite: http.SameSiteStrictMode, DisableHTTPOnly: true,
	}, nil)
	r := newClient(t).do(e.a, "POST", "/incr")
	require.Equal(t, http.StatusOK, r.code)
	var ck *http.Cookie
	for _, c := range (&http.Response{Header: r.hdr}).Cookies() {
		if c.Name == "sid" {
			ck = c
		}
	}
	require.NotNil(t, ck, "%v", r.hdr)
	require.True(t, ck.Secure)
	require.False(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	require.Equal(t, "/app", ck.Path)
	require.Equal(t, "example.test", ck.Domain)

	_, err := httpsession.New(e.a.st, httpsession.Options{Locking: httpsession.LockMatching})
	require.Error(t, err, "LockMatching without a pattern")
	_, err = httpsession.New(e.a.st, httpsession.Options{CookieName: "bad name"})
	require.Error(t, err)
	_, err = httpsession.New(nil, httpsession.Options{})
	require.Error(t, err)
}

// TestReadOnlyRequestCost checks that a read-only request without the lock
// costs one memcached round trip, a get on the primary (no node is
// fenced, so the moved marker is not read), and that the idle timeout is
// refreshed with touch after the request, never with a rewrite.
func TestReadOnlyRequestCost(t *testing.T) {
	t.Parallel()
	// The longest window keeps the fences' background re-reads (every
	// half window) out of the counts below; both stores read them first.
	e := newEnv(t, 2, httpsession.Options{Locking: httpsession.LockNone, Store: store.Config{FenceWindow: store.MaxFenceWindow}}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=k")
	e.a.m.Wait()
	for _, srv := range []*server{e.a, e.b} {
		require.NoError(t, srv.st.RefreshFences(context.Background()))
	}
	stat := func(name string) uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var sum uint64
		for _, n := range e.mc.Nodes {
			v, err := n.Stat(ctx, name)
			require.NoError(t, err)
			sum += v
		}
		return sum
	}
	gets, sets, touches := stat("cmd_get"), stat("cmd_set"), stat("cmd_touch")
	require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=k"))
	e.b.m.Wait()
	require.Equal(t, gets+1, stat("cmd_get"), "one get of the session, and no read of its moved marker")
	require.Equal(t, sets, stat("cmd_set"), "an unchanged session was written")
	require.Equal(t, touches+2, stat("cmd_touch"), "primary and backup touched")
	require.Equal(t, uint64(1), e.b.m.Stats().Touches)

	// Refreshed just now by this server (b), and written just now by a: a
	// read-only request on either is one gets and nothing else.
	for _, srv := range []*server{e.b, e.a} {
		require.Equal(t, "1", c.ok(srv, "GET", "/get?key=k"))
		srv.m.Wait()
	}
	require.Equal(t, gets+3, stat("cmd_get"), "each read-only request: the session only")
	require.Equal(t, touches+2, stat("cmd_touch"), "refresh not due yet (store.Config.TouchAfter)")
	require.Equal(t, uint64(1), e.b.m.Stats().Touches)
	require.Equal(t, uint64(0), e.a.m.Stats().Touches)
}

// TestIgnoredPaths checks that ignored requests make no memcached call,
// get no session and set no cookie, even with a session cookie.
func TestIgnoredPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{Ignore: []*regexp.Regexp{regexp.MustCompile(`^/static/`)}}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr")
	e.a.m.Wait()
	e.b.m.Wait()
	before := e.opsCount()
	for i := range 10 {
		srv := e.a
		if i%2 == 1 {
			srv = e.b
		}
		r := c.do(srv, "GET", "/static/app.css")
		require.Equal(t, http.StatusOK, r.code, r.body)
		require.Equal(t, "static", r.body)
		require.Nil(t, sessionCookie(r.hdr))
		require.Empty(t, r.hdr.Values("Vary"))
	}
	e.a.m.Wait()
	e.b.m.Wait()
	require.Equal(t, before, e.opsCount(), "ignored requests used memcached")
	require.Equal(t, uint64(10), e.a.m.Stats().Ignored+e.b.m.Stats().Ignored)
	require.Equal(t, uint64(1), e.a.m.Stats().Requests+e.b.m.Stats().Requests)
}

// TestChangesAfterFirstWrite checks that changes made after the response
// started (Write, Flush) are saved when the handler returns.
func TestChangesAfterFirstWrite(t *testing.T) {
	t.Parallel()
	for _, mode := range []httpsession.LockMode{httpsession.LockAll, httpsession.LockNone} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 2, httpsession.Options{Locking: mode}, nil)
			c := newClient(t)
			c.ok(e.a, "POST", "/incr?key=k")
			require.Equal(t, "body first;", c.ok(e.a, "POST", "/late?key=w"))
			require.Equal(t, "body first;", c.ok(e.a, "POST", "/late?key=f&flush=1"))
			require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=w"))
			require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=f"))
			require.Equal(t, "2", c.ok(e.b, "POST", "/incr?key=k"), "lock released after the late save")
			require.Zero(t, e.a.m.Stats().Errors)

			// A session created after the response started could never be
			// found again (no cookie): not saved, counted as an error.
			fresh := newClient(t)
			r := fresh.do(e.a, "POST", "/late?key=x")
			require.Equal(t, http.StatusOK, r.code)
			require.Nil(t, sessionCookie(r.hdr))
			require.Equal(t, uint64(1), e.a.m.Stats().Errors)
		})
	}
}

// TestLoginRenewsID checks RenewID: new cookie, data kept, old id dead.
func TestLoginRenewsID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3, httpsession.Options{}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=cart")
	c.ok(e.b, "POST", "/incr?key=cart")
	old := c.sessionID(e.a)
	require.NotEmpty(t, old)

	r := c.do(e.b, "POST", "/login?user=7")
	require.Equal(t, http.StatusOK, r.code, r.body)
	ck := sessionCookie(r.hdr)
	require.NotNil(t, ck)
	require.NotEqual(t, old, ck.Value)
	require.Equal(t, ck.Value, r.body)
	require.Equal(t, ck.Value, c.sessionID(e.a))
	require.Equal(t, "2", c.ok(e.a, "GET", "/get?key=cart"))
	require.Equal(t, "cart,user", c.ok(e.b, "GET", "/keys"))
	require.Equal(t, uint64(1), e.b.m.Stats().Renewed)

	// The old cookie finds nothing and gets nothing.
	attacker := newClient(t)
	attacker.setCookie(e.a, old)
	r = attacker.do(e.a, "GET", "/get?key=cart")
	require.Equal(t, "-", r.body)
	require.Nil(t, sessionCookie(r.hdr))
	key, bkey, lkey := e.a.st.MemcachedKeys(old)
	for _, k := range []string{key, bkey, lkey} {
		require.Empty(t, e.nodesWith(k), "old key %s survived", k)
	}
}

// TestLogoutDestroysEverywhere checks that Destroy removes the session,
// backup and lock keys from every node and deletes the cookie.
func TestLogoutDestroysEverywhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3, httpsession.Options{}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=k")
	c.ok(e.b, "POST", "/incr?key=k")
	id := c.sessionID(e.a)
	key, bkey, lkey := e.a.st.MemcachedKeys(id)
	require.Len(t, e.nodesWith(key), 1)
	require.Len(t, e.nodesWith(bkey), 1)

	r := c.do(e.b, "POST", "/logout")
	require.Equal(t, http.StatusOK, r.code, r.body)
	ck := sessionCookie(r.hdr)
	require.NotNil(t, ck)
	require.Equal(t, -1, ck.MaxAge, "cookie not deleted: %v", r.hdr.Values("Set-Cookie"))
	require.Equal(t, "Cookie", r.hdr.Get("Vary"))
	for _, k := range []string{key, bkey, lkey} {
		require.Empty(t, e.nodesWith(k), "key %s survived the logout", k)
	}
	require.Empty(t, c.sessionID(e.a))
	require.Equal(t, "-", c.ok(e.a, "GET", "/get?key=k"))
	require.Equal(t, uint64(1), e.b.m.Stats().Destroyed)

	// The old id, replayed, is dead too.
	replay := newClient(t)
	replay.setCookie(e.a, id)
	require.Equal(t, "-", replay.ok(e.a, "GET", "/get?key=k"))
}

// TestMalformedCookies checks that garbage, forged and oversized cookies
// are treated as no session: never an error page, and a write gets a
// fresh id.
func TestMalformedCookies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{}, nil)
	hex := strings.Repeat("0123456789abcdef", 2)
	cases := map[string]string{
		"garbage":       "garbage",
		"forged hex":    hex + "-n1",
		"unknown node":  hex + "-n9",
		"uppercase":     strings.ToUpper(hex) + "-n1",
		"no node":       hex + "-",
		"no id":         "-n1",
		"traversal":     "..%2F..%2Fetc%2Fpasswd",
		"10KB":          strings.Repeat("a", 10<<10),
		"memcached cmd": "x%0D%0Aflush_all",
		"empty":         "",
	}
	for name, v := range cases {
		for _, srv := range []*server{e.a, e.b} {
			req, err := http.NewRequest("GET", srv.srv.URL+"/get?key=k", nil)
			require.NoError(t, err)
			req.Header.Set("Cookie", httpsession.DefaultCookieName+"="+v)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, name)
			require.Nil(t, sessionCookie(resp.Header), name)

			req, err = http.NewRequest("POST", srv.srv.URL+"/incr?key=k", nil)
			require.NoError(t, err)
			req.Header.Set("Cookie", httpsession.DefaultCookieName+"="+v)
			resp, err = http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, name)
			ck := sessionCookie(resp.Header)
			require.NotNil(t, ck, name)
			require.NotEqual(t, v, ck.Value, "%s: a client-chosen id was adopted", name)
			_, _, ok := srv.st.Placement(ck.Value)
			require.True(t, ok, name)
		}
	}
	require.Zero(t, e.a.m.Stats().Errors+e.b.m.Stats().Errors)
}

// TestTooLarge checks that a session over the size limit answers 500 with
// a clear message, keeps the stored copy and is counted.
func TestTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=k")
	r := c.do(e.a, "POST", "/big")
	require.Equal(t, http.StatusInternalServerError, r.code)
	require.Contains(t, r.body, "session too large")
	require.NotContains(t, r.body, "stored")
	require.Equal(t, uint64(1), e.a.m.Stats().Errors)
	require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=k"))
	require.Equal(t, "2", c.ok(e.b, "POST", "/incr?key=k"), "lock released after the failed save")
}

// TestPanicReleasesLock checks that a panicking handler saves nothing and
// does not leave the lock held.
func TestPanicReleasesLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{}, func(i int, o *httpsession.Options) { o.LockTimeout = 300 * time.Millisecond })
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=k")
	_, err := c.try(e.a, "POST", "/panic")
	require.Error(t, err, "the aborted handler's connection is closed")
	r := c.do(e.b, "POST", "/incr?key=k")
	require.Equal(t, http.StatusOK, r.code, "lock left held: %s", r.body)
	require.Equal(t, "2", r.body)
}

// TestSecureAuto checks that SecureAuto marks the cookie Secure for TLS
// requests only.
func TestSecureAuto(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	m, err := httpsession.New(newStore(t, mc.Spec(), lock.Config{}), httpsession.Options{Logger: discard})
	require.NoError(t, err)
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, m.Session(r).Set("k", 1))
	}))
	for _, target := range []string{"http://example.test/", "https://example.test/"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", target, nil))
		ck := sessionCookie(rec.Header())
		require.NotNil(t, ck)
		require.Equal(t, strings.HasPrefix(target, "https"), ck.Secure, target)
	}
}

// TestConcurrentUseInOneRequest uses the session from several goroutines
// of one handler, and after the request finished.
func TestConcurrentUseInOneRequest(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	m, err := httpsession.New(newStore(t, mc.Spec(), lock.Config{}), httpsession.Options{Logger: discard})
	require.NoError(t, err)
	var leaked *httpsession.Session
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Set("k"+strconv.Itoa(i), i); err != nil {
					t.Error(err)
				}
				if _, _, err := httpsession.Get[int](s, "k0"); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		leaked = s
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	ck := sessionCookie(rec.Header())
	require.NotNil(t, ck)
	require.ErrorIs(t, leaked.Set("late", 1), httpsession.ErrRequestDone)
	_, err = leaked.Keys()
	require.ErrorIs(t, err, httpsession.ErrRequestDone)

	var keys []string
	h = m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys, err = m.Session(r).Keys()
	}))
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	h.ServeHTTP(httptest.NewRecorder(), req)
	require.NoError(t, err)
	require.Len(t, keys, 8)
}

// TestCustomErrorHandler checks that Options.ErrorHandler decides the
// answer for unreachable memcached, and that the handler's own response
// (and headers) are discarded.
func TestCustomErrorHandler(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: every node is down.
	st := newStore(t, "n1=127.0.0.1:1,n2=127.0.0.2:1", lock.Config{})
	var got error
	m, err := httpsession.New(st, httpsession.Options{Logger: discard,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			require.Nil(t, httpsession.FromContext(r.Context()))
			w.WriteHeader(http.StatusBadGateway)
		}})
	require.NoError(t, err)
	var writeErr error
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = m.Session(r).Set("k", 1) // error ignored on purpose
		w.Header().Set("X-Handler", "1")
		_, writeErr = w.Write([]byte("handler body"))
	}))
	for range 4 { // closed breakers first, then open ones
		rec := httptest.NewRecorder()
		rec.Header().Set("X-Outer", "kept")
		start := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
		require.Less(t, time.Since(start), 2*time.Second)
		require.Equal(t, http.StatusBadGateway, rec.Code)
		require.Empty(t, rec.Body.String())
		require.Empty(t, rec.Header().Get("X-Handler"))
		require.Equal(t, "kept", rec.Header().Get("X-Outer"))
		require.ErrorIs(t, writeErr, httpsession.ErrAborted)
		require.ErrorIs(t, got, store.ErrUnavailable)
		require.Equal(t, http.StatusServiceUnavailable, httpsession.StatusCode(got))
	}
}
