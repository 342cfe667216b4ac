package httpsession

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// reqState is the session state of one request: the lazily loaded store
// session, the locking decision and the commit bookkeeping.
type reqState struct {
	m      *Manager
	ctx    context.Context     // the request's context (without the state)
	req    *http.Request       // the request passed to the handler
	w      http.ResponseWriter // the underlying response writer
	sess   *Session            // the handle given to handlers
	outer  http.Header         // response headers set before the middleware ran
	handle Session             // sess points here
	ww     responseWriter      // the writer given to the handler

	started atomic.Bool // the response started: begin ran
	aborted atomic.Bool // the ErrorHandler answered instead of the handler

	mu        sync.Mutex
	flag      LockOverride
	inner     *http.Request // the request handed to Manager.Session, nil until then
	route     string        // LockAuto's route key, set when the session is first used
	used      bool          // the session was used: cookie read, load attempted
	cookie    string        // the request's well-formed session id, "" for none
	clientID  string        // the session id the client has after this response
	expires   time.Time     // the deadline the client's cookie carries (PersistentCookie)
	hadCookie bool          // the request carried a cookie of our name
	s         *store.Session
	err       error // sticky failure: every later use returns it
	modified  bool  // the request wrote (or tried to write) the session
	saved     bool  // a save or renewal wrote the session
	destroyed bool
	done      bool
}

// load reads the session cookie and loads the session, locked when the
// mode, the request's flag or force say so. It runs once; a request
// without a usable cookie or whose session is unknown gets no session
// (rs.s stays nil). Callers hold rs.mu.
func (rs *reqState) load(ctx context.Context, force bool) error {
	if rs.done {
		return ErrRequestDone
	}
	if rs.err != nil {
		return rs.err
	}
	if rs.used {
		return nil
	}
	rs.used = true
	m := rs.m
	m.stats.requests.Add(1)
	if m.auto != nil {
		rs.route = rs.routeKey()
	}
	for _, c := range rs.req.CookiesNamed(m.opts.CookieName) {
		rs.hadCookie = true
		if m.st.ValidID(c.Value) {
			rs.cookie = c.Value
			break
		}
	}
	if rs.cookie == "" {
		return nil
	}
	rs.clientID = rs.cookie
	var (
		s   *store.Session
		err error
	)
	if force || rs.wantLock() {
		s, err = m.st.LoadLocked(m.lockContext(ctx), rs.cookie)
		if errors.Is(err, lock.ErrLockTimeout) && rs.failOpen(rs.cookie, err) {
			s, err = m.st.Load(ctx, rs.cookie)
		}
	} else {
		s, err = m.st.Load(ctx, rs.cookie)
	}
	switch {
	case err == nil:
		rs.s = s
		rs.expires = s.Deadline()
		if s.Locked() {
			m.stats.locked.Add(1)
		}
		if s.ID() != rs.cookie {
			m.stats.relocated.Add(1)
		}
		return nil
	case errors.Is(err, store.ErrNotFound):
		m.log.Debug("httpsession: session cookie names no session; a write starts a fresh one", "cookie", rs.cookie, "err", err)
		return nil
	default:
		return rs.fail(err)
	}
}

// wantLock applies the request's flag and the Manager's mode.
func (rs *reqState) wantLock() bool {
	switch rs.flag {
	case ForceLocking:
		return true
	case SkipLocking:
		return false
	}
	m := rs.m
	switch m.opts.Locking {
	case LockNone:
		return false
	case LockMatching:
		return m.opts.LockPattern.MatchString(rs.req.Method + " " + rs.req.URL.Path)
	case LockAuto:
		if m.auto.locks(rs.route) {
			return true
		}
		m.stats.autoUnlocked.Add(1)
		return false
	default:
		return true
	}
}

// failOpen counts a lock timeout of session id and reports whether the
// request goes on without the lock (Options.FailOpen), which it counts and
// logs.
func (rs *reqState) failOpen(id string, err error) bool {
	m := rs.m
	m.stats.lockTimeouts.Add(1)
	if !m.opts.FailOpen {
		return false
	}
	m.stats.failOpens.Add(1)
	m.log.Warn("httpsession: session lock timed out; proceeding without it (FailOpen)",
		"id", id, "path", rs.req.URL.Path, "err", err)
	return true
}

