package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
)

// DefaultReadTimeout bounds the read-back of one session through one app
// server (409 and 503 answers are retried until then).
const DefaultReadTimeout = 20 * time.Second

// Verdicts of a SessionResult.
const (
	VerdictOK = "ok"
	// VerdictLost: fewer increments stored than acknowledged.
	VerdictLost = "LOST"
	// VerdictFork: two increments were answered 200 with the same count,
	// so one of them was overwritten (possibly hidden in the final count by
	// an unknown outcome that landed).
	VerdictFork = "FORK"
	// VerdictExcess: more increments stored than acknowledged plus unknown
	// outcomes.
	VerdictExcess = "EXCESS"
	// VerdictDiverged: the app servers read different counts.
	VerdictDiverged = "DIVERGED"
	// VerdictUnread: the session could not be read back.
	VerdictUnread = "UNREAD"
)

// SessionResult compares one session's acknowledged increments with its
// stored count.
type SessionResult struct {
	Index   int `json:"session"`
	Clients int `json:"clients"`
	// Acked, Refused and Unknown count the increments' outcomes.
	Acked   int64 `json:"acknowledged"`
	Refused int64 `json:"refused"`
	Unknown int64 `json:"unknown"`
	// Stored is the count read back through the first app server; -1
	// when it could not be read. StoredBy has the count each app server
	// read, by instance name.
	Stored   int64            `json:"stored"`
	StoredBy map[string]int64 `json:"stored_by_app"`
	// Landed is Stored-Acked when the verdict is ok: the unknown outcomes
	// that were stored.
	Landed  int64    `json:"landed"`
	Verdict string   `json:"verdict"`
	IDs     []string `json:"ids"`
	Forks   []string `json:"forks,omitempty"`
	// FirstFork is when the first request that got a count already
	// answered was sent (zero without forks).
	FirstFork time.Time `json:"first_fork,omitzero"`
	Note      string    `json:"note,omitempty"`
}

// Check sums up the SessionResults of a run.
type Check struct {
	Sessions int   `json:"sessions"`
	Acked    int64 `json:"acknowledged"`
	Stored   int64 `json:"stored"`
	Refused  int64 `json:"refused"`
	Unknown  int64 `json:"unknown"`
	// Landed are the unknown outcomes that were stored.
	Landed int64 `json:"landed"`
	// Equal counts the sessions whose stored count equals their
	// acknowledged increments.
	Equal int `json:"equal"`
	// LostUpdates sums Acked-Stored over the sessions with fewer stored
	// than acknowledged.
	LostUpdates int64 `json:"lost_updates"`
	// Failed counts the sessions by failing verdict.
	Failed map[string]int `json:"failed,omitempty"`
}

// OK reports whether no session failed.
func (c Check) OK() bool { return len(c.Failed) == 0 }

// String is a one-line summary.
func (c Check) String() string {
	s := fmt.Sprintf("%d sessions: acknowledged %d, stored %d, unknown outcomes %d (%d landed), %d of %d equal",
		c.Sessions, c.Acked, c.Stored, c.Unknown, c.Landed, c.Equal, c.Sessions)
	if c.OK() {
		return s + ": no lost update"
	}
	return fmt.Sprintf("%s: FAILED: %s, %d acknowledged increments lost", s, c.Failures(), c.LostUpdates)
}

// Failures lists the failed sessions by verdict, e.g. "2 LOST, 1 FORK".
func (c Check) Failures() string {
	var parts []string
	for _, v := range []string{VerdictLost, VerdictFork, VerdictExcess, VerdictDiverged, VerdictUnread} {
		if n := c.Failed[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, v))
		}
	}
	return strings.Join(parts, ", ")
}

