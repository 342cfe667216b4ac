// Package server builds the HTTP handler of the mcsession example app: a
// small JSON API whose every request under /api runs through
// httpsession.Manager.Middleware, so that two or more app processes over the
// same memcached nodes share their sessions without sticky routing.
//
// Routes:
//
//	GET    /api/session          read-only; creates no session
//	POST   /api/session?K=V&...  sets string attributes
//	DELETE /api/session?key=K    removes attribute K
//	POST   /api/counter          increments the int attribute "count"
//	POST   /api/login[?user=U]   renews the session id, keeps the data; with
//	                             user, also links the session to user U
//	POST   /api/logout           destroys the session
//	GET    /api/sessions         the current user's sessions on every server (JSON
//	                             UserSessionsResponse; 401 without a user)
//	POST   /api/logout-all       destroys every session of the current user, on
//	                             every node ("log out everywhere"; JSON
//	                             LogoutAllResponse; 401 without a user)
//	GET    /api/nodes            this server's view of the memcached nodes
//	GET    /api/stats            the session layer's counters (JSON)
//	GET    /metrics              the same and more in the Prometheus text format
//	GET    /readyz               readiness: 200 while a memcached node answers, else 503
//	GET    /static/...           static files, no session work
//	GET    /healthz              200 while the server is up
//
// Every session endpoint except /api/sessions and /api/logout-all answers
// with a Response (which names the session's user, if any); all accept the
// control
// parameter sleep=DURATION: the handler sleeps after the session is loaded
// and before it is saved, to widen race windows in tests and demos.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// Defaults for Config fields left at their zero value.
const (
	// DefaultName is the instance name when Config.Name is empty.
	DefaultName = "app"
	// DefaultLocking is the locking mode when Config.Locking is empty.
	DefaultLocking = "all"
	// DefaultIdleTimeout is how long a session lives without requests.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultLifetime is the absolute lifetime of a session.
	DefaultLifetime = 24 * time.Hour
	// DefaultLockTimeout is how long a request waits for a session lock.
	DefaultLockTimeout = 2 * time.Second
	// DefaultCookieName is the name of the session cookie.
	DefaultCookieName = httpsession.DefaultCookieName
	// MaxSleep bounds the sleep=DURATION control parameter.
	MaxSleep = time.Minute
)

// CountKey is the session attribute POST /api/counter increments.
const CountKey = "count"

// SleepParam is the query parameter that makes a handler sleep between
// loading and saving the session. It is never stored as an attribute.
const SleepParam = "sleep"

// InstanceHeader is the response header that names the instance that
// served a request (the same value as Response.Instance).
const InstanceHeader = "X-Instance"

//go:embed static
var staticFiles embed.FS

// Config configures the example app. Only Nodes is required.
type Config struct {
	// Name is the instance name reported in every response. Default
	// DefaultName ("app").
	Name string
	// Nodes is the memcached node list, "n1=HOST:PORT,n2=HOST:PORT,...",
	// in the format of replica.ParseNodes. Required.
	Nodes string
	// Locking is the session locking mode: "all", "none", "auto" or
	// "pattern:REGEXP", where REGEXP is matched against "METHOD PATH"
	// (see ParseLocking). Default DefaultLocking ("all").
	Locking string
	// IdleTimeout is how long a session lives without requests. Default
	// DefaultIdleTimeout (30 min).
	IdleTimeout time.Duration
	// Lifetime is the absolute lifetime of a session. Default
	// DefaultLifetime (24 h).
	Lifetime time.Duration
	// LockTimeout is how long a request waits for the lock of its session
	// before it is answered 503. Default DefaultLockTimeout (2 s).
	LockTimeout time.Duration
	// DrainTimeout is how long a memcached node removed from the list at
	// run time (replica.Cluster.SetNodes) is still read, so that its
	// sessions move on their next request, before it is dropped. Default:
	// IdleTimeout (a session not requested for that long has expired).
	DrainTimeout time.Duration
	// CookieName is the name of the session cookie. Default
	// DefaultCookieName ("mcsession").
	CookieName string
	// Sticky turns on sticky mode (store.Config.Sticky): sessions are
	// served from this server's memory after a version probe of
	// memcached. Default false (non-sticky).
	Sticky bool
	// StickyTrust, with Sticky, skips the version probe
	// (store.Config.TrustSticky). Default false.
	StickyTrust bool
	// AsyncBackup turns on asynchronous writes (store.Config.AsyncWrites):
	// the backup copy in non-sticky mode, the whole write in sticky mode.
	// Default false.
	AsyncBackup bool
	// Encryption, when not nil, encrypts sessions at rest
	// (store.Config.Encryption): every value stored in memcached is sealed
	// with AES-256-GCM, and one that does not open is a fresh session. Use
	// codec.ParseKeyRing (the first key seals, every key opens). Default
	// nil: sessions are stored in clear.
	Encryption codec.Sealer
	// AllowPlaintext, with Encryption, also reads sessions stored in clear
	// (store.Config.AllowPlaintext), while encryption is turned on over
	// live sessions. Default false: a session in clear is a fresh session.
	AllowPlaintext bool
	// TLS, when not nil, connects to memcached with TLS
	// (replica.Config.TLS): RootCAs verifies the nodes' certificates,
	// Certificates holds a client certificate for nodes that require one.
	// Default nil: plaintext.
	TLS *tls.Config
	// Logger receives the session layer's failures, relocations and
	// breaker changes. Default slog.Default().
	Logger *slog.Logger
}

