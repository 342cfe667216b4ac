package httpsession

import (
	"context"
	"errors"
	"time"

	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// Session is the request-scoped handle of a session, returned by
// FromContext and Manager.Session. The session is loaded from memcached at
// the first use of any method and created at the first write. Methods are
// safe for concurrent use by the goroutines of one request; after the
// request finished they return ErrRequestDone. The methods of a nil
// *Session return ErrNoSession or zero values.
//
// The first use of a Session after a load, lock or memcached failure
// returns the failure, and so does every later use: the middleware then
// answers the request with Options.ErrorHandler.
type Session struct {
	rs *reqState
}

// use loads the session if needed and returns the store session, nil when
// the request has none.
func (s *Session) use() (*store.Session, error) {
	if s == nil {
		return nil, ErrNoSession
	}
	rs := s.rs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if err := rs.load(rs.ctx, false); err != nil {
		return nil, err
	}
	return rs.s, nil
}

// write returns the store session to modify, created when the request has
// none.
func (s *Session) write(f func(*store.Session) error) error {
	if s == nil {
		return ErrNoSession
	}
	rs := s.rs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	ss, err := rs.writable()
	if err != nil {
		return err
	}
	return f(ss)
}

// ID returns the session id (the cookie value the client has or will
// get), or "" when the request has no session (yet) or loading it failed.
func (s *Session) ID() string {
	ss, err := s.use()
	if err != nil || ss == nil {
		return ""
	}
	return ss.ID()
}

// Exists reports whether the request has a session: one loaded from its
// cookie or created by a write in this request.
func (s *Session) Exists() (bool, error) {
	ss, err := s.use()
	return ss != nil, err
}

// Get decodes the attribute key into dst, which must be a non-nil pointer.
// It reports false and leaves dst alone when the attribute or the session
// is absent.
func (s *Session) Get(key string, dst any) (bool, error) {
	ss, err := s.use()
	if err != nil || ss == nil {
		return false, err
	}
	return ss.Get(key, dst)
}

// Get returns the attribute key of s decoded as a T, and false when the
// attribute or the session is absent.
func Get[T any](s *Session, key string) (T, bool, error) {
	var v T
	ok, err := s.Get(key, &v)
	return v, ok, err
}

// Has reports whether the attribute key is present.
func (s *Session) Has(key string) (bool, error) {
	ss, err := s.use()
	if err != nil || ss == nil {
		return false, err
	}
	return ss.Has(key), nil
}

// Keys returns the attribute names in sorted order.
func (s *Session) Keys() ([]string, error) {
	ss, err := s.use()
	if err != nil || ss == nil {
		return nil, err
	}
	return ss.Keys(), nil
}

// Set stores v (encoded by the store's codec) as the attribute key,
// creating the session when the request has none. Setting the value an
// attribute has already does not modify the session.
func (s *Session) Set(key string, v any) error {
	return s.write(func(ss *store.Session) error { return ss.Set(key, v) })
}

// Remove removes the attribute key; removing an absent key, or any key of
// an absent session, changes nothing.
func (s *Session) Remove(key string) error {
	ss, err := s.use()
	if err != nil || ss == nil {
		return err
	}
	ss.Remove(key)
	return nil
}

// Clear removes every attribute; the session itself stays.
func (s *Session) Clear() error {
	ss, err := s.use()
	if err != nil || ss == nil {
		return err
	}
	ss.Clear()
	return nil
}

// SetIdleTimeout changes how long this session lives without requests
// (for example for "remember me"), creating the session when the request
// has none. A value of zero or less is ignored.
func (s *Session) SetIdleTimeout(d time.Duration) error {
	return s.write(func(ss *store.Session) error { ss.SetIdleTimeout(d); return nil })
}

// SetLifetime sets the absolute lifetime of this session from its
// creation, creating the session when the request has none. A value of
// zero or less is ignored.
func (s *Session) SetLifetime(d time.Duration) error {
	return s.write(func(ss *store.Session) error { ss.SetLifetime(d); return nil })
}

// RenewID gives the session a new id, keeping its data, and deletes the
// old id's items; the new cookie is sent with the response. Call it on
// login (and privilege changes) against session fixation, before the
// response starts (ErrResponseStarted after). A request without a session
// renews nothing: the session a later Set creates gets a fresh id anyway.
func (s *Session) RenewID(ctx context.Context) error {
	if s == nil {
		return ErrNoSession
	}
	rs := s.rs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if err := rs.load(rs.ctx, false); err != nil {
		return err
	}
	if rs.started.Load() {
		return ErrResponseStarted
	}
	if rs.s == nil {
		return nil
	}
	wasNew := rs.s.IsNew()
	if err := rs.m.st.RenewID(ctx, rs.s); err != nil {
		return rs.fail(err)
	}
	rs.modified = true
	if !wasNew {
		rs.saved = true
		rs.m.stats.renewed.Add(1)
	}
	return nil
}

// Destroy deletes the session from memcached (every copy and its lock)
// and has the response delete the cookie (when it has not started yet).
// Call it on logout. A later Set in the same request starts a new session
// with a new id.
func (s *Session) Destroy(ctx context.Context) error {
	if s == nil {
		return ErrNoSession
	}
	rs := s.rs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if err := rs.load(rs.ctx, false); err != nil {
		return err
	}
	rs.destroyed, rs.modified = true, true
	ss := rs.s
	rs.s = nil
	if ss == nil {
		return nil
	}
	if err := rs.m.st.Destroy(ctx, ss); err != nil {
		return rs.fail(err)
	}
	rs.m.stats.destroyed.Add(1)
	return nil
}

// Lock takes the session lock in the middle of a request (useful under
// LockNone, LockAuto and LockMatching) and reloads the session under it, so
// the handler sees the latest data; changes made before are discarded.
// When the session was not used yet, it is loaded locked. A session that
// holds the lock already, a new session and an absent one are left alone.
// A lock timeout returns an error wrapping lock.ErrLockTimeout (and the
// middleware answers 503), unless Options.FailOpen is set.
func (s *Session) Lock(ctx context.Context) error {
	if s == nil {
		return ErrNoSession
	}
	rs := s.rs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.used {
		return rs.load(ctx, true)
	}
	if err := rs.load(ctx, false); err != nil {
		return err
	}
	ss := rs.s
	if ss == nil || ss.IsNew() || ss.Locked() {
		return nil
	}
	m := rs.m
	err := m.st.Lock(m.lockContext(ctx), ss)
	switch {
	case err == nil:
		m.stats.locked.Add(1)
		return nil
	case errors.Is(err, lock.ErrLockTimeout):
		if rs.failOpen(ss.ID(), err) {
			return nil
		}
		return rs.fail(err)
	case errors.Is(err, store.ErrNotFound):
		rs.s = nil // deleted meanwhile (a logout elsewhere)
		return nil
	default:
		return rs.fail(err)
	}
}

// Locked reports whether the request holds the session lock.
func (s *Session) Locked() bool {
	if s == nil {
		return false
	}
	rs := s.rs
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.s != nil && rs.s.Locked()
}
