// Command faults runs the fault matrix: for each row, a fresh environment
// (3 memcached nodes, a toxiproxy proxy in front of each, 2 app servers
// whose -nodes are the proxies, all on 127.0.0.1), parallel clients
// incrementing their sessions' counters through both app servers, a toxic
// on the proxy of the node that is the primary of a shared session, then
// its removal; it compares acknowledged and stored increments, counts the
// 5xx answers and measures the time to recover (see package chaos).
//
//	faults [-rows latency-600ms,blackhole] [-clients 16] [-before 3s] [-fault 6s] [-after 3s]
//	       [-out docs] [-readme README.md] [-logdir DIR] [-app-args "-lock-timeout 3s"]
//
// Run it from inside the repository (it builds examples/app). With -out it
// writes faults-results.md and faults-results.json there; with -readme it
// replaces the table between the lines <!-- faults:begin --> and
// <!-- faults:end --> of that file. It exits with status 1 when a row lost
// or invented an update, did not recover or could not run, 2 on a usage
// or start error. SIGINT or SIGTERM stops it (and everything it started).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcsession/mcsession/examples/chaos"
)

func main() {
	ctx := chaos.InterruptContext("faults", os.Stderr)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the matrix and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rows := fs.String("rows", chaos.RowNames(chaos.Rows), "comma-separated rows to run")
	clients := fs.Int("clients", chaos.DefaultClients, "parallel clients (a quarter of them on 2 shared sessions)")
	before := fs.Duration("before", 3*time.Second, "load before each fault")
	fault := fs.Duration("fault", 6*time.Second, "how long each fault lasts")
	after := fs.Duration("after", 3*time.Second, "load after the clients recovered")
	out := fs.String("out", "", "write faults-results.md and faults-results.json to this `directory`")
	readme := fs.String("readme", "", "replace the fault table between the faults markers in this `file`")
	logDir := fs.String("logdir", "", "keep the app servers' logs in this `directory` (default: a temporary one, removed unless a row failed)")
	appArgs := fs.String("app-args", "", "extra flags for the app servers, space-separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg := chaos.MatrixConfig{Clients: *clients, Before: *before, Fault: *fault, After: *after, Progress: stdout}
	var err error
	if cfg.Rows, err = chaos.ParseRows(*rows); err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 2
	}
	if *clients < 4 || *before <= 0 || *fault <= 0 || *after <= 0 {
		fmt.Fprintln(stderr, "faults: -clients must be at least 4 and the durations positive")
		return 2
	}
	cfg.Env.AppArgs = strings.Fields(*appArgs)
	// The app binary (always removed) and, without -logdir, the app
	// servers' logs (kept when the run fails).
	work, err := chaos.NewWorkdir("mcsession-faults", *logDir)
	if err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 2
	}
	keepLogs := false
	defer func() { work.Close(keepLogs) }()
	*logDir = work.LogDir
	cfg.Env.LogDir = *logDir
	fmt.Fprintln(stdout, "faults: building the example app")
	if cfg.Env.Binary, err = work.Build(ctx); err != nil {
		fmt.Fprintln(stderr, "faults:", err)
		return 2
	}
	machine := chaos.Machine(ctx)
	started := time.Now()
	fmt.Fprintf(stdout, "faults: %d rows, %d clients, %v before, %v fault, %v after each; %s\n",
		len(cfg.Rows), *clients, *before, *fault, *after, machine)
	results, err := chaos.RunMatrix(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "faults: interrupted:", err)
		return 2
	}
	failed := 0
	for _, r := range results {
		if r.Failed() {
			failed++
		}
	}
	header := fmt.Sprintf("Measured %s (%s) with `faults -clients %d -before %v -fault %v -after %v`: %d clients (%d on 2 shared sessions) on 2 app servers, 3 memcached nodes, the toxic on the proxy of the node that is the primary of a shared session; the whole matrix took %v.",
		started.Format("2006-01-02"), machine, *clients, *before, *fault, *after, *clients, *clients/4, time.Since(started).Round(time.Second))
	table := chaos.MatrixTable(results)
	fmt.Fprintf(stdout, "\n%s\n", table)
	if *out != "" {
		if err := writeResults(*out, header, results); err != nil {
			fmt.Fprintln(stderr, "faults:", err)
			return 2
		}
		fmt.Fprintf(stdout, "faults: wrote %s and %s\n", filepath.Join(*out, "faults-results.md"), filepath.Join(*out, "faults-results.json"))
	}
	if *readme != "" {
		if err := updateReadme(*readme, header+" Details: [docs/faults-results.md](docs/faults-results.md).\n\n"+table); err != nil {
			fmt.Fprintln(stderr, "faults:", err)
			return 2
		}
		fmt.Fprintf(stdout, "faults: updated the table in %s\n", *readme)
	}
	if failed > 0 {
		keepLogs = true
		fmt.Fprintf(stdout, "faults: %d of %d rows FAILED (app logs kept in %s)\n", failed, len(results), *logDir)
		for _, r := range results {
			for _, l := range r.Diagnosis {
				fmt.Fprintf(stdout, "  %s: %s\n", r.Row.Name, l)
			}
		}
		return 1
	}
	fmt.Fprintf(stdout, "faults: %d rows, no lost update\n", len(results))
	return 0
}

// writeResults writes faults-results.md and faults-results.json to dir.
func writeResults(dir, header string, results []chaos.RowResult) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md bytes.Buffer
	chaos.WriteMatrixDetail(&md, header, results)
	if err := os.WriteFile(filepath.Join(dir, "faults-results.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(map[string]any{"header": header, "rows": results}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "faults-results.json"), append(js, '\n'), 0o644)
}

// updateReadme replaces what lies between the faults markers of path.
func updateReadme(path, content string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	updated, err := chaos.ReplaceBetween(string(doc), chaos.FaultsBegin, chaos.FaultsEnd, content)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, []byte(updated), 0o644)
}
