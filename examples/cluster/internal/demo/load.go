package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
)

// Defaults and bounds of the load generator (POST /demo/load/start).
const (
	// DefaultLoadUsers is the number of virtual users when the start
	// request names none.
	DefaultLoadUsers = 20
	// MaxLoadUsers bounds the number of virtual users of one run.
	MaxLoadUsers = 200
	// DefaultLoadMaxDuration bounds a run of the load generator: it stops
	// by itself after that long.
	DefaultLoadMaxDuration = 10 * time.Minute
	// DefaultLoadThink is each virtual user's pause between two rounds
	// (an increment of its own counter and one of the shared counter).
	DefaultLoadThink = 10 * time.Millisecond
)

const (
	// loadRequestTimeout bounds one request of a virtual user. It is far
	// longer than the apps' own bounds (lock timeout 2 s, memcached round
	// trip 500 ms), so that a request is cut off by the client only when
	// something hangs: such an increment counts as not acknowledged, and
	// if it was stored all the same the final check shows it.
	loadRequestTimeout = 15 * time.Second
	// loadSampleInterval is the period of the time series and of the read
	// of every counter.
	loadSampleInterval = time.Second
	// loadSettleTimeout bounds the final read after a run: the wait for
	// the apps' queued writes, then the reads of every counter.
	loadSettleTimeout = 30 * time.Second
	// loadSettleTries bounds the reads of one counter in the final read
	// (a read answered other than 200 is tried again, 250 ms later).
	loadSettleTries = 20
	// loadSettleReaders is how many counters the final read reads at once.
	loadSettleReaders = 16
	// loadMaxMismatches bounds the mismatched counters LoadResult lists.
	loadMaxMismatches = 10
)

// The reasons a run of the load generator stopped (LoadState.StopReason).
const (
	LoadStoppedByRequest = "stopped"      // POST /demo/load/stop
	LoadStoppedByTimeout = "max run time" // after Config.LoadMaxDuration
	LoadStoppedByClose   = "demo shutdown"
	LoadStoppedBySetup   = "setup failed" // the shared counter could not be created
)

// ErrLoadRunning is returned by StartLoad while a run is still going or
// settling.
var ErrLoadRunning = errors.New("demo: load is already running")

// LoadCounts counts the load's requests by their answer.
type LoadCounts struct {
	// Requests counts every request answered, or failed without answer
	// (increments and reads): the sum of OK, Conflicts, Unavailable and
	// Other.
	Requests uint64 `json:"requests"`
	// OK counts the 2xx answers.
	OK uint64 `json:"ok"`
	// Conflicts counts the 409 answers (a save refused: the session
	// changed under the request).
	Conflicts uint64 `json:"conflicts"`
	// Unavailable counts the 503 answers (lock timeout, no memcached node).
	Unavailable uint64 `json:"unavailable"`
	// Other counts the other non-2xx answers (502 from the proxy...) and
	// the requests that got no answer (NetErrors).
	Other uint64 `json:"other"`
	// NetErrors counts the requests that got no answer at all.
	NetErrors uint64 `json:"netErrors"`
}

// LoadSample is one second of a run in the time series.
type LoadSample struct {
	// T is the end of the second, in seconds since the start of the run.
	T float64 `json:"t"`
	// Requests, OK, Conflicts, Unavailable and Other are per second, as in
	// LoadCounts (Other includes the requests without answer).
	Requests    float64 `json:"requests"`
	OK          float64 `json:"ok"`
	Conflicts   float64 `json:"conflicts"`
	Unavailable float64 `json:"unavailable"`
	Other       float64 `json:"other"`
	// Stored is the sum of the counters, own and shared, as last read back
	// (each once a second). Acked is the sum of the increments answered
	// 200 that each read must show: for an own counter, those answered
	// before its read (a virtual user reads between two of its own
	// increments); for the shared counter, the same bounded by the
	// increments in flight during its read (see LoadState.Diff).
	Acked  int64 `json:"acked"`
	Stored int64 `json:"stored"`
	// Diff is Stored minus Acked: 0 when every counter held exactly its
	// acknowledged increments.
	Diff int64 `json:"diff"`
	// AckedTotal is every increment answered 200 so far.
	AckedTotal int64 `json:"ackedTotal"`
}

