package httpsession_test

import (
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
)

// withQuery appends q to path, which may have a query already.
func withQuery(path, q string) string {
	if strings.Contains(path, "?") {
		return path + "&" + q
	}
	return path + "?" + q
}

// TestSlowAndFastModifyingRequests runs a slow modifying request (300 ms
// after its load) on server A and a fast one on server B 100 ms later, in
// every locking mode and with every per-request flag. With the lock both
// changes persist; without it the slow request's save is refused with 409
// (never lost silently).
func TestSlowAndFastModifyingRequests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		opts    httpsession.Options
		path    string
		serials bool // true: both changes persist; false: the slow one conflicts
	}{
		{"All", httpsession.Options{Locking: httpsession.LockAll}, "/incr", true},
		{"Auto", httpsession.Options{Locking: httpsession.LockAuto}, "/incr", true},
		{"Pattern", httpsession.Options{Locking: httpsession.LockMatching, LockPattern: regexp.MustCompile(`^POST /incr$`)}, "/incr", true},
		{"PatternNotMatching", httpsession.Options{Locking: httpsession.LockMatching, LockPattern: regexp.MustCompile(`^POST /other`)}, "/incr", false},
		{"None", httpsession.Options{Locking: httpsession.LockNone}, "/incr", false},
		{"None+ForceLock", httpsession.Options{Locking: httpsession.LockNone}, "/force/incr", true},
		{"All+SkipLock", httpsession.Options{Locking: httpsession.LockAll}, "/skip/incr", false},
		{"None+OverrideLockingForce", httpsession.Options{Locking: httpsession.LockNone}, "/setlocking/incr?flag=force", true},
		{"All+OverrideLockingSkip", httpsession.Options{Locking: httpsession.LockAll}, "/setlocking/incr?flag=skip", false},
		{"None+SessionLock", httpsession.Options{Locking: httpsession.LockNone}, "/lazy/incr", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 2, tc.opts, nil)
			c := newClient(t)
			require.Equal(t, "1", c.ok(e.a, "POST", withQuery(tc.path, "key=init")))

			slow := make(chan result, 1)
			go func() {
				r, err := c.try(e.a, "POST", withQuery(tc.path, "key=a&sleep=300"))
				if err != nil {
					t.Errorf("slow request: %v", err)
				}
				slow <- r
			}()
			time.Sleep(100 * time.Millisecond)
			fast := c.do(e.b, "POST", withQuery(tc.path, "key=b"))
			var sr result
			select {
			case sr = <-slow:
			case <-time.After(clientTimeout):
				t.Fatal("slow request did not finish")
			}
			require.Equal(t, http.StatusOK, fast.code, fast.body)
			require.Equal(t, "1", c.ok(e.a, "GET", "/get?key=b"))
			if tc.serials {
				require.Equal(t, http.StatusOK, sr.code, sr.body)
				require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=a"))
				require.Equal(t, "1", c.ok(e.a, "GET", "/get?key=a"))
				require.Zero(t, e.a.m.Stats().Conflicts)
				return
			}
			// Unlocked: the slow request loaded before the fast one saved,
			// so its CAS-guarded save is refused and the client is told.
			require.Equal(t, http.StatusConflict, sr.code, sr.body)
			require.Equal(t, "1", sr.hdr.Get("Retry-After"))
			require.Equal(t, "-", c.ok(e.b, "GET", "/get?key=a"))
			require.Equal(t, uint64(1), e.a.m.Stats().Conflicts)
		})
	}
}