// Response is the JSON body of every session endpoint.
type Response struct {
	// Instance is the name of the server that answered (Config.Name).
	Instance string `json:"instance"`
	// ID is the session id after the request, "" when there is none.
	ID string `json:"id"`
	// Attrs holds every attribute of the session, decoded generically.
	Attrs map[string]any `json:"attrs"`
	// Count is the int attribute CountKey, 0 when absent.
	Count int `json:"count"`
	// User is the user the session is linked to (POST /api/login?user=U),
	// absent when none.
	User string `json:"user,omitempty"`
}

// NodesResponse is the JSON body of GET /api/nodes.
type NodesResponse struct {
	// Instance is the name of the server that answered.
	Instance string `json:"instance"`
	// Nodes is the server's view of every memcached node, in list order.
	Nodes []NodeView `json:"nodes"`
}

// StatsResponse is the JSON body of GET /api/stats: the session layer's
// counters on this server.
type StatsResponse struct {
	// Instance is the name of the server that answered.
	Instance string `json:"instance"`
	// Sticky and Async say the mode (Config.Sticky, Config.AsyncBackup).
	Sticky bool `json:"sticky"`
	Async  bool `json:"async"`
	// Encrypted says whether sessions are encrypted at rest
	// (Config.Encryption); Store.Undecryptable counts the values that did
	// not open.
	Encrypted bool `json:"encrypted"`
	// Store is store.Stats: loads, saves, conflicts, relocations, and the
	// asynchronous writes (AsyncPending: queued or running now).
	Store store.Stats `json:"store"`
	// Cache is store.CacheStats of the sticky-mode cache (zero otherwise).
	Cache store.CacheStats `json:"cache"`
	// Manager is httpsession.Stats: requests, locked, lock timeouts, errors.
	Manager httpsession.Stats `json:"manager"`
	// Lock is the session lock's statistics (store.Store.LockStats): waits,
	// wait time, timeouts, lapses and the acquire latency.
	Lock lock.Stats `json:"lock"`
	// Pools is each memcached node's connection statistics as this server
	// sees them, with its round-trip latency (replica.PoolStats).
	Pools []replica.PoolStats `json:"pools"`
}

// NodeView is one memcached node as this server's circuit breaker sees it
// (replica.NodeStatus with JSON names).
type NodeView struct {
	// ID is the node id, e.g. "n1".
	ID string `json:"id"`
	// Addr is the node's host:port.
	Addr string `json:"addr"`
	// State is the breaker state: "closed", "half-open" or "open".
	State string `json:"state"`
	// Failures is the breaker's current run of consecutive failures.
	Failures uint32 `json:"failures"`
	// Draining is true for a node removed from the list at run time
	// (SIGHUP with -nodes-file) that is still read until its drain ends.
	Draining bool `json:"draining,omitempty"`
}

// Server is the example app: an http.Handler over a session store. Create
// it with New and Close it after the HTTP server has shut down.
type Server struct {
	name    string
	cluster *replica.Cluster
	st      *store.Store
	m       *httpsession.Manager
	h       http.Handler
	sticky  bool
	async   bool
	sealed  bool // Config.Encryption is set
}

// ParseLocking parses a locking mode as Config.Locking takes it: "all",
// "none", "auto" or "pattern:REGEXP" (the regexp is matched against
// "METHOD PATH", for example "pattern:^POST /api/"). The regexp is nil
// except for the pattern mode.
func ParseLocking(v string) (httpsession.LockMode, *regexp.Regexp, error) {
	switch {
	case v == "all":
		return httpsession.LockAll, nil, nil
	case v == "none":
		return httpsession.LockNone, nil, nil
	case v == "auto":
		return httpsession.LockAuto, nil, nil
	case strings.HasPrefix(v, "pattern:"):
		expr := strings.TrimPrefix(v, "pattern:")
		if expr == "" {
			return 0, nil, errors.New("server: locking pattern: empty regexp")
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return 0, nil, fmt.Errorf("server: locking pattern: %w", err)
		}
		return httpsession.LockMatching, re, nil
	}
	return 0, nil, fmt.Errorf("server: unknown locking mode %q (want all, none, auto or pattern:REGEXP)", v)
}