// Summarize sums up rs.
func Summarize(rs []SessionResult) Check {
	c := Check{Sessions: len(rs)}
	for _, r := range rs {
		c.Acked += r.Acked
		c.Refused += r.Refused
		c.Unknown += r.Unknown
		if r.Stored > 0 {
			c.Stored += r.Stored
		}
		c.Landed += r.Landed
		if r.Stored == r.Acked {
			c.Equal++
		}
		if r.Stored >= 0 && r.Stored < r.Acked {
			c.LostUpdates += r.Acked - r.Stored
		}
		if r.Verdict != VerdictOK {
			if c.Failed == nil {
				c.Failed = map[string]int{}
			}
			c.Failed[r.Verdict]++
		}
	}
	return c
}

// ReadBack reads every session's count through every app server (GET
// /api/session with the session's cookie jar; answers other than 200 are
// retried for up to timeout per read) and compares it with the
// increments' outcomes. Call it after Stop.
func (l *Load) ReadBack(ctx context.Context, apps []string, timeout time.Duration) []SessionResult {
	if timeout <= 0 {
		timeout = DefaultReadTimeout
	}
	out := make([]SessionResult, len(l.sessions))
	for i, s := range l.sessions {
		r := SessionResult{Index: s.Index, Clients: s.Clients, Acked: s.acked.Load(), Refused: s.refused.Load(),
			Unknown: s.unknown.Load(), Stored: -1, StoredBy: map[string]int64{}}
		hc := &http.Client{Jar: s.jar, Transport: l.hc, Timeout: l.cfg.RequestTimeout}
		var notes []string
		for j, app := range apps {
			resp, err := readSession(ctx, hc, app, timeout)
			if err != nil {
				notes = append(notes, err.Error())
				continue
			}
			r.StoredBy[resp.Instance] = int64(resp.Count)
			if j == 0 {
				r.Stored = int64(resp.Count)
			}
			if resp.ID != "" && !containsString(s.ids, resp.ID) {
				s.mu.Lock()
				if len(s.ids) < maxIDs {
					s.ids = append(s.ids, resp.ID)
				}
				s.mu.Unlock()
			}
		}
		s.mu.Lock()
		r.IDs, r.Forks, r.FirstFork = slices.Clone(s.ids), slices.Clone(s.dup), s.fork
		s.mu.Unlock()
		r.Verdict = verdict(&r, len(apps))
		if r.Verdict == VerdictOK {
			r.Landed = r.Stored - r.Acked
		}
		r.Note = strings.Join(notes, "; ")
		out[i] = r
	}
	return out
}

// verdict judges r (see the package doc).
func verdict(r *SessionResult, apps int) string {
	switch {
	case len(r.StoredBy) < apps || r.Stored < 0:
		return VerdictUnread
	case r.Stored < r.Acked:
		return VerdictLost
	case len(r.Forks) > 0:
		return VerdictFork
	case r.Stored > r.Acked+r.Unknown:
		return VerdictExcess
	}
	for _, n := range r.StoredBy {
		if n != r.Stored {
			return VerdictDiverged
		}
	}
	return VerdictOK
}

// readSession sends GET /api/session until it is answered 200, for up to
// timeout.
func readSession(ctx context.Context, hc *http.Client, app string, timeout time.Duration) (server.Response, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, app+"/api/session", nil)
		if err != nil {
			return server.Response{}, err
		}
		status, body, err := do(hc, req)
		if err == nil && status == http.StatusOK {
			var r server.Response
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				return r, fmt.Errorf("read back through %s: %w", app, err)
			}
			return r, nil
		}
		last = fmt.Sprintf("%d %q %v", status, body, err)
		if time.Now().After(deadline) || ctx.Err() != nil {
			return server.Response{}, fmt.Errorf("read back through %s: no 200 within %v (last: %s)", app, timeout, last)
		}
		if sleep(ctx, 100*time.Millisecond) != nil {
			return server.Response{}, ctx.Err()
		}
	}
}

// LogWords returns the words to look for in the app logs about r: the
// random parts of its ids.
func (r SessionResult) LogWords() []string {
	var out []string
	for _, id := range r.IDs {
		if i := strings.LastIndexByte(id, '-'); i > 0 {
			id = id[:i]
		}
		if !containsString(out, id) {
			out = append(out, id)
		}
	}
	return out
}
