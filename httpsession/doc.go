// Package httpsession is net/http middleware for sessions kept in
// memcached by package store: non-sticky by default, sticky with
// store.Config.Sticky (Options.Store with Open).
//
// Open builds everything from the list of memcached nodes; Close shuts it
// down after http.Server.Shutdown:
//
//	sessions, err := httpsession.Open("n1=10.0.0.1:11211,n2=10.0.0.2:11211", httpsession.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer sessions.Close()
//	handler := sessions.Middleware(mux)
//
// (New makes a Manager over a store.Store built with the layered
// constructors of packages replica and store, for sharing them.)
//
// Handlers reach the request's session with FromContext(r.Context()) or
// Manager.Session(r) and use it like a typed map:
//
//	s := httpsession.FromContext(r.Context())
//	n, _, err := httpsession.Get[int](s, "visits")
//	if err == nil {
//		err = s.Set("visits", n+1)
//	}
//	if err != nil {
//		http.Error(w, "session error", http.StatusInternalServerError)
//		return
//	}
//
// When memcached or the lock failed, the middleware has answered already
// (503 by default, see Errors below) and the handler's writes are
// discarded; other errors, such as a stored value that does not decode
// into the type asked for, are the handler's to answer.
//
// Remove and Clear delete attributes, RenewID gives the session a new id
// (at login), Destroy deletes it (at logout). SetUser links it to a user
// id (at login, after RenewID); Manager.UserSessions lists a user's
// sessions and Manager.DestroyUser ends them all, on every app server
// ("log out everywhere", see package store).
//
// # Commit timing
//
// The session is loaded lazily: the middleware does not talk to memcached
// until the handler first uses the session, so a handler that never does
// costs nothing. The session is saved before the first byte of the response
// is written (WriteHeader, Write, Flush, Hijack and http.ResponseController
// all count), so that the Set-Cookie header can still be sent and the
// client's next request sees the change; changes made after that are saved
// when the handler returns. The session lock is released last. An unchanged
// session gets its idle timeout refreshed (memcached touch) in the
// background after the handler returned, so a read-only request without a
// lock costs one memcached round trip.
//
// A session is created only when a handler writes to it: a read-only
// request without a session cookie creates nothing and sets no cookie. A
// malformed, forged or unknown cookie is treated as no session.
//
// # Locking
//
// Options.Locking selects how requests of the same session are serialised:
// LockAll (the default) locks every request that uses an existing session,
// LockNone locks none, LockAuto learns per route which requests never
// modify the session and stops locking them, and LockMatching locks the
// requests whose "METHOD PATH" matches a regular expression. ForceLock,
// SkipLock and OverrideLocking override the mode for one handler or request,
// and Session.Lock takes the lock lazily in the middle of a request.
// LockAuto groups requests by route: the http.ServeMux pattern, or what
// Options.Route says (for other routers).
//
// Saves are guarded by memcached CAS whatever the mode, so a request that
// ran without the lock never overwrites a newer version silently: its save
// fails with store.ErrConflict, which the ErrorHandler reports (409 by
// default).
//
// # Errors
//
// When loading, locking or saving fails before the response started, the
// handler's response is replaced by Options.ErrorHandler's (by default 503
// with Retry-After: 1 for a lock timeout or unreachable memcached, 409 for
// a conflict, 500 for a session too large): see DefaultErrorHandler. Writes
// of the handler after that return ErrAborted. Failures after the response
// started are logged and counted in Stats.
package httpsession