// New builds the app from cfg with httpsession.Open (a replica.Cluster over
// cfg.Nodes, a store.Store and an httpsession.Manager). It does not contact
// memcached.
func New(cfg Config) (*Server, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Locking == "" {
		cfg.Locking = DefaultLocking
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.CookieName == "" {
		cfg.CookieName = DefaultCookieName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleTimeout < 0 || cfg.Lifetime < 0 || cfg.LockTimeout < 0 {
		return nil, errors.New("server: negative duration")
	}
	mode, pattern, err := ParseLocking(cfg.Locking)
	if err != nil {
		return nil, err
	}
	m, err := httpsession.Open(cfg.Nodes, httpsession.Options{
		CookieName:  cfg.CookieName,
		IdleTimeout: cfg.IdleTimeout,
		Lifetime:    cfg.Lifetime,
		Locking:     mode,
		LockPattern: pattern,
		LockTimeout: cfg.LockTimeout,
		Ignore: []*regexp.Regexp{
			regexp.MustCompile(`^/static/`),
			regexp.MustCompile(`^/healthz$`),
			regexp.MustCompile(`^/api/nodes$`),
			regexp.MustCompile(`^/api/stats$`),
			regexp.MustCompile(`^/readyz$`),
			regexp.MustCompile(`^/metrics$`),
		},
		Logger:  cfg.Logger,
		Cluster: replica.Config{DrainTimeout: cmp.Or(cfg.DrainTimeout, cfg.IdleTimeout), TLS: cfg.TLS},
		Store: store.Config{
			IdleTimeout: cfg.IdleTimeout, Lifetime: cfg.Lifetime,
			Sticky: cfg.Sticky, TrustSticky: cfg.StickyTrust, AsyncWrites: cfg.AsyncBackup,
			Encryption: cfg.Encryption, AllowPlaintext: cfg.AllowPlaintext,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	st := m.Store()
	cluster := st.Cluster()
	s := &Server{name: cfg.Name, cluster: cluster, st: st, m: m, sticky: cfg.Sticky, async: cfg.AsyncBackup, sealed: cfg.Encryption != nil}

	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		_ = m.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/session", s.withSession(s.getSession))
	mux.HandleFunc("POST /api/session", s.withSession(s.setAttrs))
	mux.HandleFunc("DELETE /api/session", s.withSession(s.deleteAttr))
	mux.HandleFunc("POST /api/counter", s.withSession(s.increment))
	mux.HandleFunc("POST /api/login", s.withSession(s.login))
	mux.HandleFunc("POST /api/logout", s.withSession(s.logout))
	mux.HandleFunc("GET /api/sessions", s.userSessions)
	mux.HandleFunc("POST /api/logout-all", s.logoutAll)
	mux.HandleFunc("GET /api/nodes", s.nodes)
	mux.HandleFunc("GET /api/stats", s.stats)
	mux.Handle("GET /readyz", m.ReadinessHandler())
	mux.Handle("GET /metrics", metricsHandler(m))
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(InstanceHeader, s.name)
		fmt.Fprintln(w, "ok")
	})
	s.h = m.Middleware(mux)
	return s, nil
}

// ServeHTTP serves the app's routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

// Name returns the instance name.
func (s *Server) Name() string { return s.name }

// Store returns the session store.
func (s *Server) Store() *store.Store { return s.st }

// Manager returns the session middleware's manager.
func (s *Server) Manager() *httpsession.Manager { return s.m }

// Close waits for the background idle-timeout refreshes of finished
// requests and closes the memcached connections. Call it after
// http.Server.Shutdown returned.
func (s *Server) Close() error { return s.m.Close() }

// Shutdown is Close bounded by ctx: it writes the session writes still
// queued (Config.AsyncBackup) and closes the memcached connections; the
// error says how many writes were not done when ctx ended.
func (s *Server) Shutdown(ctx context.Context) error { return s.m.Shutdown(ctx) }

// errBadRequest marks a client error in a request's parameters.
var errBadRequest = errors.New("bad request")

// sessionHandler is one session endpoint: it uses sess (already loaded,
// and held for the sleep parameter) and reports whether the session still
// exists afterwards.
type sessionHandler func(ctx context.Context, r *http.Request, sess *httpsession.Session) (exists bool, err error)

// withSession wraps an endpoint: it loads the session, sleeps for the
// sleep parameter, runs h, then commits the session by starting the
// response before it renders the session's state after the commit.
func (s *Server) withSession(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(InstanceHeader, s.name)
		sleep, err := sleepParam(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sess := s.m.Session(r)
		// First use: loads (and, by mode, locks) the session.
		if _, err := sess.Get(CountKey, new(int)); err != nil {
			httpsession.DefaultErrorHandler(w, r, err)
			return
		}
		if sleep > 0 {
			t := time.NewTimer(sleep)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		exists, err := h(r.Context(), r, sess)
		switch {
		case errors.Is(err, errBadRequest):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			httpsession.DefaultErrorHandler(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		// Starting the response saves the session (and sets the cookie),
		// so the id rendered below is the one after the save, even when
		// the save moved the session to another node.
		w.WriteHeader(http.StatusOK)
		resp := Response{Instance: s.name, Attrs: map[string]any{}}
		if exists {
			resp = s.render(sess)
		}
		_ = json.NewEncoder(w).Encode(resp)
	}
}

// render describes sess as a Response.
func (s *Server) render(sess *httpsession.Session) Response {
	resp := Response{Instance: s.name, ID: sess.ID(), Attrs: map[string]any{}, User: sess.User()}
	keys, _ := sess.Keys() // an error here was answered by the middleware already
	for _, k := range keys {
		var v any
		if ok, err := sess.Get(k, &v); ok && err == nil {
			resp.Attrs[k] = v
		}
	}
	var n int
	if ok, err := sess.Get(CountKey, &n); ok && err == nil {
		resp.Count = n
	}
	return resp
}

// sleepParam returns the request's sleep=DURATION parameter, 0 when absent.
func sleepParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get(SleepParam)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > MaxSleep {
		return 0, fmt.Errorf("%w: %s=%q: want a duration between 0 and %v", errBadRequest, SleepParam, v, MaxSleep)
	}
	return d, nil
}

// getSession changes nothing: it creates no session and sets no cookie.
func (s *Server) getSession(ctx context.Context, r *http.Request, sess *httpsession.Session) (bool, error) {
	return sess.Exists()
}

// setAttrs sets every query parameter except sleep as a string attribute.
func (s *Server) setAttrs(ctx context.Context, r *http.Request, sess *httpsession.Session) (bool, error) {
	for k, vs := range r.URL.Query() {
		if k == SleepParam || k == "" {
			continue
		}
		if err := sess.Set(k, vs[len(vs)-1]); err != nil {
			return false, err
		}
	}
	return sess.Exists()
}

// deleteAttr removes the attribute named by the key parameter.
func (s *Server) deleteAttr(ctx context.Context, r *http.Request, sess *httpsession.Session) (bool, error) {
	k := r.URL.Query().Get("key")
	if k == "" {
		return false, fmt.Errorf("%w: missing key parameter", errBadRequest)
	}
	if err := sess.Remove(k); err != nil {
		return false, err
	}
	return sess.Exists()
}

// increment adds one to the int attribute CountKey.
func (s *Server) increment(ctx context.Context, r *http.Request, sess *httpsession.Session) (bool, error) {
	var n int
	if _, err := sess.Get(CountKey, &n); err != nil {
		return false, err
	}
	if err := sess.Set(CountKey, n+1); err != nil {
		return false, err
	}
	return true, nil
}

// login gives the session a new id and keeps its data; with the user
// parameter it also links the session to that user.
func (s *Server) login(ctx context.Context, r *http.Request, sess *httpsession.Session) (bool, error) {
	q := r.URL.Query()
	user := q.Get(UserParam)
	if q.Has(UserParam) && user == "" {
		return false, fmt.Errorf("%w: empty %s parameter", errBadRequest, UserParam)
	}
	if err := sess.RenewID(ctx); err != nil {
		return false, err
	}
	if user != "" {
		err := sess.SetUser(user)
		if errors.Is(err, store.ErrInvalidUser) {
			return false, fmt.Errorf("%w: %w", errBadRequest, err)
		}
		if err != nil {
			return false, err
		}
	}
	return sess.Exists()
}

// logout destroys the session: every item on every node.
func (s *Server) logout(ctx context.Context, r *http.Request, sess *httpsession.Session) (bool, error) {
	if err := sess.Destroy(ctx); err != nil {
		return false, err
	}
	return false, nil
}

// stats answers the session layer's counters on this server.
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(InstanceHeader, s.name)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(StatsResponse{
		Instance: s.name, Sticky: s.sticky, Async: s.async, Encrypted: s.sealed,
		Store: s.st.Stats(), Cache: s.st.CacheStats(), Manager: s.m.Stats(),
		Lock: s.st.LockStats(), Pools: s.cluster.PoolStats(),
	})
}

// nodes answers this server's view of the memcached nodes.
func (s *Server) nodes(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(InstanceHeader, s.name)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	resp := NodesResponse{Instance: s.name, Nodes: []NodeView{}}
	for _, n := range s.cluster.Status() {
		resp.Nodes = append(resp.Nodes, NodeView{ID: n.ID, Addr: n.Addr, State: n.State, Failures: n.ConsecutiveFailures, Draining: n.Draining})
	}
	_ = json.NewEncoder(w).Encode(resp)
}