// LoadEvent is an action on a node or an app server during a run.
type LoadEvent struct {
	// T is when it happened, in seconds since the start of the run.
	T float64 `json:"t"`
	// What says what happened, e.g. "kill n2".
	What string `json:"what"`
}

// CounterCheck compares the increments acknowledged for one counter, or a
// sum of counters, with what was read back.
type CounterCheck struct {
	// Acked counts the increments answered 200.
	Acked int64 `json:"acked"`
	// Failed counts the increments answered otherwise (or not at all):
	// not acknowledged, and normally not stored.
	Failed int64 `json:"failed"`
	// Stored is the counter as read back (a sum for several counters).
	Stored int64 `json:"stored"`
	// Unread counts the counters that could not be read (final read).
	Unread int `json:"unread,omitempty"`
	// Equal reports whether every counter was read and holds exactly its
	// acknowledged increments.
	Equal bool `json:"equal"`
}

// SharedCounter is the session whose counter every virtual user
// increments, with its placement.
type SharedCounter struct {
	// ID is the session id (its suffix names the primary node).
	ID string `json:"id"`
	// Primary and Backup are the session's nodes now (Store.Placement).
	Primary string `json:"primary"`
	Backup  string `json:"backup"`
	// Acked counts the increments answered 200, Failed the others,
	// InFlight those sent and not answered yet.
	Acked    int64 `json:"acked"`
	Failed   int64 `json:"failed"`
	InFlight int64 `json:"inFlight"`
	// Stored is the counter as last read, -1 before the first read.
	Stored int64 `json:"stored"`
}

// Mismatch is one counter whose final read differs from its acknowledged
// increments.
type Mismatch struct {
	// Counter is "shared" or "user N".
	Counter string `json:"counter"`
	// ID is the counter's session id, as the final read saw it.
	ID string `json:"id"`
	// Acked, Failed and Stored are as in CounterCheck; Stored is -1 when
	// the counter could not be read.
	Acked  int64 `json:"acked"`
	Failed int64 `json:"failed"`
	Stored int64 `json:"stored"`
}

// LoadResult is the final read of a run, once its writes settled.
type LoadResult struct {
	// Own sums the virtual users' own counters; Shared is the shared one.
	Own    CounterCheck `json:"own"`
	Shared CounterCheck `json:"shared"`
	// Equal reports whether every counter holds exactly its acknowledged
	// increments.
	Equal bool `json:"equal"`
	// Mismatches lists the counters that differ (at most 10).
	Mismatches []Mismatch `json:"mismatches"`
	// PendingWrites is the apps' queued session writes still pending when
	// the read began (-async-backup), -1 when an app did not answer.
	PendingWrites int `json:"pendingWrites"`
	// Took is how long the final read took, in seconds.
	Took float64 `json:"took"`
}

// LoadState is the load generator's state (GET /demo/load): the current
// or last run.
type LoadState struct {
	// Run numbers the runs since the demo started, from 1 (0 before the
	// first).
	Run int `json:"run"`
	// Running reports a run whose virtual users are sending requests;
	// Settling one that stopped and is doing its final read.
	Running  bool `json:"running"`
	Settling bool `json:"settling"`
	// Users is the number of virtual users of the run (0 before the
	// first run).
	Users int `json:"users"`
	// Elapsed is the time since the start of the run, in seconds (until
	// its stop once it stopped); MaxDuration bounds it.
	Elapsed     float64 `json:"elapsed"`
	MaxDuration float64 `json:"maxDuration"`
	// StopReason says why the run stopped: LoadStoppedByRequest,
	// LoadStoppedByTimeout, LoadStoppedByClose, LoadStoppedBySetup; ""
	// while it runs.
	StopReason string `json:"stopReason"`
	// Error is the reason of a failed setup.
	Error string `json:"error,omitempty"`
	// Counts counts the run's requests by answer.
	Counts LoadCounts `json:"counts"`
	// Own sums the virtual users' own counters as last read; its Equal
	// reports whether every one of them held exactly its acknowledged
	// increments at its last read (a virtual user reads its counter
	// between two of its own increments).
	Own CounterCheck `json:"own"`
	// Shared is the shared counter.
	Shared SharedCounter `json:"shared"`
	// Diff is stored minus acknowledged, as far as the latest reads can
	// tell: the own counters' differences, plus, for the shared counter,
	// how far its read fell below the increments acknowledged before the
	// read (a loss) or above every increment sent until its answer
	// (something stored that nobody sent). Increments in flight during a
	// read are no difference. 0 while everything is fine.
	Diff int64 `json:"diff"`
	// Series is the run's time series, one sample a second (the last 10
	// minutes at most).
	Series []LoadSample `json:"series"`
	// Events are the page's actions on nodes and app servers during the
	// run (the chart marks them).
	Events []LoadEvent `json:"events"`
	// Final is the final read, once the run stopped and settled.
	Final *LoadResult `json:"final"`
}

