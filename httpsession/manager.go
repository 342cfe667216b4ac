package httpsession

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// Manager is the session middleware's configuration and state: the store,
// cookie settings, the locking mode with what LockAuto learned, and
// counters. It is safe for concurrent use; create one per application.
type Manager struct {
	st      *store.Store
	opts    Options
	log     *slog.Logger
	onError func(w http.ResponseWriter, r *http.Request, err error)
	auto    *learner
	stats   counters
	bg      background // background touches

	owned     *replica.Cluster // the cluster Open built, closed by Close
	closeOnce sync.Once
}

// counters are the Manager's event counts.
type counters struct {
	requests, locked, lockTimeouts, failOpens, conflicts, autoUnlocked,
	errors, created, renewed, destroyed, relocated, touches, ignored atomic.Uint64
}

// Stats is a snapshot of a Manager's event counts since it was created.
type Stats struct {
	// Requests counts requests whose handler used the session.
	Requests uint64
	// Locked counts requests that held the session lock.
	Locked uint64
	// LockTimeouts counts lock waits that timed out.
	LockTimeouts uint64
	// FailOpens counts requests that proceeded without the lock after a
	// lock timeout (Options.FailOpen).
	FailOpens uint64
	// Conflicts counts saves refused because a concurrent request changed
	// the session (store.ErrConflict).
	Conflicts uint64
	// AutoUnlocked counts requests that LockAuto ran without the lock.
	AutoUnlocked uint64
	// Errors counts requests whose session failed (load, lock or save);
	// conflicts and lock timeouts are included.
	Errors uint64
	// Created counts new sessions saved.
	Created uint64
	// Renewed counts session ids renewed with Session.RenewID.
	Renewed uint64
	// Destroyed counts sessions destroyed with Session.Destroy.
	Destroyed uint64
	// Relocated counts sessions that got a new id after a node failure.
	Relocated uint64
	// Touches counts background idle-timeout refreshes.
	Touches uint64
	// Ignored counts requests matched by Options.Ignore or IgnoreFunc.
	Ignored uint64
}

// New returns a Manager for the sessions in st with opts' defaults filled
// in. It fails for a nil store, an unknown locking mode, LockMatching
// without Options.LockPattern, an invalid cookie name, negative numbers,
// and Options.Store or Options.Cluster set (only Open reads them). The
// Manager does not own st: close its cluster after the Manager (see Close).
// Open builds the cluster, the store and the Manager in one call.
func New(st *store.Store, opts Options) (*Manager, error) {
	if st == nil {
		return nil, errors.New("httpsession: nil store")
	}
	if err := checkOpenOnly(&opts); err != nil {
		return nil, err
	}
	if opts.CookieName == "" {
		opts.CookieName = DefaultCookieName
	}
	if err := (&http.Cookie{Name: opts.CookieName, Value: "x"}).Valid(); err != nil {
		return nil, fmt.Errorf("httpsession: cookie name %q: %w", opts.CookieName, err)
	}
	if opts.CookiePath == "" {
		opts.CookiePath = DefaultCookiePath
	}
	if opts.SameSite == 0 {
		opts.SameSite = http.SameSiteLaxMode
	}
	switch opts.Locking {
	case LockAll, LockNone, LockAuto:
	case LockMatching:
		if opts.LockPattern == nil {
			return nil, errors.New("httpsession: LockMatching mode needs Options.LockPattern")
		}
	default:
		return nil, fmt.Errorf("httpsession: unknown locking mode %d", int(opts.Locking))
	}
	if opts.AutoThreshold < 0 || opts.MaxAutoRoutes < 0 || opts.LockTimeout < 0 ||
		opts.IdleTimeout < 0 || opts.Lifetime < 0 || opts.TouchTimeout < 0 || opts.CommitTimeout < 0 {
		return nil, errors.New("httpsession: negative option")
	}
	if opts.AutoThreshold == 0 {
		opts.AutoThreshold = DefaultAutoThreshold
	}
	if opts.MaxAutoRoutes == 0 {
		opts.MaxAutoRoutes = DefaultMaxAutoRoutes
	}
	if opts.TouchTimeout == 0 {
		opts.TouchTimeout = DefaultTouchTimeout
	}
	if opts.CommitTimeout == 0 {
		opts.CommitTimeout = DefaultCommitTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ErrorHandler == nil {
		opts.ErrorHandler = DefaultErrorHandler
	}
	opts.Ignore = append([]*regexp.Regexp(nil), opts.Ignore...)
	m := &Manager{st: st, opts: opts, log: opts.Logger, onError: opts.ErrorHandler}
	m.bg.idle.L = &m.bg.mu
	if opts.Locking == LockAuto {
		m.auto = newLearner(opts.AutoThreshold, opts.MaxAutoRoutes)
	}
	return m, nil
}

// Store returns the store the Manager keeps sessions in.
func (m *Manager) Store() *store.Store { return m.st }

// Options returns the options in force, defaults filled in; Store and
// Cluster are as given to Open (zero for a Manager made by New), so pass
// the result to Open, not to New.
func (m *Manager) Options() Options { return m.opts }

// Stats returns the Manager's event counts.
func (m *Manager) Stats() Stats {
	c := &m.stats
	return Stats{
		Requests: c.requests.Load(), Locked: c.locked.Load(), LockTimeouts: c.lockTimeouts.Load(),
		FailOpens: c.failOpens.Load(), Conflicts: c.conflicts.Load(), AutoUnlocked: c.autoUnlocked.Load(),
		Errors: c.errors.Load(), Created: c.created.Load(), Renewed: c.renewed.Load(),
		Destroyed: c.destroyed.Load(), Relocated: c.relocated.Load(), Touches: c.touches.Load(),
		Ignored: c.ignored.Load(),
	}
}

// Wait blocks until the background idle-timeout refreshes of finished
// requests are done (each is bounded by Options.TouchTimeout). It may be
// called while requests are served (it then also waits for the refreshes
// they start meanwhile); at shutdown, call Close instead.
func (m *Manager) Wait() { m.bg.wait() }

// ignored reports whether r gets no session.
func (m *Manager) ignored(r *http.Request) bool {
	for _, re := range m.opts.Ignore {
		if re.MatchString(r.URL.Path) {
			return true
		}
	}
	return m.opts.IgnoreFunc != nil && m.opts.IgnoreFunc(r)
}

type stateKey struct{}

// Middleware returns a handler that gives every request not matched by
// Options.Ignore a lazily loaded session, reachable from next with
// FromContext or Manager.Session, and commits it: saved before the first
// byte of the response, again when next returns if it changed after that,
// lock released last.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.ignored(r) {
			m.stats.ignored.Add(1)
			next.ServeHTTP(w, r)
			return
		}
		// One allocation for the state, the handle and the writer.
		rs := &reqState{m: m, ctx: r.Context(), flag: flagFrom(r.Context()), w: w}
		r2 := r.WithContext(context.WithValue(r.Context(), stateKey{}, rs))
		rs.req = r2
		rs.handle.rs = rs
		rs.sess = &rs.handle
		rs.ww = responseWriter{rw: w, rs: rs}
		if h := w.Header(); len(h) > 0 {
			rs.outer = h.Clone() // kept when the ErrorHandler answers
		}
		completed := false
		defer func() {
			if !completed { // panic or runtime.Goexit in next: release, save nothing
				rs.abandon()
			}
		}()
		next.ServeHTTP(&rs.ww, r2)
		completed = true
		rs.finish()
	})
}

