package chaos

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Row is one fault of the matrix: a toxic on the proxy of one node.
type Row struct {
	// Name is the row's short name, e.g. "latency-600ms".
	Name string `json:"name"`
	// Toxic is applied to the proxy in front of the node.
	Toxic Toxic `json:"toxic"`
	// What says what the app servers see.
	What string `json:"what"`
}

// Rows is the fault matrix. The round-trip timeout of the app servers is
// replica's default, 500 ms.
var Rows = []Row{
	{"latency-50ms", Toxic{"latency", "downstream", map[string]int{"latency": 50}},
		"every answer of the node 50 ms late (under the 500 ms round-trip timeout)"},
	{"latency-600ms", Toxic{"latency", "downstream", map[string]int{"latency": 600}},
		"every answer 600 ms late: past the 500 ms timeout, so every round trip fails"},
	{"blackhole", Toxic{"timeout", "both", map[string]int{"timeout": 0}},
		"toxiproxy's timeout toxic with timeout 0: data dropped both ways, connections stay open (a hung node)"},
	{"reset-peer", Toxic{"reset_peer", "downstream", map[string]int{"timeout": 0}},
		"the node's answer is replaced by a TCP reset: the command ran, the app sees a broken connection"},
	{"slow-close", Toxic{"slow_close", "downstream", map[string]int{"delay": 2000}},
		"the node's side of a closing connection is held open for 2 s"},
	{"bandwidth-10KB", Toxic{"bandwidth", "downstream", map[string]int{"rate": 10}},
		"answers limited to 10 KB/s per connection"},
	{"slicer", Toxic{"slicer", "both", map[string]int{"average_size": 8, "size_variation": 6, "delay": 200}},
		"both directions cut into 2-14 byte pieces, 200 µs apart"},
}

// RowByName returns the row named name.
func RowByName(name string) (Row, bool) {
	for _, r := range Rows {
		if r.Name == name {
			return r, true
		}
	}
	return Row{}, false
}

// ParseRows parses a comma-separated list of row names.
func ParseRows(s string) ([]Row, error) {
	var out []Row
	for _, n := range strings.Split(s, ",") {
		r, ok := RowByName(strings.TrimSpace(n))
		if !ok {
			var names []string
			for _, r := range Rows {
				names = append(names, r.Name)
			}
			return nil, fmt.Errorf("chaos: unknown row %q (rows: %s)", n, strings.Join(names, ", "))
		}
		out = append(out, r)
	}
	return out, nil
}

// RowNames returns the names of rows, comma-separated.
func RowNames(rows []Row) string {
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Name
	}
	return strings.Join(names, ",")
}

// MatrixConfig configures RunMatrix. Binary and LogDir are required.
type MatrixConfig struct {
	// Env is the environment of each row (a new one per row); its Binary
	// and LogDir are required.
	Env EnvConfig
	// Rows are the faults to run, in order. Default: Rows.
	Rows []Row
	// Clients is the number of parallel clients (a quarter on 2 shared
	// sessions). Default 16.
	Clients int
	// Think is each client's pause between two requests. Default 5 ms.
	Think time.Duration
	// Before is the load before the fault, Fault how long the fault
	// lasts, After the load after the clients recovered. Defaults 3 s,
	// 6 s and 3 s.
	Before, Fault, After time.Duration
	// RecoverTimeout bounds the wait for recovery after the removal.
	// Default 30 s.
	RecoverTimeout time.Duration
	// Progress receives a line per phase. Default: discarded.
	Progress io.Writer
}