// loadGen is the demo's load generator: one run at a time.
type loadGen struct {
	d         *Demo
	base      string // the demo's own proxy, "http://127.0.0.1:PORT/"
	transport *http.Transport
	maxRun    time.Duration
	think     time.Duration

	mu     sync.Mutex
	run    *loadRun // the current or last run, nil before the first
	runs   int      // runs started
	closed bool
}

// vuser is one virtual user: its own cookie jar, hence its own session.
type vuser struct {
	n      int
	client *http.Client

	acked, failed atomic.Int64 // own increments by answer

	mu        sync.Mutex
	id        string // own session id, as last answered
	stored    int64  // own counter at the last read, -1 before it
	ackedRead int64  // acked at the last read
	lastRead  time.Time
}

// loadRun is one run of the load generator.
type loadRun struct {
	g       *loadGen
	n       int // LoadState.Run
	users   []*vuser
	shared  *http.Client // one cookie jar for every virtual user
	started time.Time
	stopCh  chan struct{} // closed to stop the virtual users
	stopped sync.Once
	done    chan struct{} // closed when the run is over (settled or not)

	ok, conflicts, unavailable, other, netErrors atomic.Uint64

	sharedAcked, sharedFailed, sharedSent, sharedInFlight atomic.Int64

	mu           sync.Mutex
	sharedID     string
	sharedStored int64 // -1 before the first read
	sharedDiff   int64 // the shared counter's difference at its last read
	series       []LoadSample
	events       []LoadEvent
	reason       string
	setupErr     string
	stoppedAt    time.Time
	settle       bool // do the final read after the stop
	final        *LoadResult
}

func newLoadGen(d *Demo) *loadGen {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2*MaxLoadUsers + 8
	t.MaxIdleConnsPerHost = 2*MaxLoadUsers + 8
	return &loadGen{d: d, base: d.URL(), transport: t, maxRun: d.cfg.LoadMaxDuration, think: d.cfg.LoadThink}
}

// start starts a run with users virtual users.
func (g *loadGen) start(users int) error {
	if users < 1 || users > MaxLoadUsers {
		return fmt.Errorf("demo: users=%d: want 1 to %d", users, MaxLoadUsers)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("demo: shutting down")
	}
	if g.run != nil && !g.run.over() {
		return ErrLoadRunning
	}
	r := &loadRun{g: g, started: time.Now(), stopCh: make(chan struct{}), done: make(chan struct{}), sharedStored: -1, settle: true}
	jar, _ := cookiejar.New(nil) // never fails without options
	r.shared = &http.Client{Jar: jar, Transport: g.transport, Timeout: loadRequestTimeout}
	for i := range users {
		jar, _ := cookiejar.New(nil)
		r.users = append(r.users, &vuser{n: i + 1, stored: -1,
			client: &http.Client{Jar: jar, Transport: g.transport, Timeout: loadRequestTimeout}})
	}
	g.runs++
	r.n = g.runs
	g.run = r
	go r.main()
	g.d.log.Info("load started", "users", users, "max", g.maxRun)
	return nil
}