// FromContext returns the session of the request whose context is ctx, or
// nil when the request did not go through Manager.Middleware or was
// ignored. The methods of a nil *Session return ErrNoSession (or zero
// values), so the result can be used without a check.
func FromContext(ctx context.Context) *Session {
	rs, _ := ctx.Value(stateKey{}).(*reqState)
	if rs == nil {
		return nil
	}
	return rs.sess
}

// Session returns the session of r, like FromContext(r.Context()), and
// remembers r for LockAuto's route (Options.Route, r.Pattern): use it when
// the router runs inside the middleware, so that the route it matched is
// known (the middleware's own request predates the routing).
func (m *Manager) Session(r *http.Request) *Session {
	s := FromContext(r.Context())
	if s != nil && m.auto != nil {
		s.rs.mu.Lock()
		if !s.rs.used {
			s.rs.inner = r
		}
		s.rs.mu.Unlock()
	}
	return s
}

// commitContext returns a context for the middleware's own saves and lock
// releases: not cancelled with the request, bounded by CommitTimeout.
func (m *Manager) commitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), m.opts.CommitTimeout)
}

// touchLater refreshes the idle timeout of s in the background, when it
// is due (store.Config.TouchAfter); when it is not, nothing is started.
func (m *Manager) touchLater(ctx context.Context, s *store.Session) {
	if m.st.SkipTouch(s) {
		return
	}
	if !m.bg.start() {
		return // closed: requests still running after Close refresh nothing
	}
	go func() {
		defer m.bg.done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.TouchTimeout)
		defer cancel()
		if err := m.st.Touch(ctx, s); err != nil {
			m.log.Debug("session idle-timeout refresh failed", "id", s.ID(), "err", err)
			return
		}
		m.stats.touches.Add(1)
	}()
}

// background counts the background work of a Manager. Unlike a
// sync.WaitGroup it may be waited for while work is still being started,
// and after close it starts nothing.
type background struct {
	mu     sync.Mutex
	idle   sync.Cond // signalled when n drops to 0; L is &mu (set by New)
	n      int
	closed bool
}

// start reports whether a job may start (false after close) and counts it.
func (b *background) start() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.n++
	return true
}

// done ends a job that start let in.
func (b *background) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n--; b.n == 0 {
		b.idle.Broadcast()
	}
}

// wait blocks until no job runs.
func (b *background) wait() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.n > 0 {
		b.idle.Wait()
	}
}

// close lets no more jobs start and waits for the running ones.
func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wait()
}