// RowResult is what one row of the matrix measured.
type RowResult struct {
	Row Row `json:"row"`
	// Node is the node whose proxy got the toxic: the primary of the
	// first shared session. SessionsOnNode is how many sessions had their
	// primary there when the fault started.
	Node           string `json:"node"`
	SessionsOnNode int    `json:"sessions_on_node"`
	Clients        int    `json:"clients"`
	// Before, During and After are the answers before the fault, while it
	// lasted, and from its removal to the end of the load.
	Before Summary `json:"before"`
	During Summary `json:"during"`
	After  Summary `json:"after"`
	// RemoveMs is how long the removal of the toxic took (toxiproxy
	// flushes what the toxic holds first).
	RemoveMs float64 `json:"remove_ms"`
	// RecoverMs is the time from the removal until every client had an
	// increment acknowledged that it sent after the removal; -1 if that
	// did not happen within the RecoverTimeout.
	RecoverMs float64 `json:"recover_ms"`
	// NodesUpMs is the time from the removal until GET /readyz on every
	// app server saw every node up with a closed breaker (polled every
	// 100 ms); -1 if not within the RecoverTimeout.
	NodesUpMs float64 `json:"nodes_up_ms"`
	// Counters are the app servers' counters at the end of the row.
	Counters AppCounters `json:"counters"`
	// Check and Sessions compare acknowledged and stored increments.
	Check    Check           `json:"check"`
	Sessions []SessionResult `json:"sessions"`
	// Diagnosis holds, for failed sessions, their ids and the app log
	// lines that name them.
	Diagnosis []string `json:"diagnosis,omitempty"`
	// MaxStallMs is the longest time this process (the clients and the
	// proxies, so every node at once) could not run during the row;
	// LoadAvg the machine's 1-minute load average at the end of the row.
	MaxStallMs float64 `json:"max_stall_ms"`
	LoadAvg    float64 `json:"load_avg"`
	// Error is set when the row could not run to the end.
	Error string `json:"error,omitempty"`
}

// Failed reports whether the row lost or invented an update, did not
// recover, or could not run.
func (r RowResult) Failed() bool {
	return r.Error != "" || !r.Check.OK() || r.RecoverMs < 0
}