// stop stops the current run, if any, and waits until it is over: its
// final read done when settle is set, skipped otherwise.
func (g *loadGen) stop(reason string, settle bool) {
	g.mu.Lock()
	r := g.run
	g.mu.Unlock()
	if r == nil {
		return
	}
	r.stop(reason, settle)
	<-r.done
}

// close stops the current run without its final read and refuses new ones.
func (g *loadGen) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.stop(LoadStoppedByClose, false)
	g.transport.CloseIdleConnections()
}

// state returns the current or last run's state.
func (g *loadGen) state() LoadState {
	g.mu.Lock()
	r := g.run
	g.mu.Unlock()
	if r == nil {
		return LoadState{MaxDuration: g.maxRun.Seconds(), Series: []LoadSample{}, Events: []LoadEvent{}, Shared: SharedCounter{Stored: -1}}
	}
	return r.state()
}

// mark records an action of the page (what, e.g. "kill n2") in the
// running run's events.
func (g *loadGen) mark(what string) {
	g.mu.Lock()
	r := g.run
	g.mu.Unlock()
	if r == nil || r.stopping() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) < 1000 {
		r.events = append(r.events, LoadEvent{T: time.Since(r.started).Seconds(), What: what})
	}
}

// over reports whether the run is over (it stopped and settled).
func (r *loadRun) over() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// stopping reports whether the virtual users were told to stop.
func (r *loadRun) stopping() bool {
	select {
	case <-r.stopCh:
		return true
	default:
		return false
	}
}

// stop tells the virtual users to stop after their current request; the
// first call's reason counts. settle false skips the final read (a later
// call may turn it off, not on).
func (r *loadRun) stop(reason string, settle bool) {
	r.mu.Lock()
	if !settle {
		r.settle = false
	}
	r.mu.Unlock()
	r.stopped.Do(func() {
		r.mu.Lock()
		r.reason = reason
		r.stoppedAt = time.Now()
		r.mu.Unlock()
		close(r.stopCh)
	})
}

// main runs the virtual users and the sampler until the run stops, then
// does the final read.
func (r *loadRun) main() {
	defer close(r.done)
	if err := r.createShared(); err != nil {
		r.mu.Lock()
		r.setupErr = err.Error()
		r.mu.Unlock()
		r.stop(LoadStoppedBySetup, false)
		r.g.d.log.Warn("load: could not create the shared counter", "err", err)
		return
	}
	timer := time.AfterFunc(r.g.maxRun, func() { r.stop(LoadStoppedByTimeout, true) })
	defer timer.Stop()
	var wg sync.WaitGroup
	for _, u := range r.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.user(u)
		}()
	}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		r.sampler()
	}()
	wg.Wait()
	<-sampled
	r.mu.Lock()
	reason, settle := r.reason, r.settle
	r.mu.Unlock()
	r.g.d.log.Info("load stopped", "reason", reason, "requests", r.counts().Requests, "settle", settle)
	if settle {
		res := r.finalRead()
		r.mu.Lock()
		r.final = res
		r.mu.Unlock()
		r.g.d.log.Info("load: final read", "equal", res.Equal,
			"own_acked", res.Own.Acked, "own_stored", res.Own.Stored,
			"shared_acked", res.Shared.Acked, "shared_stored", res.Shared.Stored)
	}
}

// createShared creates the shared counter's session (an attribute, no
// increment), trying a few times.
func (r *loadRun) createShared() error {
	err := errors.New("the load was stopped first")
	for try := 0; try < 10 && !r.stopping(); try++ {
		var code int
		var resp server.Response
		code, resp, err = r.do(r.shared, http.MethodPost, "api/session?counter=shared")
		if code == http.StatusOK && resp.ID != "" {
			r.mu.Lock()
			r.sharedID = resp.ID
			r.mu.Unlock()
			return nil
		}
		if err == nil {
			err = fmt.Errorf("answered %d", code)
		}
		r.pause(200 * time.Millisecond)
	}
	return fmt.Errorf("demo: load: create the shared counter: %w", err)
}

// pause waits d or until the run stops.
func (r *loadRun) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.stopCh:
	}
}

