package httpsession

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// responseWriter commits the session before the first byte of the
// response goes out. It supports http.ResponseController through Unwrap,
// and Flush, Hijack and ReadFrom directly.
type responseWriter struct {
	rw http.ResponseWriter
	rs *reqState
}

// Header returns the response headers.
func (w *responseWriter) Header() http.Header { return w.rw.Header() }

// WriteHeader commits the session, then writes the status line. An
// informational status (1xx other than 101) does not commit.
func (w *responseWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.rw.WriteHeader(code)
		return
	}
	if w.rs.begin() {
		w.rw.WriteHeader(code)
	}
}

// Write commits the session, then writes p.
func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.rs.begin() {
		return 0, ErrAborted
	}
	return w.rw.Write(p)
}

// ReadFrom commits the session, then copies from r, using the underlying
// writer's io.ReaderFrom (sendfile) when it has one.
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.rs.begin() {
		return 0, ErrAborted
	}
	if rf, ok := w.rw.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{w.rw}, r)
}

// Flush commits the session, then flushes the underlying writer.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError commits the session, then flushes the underlying writer; it
// is what http.ResponseController.Flush calls.
func (w *responseWriter) FlushError() error {
	if !w.rs.begin() {
		return ErrAborted
	}
	return http.NewResponseController(w.rw).Flush()
}

// Hijack commits the session, then hijacks the connection.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.rs.begin() {
		return nil, nil, ErrAborted
	}
	return http.NewResponseController(w.rw).Hijack()
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.rw }

// writerOnly hides every method but Write, so io.Copy does not loop back
// into ReadFrom.
type writerOnly struct{ io.Writer }
