package httpsession

import (
	"context"
	"errors"
	"net/http"

	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

var (
	// ErrNoSession is returned by the methods of a nil *Session, which
	// FromContext returns for a request that did not go through the
	// middleware or was ignored, and by OverrideLocking for such a request.
	ErrNoSession = errors.New("httpsession: no session for this request")
	// ErrAlreadyLoaded is returned by OverrideLocking when the session of the
	// request was used already: locking is decided at the first use.
	ErrAlreadyLoaded = errors.New("httpsession: session already in use; set locking before the first use")
	// ErrRequestDone is returned by the methods of a Session whose request
	// has finished (a goroutine outlived its handler).
	ErrRequestDone = errors.New("httpsession: request finished")
	// ErrAborted is returned by Write (and Flush, Hijack) of the response
	// writer after a session failure made the ErrorHandler answer the
	// request instead of the handler.
	ErrAborted = errors.New("httpsession: response replaced by the session error handler")
	// ErrResponseStarted is returned by Session.RenewID once the response
	// has started: the new cookie could not reach the client any more.
	ErrResponseStarted = errors.New("httpsession: response already started; the session cookie cannot change")
)

// StatusCode returns the HTTP status DefaultErrorHandler uses for err:
//
//   - 503 Service Unavailable for a lock wait that timed out
//     (lock.ErrLockTimeout), unreachable memcached nodes
//     (store.ErrUnavailable, replica.ErrNodeDown, replica.ErrNoHealthyNode)
//     and a cancelled or expired context;
//   - 409 Conflict for store.ErrConflict (the session was changed by a
//     concurrent request that held no lock; this request's changes were
//     not saved);
//   - 500 Internal Server Error for store.ErrTooLarge and anything else.
func StatusCode(err error) int {
	switch {
	case errors.Is(err, lock.ErrLockTimeout),
		errors.Is(err, store.ErrUnavailable),
		errors.Is(err, replica.ErrNodeDown),
		errors.Is(err, replica.ErrNodeBusy),
		errors.Is(err, replica.ErrNoHealthyNode),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

// DefaultErrorHandler is the default Options.ErrorHandler. It answers with
// StatusCode(err) and a short plain-text message that does not reveal err;
// a 503 or 409 answer carries "Retry-After: 1".
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	code := StatusCode(err)
	msg := http.StatusText(code)
	switch {
	case errors.Is(err, lock.ErrLockTimeout):
		msg = "session busy: another request of this session is still running; retry"
	case code == http.StatusServiceUnavailable:
		msg = "session storage unavailable; retry"
	case code == http.StatusConflict:
		msg = "session changed concurrently; the change was not saved; retry"
	case errors.Is(err, store.ErrTooLarge):
		msg = "session too large: the change was not saved"
	}
	if code == http.StatusServiceUnavailable || code == http.StatusConflict {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, code)
}
