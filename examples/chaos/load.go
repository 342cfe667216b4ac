package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
)

// Defaults of LoadConfig.
const (
	DefaultClients = 16
	// DefaultRequestTimeout bounds one request: above the app's 2 s lock
	// timeout plus its memcached round trips (500 ms each).
	DefaultRequestTimeout = 10 * time.Second
	// DefaultThink is the pause between a client's requests.
	DefaultThink = 5 * time.Millisecond
	// retryPause is the extra pause after an answer other than 200.
	retryPause = 20 * time.Millisecond
	// maxIDs bounds the distinct session ids remembered per session.
	maxIDs = 64
)

// LoadConfig configures a Load. Apps is required.
type LoadConfig struct {
	// Apps are the app servers' base URLs; every client sends its
	// requests to them in turn (non-sticky).
	Apps []string
	// Clients is the number of parallel clients. Default 16.
	Clients int
	// SharedSessions is the number of sessions that a quarter of the
	// clients (Clients/4, at least one per shared session) share, their
	// increments racing; the other clients have a session each. Default:
	// 2 when there are at least 8 clients, else 1; a negative value means
	// none.
	SharedSessions int
	// Think is the pause between two requests of a client. Default 5 ms.
	Think time.Duration
	// RequestTimeout bounds each request. Default 10 s.
	RequestTimeout time.Duration
}