// TestParallelIncrements splits 200 increments of one session across both
// servers, 16 at a time: locked modes count exactly 200.
func TestParallelIncrements(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts httpsession.Options
	}{
		{"All", httpsession.Options{Locking: httpsession.LockAll}},
		{"Auto", httpsession.Options{Locking: httpsession.LockAuto}},
		{"Pattern", httpsession.Options{Locking: httpsession.LockMatching, LockPattern: regexp.MustCompile(`^POST /incr`)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.opts.LockTimeout = 10 * time.Second // contention, not a failure, under -race
			e := newEnv(t, 2, tc.opts, nil)
			c := newClient(t)
			c.ok(e.a, "POST", "/incr?key=init") // create the session first
			const n = 200
			results := parallel(t, n, 16, 60*time.Second, func(i int) (result, error) {
				srv := e.a
				if i%2 == 1 {
					srv = e.b
				}
				return c.try(srv, "POST", "/incr?key=k")
			})
			seen := make(map[string]bool)
			for _, r := range results {
				require.Equal(t, http.StatusOK, r.code, r.body)
				require.False(t, seen[r.body], "two increments returned %s", r.body)
				seen[r.body] = true
			}
			sa, sb := e.a.m.Stats(), e.b.m.Stats()
			require.Equal(t, uint64(n), sa.Locked+sb.Locked)
			require.Zero(t, sa.Conflicts+sb.Conflicts)
			require.Equal(t, strconv.Itoa(n), c.ok(e.b, "GET", "/get?key=k"))
		})
	}
}

// TestParallelIncrementsWithoutLock shows that the test above can fail:
// without the lock, and with a sleep widening the window, increments
// conflict. None is lost silently: every 200 is counted, every other
// answer is a 409.
func TestParallelIncrementsWithoutLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{Locking: httpsession.LockNone}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=init")
	const n = 60
	results := parallel(t, n, 16, 60*time.Second, func(i int) (result, error) {
		srv := e.a
		if i%2 == 1 {
			srv = e.b
		}
		return c.try(srv, "POST", "/incr?key=k&sleep=20")
	})
	oks := 0
	for _, r := range results {
		switch r.code {
		case http.StatusOK:
			oks++
		case http.StatusConflict:
		default:
			t.Fatalf("unexpected answer %d: %s", r.code, r.body)
		}
	}
	got, err := strconv.Atoi(c.ok(e.b, "GET", "/get?key=k"))
	require.NoError(t, err)
	require.Less(t, got, n, "no update conflicted without the lock")
	require.Equal(t, oks, got, "an acknowledged increment was lost")
	sa, sb := e.a.m.Stats(), e.b.m.Stats()
	require.Equal(t, uint64(n-oks), sa.Conflicts+sb.Conflicts)
	require.Zero(t, sa.Locked+sb.Locked)
}

// TestAutoLearnsReadOnlyRoutes checks that LockAuto stops locking a route
// after DefaultAutoThreshold non-modifying requests, so that two read-only
// requests of one session overlap, and locks a route for good once it
// modified.
func TestAutoLearnsReadOnlyRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{Locking: httpsession.LockAuto}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr")
	for i := range httpsession.DefaultAutoThreshold {
		require.Equal(t, "true", c.ok(e.a, "GET", "/read?id=warm"+strconv.Itoa(i)), "request %d should be locked", i)
	}
	// Learned: two parallel reads both run unlocked, at the same time.
	var wg sync.WaitGroup
	bodies := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.try(e.a, "GET", "/read?sleep=300&id=p"+strconv.Itoa(i))
			if err != nil || r.code != http.StatusOK {
				t.Errorf("read %d: %v %d %s", i, err, r.code, r.body)
			}
			bodies[i] = r.body
		}()
	}
	wg.Wait()
	require.Equal(t, []string{"false", "false"}, bodies)
	p0, p1 := e.a.rec.span("p0"), e.a.rec.span("p1")
	require.False(t, p0[1].IsZero() || p1[1].IsZero())
	require.True(t, p0[0].Before(p1[1]) && p1[0].Before(p0[1]),
		"read-only requests did not overlap: %v..%v and %v..%v", p0[0], p0[1], p1[0], p1[1])
	require.Equal(t, uint64(2), e.a.m.Stats().AutoUnlocked)

	// The same reads on server B, which has learned nothing: serialised.
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.try(e.b, "GET", "/read?sleep=200&id=q"+strconv.Itoa(i))
			if err != nil || r.code != http.StatusOK || r.body != "true" {
				t.Errorf("read %d on B: %v %d %s", i, err, r.code, r.body)
			}
		}()
	}
	wg.Wait()
	q0, q1 := e.b.rec.span("q0"), e.b.rec.span("q1")
	require.False(t, q0[0].Before(q1[1]) && q1[0].Before(q0[1]),
		"locked requests overlapped: %v..%v and %v..%v", q0[0], q0[1], q1[0], q1[1])
}