// lockContext applies Options.LockTimeout to ctx.
func (m *Manager) lockContext(ctx context.Context) context.Context {
	if m.opts.LockTimeout > 0 {
		return lock.WithWaitTimeout(ctx, m.opts.LockTimeout)
	}
	return ctx
}

// writable returns the session to modify, creating a new one when the
// request has none. Callers hold rs.mu.
func (rs *reqState) writable() (*store.Session, error) {
	if err := rs.load(rs.ctx, false); err != nil {
		return nil, err
	}
	if rs.s != nil {
		return rs.s, nil
	}
	m := rs.m
	s, err := m.st.NewSession(rs.ctx)
	if err != nil {
		return nil, rs.fail(err)
	}
	s.SetIdleTimeout(m.opts.IdleTimeout)
	s.SetLifetime(m.opts.Lifetime)
	rs.s = s
	return s, nil
}

// fail records a session failure: counted, logged, and returned by every
// later use of the session. Callers hold rs.mu.
func (rs *reqState) fail(err error) error {
	m := rs.m
	m.stats.errors.Add(1)
	if errors.Is(err, store.ErrConflict) {
		m.stats.conflicts.Add(1)
	}
	msg := "httpsession: session failure"
	if rs.started.Load() {
		msg = "httpsession: session failure after the response started"
	}
	level := slog.LevelError
	switch {
	case errors.Is(err, context.Canceled):
		level = slog.LevelDebug // the client went away
	case StatusCode(err) != http.StatusInternalServerError:
		level = slog.LevelWarn // unavailable, lock timeout, conflict: transient
	}
	m.log.Log(rs.ctx, level, msg, "path", rs.req.URL.Path, "cookie", rs.cookie, "err", err)
	if rs.err == nil {
		rs.err = err
	}
	return err
}

// save writes the session when it is new or modified; with release, it
// also releases the lock in the same store call (SaveAndRelease). Callers
// hold rs.mu.
func (rs *reqState) save(release bool) error {
	s := rs.s
	if !s.IsNew() && !s.Modified() {
		if release {
			rs.release()
		}
		return nil
	}
	rs.modified = true
	m := rs.m
	ctx, cancel := m.commitContext(rs.ctx)
	defer cancel()
	isNew, before := s.IsNew(), s.ID()
	var err error
	if release {
		err = m.st.SaveAndRelease(ctx, s)
	} else {
		err = m.st.Save(ctx, s)
	}
	if err != nil && (s.IsNew() || s.Modified()) {
		return rs.fail(err) // the save failed (the lock is released all the same)
	}
	if err != nil {
		m.log.Warn("httpsession: session lock release failed", "id", s.ID(), "err", err)
	}
	rs.saved = true
	switch {
	case isNew:
		m.stats.created.Add(1)
	case s.ID() != before:
		m.stats.relocated.Add(1)
	}
	return nil
}

