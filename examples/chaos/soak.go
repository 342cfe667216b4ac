package chaos

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Soak actions: each hits one random node, one action at a time (the
// library keeps two copies of a session, so it is built to survive one
// failure at a time; two overlapping failures can lose sessions by design).
const (
	// ActionKill kills the node with SIGKILL, leaves it down for 1-4 s,
	// then restarts it empty.
	ActionKill = "kill"
	// ActionStop stops the node with SIGSTOP for 1-3 s (a hung node),
	// then continues it with SIGCONT: it comes back with its old copies.
	ActionStop = "stop"
	// ActionRestart kills the node and restarts it empty at once.
	ActionRestart = "restart"
	// ActionToxic puts a random toxic of SoakConfig.Toxics (default
	// Rows) on the node's proxy for 2-5 s.
	ActionToxic = "toxic"
)

// AllActions are the soak's actions.
var AllActions = []string{ActionKill, ActionStop, ActionRestart, ActionToxic}

// ParseActions parses a comma-separated list of actions.
func ParseActions(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if !containsString(AllActions, a) {
			return nil, fmt.Errorf("chaos: unknown action %q (want %s)", a, strings.Join(AllActions, ", "))
		}
		if !containsString(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// SoakConfig configures RunSoak. Env.Binary and Env.LogDir are required.
type SoakConfig struct {
	Env EnvConfig
	// Duration is how long the chaos lasts. Default 5 min.
	Duration time.Duration
	// Clients is the number of parallel clients, a quarter of them on 2
	// shared sessions. Default 32.
	Clients int
	// Think is each client's pause between two requests. Default 5 ms.
	Think time.Duration
	// Seed seeds the choice of actions, nodes, toxics and durations.
	Seed uint64
	// Actions are the actions to choose from. Default AllActions.
	Actions []string
	// Toxics are the toxics ActionToxic chooses from. Default Rows.
	Toxics []Row
	// Every is the mean pause between two actions (uniform between half
	// and one and a half of it), counted from the moment every client has
	// been served again after the previous one. Default 4 s.
	Every time.Duration
	// Progress receives the progress lines. Default: discarded.
	Progress io.Writer
	// ProgressEvery is the period of the progress lines. Default 10 s.
	ProgressEvery time.Duration
}

// ActionRecord is one action the soak took.
type ActionRecord struct {
	// At is when it started, in seconds since the chaos started.
	At     float64 `json:"at_s"`
	Action string  `json:"action"`
	Node   string  `json:"node"`
	// Detail is the toxic, for ActionToxic.
	Detail string `json:"detail,omitempty"`
	// Seconds is how long the node was down, hung or poisoned.
	Seconds float64 `json:"seconds"`
	// RecoverMs is the time from the end of the fault until every client
	// had an increment acknowledged that it sent afterwards; -1 when that
	// took longer than 30 s.
	RecoverMs float64 `json:"recover_ms"`
	Error     string  `json:"error,omitempty"`
}

// String describes the action.
func (a ActionRecord) String() string {
	s := fmt.Sprintf("%s %s", a.Action, a.Node)
	switch a.Action {
	case ActionKill:
		s += fmt.Sprintf(": down %.1f s, restarted empty", a.Seconds)
	case ActionStop:
		s += fmt.Sprintf(": SIGSTOP for %.1f s, then SIGCONT", a.Seconds)
	case ActionRestart:
		s += ": restarted empty"
	case ActionToxic:
		s += fmt.Sprintf(": %s for %.1f s", a.Detail, a.Seconds)
	}
	if a.Error != "" {
		return s + ": ERROR: " + a.Error
	}
	return s + fmt.Sprintf("; every client served again after %s", fmtMs(a.RecoverMs))
}

// SoakResult is what a soak measured.
type SoakResult struct {
	Seed    uint64   `json:"seed"`
	Seconds float64  `json:"seconds"`
	Clients int      `json:"clients"`
	Shared  int      `json:"shared_sessions"`
	Actions []string `json:"actions"`
	Toxics  []string `json:"toxics"`
	// Start is when the chaos started (the action times count from it).
	Start  time.Time      `json:"start"`
	Taken  []ActionRecord `json:"taken"`
	Counts map[string]int `json:"action_counts"`
	Total  Summary        `json:"total"`
	// RecoverMs is the time from the end of the chaos (every node running
	// and without toxics) until every client had an increment
	// acknowledged that it sent afterwards.
	RecoverMs float64         `json:"recover_ms"`
	Counters  AppCounters     `json:"counters"`
	Check     Check           `json:"check"`
	Sessions  []SessionResult `json:"sessions"`
	Diagnosis []string        `json:"diagnosis,omitempty"`
	LogFiles  []string        `json:"log_files"`
	// MaxStallMs is the longest time this process (the clients and the
	// proxies) could not run; LoadAvg the machine's 1-minute load
	// average at the start and at the end.
	MaxStallMs float64    `json:"max_stall_ms"`
	LoadAvg    [2]float64 `json:"load_avg"`
	Error      string     `json:"error,omitempty"`
}

// forkTimeline places the first fork of every session that has one among
// the actions: the action running, or the last one before it.
func (r SoakResult) forkTimeline() []string {
	var out []string
	for _, s := range r.Sessions {
		if s.FirstFork.IsZero() {
			continue
		}
		at := s.FirstFork.Sub(r.Start).Seconds()
		where := "before any action"
		for _, a := range r.Taken {
			if a.At > at {
				break
			}
			end := a.At + a.Seconds
			if at <= end {
				where = fmt.Sprintf("during %s (t=%.1f s to %.1f s)", a.Action+" "+a.Node+detail(a), a.At, end)
			} else {
				where = fmt.Sprintf("%.1f s after %s ended (t=%.1f s to %.1f s)", at-end, a.Action+" "+a.Node+detail(a), a.At, end)
			}
		}
		out = append(out, fmt.Sprintf("session %d: first fork at t=%.1f s (%s UTC), %s", s.Index, at, s.FirstFork.UTC().Format("15:04:05.000"), where))
	}
	return out
}

// detail is " (toxic)" for a toxic action, "" otherwise.
func detail(a ActionRecord) string {
	if a.Detail == "" {
		return ""
	}
	return " (" + a.Detail + ")"
}

// Recovery returns the median and the longest time, in milliseconds, from
// the end of an action until every client was served again, and the
// number of actions after which that took more than 30 s.
func (r SoakResult) Recovery() (median, longest float64, slow int) {
	var v []float64
	for _, a := range r.Taken {
		switch {
		case a.Error != "":
		case a.RecoverMs < 0:
			slow++
		default:
			v = append(v, a.RecoverMs)
		}
	}
	if len(v) == 0 {
		return 0, 0, slow
	}
	slices.Sort(v)
	return v[len(v)/2], v[len(v)-1], slow
}

// Failed reports whether the soak lost or invented an update, or could
// not run to the end.
func (r SoakResult) Failed() bool { return r.Error != "" || !r.Check.OK() }

// RunSoak runs the chaos soak. It returns an error only when it could not
// start; later problems are in SoakResult.Error.
func RunSoak(ctx context.Context, cfg SoakConfig) (res SoakResult, err error) {
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Minute
	}
	if cfg.Clients == 0 {
		cfg.Clients = 32
	}
	if cfg.Actions == nil {
		cfg.Actions = AllActions
	}
	if cfg.Every == 0 {
		cfg.Every = 4 * time.Second
	}
	if cfg.Toxics == nil {
		cfg.Toxics = Rows
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 10 * time.Second
	}
	res = SoakResult{Seed: cfg.Seed, Clients: cfg.Clients, Actions: cfg.Actions, Counts: map[string]int{}, RecoverMs: -1}
	res.LoadAvg[0] = LoadAvg()
	stall := startStallMeter()
	defer func() {
		stall.Stop()
		res.MaxStallMs = ms(stall.Max())
		res.LoadAvg[1] = LoadAvg()
	}()
	env, err := StartEnv(ctx, cfg.Env)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := env.Close(); err != nil && res.Error == "" && ctx.Err() == nil {
			res.Error = "stopping the environment: " + err.Error()
		}
	}()
	res.LogFiles = env.LogPaths()
	load, err := NewLoad(LoadConfig{Apps: env.URLs(), Clients: cfg.Clients, Think: cfg.Think})
	if err != nil {
		return res, err
	}
	for _, s := range load.Sessions() {
		if s.Clients > 1 {
			res.Shared++
		}
	}
	if err := load.Prime(ctx); err != nil {
		return res, err
	}
	load.NewPhase()
	load.Start(ctx)
	start := time.Now()
	res.Start = start
	for _, r := range cfg.Toxics {
		res.Toxics = append(res.Toxics, r.Name)
	}
	pr := &progress{w: cfg.Progress, start: start}
	pr.printf("chaos starts (%s UTC; the app logs' times are UTC)", start.UTC().Format("15:04:05.000"))

	// Progress lines.
	progCtx, stopProgress := context.WithCancel(ctx)
	var progWG sync.WaitGroup
	progWG.Add(1)
	go func() {
		defer progWG.Done()
		t := time.NewTicker(cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-progCtx.Done():
				return
			case <-t.C:
				pr.printf("%s; load avg %.1f, harness stall max %.0f ms",
					load.NewPhase().Summary().Line(), LoadAvg(), ms(stall.TakeMax()))
			}
		}
	}()

	// The chaos: one action at a time until the end.
	rnd := newRand(cfg.Seed)
	nodes := env.NodeIDs()
	deadline := start.Add(cfg.Duration)
	for ctx.Err() == nil {
		gap := cfg.Every/2 + time.Duration(rnd.Int64N(int64(cfg.Every)+1))
		if time.Now().Add(gap).After(deadline) {
			break
		}
		if sleep(ctx, gap) != nil {
			break
		}
		a := ActionRecord{At: time.Since(start).Seconds(), Action: cfg.Actions[rnd.IntN(len(cfg.Actions))],
			Node: nodes[rnd.IntN(len(nodes))]}
		hold := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rnd.Int64N(int64(hi-lo)+1)) }
		var row Row
		var d time.Duration
		switch a.Action {
		case ActionKill:
			d = hold(time.Second, 4*time.Second)
		case ActionStop:
			d = hold(time.Second, 3*time.Second)
		case ActionToxic:
			row = cfg.Toxics[rnd.IntN(len(cfg.Toxics))]
			d = hold(2*time.Second, 5*time.Second)
			a.Detail = row.Name
		}
		if a.Detail != "" {
			pr.printf("%s %s (%s): starting", a.Action, a.Node, a.Detail)
		} else {
			pr.printf("%s %s: starting", a.Action, a.Node)
		}
		a.Seconds, err = act(ctx, env, a.Action, a.Node, row.Toxic, d)
		if err != nil {
			a.Error = err.Error()
		}
		if err == nil {
			// One failure at a time: the next action waits until every
			// client has had an increment acknowledged since this one
			// ended, so that every session is on two nodes again.
			a.RecoverMs = waitServed(ctx, load, recoverTimeout)
		}
		res.Taken = append(res.Taken, a)
		res.Counts[a.Action]++
		pr.printf("%s", a)
		if err != nil && ctx.Err() == nil {
			res.Error = fmt.Sprintf("action %s: %v", a, err)
			break
		}
	}
	if res.Error == "" {
		_ = sleep(ctx, time.Until(deadline))
	}
	res.Seconds = time.Since(start).Seconds()
	stopProgress()
	progWG.Wait()
	if ctx.Err() != nil {
		load.Stop()
		res.Error = ctx.Err().Error()
		return res, nil
	}

	// The end: every node running without toxics; wait for every client
	// to be served again, then read everything back.
	calm := time.Now()
	load.Mark(calm)
	up := false
	for wait := calm.Add(60 * time.Second); time.Now().Before(wait); {
		ok, last := load.Recovered()
		if ok && res.RecoverMs < 0 {
			res.RecoverMs = ms(last.Sub(calm))
		}
		if !up {
			up, _ = env.NodesUp(ctx)
		}
		if ok && up {
			break
		}
		if sleep(ctx, 100*time.Millisecond) != nil {
			break
		}
	}
	pr.printf("chaos over: every client served again in %s; all nodes up: %v", fmtMs(res.RecoverMs), up)
	_ = sleep(ctx, 2*time.Second)
	load.Stop()
	if rest := load.NewPhase().Summary(); rest.Requests > 0 {
		pr.printf("%s", rest.Line())
	}
	res.Total = load.Total().Summary()
	_ = sleep(ctx, settle)
	pr.printf("reading back %d sessions through %d app servers", len(load.Sessions()), len(env.Apps))
	res.Sessions = load.ReadBack(ctx, env.URLs(), DefaultReadTimeout)
	res.Check = Summarize(res.Sessions)
	if res.Counters, err = env.Counters(ctx); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	res.Diagnosis = append(res.forkTimeline(), diagnose(res.Sessions, env.LogPaths())...)
	if res.RecoverMs < 0 && res.Error == "" {
		res.Error = fmt.Sprintf("%d clients not served again within 60 s after the chaos", load.Unrecovered())
	}
	return res, nil
}