// TestAutoUnlockedModification covers a route learned as read-only that
// modifies after all: the change is saved with CAS when nobody interfered,
// refused with 409 (and counted) when someone did, and the route is
// locked for good after.
func TestAutoUnlockedModification(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{Locking: httpsession.LockAuto}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=k")
	for range httpsession.DefaultAutoThreshold {
		require.Equal(t, "true", c.ok(e.a, "POST", "/maybe"))
	}
	require.Equal(t, "false", c.ok(e.a, "POST", "/maybe"))

	// Unlocked and modifying, while server B increments the same session.
	slow := make(chan result, 1)
	go func() {
		r, err := c.try(e.a, "POST", "/maybe?write=1&sleep=300")
		if err != nil {
			t.Errorf("slow: %v", err)
		}
		slow <- r
	}()
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, "2", c.ok(e.b, "POST", "/incr?key=k"))
	sr := <-slow
	require.Equal(t, http.StatusConflict, sr.code, sr.body)
	st := e.a.m.Stats()
	require.Equal(t, uint64(1), st.Conflicts)
	require.Equal(t, uint64(2), st.AutoUnlocked)
	require.Equal(t, "2", c.ok(e.a, "GET", "/get?key=k"))

	// It modified once: locked from now on.
	for range httpsession.DefaultAutoThreshold + 2 {
		require.Equal(t, "true", c.ok(e.a, "POST", "/maybe"))
	}
	require.Equal(t, "true", c.ok(e.a, "POST", "/maybe?write=1"))
	require.Equal(t, "3", c.ok(e.b, "GET", "/get?key=k"))
}

// TestPerRequestFlags checks ForceLock and SkipLock inside and outside the
// middleware, OverrideLocking's errors, and Session.Lock under LockNone.
func TestPerRequestFlags(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{Locking: httpsession.LockNone}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr")
	cookie := &http.Cookie{Name: httpsession.DefaultCookieName, Value: c.sessionID(e.a)}

	newManager := func(mode httpsession.LockMode) *httpsession.Manager {
		m, err := httpsession.New(e.a.st, httpsession.Options{Locking: mode, Logger: discard})
		require.NoError(t, err)
		return m
	}
	var locked, lockedAfter bool
	var setErr, lateErr error
	probe := func(m *httpsession.Manager) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := m.Session(r)
			_, _, _ = httpsession.Get[int](s, "k")
			locked = s.Locked()
			lateErr = httpsession.OverrideLocking(r, httpsession.ForceLocking)
			setErr = s.Lock(r.Context())
			lockedAfter = s.Locked()
		})
	}
	serve := func(h http.Handler) {
		req := httptest.NewRequest("GET", "/", nil)
		req.AddCookie(cookie)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}

	none, all := newManager(httpsession.LockNone), newManager(httpsession.LockAll)
	serve(none.Middleware(probe(none)))
	require.False(t, locked)
	require.ErrorIs(t, lateErr, httpsession.ErrAlreadyLoaded)
	require.NoError(t, setErr)
	require.True(t, lockedAfter, "Session.Lock did not lock")

	serve(none.Middleware(httpsession.ForceLock(probe(none))))
	require.True(t, locked, "ForceLock inside the middleware")
	serve(httpsession.ForceLock(none.Middleware(probe(none))))
	require.True(t, locked, "ForceLock outside the middleware")
	serve(all.Middleware(httpsession.SkipLock(probe(all))))
	require.False(t, locked, "SkipLock inside the middleware")
	serve(httpsession.SkipLock(all.Middleware(probe(all))))
	require.False(t, locked, "SkipLock outside the middleware")
	serve(all.Middleware(probe(all)))
	require.True(t, locked)

	// OverrideLocking without the middleware.
	require.ErrorIs(t, httpsession.OverrideLocking(httptest.NewRequest("GET", "/", nil), httpsession.ForceLocking), httpsession.ErrNoSession)
	// Every lock taken above was released.
	require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=k"))
	require.Equal(t, "2", c.ok(e.b, "POST", "/force/incr"))
}

