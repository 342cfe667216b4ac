// Command soak is the chaos soak: 3 memcached nodes behind toxiproxy
// proxies, 2 app servers, 32 clients (a quarter of them racing on 2 shared
// sessions) incrementing their counters through both app servers, while a
// random node is killed and restarted empty, hung with SIGSTOP then
// continued, restarted empty, or given a random toxic, one action every few
// seconds (seeded: -seed replays the same choices). All on 127.0.0.1.
//
//	soak [-duration 5m] [-seed N] [-actions kill,stop,restart,toxic] [-every 4s]
//	     [-clients 32] [-json FILE] [-logdir DIR] [-app-args "..."]
//
// It prints a progress line every 10 s and one per action, then the
// acknowledged against stored increments of every session, the 5xx rate,
// p50/p99 latency, breaker trips and relocations. It exits with status 1
// on any lost acknowledged update (or another failed check, see package
// chaos), 2 on a usage or start error. Run it from inside the repository
// (it builds examples/app). SIGINT or SIGTERM stops it and everything it
// started.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mcsession/mcsession/examples/chaos"
)

func main() {
	ctx := chaos.InterruptContext("soak", os.Stderr)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// maxDuration bounds -duration.
const maxDuration = 24 * time.Hour

// run runs the soak and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 5*time.Minute, "how long the chaos lasts (at most 24h)")
	seed := fs.Uint64("seed", 0, "random seed of the actions (default: from the clock; printed)")
	actions := fs.String("actions", strings.Join(chaos.AllActions, ","), "comma-separated actions to choose from: kill, stop (SIGSTOP, then SIGCONT), restart (empty), toxic")
	toxics := fs.String("toxics", chaos.RowNames(chaos.Rows), "comma-separated toxics (rows of the fault matrix) that the toxic action chooses from")
	every := fs.Duration("every", 4*time.Second, "mean pause between two actions (uniform between half and 1.5 times it)")
	clients := fs.Int("clients", 32, "parallel clients (a quarter of them on 2 shared sessions)")
	jsonOut := fs.String("json", "", "write the full result as JSON to this `file`")
	logDir := fs.String("logdir", "", "keep the app servers' logs in this `directory` (default: a temporary one, removed unless the soak failed)")
	appArgs := fs.String("app-args", "", "extra flags for the app servers, space-separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	acts, err := chaos.ParseActions(*actions)
	var rows []chaos.Row
	if err == nil {
		rows, err = chaos.ParseRows(*toxics)
	}
	if err != nil || *duration <= 0 || *duration > maxDuration || *every <= 0 || *clients < 4 {
		fmt.Fprintln(stderr, "soak: bad flags: -duration must be in (0, 24h], -every positive, -clients at least 4;", err)
		return 2
	}
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	// The app binary (always removed) and, without -logdir, the app
	// servers' logs (kept when the soak fails).
	work, err := chaos.NewWorkdir("mcsession-soak", *logDir)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 2
	}
	keepLogs := false
	defer func() { work.Close(keepLogs) }()
	*logDir = work.LogDir
	fmt.Fprintln(stdout, "soak: building the example app")
	bin, err := work.Build(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 2
	}
	fmt.Fprintf(stdout, "soak: seed %d (replay with -seed %d), %v of chaos, actions %s every ~%v (toxics %s), %d clients (%d on 2 shared sessions); %s\n",
		*seed, *seed, *duration, strings.Join(acts, ","), *every, chaos.RowNames(rows), *clients, *clients/4, chaos.Machine(ctx))
	res, err := chaos.RunSoak(ctx, chaos.SoakConfig{
		Env:      chaos.EnvConfig{Binary: bin, LogDir: *logDir, AppArgs: strings.Fields(*appArgs)},
		Duration: *duration, Clients: *clients, Seed: *seed, Actions: acts, Toxics: rows, Every: *every, Progress: stdout,
	})
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 2
	}
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "soak: interrupted after %.0f s of chaos (seed %d): nothing verified\n", res.Seconds, res.Seed)
		return 2
	}
	report(stdout, res)
	if *jsonOut != "" {
		js, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(js, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "soak:", err)
			return 2
		}
	}
	if res.Failed() {
		keepLogs = true
		fmt.Fprintf(stdout, "soak: FAILED (seed %d); app logs kept in %s\n", res.Seed, *logDir)
		return 1
	}
	fmt.Fprintf(stdout, "soak: ok (seed %d): no lost acknowledged update\n", res.Seed)
	return 0
}

// report prints the soak's result.
func report(w io.Writer, r chaos.SoakResult) {
	fmt.Fprintf(w, "\nacknowledged against stored increments per session:\n")
	chaos.WriteSessionLines(w, r.Sessions)
	for _, l := range r.Diagnosis {
		fmt.Fprintln(w, l)
	}
	t := r.Total
	fmt.Fprintf(w, "\nsoak: %.0f s of chaos, %d actions (%s)\n", r.Seconds, len(r.Taken), counts(r.Counts))
	fmt.Fprintf(w, "requests: %s\n", t.Line())
	fmt.Fprintf(w, "5xx: %d of %d answers (%.2f %%): %d busy (lock timeout), %d unavailable, %d other; 409: %d; transport errors: %d\n",
		t.FiveXX(), t.Requests, 100*t.Rate(t.FiveXX()), t.Busy, t.Unavailable, t.Other5xx, t.Conflicts, t.Transport)
	fmt.Fprintf(w, "latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", t.P50, t.P99, t.Max)
	c := r.Counters
	fmt.Fprintf(w, "app servers: breaker trips %s; relocations %d, restores %d, conflicts %d, lock timeouts %d, backup write failures %d, single-copy saves %d\n",
		c.TripsString(), c.Relocations, c.Restores, c.Conflicts, c.LockTimeouts, c.BackupFailures, c.SingleCopySaves)
	med, longest, slow := r.Recovery()
	fmt.Fprintf(w, "recovery: every client served again %.1f s (median) and at most %.1f s after an action ended (%d actions took more than 30 s); %.1f s after the chaos\n",
		med/1000, longest/1000, slow, r.RecoverMs/1000)
	fmt.Fprintf(w, "machine: load average %.1f at the start, %.1f at the end; longest stall of this process (clients and proxies): %.0f ms\n", r.LoadAvg[0], r.LoadAvg[1], r.MaxStallMs)
	fmt.Fprintf(w, "result: %s\n", r.Check)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
}

// counts formats the action counts, e.g. "kill 12, stop 10".
func counts(m map[string]int) string {
	var parts []string
	for _, a := range chaos.AllActions {
		if m[a] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", a, m[a]))
		}
	}
	return strings.Join(parts, ", ")
}