// recoverTimeout bounds the wait for every client to be served again after
// an action.
const recoverTimeout = 30 * time.Second

// waitServed marks now and waits until every client of load has had an
// increment acknowledged that it sent afterwards, for up to timeout. It
// returns the time that took in milliseconds, -1 on timeout.
func waitServed(ctx context.Context, load *Load, timeout time.Duration) float64 {
	mark := time.Now()
	load.Mark(mark)
	for deadline := mark.Add(timeout); time.Now().Before(deadline); {
		if ok, last := load.Recovered(); ok {
			return ms(last.Sub(mark))
		}
		if sleep(ctx, 20*time.Millisecond) != nil {
			break
		}
	}
	return -1
}

// act applies one action to node id of env and undoes it after d. It
// returns how long the fault lasted.
func act(ctx context.Context, env *Env, action, id string, t Toxic, d time.Duration) (float64, error) {
	n := env.Node(id)
	start := time.Now()
	var err error
	switch action {
	case ActionKill:
		if err = n.Kill(); err == nil {
			_ = sleep(ctx, d)
			err = restart(ctx, env, id)
		}
	case ActionStop:
		if err = n.Pause(); err == nil {
			_ = sleep(ctx, d)
			err = n.Resume()
		}
	case ActionRestart:
		err = restart(ctx, env, id)
	case ActionToxic:
		if err = env.Proxies.Add(id, t); err == nil {
			_ = sleep(ctx, d)
			err = env.Proxies.Clear(id)
		}
	default:
		err = fmt.Errorf("unknown action %q", action)
	}
	return time.Since(start).Seconds(), err
}

// restart restarts node id empty, trying up to 3 times (10 s each).
func restart(ctx context.Context, env *Env, id string) error {
	var err error
	for range 3 {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = env.Node(id).Restart(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// progress prints lines prefixed with the time since start.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// Line is a one-line summary of s.
func (s Summary) Line() string {
	return fmt.Sprintf("%d requests (%.0f/s): 200 %d, 409 %d, 503 busy %d, 503 unavailable %d, other 5xx %d, transport errors %d; p50 %.1f ms, p99 %.1f ms",
		s.Requests, float64(s.Requests)/max(s.Seconds, 0.001), s.OK, s.Conflicts, s.Busy, s.Unavailable, s.Other5xx, s.Transport, s.P50, s.P99)
}
