package httpsession_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
)

var benchModes = []httpsession.LockMode{httpsession.LockNone, httpsession.LockAll, httpsession.LockAuto}

// benchSetup returns the middleware over two real memcached nodes and the
// cookie of a session holding "k".
func benchSetup(b *testing.B, mc *mcproc.Cluster, mode httpsession.LockMode, h func(m *httpsession.Manager) http.HandlerFunc) (*httpsession.Manager, http.Handler, *http.Cookie) {
	b.Helper()
	st := newStore(b, mc.Spec(), lock.Config{})
	m, err := httpsession.New(st, httpsession.Options{Locking: mode, Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Wait)
	handler := m.Middleware(h(m))
	create := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := m.Session(r).Set("k", 1); err != nil {
			b.Fatal(err)
		}
	}))
	rec := httptest.NewRecorder()
	create.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	ck := sessionCookie(rec.Header())
	if ck == nil {
		b.Fatalf("no session cookie: %d %s", rec.Code, rec.Body)
	}
	return m, handler, &http.Cookie{Name: ck.Name, Value: ck.Value}
}

func runBench(b *testing.B, handler http.Handler, ck *http.Cookie, method string) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(method, "/", nil)
		if ck != nil {
			req.AddCookie(ck)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkMiddlewareRead measures a request that reads one attribute of
// an existing session (the idle-timeout touch runs in the background).
func BenchmarkMiddlewareRead(b *testing.B) {
	mc := mcproc.NewCluster(b, 2)
	for _, mode := range benchModes {
		b.Run(mode.String(), func(b *testing.B) {
			_, handler, ck := benchSetup(b, mc, mode, func(m *httpsession.Manager) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					if _, _, err := httpsession.Get[int](m.Session(r), "k"); err != nil {
						b.Error(err)
					}
				}
			})
			runBench(b, handler, ck, "GET")
		})
	}
}

// BenchmarkMiddlewareWrite measures a request that increments one
// attribute of an existing session (primary and backup written).
func BenchmarkMiddlewareWrite(b *testing.B) {
	mc := mcproc.NewCluster(b, 2)
	for _, mode := range benchModes {
		b.Run(mode.String(), func(b *testing.B) {
			_, handler, ck := benchSetup(b, mc, mode, func(m *httpsession.Manager) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					s := m.Session(r)
					n, _, err := httpsession.Get[int](s, "k")
					if err == nil {
						err = s.Set("k", n+1)
					}
					if err != nil {
						b.Error(err)
					}
				}
			})
			runBench(b, handler, ck, "POST")
		})
	}
}

// BenchmarkMiddlewareUnused measures the middleware around a handler that
// never uses the session: no memcached traffic.
func BenchmarkMiddlewareUnused(b *testing.B) {
	mc := mcproc.NewCluster(b, 2)
	_, handler, ck := benchSetup(b, mc, httpsession.LockAll, func(m *httpsession.Manager) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }
	})
	runBench(b, handler, ck, "GET")
}