// begin runs before the first byte of the response: it saves the session
// and sets the cookie headers, or, when the session failed, has the
// ErrorHandler answer instead. It reports whether the handler's response
// may go out.
func (rs *reqState) begin() bool {
	if rs.started.Load() {
		return !rs.aborted.Load()
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.beginLocked()
}

func (rs *reqState) beginLocked() bool {
	if rs.started.Load() {
		return !rs.aborted.Load()
	}
	if rs.err == nil && rs.s != nil {
		_ = rs.save(false)
	}
	if rs.err != nil {
		rs.aborted.Store(true)
		rs.started.Store(true)
		rs.answerError()
		return false
	}
	rs.setHeaders()
	rs.started.Store(true)
	return true
}

// answerError replaces the handler's response with the ErrorHandler's:
// the headers the handler set are dropped, those set before the
// middleware ran are kept. Callers hold rs.mu.
func (rs *reqState) answerError() {
	h := rs.w.Header()
	clear(h)
	for k, v := range rs.outer {
		h[k] = v
	}
	if rs.used {
		addVary(h)
	}
	r := rs.req.WithContext(context.WithValue(rs.req.Context(), stateKey{}, (*reqState)(nil)))
	rs.m.onError(rs.w, r, rs.err)
}

// setHeaders sends the session cookie when the client's is out of date
// (new session, relocation, renewal) or the session was destroyed, and
// "Vary: Cookie" when the session was used. Callers hold rs.mu.
func (rs *reqState) setHeaders() {
	if !rs.used {
		return
	}
	addVary(rs.w.Header())
	switch {
	case rs.s != nil && !rs.s.IsNew():
		id, deadline := rs.s.ID(), rs.s.Deadline()
		if id != rs.clientID || (rs.m.opts.PersistentCookie && !deadline.Equal(rs.expires)) {
			http.SetCookie(rs.w, rs.m.cookie(rs.req, id, deadline))
			rs.clientID, rs.expires = id, deadline
		}
	case rs.destroyed && rs.hadCookie:
		c := rs.m.cookie(rs.req, "", time.Time{})
		c.MaxAge = -1
		http.SetCookie(rs.w, c)
		rs.clientID = ""
	}
}

// cookie returns the session cookie for value; with PersistentCookie it
// expires at deadline, when set.
func (m *Manager) cookie(r *http.Request, value string, deadline time.Time) *http.Cookie {
	secure := false
	switch m.opts.Secure {
	case SecureAuto:
		secure = r.TLS != nil
	case SecureAlways:
		secure = true
	}
	c := &http.Cookie{
		Name: m.opts.CookieName, Value: value,
		Path: m.opts.CookiePath, Domain: m.opts.CookieDomain,
		Secure: secure, HttpOnly: !m.opts.DisableHTTPOnly, SameSite: m.opts.SameSite,
	}
	if m.opts.PersistentCookie && !deadline.IsZero() {
		c.Expires = deadline
	}
	return c
}

// addVary adds "Cookie" to the Vary header unless it is there.
func addVary(h http.Header) {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, "Cookie") {
				return
			}
		}
	}
	h.Add("Vary", "Cookie")
}

// finish runs when the handler returned: the session is committed if the
// response has not started (then the implicit 200 follows), changes made
// after the response started are saved, the lock is released last, and an
// unchanged session gets its idle timeout refreshed in the background.
func (rs *reqState) finish() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.started.Load() {
		if rs.err == nil && rs.s != nil && rs.s.Locked() {
			_ = rs.save(true) // save and release in one call, then the headers
		}
		rs.beginLocked()
	}
	rs.done = true
	m := rs.m
	s := rs.s
	if s != nil && rs.err == nil && (s.IsNew() || s.Modified()) {
		if s.IsNew() {
			// Created after the response started: the cookie cannot be
			// sent any more, so the client could never find it again.
			m.stats.errors.Add(1)
			m.log.Warn("httpsession: session created after the response started: its cookie cannot be sent; not saved",
				"path", rs.req.URL.Path)
		} else {
			_ = rs.save(s.Locked())
		}
	}
	if s != nil && s.Locked() {
		rs.release()
	}
	if s != nil && !s.IsNew() && rs.err == nil && s.ID() != rs.clientID {
		// Relocated (or renewed) after the response started.
		m.stats.errors.Add(1)
		m.log.Warn("httpsession: session id changed after the response started: the client keeps the old cookie",
			"from", rs.clientID, "to", s.ID(), "path", rs.req.URL.Path)
	} else if m.opts.PersistentCookie && s != nil && !s.IsNew() && rs.err == nil && !s.Deadline().Equal(rs.expires) {
		m.log.Warn("httpsession: session lifetime changed after the response started: the cookie keeps its old expiry",
			"id", s.ID(), "path", rs.req.URL.Path)
	}
	if s != nil && !s.IsNew() && !rs.saved && rs.err == nil {
		m.touchLater(rs.ctx, s)
	}
	if m.auto != nil && rs.used {
		m.auto.record(rs.route, rs.modified)
	}
}

// release releases the session lock. Callers hold rs.mu.
func (rs *reqState) release() {
	m := rs.m
	ctx, cancel := m.commitContext(rs.ctx)
	defer cancel()
	if err := m.st.Release(ctx, rs.s); err != nil {
		m.log.Warn("httpsession: session lock release failed", "id", rs.s.ID(), "err", err)
	}
}

// abandon runs when the handler panicked: nothing is saved, the lock is
// released.
func (rs *reqState) abandon() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.done = true
	if rs.s != nil && rs.s.Locked() {
		rs.release()
	}
}