// user is one virtual user's loop: increment its own counter, increment
// the shared one, read its own counter back once a second, pause.
func (r *loadRun) user(u *vuser) {
	for !r.stopping() {
		code, resp, _ := r.do(u.client, http.MethodPost, "api/counter")
		if code == http.StatusOK {
			u.acked.Add(1)
			u.mu.Lock()
			u.id = resp.ID
			u.mu.Unlock()
		} else {
			u.failed.Add(1)
		}
		r.incrementShared()
		u.mu.Lock()
		due := time.Since(u.lastRead) >= loadSampleInterval
		u.mu.Unlock()
		if due {
			r.readOwn(u)
		}
		if r.g.think > 0 {
			r.pause(r.g.think)
		}
	}
}

// incrementShared sends one increment of the shared counter.
func (r *loadRun) incrementShared() {
	r.sharedSent.Add(1)
	r.sharedInFlight.Add(1)
	code, resp, _ := r.do(r.shared, http.MethodPost, "api/counter")
	if code == http.StatusOK {
		r.sharedAcked.Add(1)
		r.mu.Lock()
		r.sharedID = resp.ID
		r.mu.Unlock()
	} else {
		r.sharedFailed.Add(1)
	}
	r.sharedInFlight.Add(-1)
}

// readOwn reads virtual user u's counter back. u's increments are
// sequential, so the read must show exactly the acknowledged ones.
func (r *loadRun) readOwn(u *vuser) {
	acked := u.acked.Load()
	code, resp, _ := r.do(u.client, http.MethodGet, "api/session")
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lastRead = time.Now()
	if code != http.StatusOK {
		return // keep the last value
	}
	u.stored, u.ackedRead = int64(resp.Count), acked
	if resp.ID != "" {
		u.id = resp.ID
	}
}

// readShared reads the shared counter back and records how far it is from
// what the increments answered before and sent until the answer allow.
func (r *loadRun) readShared() {
	ackedBefore := r.sharedAcked.Load()
	code, resp, _ := r.do(r.shared, http.MethodGet, "api/session")
	sentAfter := r.sharedSent.Load()
	if code != http.StatusOK {
		return
	}
	stored := int64(resp.Count)
	var diff int64
	switch {
	case stored < ackedBefore:
		diff = stored - ackedBefore // acknowledged increments missing
	case stored > sentAfter:
		diff = stored - sentAfter // more than was ever sent
	}
	r.mu.Lock()
	r.sharedStored, r.sharedDiff = stored, diff
	if resp.ID != "" {
		r.sharedID = resp.ID
	}
	r.mu.Unlock()
}

// sampler reads the shared counter and appends a sample to the series
// once a second until the run stops.
func (r *loadRun) sampler() {
	t := time.NewTicker(loadSampleInterval)
	defer t.Stop()
	last, lastAt := r.counts(), time.Now()
	for {
		select {
		case <-r.stopCh:
			return
		case <-t.C:
		}
		r.readShared()
		now, at := r.counts(), time.Now()
		secs := at.Sub(lastAt).Seconds()
		rate := func(a, b uint64) float64 { return float64(a-b) / secs }
		r.mu.Lock()
		acked, stored := r.readsLocked()
		s := LoadSample{
			T:           at.Sub(r.started).Seconds(),
			Requests:    rate(now.Requests, last.Requests),
			OK:          rate(now.OK, last.OK),
			Conflicts:   rate(now.Conflicts, last.Conflicts),
			Unavailable: rate(now.Unavailable, last.Unavailable),
			Other:       rate(now.Other, last.Other),
			Acked:       acked,
			Stored:      stored,
			Diff:        stored - acked,
			AckedTotal:  r.totalAcked(),
		}
		r.series = append(r.series, s)
		if n := len(r.series) - int(DefaultLoadMaxDuration/loadSampleInterval); n > 0 {
			r.series = append(r.series[:0:0], r.series[n:]...)
		}
		r.mu.Unlock()
		last, lastAt = now, at
	}
}

// totalAcked is every increment answered 200, own and shared.
func (r *loadRun) totalAcked() int64 {
	n := r.sharedAcked.Load()
	for _, u := range r.users {
		n += u.acked.Load()
	}
	return n
}

