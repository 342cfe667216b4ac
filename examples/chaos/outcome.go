package chaos

import (
	"net/http"
	"strings"
)

// Outcome is what an increment's answer tells about whether it was stored.
type Outcome int

const (
	// Acked is a 200: the increment is stored (the app saves the session
	// before it sends the status line).
	Acked Outcome = iota
	// Refused is a 409 (the save was refused: the session changed
	// meanwhile), a 503 "session busy" (the session's lock was not
	// acquired, so the handler never ran) or another 4xx: the increment is
	// known not to be stored.
	Refused
	// Unknown is a transport error (the client's timeout included) or a
	// 5xx other than "session busy": the increment may or may not have
	// been stored.
	Unknown
)

// busyText is the start of the body httpsession.DefaultErrorHandler sends
// with the 503 for a lock timeout.
const busyText = "session busy"

// Answer kinds counted in Summary.
const (
	kindOK          = "ok"
	kindConflict    = "409"
	kindBusy        = "503-busy"
	kindUnavailable = "503-unavailable"
	kindOther5xx    = "5xx-other"
	kindOther4xx    = "4xx-other"
	kindTransport   = "transport"
)

// Classify classifies an answer to POST /api/counter: err is the transport
// error (nil when a status arrived), body the start of the body. It
// returns the outcome and the kind of answer counted in Summary.
func Classify(status int, body string, err error) (Outcome, string) {
	switch {
	case err != nil:
		return Unknown, kindTransport
	case status == http.StatusOK:
		return Acked, kindOK
	case status == http.StatusConflict:
		return Refused, kindConflict
	case status == http.StatusServiceUnavailable && strings.HasPrefix(body, busyText):
		return Refused, kindBusy
	case status == http.StatusServiceUnavailable:
		return Unknown, kindUnavailable
	case status >= 500:
		return Unknown, kindOther5xx
	}
	return Refused, kindOther4xx
}