// RunMatrix runs every row in a fresh Env and returns their results; an
// error only when ctx ended (the rows done so far are returned).
func RunMatrix(ctx context.Context, cfg MatrixConfig) ([]RowResult, error) {
	if cfg.Rows == nil {
		cfg.Rows = Rows
	}
	if cfg.Clients == 0 {
		cfg.Clients = DefaultClients
	}
	if cfg.Before == 0 {
		cfg.Before = 3 * time.Second
	}
	if cfg.Fault == 0 {
		cfg.Fault = 6 * time.Second
	}
	if cfg.After == 0 {
		cfg.After = 3 * time.Second
	}
	if cfg.RecoverTimeout == 0 {
		cfg.RecoverTimeout = 30 * time.Second
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	var out []RowResult
	for i, row := range cfg.Rows {
		fmt.Fprintf(cfg.Progress, "row %d/%d %s: %s on the primary of a shared session; %s\n",
			i+1, len(cfg.Rows), row.Name, row.Toxic, row.What)
		r := runRow(ctx, cfg, row)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out = append(out, r)
		fmt.Fprintf(cfg.Progress, "row %d/%d %s: %s\n", i+1, len(cfg.Rows), row.Name, r.Line())
	}
	return out, nil
}

// Line is a one-line summary of r.
func (r RowResult) Line() string {
	if r.Error != "" {
		return "ERROR: " + r.Error
	}
	return fmt.Sprintf("%s; during the fault: %d requests, %d 5xx, p99 %.0f ms; recovered in %s, nodes up in %s; relocations %d, breaker trips %s; load avg %.1f, harness stall max %.0f ms",
		r.Check, r.During.Requests, r.During.FiveXX(), r.During.P99, fmtMs(r.RecoverMs), fmtMs(r.NodesUpMs),
		r.Counters.Relocations, r.Counters.TripsString(), r.LoadAvg, r.MaxStallMs)
}

// fmtMs formats milliseconds as seconds, "never" for -1.
func fmtMs(v float64) string {
	if v < 0 {
		return "never"
	}
	return fmt.Sprintf("%.1f s", v/1000)
}

// runRow runs one row in its own Env.
func runRow(ctx context.Context, cfg MatrixConfig, row Row) (res RowResult) {
	res = RowResult{Row: row, Clients: cfg.Clients, RecoverMs: -1, NodesUpMs: -1}
	stall := startStallMeter()
	defer func() {
		stall.Stop()
		res.MaxStallMs = ms(stall.Max())
		res.LoadAvg = LoadAvg()
	}()
	env, err := StartEnv(ctx, cfg.Env)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() {
		if err := env.Close(); err != nil && res.Error == "" {
			res.Error = "stopping the environment: " + err.Error()
		}
	}()
	load, err := NewLoad(LoadConfig{Apps: env.URLs(), Clients: cfg.Clients, Think: cfg.Think})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if err := load.Prime(ctx); err != nil {
		res.Error = err.Error()
		return res
	}
	res.Node = nodeOf(load.Sessions()[0].lastID())
	for _, s := range load.Sessions() {
		if nodeOf(s.lastID()) == res.Node {
			res.SessionsOnNode++
		}
	}
	fail := func(err error) RowResult {
		load.Stop()
		res.Error = err.Error()
		return res
	}
	load.NewPhase()
	load.Start(ctx)
	if sleep(ctx, cfg.Before) != nil {
		return fail(ctx.Err())
	}
	res.Before = load.NewPhase().Summary()
	if err := env.Proxies.Add(res.Node, row.Toxic); err != nil {
		return fail(err)
	}
	if sleep(ctx, cfg.Fault) != nil {
		return fail(ctx.Err())
	}
	res.During = load.NewPhase().Summary()
	t0 := time.Now()
	if err := env.Proxies.Clear(res.Node); err != nil {
		return fail(err)
	}
	removed := time.Now()
	res.RemoveMs = ms(removed.Sub(t0))
	load.Mark(removed)
	deadline := removed.Add(cfg.RecoverTimeout)
	for (res.RecoverMs < 0 || res.NodesUpMs < 0) && time.Now().Before(deadline) {
		if ok, last := load.Recovered(); ok && res.RecoverMs < 0 {
			res.RecoverMs = ms(last.Sub(removed))
		}
		if res.NodesUpMs < 0 {
			if ok, _ := env.NodesUp(ctx); ok {
				res.NodesUpMs = ms(time.Since(removed))
			}
		}
		if sleep(ctx, 100*time.Millisecond) != nil {
			return fail(ctx.Err())
		}
	}
	if sleep(ctx, cfg.After) != nil {
		return fail(ctx.Err())
	}
	load.Stop()
	res.After = load.NewPhase().Summary()
	if sleep(ctx, settle) != nil {
		return fail(ctx.Err())
	}
	res.Sessions = load.ReadBack(ctx, env.URLs(), DefaultReadTimeout)
	res.Check = Summarize(res.Sessions)
	if res.Counters, err = env.Counters(ctx); err != nil {
		res.Error = err.Error()
	}
	res.Diagnosis = diagnose(res.Sessions, env.LogPaths())
	if res.NodesUpMs < 0 && res.Error == "" {
		_, why := env.NodesUp(ctx)
		res.Error = "nodes not all up after the removal: " + why
	}
	if ctx.Err() != nil {
		res.Error = ctx.Err().Error()
	}
	return res
}

// settle is the pause between the end of the load and the read-back, so
// that requests the clients gave up on have ended on the servers too.
const settle = time.Second

// diagnose describes the failed sessions of rs with the app log lines that
// name them.
func diagnose(rs []SessionResult, logs []string) []string {
	var out []string
	for _, r := range rs {
		if r.Verdict == VerdictOK {
			continue
		}
		out = append(out, fmt.Sprintf("session %d (%d clients): %s: acknowledged %d, stored %d (by app %v), unknown %d, refused %d; ids %s",
			r.Index, r.Clients, r.Verdict, r.Acked, r.Stored, r.StoredBy, r.Unknown, r.Refused, strings.Join(r.IDs, " ")))
		for _, f := range r.Forks {
			out = append(out, "  "+f)
		}
		if r.Note != "" {
			out = append(out, "  "+r.Note)
		}
		for _, l := range Grep(logs, r.LogWords(), 40) {
			out = append(out, "  "+l)
		}
	}
	return out
}

// lastID returns the last session id answered to s, "" for none.
func (s *Session) lastID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 {
		return ""
	}
	return s.ids[len(s.ids)-1]
}

// nodeOf returns the node id a session id names.
func nodeOf(id string) string { return id[strings.LastIndexByte(id, '-')+1:] }