// own sums the virtual users' counters as last read (each against the
// increments acknowledged at its read).
func (r *loadRun) own() CounterCheck {
	c := CounterCheck{Equal: true}
	for _, u := range r.users {
		c.Acked += u.acked.Load()
		c.Failed += u.failed.Load()
		u.mu.Lock()
		if u.stored >= 0 {
			c.Stored += u.stored
			if u.stored != u.ackedRead {
				c.Equal = false
			}
		} else {
			c.Unread++
		}
		u.mu.Unlock()
	}
	return c
}

// readsLocked sums, over every counter read so far, the acknowledged
// increments its last read had to show and what it showed (LoadSample's
// Acked and Stored); r.mu is held.
func (r *loadRun) readsLocked() (acked, stored int64) {
	if r.sharedStored >= 0 {
		acked, stored = r.sharedStored-r.sharedDiff, r.sharedStored
	}
	for _, u := range r.users {
		u.mu.Lock()
		if u.stored >= 0 {
			acked += u.ackedRead
			stored += u.stored
		}
		u.mu.Unlock()
	}
	return acked, stored
}

// diffLocked is LoadState.Diff; r.mu is held.
func (r *loadRun) diffLocked() int64 {
	acked, stored := r.readsLocked()
	return stored - acked
}

// counts returns the request counters.
func (r *loadRun) counts() LoadCounts {
	c := LoadCounts{
		OK: r.ok.Load(), Conflicts: r.conflicts.Load(), Unavailable: r.unavailable.Load(),
		Other: r.other.Load(), NetErrors: r.netErrors.Load(),
	}
	c.Requests = c.OK + c.Conflicts + c.Unavailable + c.Other
	return c
}

// state returns the run's LoadState.
func (r *loadRun) state() LoadState {
	own := r.own()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := LoadState{
		Run:         r.n,
		Running:     !r.stopping(),
		Users:       len(r.users),
		MaxDuration: r.g.maxRun.Seconds(),
		StopReason:  r.reason,
		Error:       r.setupErr,
		Counts:      r.counts(),
		Own:         own,
		Diff:        r.diffLocked(),
		Series:      append([]LoadSample{}, r.series...),
		Events:      append([]LoadEvent{}, r.events...),
		Final:       r.final,
		Shared: SharedCounter{
			ID: r.sharedID, Acked: r.sharedAcked.Load(), Failed: r.sharedFailed.Load(),
			InFlight: r.sharedInFlight.Load(), Stored: r.sharedStored,
		},
	}
	st.Settling = !st.Running && !r.over()
	end := time.Now()
	if !st.Running {
		end = r.stoppedAt
	}
	st.Elapsed = end.Sub(r.started).Seconds()
	if st.Shared.ID != "" {
		if p, b, ok := r.g.d.st.Placement(st.Shared.ID); ok {
			st.Shared.Primary, st.Shared.Backup = p, b
		}
	}
	return st
}

// do sends method path (relative to the demo's proxy) with c, counts the
// answer and decodes a 200's Response.
func (r *loadRun) do(c *http.Client, method, path string) (int, server.Response, error) {
	var resp server.Response
	ctx, cancel := context.WithTimeout(context.Background(), loadRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.g.base+path, nil)
	if err != nil {
		r.other.Add(1)
		r.netErrors.Add(1)
		return 0, resp, err
	}
	res, err := c.Do(req)
	if err != nil {
		r.other.Add(1)
		r.netErrors.Add(1)
		return 0, resp, err
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		r.ok.Add(1)
	case res.StatusCode == http.StatusConflict:
		r.conflicts.Add(1)
	case res.StatusCode == http.StatusServiceUnavailable:
		r.unavailable.Add(1)
	default:
		r.other.Add(1)
	}
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, resp, nil
	}
	err = json.NewDecoder(res.Body).Decode(&resp)
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, resp, err
}

