package server

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/mcsession/mcsession/httpsession"
)

// UserParam is the query parameter of POST /api/login that links the
// session to a user.
const UserParam = "user"

// UserSessionsResponse is the JSON body of GET /api/sessions.
type UserSessionsResponse struct {
	// Instance is the name of the server that answered.
	Instance string `json:"instance"`
	// User is the current session's user.
	User string `json:"user"`
	// Sessions are the user's sessions on every server, oldest first.
	Sessions []UserSession `json:"sessions"`
}

// UserSession is one session of GET /api/sessions.
type UserSession struct {
	// ID is the session id.
	ID string `json:"id"`
	// Created is when the session was created; LastSeen when it was last
	// saved or had its idle timeout refreshed (see store.UserSession).
	Created  time.Time `json:"created"`
	LastSeen time.Time `json:"last_seen"`
	// Current is true for the session of the request.
	Current bool `json:"current"`
}

// LogoutAllResponse is the JSON body of POST /api/logout-all.
type LogoutAllResponse struct {
	// Instance is the name of the server that answered.
	Instance string `json:"instance"`
	// User is the user whose sessions were destroyed.
	User string `json:"user"`
	// Destroyed is how many sessions were destroyed (the current one
	// included).
	Destroyed int `json:"destroyed"`
}

// ErrorResponse is the JSON body of a 401 answer of GET /api/sessions and
// POST /api/logout-all.
type ErrorResponse struct {
	// Instance is the name of the server that answered.
	Instance string `json:"instance"`
	// Error says what is wrong.
	Error string `json:"error"`
}

// currentUser returns the user of the request's session; it answers the
// request itself (an error, or 401 when the session has no user) and
// returns "" otherwise.
func (s *Server) currentUser(w http.ResponseWriter, r *http.Request) (*httpsession.Session, string) {
	w.Header().Set(InstanceHeader, s.name)
	sess := s.m.Session(r)
	if _, err := sess.Exists(); err != nil { // loads (and, by mode, locks) the session
		httpsession.DefaultErrorHandler(w, r, err)
		return nil, ""
	}
	user := sess.User()
	if user == "" {
		w.Header().Set("WWW-Authenticate", `Cookie realm="mcsession example", form-action="/api/login?user=NAME"`)
		writeJSON(w, http.StatusUnauthorized, ErrorResponse{Instance: s.name,
			Error: "no user: this session is not logged in (POST /api/login?user=NAME)"})
		return nil, ""
	}
	return sess, user
}

// userSessions answers GET /api/sessions: the current user's sessions.
func (s *Server) userSessions(w http.ResponseWriter, r *http.Request) {
	sess, user := s.currentUser(w, r)
	if user == "" {
		return
	}
	list, err := s.m.UserSessions(r.Context(), user)
	if err != nil {
		httpsession.DefaultErrorHandler(w, r, err)
		return
	}
	resp := UserSessionsResponse{Instance: s.name, User: user, Sessions: []UserSession{}}
	current := sess.ID()
	for _, us := range list {
		resp.Sessions = append(resp.Sessions, UserSession{ID: us.ID, Created: us.Created, LastSeen: us.LastSeen, Current: us.ID == current})
	}
	writeJSON(w, http.StatusOK, resp)
}

// logoutAll answers POST /api/logout-all: every session of the current
// user is destroyed on every node, and this one's cookie deleted.
func (s *Server) logoutAll(w http.ResponseWriter, r *http.Request) {
	sess, user := s.currentUser(w, r)
	if user == "" {
		return
	}
	n, err := s.m.DestroyUser(r.Context(), user)
	if err != nil {
		httpsession.DefaultErrorHandler(w, r, err)
		return
	}
	if err := sess.Destroy(r.Context()); err != nil { // the cookie goes too
		httpsession.DefaultErrorHandler(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, LogoutAllResponse{Instance: s.name, User: user, Destroyed: n})
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