// Load is a set of clients incrementing their sessions' counters through
// the app servers, and what their answers told.
type Load struct {
	cfg      LoadConfig
	hc       *http.Transport
	sessions []*Session
	clients  []*client

	total atomic.Pointer[Stats]
	phase atomic.Pointer[Stats]
	mark  atomic.Int64 // unix nanos; see Mark

	stop   atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Session is one session of a Load: its cookie jar (shared by its
// clients) and the outcomes of its increments.
type Session struct {
	// Index numbers the sessions from 0; Clients is how many clients
	// share it.
	Index, Clients int
	jar            http.CookieJar

	acked, refused, unknown atomic.Int64

	mu   sync.Mutex
	ids  []string       // distinct ids seen in 200 answers, in order
	seen map[int]string // count answered 200 -> "app id at time"
	dup  []string       // counts answered 200 twice (a fork), first few
	fork time.Time      // when the request that revealed the first fork was sent
}

// client is one user: a session (its own or shared) and its recovery mark.
type client struct {
	n         int
	sess      *Session
	hc        *http.Client
	recovered atomic.Int64 // unix nanos of the first 200 for a request sent after the mark
}

// NewLoad prepares a load; Prime, then Start, run it.
func NewLoad(cfg LoadConfig) (*Load, error) {
	if len(cfg.Apps) == 0 {
		return nil, errors.New("chaos: LoadConfig.Apps is required")
	}
	if cfg.Clients == 0 {
		cfg.Clients = DefaultClients
	}
	if cfg.SharedSessions == 0 {
		cfg.SharedSessions = 1
		if cfg.Clients >= 8 {
			cfg.SharedSessions = 2
		}
	}
	shared := max(cfg.SharedSessions, 0)
	sharing := cfg.Clients / 4
	if shared > 0 {
		sharing = max(sharing, shared)
	} else {
		sharing = 0
	}
	if sharing > cfg.Clients {
		return nil, fmt.Errorf("chaos: %d shared sessions need at least %d clients", shared, sharing)
	}
	if cfg.Think == 0 {
		cfg.Think = DefaultThink
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	l := &Load{cfg: cfg, hc: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        4 * cfg.Clients,
		MaxIdleConnsPerHost: 2 * cfg.Clients,
		IdleConnTimeout:     30 * time.Second,
	}}
	newSession := func() *Session {
		jar, _ := cookiejar.New(nil) // cookiejar.New never fails without options
		s := &Session{Index: len(l.sessions), jar: jar, seen: map[int]string{}}
		l.sessions = append(l.sessions, s)
		return s
	}
	for range shared {
		newSession()
	}
	for i := range cfg.Clients {
		var s *Session
		if i < sharing {
			s = l.sessions[i%shared]
		} else {
			s = newSession()
		}
		s.Clients++
		l.clients = append(l.clients, &client{n: i, sess: s,
			hc: &http.Client{Jar: s.jar, Transport: l.hc, Timeout: cfg.RequestTimeout}})
	}
	l.total.Store(newStats())
	l.phase.Store(newStats())
	return l, nil
}

// Sessions returns the load's sessions, the shared ones first.
func (l *Load) Sessions() []*Session { return l.sessions }

// Clients returns the number of clients.
func (l *Load) Clients() int { return len(l.clients) }

// Prime gives every session its first acknowledged increment (so that it
// exists before the load starts), retrying each for up to 30 s.
func (l *Load) Prime(ctx context.Context) error {
	for _, s := range l.sessions {
		c := l.clientOf(s)
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; ; i++ {
			if l.increment(ctx, c, i) {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("chaos: session %d: no acknowledged increment within 30 s", s.Index)
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// clientOf returns the first client of s.
func (l *Load) clientOf(s *Session) *client {
	for _, c := range l.clients {
		if c.sess == s {
			return c
		}
	}
	return nil
}

// Start starts every client; they run until Stop or until ctx is done.
func (l *Load) Start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	for _, c := range l.clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := c.n; !l.stop.Load() && ctx.Err() == nil; i++ {
				pause := l.cfg.Think
				if !l.increment(ctx, c, i) {
					pause += retryPause
				}
				if sleep(ctx, pause) != nil {
					return
				}
			}
		}()
	}
}

// Stop lets every client finish its request in flight (bounded by the
// request timeout) and waits for them.
func (l *Load) Stop() {
	l.stop.Store(true)
	l.wg.Wait()
	if l.cancel != nil {
		l.cancel()
	}
	l.hc.CloseIdleConnections()
}

// NewPhase starts a new period of answers and returns the one that ends.
func (l *Load) NewPhase() *Stats { return l.phase.Swap(newStats()) }

// Total returns the answers since the load was made.
func (l *Load) Total() *Stats { return l.total.Load() }

// Mark starts a recovery measurement at t: Recovered reports when every
// client has had an increment acknowledged that it sent at t or later.
func (l *Load) Mark(t time.Time) {
	l.mark.Store(t.UnixNano())
	for _, c := range l.clients {
		c.recovered.Store(0)
	}
}

// Recovered reports whether every client has had an increment sent after
// the mark acknowledged, and the time the last of them was answered.
func (l *Load) Recovered() (bool, time.Time) {
	var last int64
	for _, c := range l.clients {
		r := c.recovered.Load()
		if r == 0 {
			return false, time.Time{}
		}
		last = max(last, r)
	}
	return true, time.Unix(0, last)
}

// Unrecovered returns the clients without an acknowledged increment since
// the mark.
func (l *Load) Unrecovered() int {
	n := 0
	for _, c := range l.clients {
		if c.recovered.Load() == 0 {
			n++
		}
	}
	return n
}

// increment sends one POST /api/counter for c to app number i (modulo the
// number of apps), records its outcome and reports whether it was
// acknowledged.
func (l *Load) increment(ctx context.Context, c *client, i int) bool {
	app := l.cfg.Apps[i%len(l.cfg.Apps)]
	start := time.Now()
	status, body, err := post(ctx, c.hc, app+"/api/counter")
	d := time.Since(start)
	if err != nil && ctx.Err() != nil {
		// Cut short by the end of the run (Ctrl-C): still an unknown
		// outcome, but not an answer to count.
		c.sess.unknown.Add(1)
		return false
	}
	outcome, kind := Classify(status, body, err)
	l.total.Load().add(kind, d)
	l.phase.Load().add(kind, d)
	s := c.sess
	switch outcome {
	case Acked:
		s.acked.Add(1)
		if start.UnixNano() >= l.mark.Load() {
			c.recovered.CompareAndSwap(0, time.Now().UnixNano())
		}
		var r server.Response
		if json.Unmarshal([]byte(body), &r) == nil && r.ID != "" {
			s.answered(r, start)
		}
		return true
	case Refused:
		s.refused.Add(1)
	default:
		s.unknown.Add(1)
	}
	return false
}

// answered records a 200's session id and count: two 200s with the same
// count mean that two increments started from the same stored value, one
// of them lost (a fork).
func (s *Session) answered(r server.Response, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 || s.ids[len(s.ids)-1] != r.ID {
		if !containsString(s.ids, r.ID) && len(s.ids) < maxIDs {
			s.ids = append(s.ids, r.ID)
		}
	}
	what := fmt.Sprintf("app %s id %s sent %s", r.Instance, r.ID, at.Format("15:04:05.000"))
	if prev, ok := s.seen[r.Count]; ok {
		if s.fork.IsZero() || at.Before(s.fork) {
			s.fork = at
		}
		if len(s.dup) < 8 {
			s.dup = append(s.dup, fmt.Sprintf("count %d answered twice: %s; %s", r.Count, prev, what))
		}
		return
	}
	s.seen[r.Count] = what
}

func containsString(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// post sends an empty POST and returns the status and up to 4 KiB of the
// body.
func post(ctx context.Context, hc *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return 0, "", err
	}
	return do(hc, req)
}

// do sends req and returns the status and up to 4 KiB of the body. A body
// cut short after the status line is not an error: the status says what
// the server did.
func do(hc *http.Client, req *http.Request) (int, string, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newRand returns a seeded random source.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