// finalRead waits (bounded) until the apps have written their queued
// session writes, then reads every counter back and compares it with its
// acknowledged increments.
func (r *loadRun) finalRead() *LoadResult {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), loadSettleTimeout)
	defer cancel()
	res := &LoadResult{Mismatches: []Mismatch{}}
	res.PendingWrites = r.g.d.waitQueuedWrites(ctx)

	// Every counter at once, loadSettleReaders at a time.
	type read struct {
		id     string
		stored int64 // -1: not read
	}
	reads := make([]read, len(r.users)+1)
	clients := make([]*http.Client, len(reads))
	for i, u := range r.users {
		clients[i] = u.client
	}
	clients[len(r.users)] = r.shared
	sem := make(chan struct{}, loadSettleReaders)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			reads[i] = read{stored: -1}
			for try := 0; try < loadSettleTries && ctx.Err() == nil; try++ {
				code, resp, err := r.do(c, http.MethodGet, "api/session")
				if code == http.StatusOK && err == nil {
					reads[i] = read{id: resp.ID, stored: int64(resp.Count)}
					return
				}
				t := time.NewTimer(250 * time.Millisecond)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
		}()
	}
	wg.Wait()

	check := func(c *CounterCheck, name string, acked, failed int64, rd read) {
		c.Acked += acked
		c.Failed += failed
		if rd.stored < 0 {
			c.Unread++
		} else {
			c.Stored += rd.stored
		}
		if rd.stored != acked {
			if len(res.Mismatches) < loadMaxMismatches {
				res.Mismatches = append(res.Mismatches, Mismatch{Counter: name, ID: rd.id, Acked: acked, Failed: failed, Stored: rd.stored})
			}
			return
		}
	}
	ownOK, sharedOK := true, true
	for i, u := range r.users {
		rd := reads[i]
		check(&res.Own, "user "+strconv.Itoa(u.n), u.acked.Load(), u.failed.Load(), rd)
		ownOK = ownOK && rd.stored == u.acked.Load()
	}
	rd := reads[len(r.users)]
	check(&res.Shared, "shared", r.sharedAcked.Load(), r.sharedFailed.Load(), rd)
	sharedOK = rd.stored == r.sharedAcked.Load()
	res.Own.Equal, res.Shared.Equal = ownOK, sharedOK
	res.Equal = ownOK && sharedOK
	r.mu.Lock()
	if rd.stored >= 0 {
		r.sharedStored, r.sharedDiff = rd.stored, rd.stored-r.sharedAcked.Load()
		if rd.id != "" {
			r.sharedID = rd.id
		}
	}
	r.mu.Unlock()
	for i, u := range r.users {
		if reads[i].stored >= 0 {
			u.mu.Lock()
			u.stored, u.ackedRead = reads[i].stored, u.acked.Load()
			u.mu.Unlock()
		}
	}
	res.Took = time.Since(start).Seconds()
	return res
}

// waitQueuedWrites waits until no app has queued session writes pending
// (-async-backup), or ctx ends, and returns the number pending when it
// stopped waiting (-1 when an app did not answer).
func (d *Demo) waitQueuedWrites(ctx context.Context) int {
	for {
		pending := 0
		for _, s := range d.apps {
			p, _ := s.current()
			if !p.Running() {
				continue // a stopped app has nothing queued any more
			}
			st := d.appStats(ctx, s)
			if st == nil {
				pending = -1
				break
			}
			pending += st.Store.AsyncPending
		}
		if pending == 0 {
			return 0
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return pending
		}
	}
}

// loadStart handles POST /demo/load/start?users=N.
func (d *Demo) loadStart(w http.ResponseWriter, r *http.Request) {
	users := DefaultLoadUsers
	if v := r.URL.Query().Get("users"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "users=" + strconv.Quote(v) + ": not a number"})
			return
		}
		users = n
	}
	switch err := d.load.start(users); {
	case errors.Is(err, ErrLoadRunning):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, d.load.state())
	}
}

// loadStop handles POST /demo/load/stop: it stops the run, waits for its
// final read and answers the LoadState with it. Without a run it answers
// the last one's state.
func (d *Demo) loadStop(w http.ResponseWriter, r *http.Request) {
	d.load.stop(LoadStoppedByRequest, true)
	writeJSON(w, http.StatusOK, d.load.state())
}
