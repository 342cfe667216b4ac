package httpsession

import (
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// Defaults for Options fields left at their zero value.
const (
	// DefaultCookieName is the name of the session cookie.
	DefaultCookieName = "mcsession"
	// DefaultCookiePath is the Path attribute of the session cookie.
	DefaultCookiePath = "/"
	// DefaultAutoThreshold is how many consecutive requests of a route that
	// did not modify the session make LockAuto stop locking that route.
	DefaultAutoThreshold = 3
	// DefaultMaxAutoRoutes bounds how many routes LockAuto remembers; routes
	// beyond it are always locked.
	DefaultMaxAutoRoutes = 10000
	// DefaultTouchTimeout bounds a background idle-timeout refresh.
	DefaultTouchTimeout = time.Second
	// DefaultCommitTimeout bounds the saves and lock releases the
	// middleware makes on its own (they outlive a cancelled request
	// context, so that a client that went away loses no change).
	DefaultCommitTimeout = 10 * time.Second
)

// LockMode selects which requests take the session lock.
type LockMode int

const (
	// LockAll locks every request that uses an existing session. It is the
	// default (the zero value).
	LockAll LockMode = iota
	// LockNone locks no request unless a per-request flag or Session.Lock
	// asks for it. Concurrent modifying requests of one session then fail
	// with store.ErrConflict instead of losing updates silently.
	LockNone
	// LockAuto learns per route (see Options.Locking) which requests never
	// modify the session: every route starts locked; after
	// Options.AutoThreshold consecutive requests of a route that did not
	// modify the session, requests of that route run unlocked; a route
	// that modified the session once is locked for good.
	LockAuto
	// LockMatching locks the requests whose "METHOD PATH" (for example
	// "POST /cart/add") matches Options.LockPattern.
	LockMatching
)

// String returns the mode's name as the example app's -locking flag spells it:
// "all", "none", "auto" or "pattern" (LockMatching).
func (m LockMode) String() string {
	switch m {
	case LockAll:
		return "all"
	case LockNone:
		return "none"
	case LockAuto:
		return "auto"
	case LockMatching:
		return "pattern"
	}
	return "LockMode(" + strconv.Itoa(int(m)) + ")"
}

// SecureMode selects when the session cookie gets the Secure attribute.
type SecureMode int

const (
	// SecureAuto sets Secure when the request came over TLS (r.TLS != nil).
	// It is the default (the zero value). Behind a proxy that terminates
	// TLS, use SecureAlways.
	SecureAuto SecureMode = iota
	// SecureAlways always sets Secure.
	SecureAlways
	// SecureNever never sets Secure.
	SecureNever
)

// Options configures a Manager. The zero value gives the documented
// defaults.
type Options struct {
	// CookieName is the name of the session cookie. Default
	// DefaultCookieName ("mcsession").
	CookieName string
	// CookiePath is the cookie's Path attribute. Default "/".
	CookiePath string
	// CookieDomain is the cookie's Domain attribute. Default "" (host-only
	// cookie).
	CookieDomain string
	// Secure selects when the cookie is marked Secure. Default SecureAuto:
	// when the request came over TLS.
	Secure SecureMode
	// SameSite is the cookie's SameSite attribute. Default (zero)
	// http.SameSiteLaxMode; set http.SameSiteDefaultMode to send no
	// SameSite attribute. SameSite=None needs Secure in browsers.
	SameSite http.SameSite
	// PersistentCookie gives the session cookie an Expires attribute: the
	// session's absolute deadline (see Lifetime), so that it survives a
	// browser restart. For a "remember me" login, raise the session's
	// lifetime and idle timeout with Session.SetLifetime and
	// SetIdleTimeout before the response starts: the cookie is sent again
	// with the new deadline. Default false: a cookie without Expires, which
	// the browser drops when it closes.
	PersistentCookie bool
	// DisableHTTPOnly leaves out the HttpOnly attribute, letting scripts
	// read the session cookie. Default false: the cookie is HttpOnly.
	DisableHTTPOnly bool

	// IdleTimeout is how long a new session lives without requests. It is
	// stored with the session (Session.SetIdleTimeout), so every server
	// honours it. Default 0: the store's Config.IdleTimeout (with Open,
	// Options.Store.IdleTimeout; when both are set, this one wins for the
	// sessions this Manager creates).
	IdleTimeout time.Duration
	// Lifetime is the absolute lifetime of a new session. Default 0: the
	// store's Config.Lifetime (with Open, Options.Store.Lifetime; when
	// both are set, this one wins for the sessions this Manager creates).
	Lifetime time.Duration

	// Locking selects which requests take the session lock. Default
	// LockAll. Under LockAuto, requests are grouped into routes by
	// "METHOD ROUTE" (see Route).
	Locking LockMode
	// Route names the route of a request for LockAuto, for example the
	// pattern a router matched: chi.RouteContext(r.Context()).RoutePattern()
	// or mux.CurrentRoute(r).GetPathTemplate() (see examples/routers). It
	// is called once per request, when the session is first used, with the
	// request the handler passed to Manager.Session or else the one the
	// middleware saw; so install the middleware inside the router (chi's
	// Use, gorilla/mux's Use) or reach the session with Manager.Session(r),
	// and do not use the session in a middleware that runs before the
	// router matched (the route is then not known yet). Route must not
	// use the session (it runs while the session is being loaded). An
	// empty result falls back to the default. Default nil: r.Pattern (set by
	// http.ServeMux, Go 1.22+, and by chi on the request it routes) when
	// set, else the URL path; behind gorilla/mux every concrete path is
	// then its own route, bounded by MaxAutoRoutes.
	Route func(r *http.Request) string
	// LockPattern is matched against "METHOD PATH" (for example
	// "POST /cart/add") under LockMatching; matching requests are locked.
	// Required with LockMatching, ignored otherwise. Default nil.
	LockPattern *regexp.Regexp
	// AutoThreshold is how many consecutive non-modifying requests of a
	// route make LockAuto stop locking it. Default DefaultAutoThreshold (3).
	AutoThreshold int
	// MaxAutoRoutes bounds the routes LockAuto remembers (paths may come
	// from clients); unknown routes beyond it are always locked. Default
	// DefaultMaxAutoRoutes (10000).
	MaxAutoRoutes int
	// LockTimeout is how long a request waits for a session lock held by
	// another request. Default 0: the store's lock.Config.WaitTimeout
	// (with Open, Options.Store.Lock.WaitTimeout; when both are set, this
	// one wins).
	LockTimeout time.Duration
	// FailOpen makes a request whose lock wait timed out proceed without
	// the lock (counted in Stats.FailOpens and logged); its save is still
	// CAS-guarded. Default false: fail closed, the ErrorHandler answers
	// (503 with Retry-After by default).
	FailOpen bool

	// Ignore lists regular expressions matched against r.URL.Path; matching
	// requests (static files, health checks) get no session: no memcached
	// traffic, no cookie, FromContext returns nil. Default none.
	Ignore []*regexp.Regexp
	// IgnoreFunc, when set, is asked for every request not matched by
	// Ignore; requests it reports true for are ignored the same way.
	// Default nil.
	IgnoreFunc func(r *http.Request) bool

	// ErrorHandler writes the response when loading, locking or saving the
	// session failed before the response started; the handler's own
	// response is discarded. The request passed to it carries no session.
	// Default DefaultErrorHandler.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
	// TouchTimeout bounds a background idle-timeout refresh. Default
	// DefaultTouchTimeout (1 s).
	TouchTimeout time.Duration
	// CommitTimeout bounds the saves and lock releases the middleware makes
	// itself; they ignore the cancellation of the request's context.
	// Default DefaultCommitTimeout (10 s).
	CommitTimeout time.Duration
	// Logger receives failures, fail-opens, conflicts and relocations.
	// Default slog.Default(). Open also hands it to the store and the
	// cluster it builds when their own Logger is nil.
	Logger *slog.Logger

	// Store configures the store Open builds: codec, key prefix, default
	// idle timeout and lifetime, maximum size, lock TTL and wait. Its
	// Cluster field must be nil (Open builds the cluster). Default: the
	// zero store.Config, whose defaults package store documents. Only
	// Open reads it; New refuses a non-zero Store.
	Store store.Config
	// Cluster configures the memcached cluster Open builds: timeouts,
	// connection limits, circuit breaker, dialer. Its Nodes field must be
	// empty (Open parses the node list it is given). Default: the zero
	// replica.Config, whose defaults package replica documents. Only Open
	// reads it; New refuses a non-zero Cluster.
	Cluster replica.Config
}
