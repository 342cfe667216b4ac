package httpsession

import (
	"context"

	"github.com/mcsession/mcsession/store"
)

// SetUser links the session to the user id user, creating the session when
// the request has none; "" unlinks it. Call it at login, after RenewID.
// The user is stored with the session, and the save before the response
// lists the session in the user's index in memcached, from which
// Manager.UserSessions and Manager.DestroyUser find it on any app server
// ("log out everywhere"). When the index cannot be written, the session is
// destroyed and the request fails (503): a session of a user is never left
// where DestroyUser cannot find it. It returns store.ErrInvalidUser for a
// user id over store.MaxUserLen bytes or not valid UTF-8.
func (s *Session) SetUser(user string) error {
	return s.write(func(ss *store.Session) error { return ss.SetUser(user) })
}

// User returns the user id the session is linked to (see SetUser), or ""
// when it has none, the request has no session or loading it failed.
func (s *Session) User() string {
	ss, err := s.use()
	if err != nil || ss == nil {
		return ""
	}
	return ss.User()
}

// UserSessions returns the sessions linked to user (see Session.SetUser),
// oldest first, on every app server: their ids, creation and last-seen
// times (see store.Store.UserSessions). Sessions that no longer exist are
// left out. A user without sessions gets an empty list; an empty or
// invalid user id gives store.ErrInvalidUser.
func (m *Manager) UserSessions(ctx context.Context, user string) ([]store.UserSession, error) {
	return m.st.UserSessions(ctx, user)
}

// DestroyUser destroys every session linked to user, every copy on every
// node, from any app server ("log out everywhere"), and returns how many
// it destroyed (see store.Store.DestroyUser, also for what happens to a
// login that races it). Their cookies then name no session: their next
// request gets a fresh one. When the current request's session is one of
// them, also call its Session.Destroy, which deletes the cookie in the
// response (and its lock, already gone from memcached, without error).
// An empty or invalid user id gives store.ErrInvalidUser.
func (m *Manager) DestroyUser(ctx context.Context, user string) (int, error) {
	return m.st.DestroyUser(ctx, user)
}
