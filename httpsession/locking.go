package httpsession

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
)

// LockOverride overrides the Manager's locking mode for one request.
type LockOverride int

const (
	// UseLockingMode leaves the decision to Options.Locking (the zero value).
	UseLockingMode LockOverride = iota
	// ForceLocking locks the request whatever the mode.
	ForceLocking
	// SkipLocking runs the request without the lock whatever the mode; its save
	// is still CAS-guarded.
	SkipLocking
)

type flagKey struct{}

// flagFrom returns the flag ForceLock or SkipLock put into ctx outside
// the middleware.
func flagFrom(ctx context.Context) LockOverride {
	f, _ := ctx.Value(flagKey{}).(LockOverride)
	return f
}

// withFlag sets the locking flag of r: on its session state when r went
// through the middleware already (and the session is not in use yet), and
// in its context otherwise, where the middleware picks it up.
func withFlag(r *http.Request, f LockOverride) *http.Request {
	if err := OverrideLocking(r, f); !errors.Is(err, ErrNoSession) {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), flagKey{}, f))
}

// ForceLock wraps h so that its requests hold the session lock whatever
// the Manager's locking mode. It may wrap h inside or outside
// Manager.Middleware.
func ForceLock(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, withFlag(r, ForceLocking))
	})
}

// SkipLock wraps h so that its requests run without the session lock
// whatever the Manager's locking mode (its saves stay CAS-guarded). It may
// wrap h inside or outside Manager.Middleware.
func SkipLock(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, withFlag(r, SkipLocking))
	})
}

// OverrideLocking overrides the locking mode for request r, which must have
// gone through Manager.Middleware. It must be called before the handler
// first uses the session (locking is decided when the session is loaded):
// it returns ErrAlreadyLoaded after that, and ErrNoSession for a request
// without session. To lock in the middle of a request, use Session.Lock.
func OverrideLocking(r *http.Request, f LockOverride) error {
	rs, _ := r.Context().Value(stateKey{}).(*reqState)
	if rs == nil {
		return ErrNoSession
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.used {
		return ErrAlreadyLoaded
	}
	rs.flag = f
	return nil
}

// learner remembers, per route, whether LockAuto still locks it. Lookups
// of known routes take a read lock only.
type learner struct {
	threshold, max int32

	mu     sync.RWMutex
	routes map[string]*route
}

type route struct {
	clean    atomic.Int32 // consecutive requests that did not modify the session
	modifies atomic.Bool  // modified the session once: locked for good
}

func newLearner(threshold, max int) *learner {
	return &learner{threshold: int32(threshold), max: int32(max), routes: make(map[string]*route)}
}

// locks reports whether requests of the route key are locked.
func (l *learner) locks(key string) bool {
	l.mu.RLock()
	rt := l.routes[key]
	l.mu.RUnlock()
	return rt == nil || rt.modifies.Load() || rt.clean.Load() < l.threshold
}

// record notes a finished request of the route key.
func (l *learner) record(key string, modified bool) {
	l.mu.RLock()
	rt := l.routes[key]
	l.mu.RUnlock()
	if rt == nil {
		l.mu.Lock()
		if rt = l.routes[key]; rt == nil {
			if int32(len(l.routes)) >= l.max {
				l.mu.Unlock()
				return // unknown routes beyond the bound stay locked
			}
			rt = &route{}
			l.routes[key] = rt
		}
		l.mu.Unlock()
	}
	switch {
	case modified:
		rt.modifies.Store(true)
	case !rt.modifies.Load() && rt.clean.Load() < l.threshold:
		rt.clean.Add(1)
	}
}

// routeKey returns the LockAuto route of the request: "METHOD ROUTE",
// where ROUTE is what Options.Route says, else the ServeMux pattern, else
// the URL path. The request asked is the one the handler passed to
// Manager.Session, or else the one the middleware saw. It is computed once,
// when the session is first used: a router may recycle its routing state
// once it returned (chi pools it). Callers hold rs.mu.
func (rs *reqState) routeKey() string {
	r := rs.req
	if rs.inner != nil {
		r = rs.inner
	}
	var route string
	if f := rs.m.opts.Route; f != nil {
		route = f(r)
	}
	if route == "" {
		route = r.Pattern
	}
	if route == "" {
		route = r.URL.Path
	}
	return r.Method + " " + route
}