// TestLockTimeout holds the lock with a slow request on A while B, with a
// 100 ms lock timeout, answers 503 with Retry-After; nothing is lost. With
// FailOpen, B proceeds without the lock and the slow request's stale save
// is refused instead.
func TestLockTimeout(t *testing.T) {
	t.Parallel()
	for _, failOpen := range []bool{false, true} {
		t.Run("FailOpen="+strconv.FormatBool(failOpen), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 2, httpsession.Options{}, func(i int, o *httpsession.Options) {
				if i == 1 {
					o.LockTimeout = 100 * time.Millisecond
					o.FailOpen = failOpen
				}
			})
			c := newClient(t)
			c.ok(e.a, "POST", "/incr?key=init")
			slow := make(chan result, 1)
			go func() {
				r, err := c.try(e.a, "POST", "/incr?key=a&sleep=1500")
				if err != nil {
					t.Errorf("slow: %v", err)
				}
				slow <- r
			}()
			time.Sleep(100 * time.Millisecond)
			fast := c.do(e.b, "POST", "/incr?key=b")
			sr := <-slow
			sb := e.b.m.Stats()
			require.Equal(t, uint64(1), sb.LockTimeouts)
			if !failOpen {
				require.Equal(t, http.StatusServiceUnavailable, fast.code, fast.body)
				require.Equal(t, "1", fast.hdr.Get("Retry-After"))
				// Waiting for the slow request's lock would take ~1.4 s.
				require.Less(t, fast.took, time.Second, "B waited past its lock timeout")
				require.Nil(t, sessionCookie(fast.hdr))
				require.Equal(t, http.StatusOK, sr.code, sr.body)
				require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=a"))
				require.Equal(t, "-", c.ok(e.a, "GET", "/get?key=b"))
				require.Zero(t, sb.FailOpens)
				return
			}
			require.Equal(t, http.StatusOK, fast.code, fast.body)
			require.Equal(t, uint64(1), sb.FailOpens)
			require.Equal(t, http.StatusConflict, sr.code, sr.body)
			require.Equal(t, "1", c.ok(e.b, "GET", "/get?key=b"))
			require.Equal(t, "-", c.ok(e.a, "GET", "/get?key=a"))
		})
	}
}

// TestAutoRouteBound checks AutoThreshold and MaxAutoRoutes: routes
// beyond the bound are never learned, so they stay locked.
func TestAutoRouteBound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1, httpsession.Options{Locking: httpsession.LockAuto, AutoThreshold: 1, MaxAutoRoutes: 2}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr")                                // learned: POST /incr modifies (route 1)
	require.Equal(t, "true", c.ok(e.a, "GET", "/read?id=a"))  // route 2
	require.Equal(t, "false", c.ok(e.a, "GET", "/read?id=b")) // learned after 1
	require.Equal(t, "true", c.ok(e.a, "POST", "/maybe"))     // route 3: beyond the bound
	require.Equal(t, "true", c.ok(e.a, "POST", "/maybe"))
	require.Equal(t, "true", c.ok(e.a, "POST", "/maybe"))
}
