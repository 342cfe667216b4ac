package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"
)

type report struct {
	cfg     config
	results []*result
	targets []target
	machine machine
	elapsed time.Duration
	spec    string
	impls   []*impl
}

// target is one of the goals of issues #5, #8 and #10 (sticky mode and
// asynchronous writes), reported and never asserted.
type target struct {
	name   string  // what is compared
	want   string  // the goal, e.g. "<= 1.15"
	value  float64 // median over rounds of the paired ratio (or the count)
	pooled float64 // the same ratio from the pooled numbers of the table
	met    bool
	known  bool   // false when a needed row was not run
	note   string // extra detail
	ratio  bool
}

func (t target) status() string {
	switch {
	case !t.known:
		return "n/a"
	case t.met:
		return "met"
	}
	return "missed"
}

func (t target) line() string {
	if !t.known {
		return fmt.Sprintf("%-56s %-8s n/a (not run)", t.name, t.want)
	}
	v := fmt.Sprintf("%.3f (pooled %.3f)", t.value, t.pooled)
	if !t.ratio {
		v = fmt.Sprintf("%.0f", t.value)
	}
	s := fmt.Sprintf("%-56s %-8s %-24s %s", t.name, t.want, v, strings.ToUpper(t.status()))
	if t.note != "" {
		s += "  (" + t.note + ")"
	}
	return s
}

func find(results []*result, sc, im string) *result {
	for _, r := range results {
		if r.Scenario == sc && r.Impl == im {
			return r
		}
	}
	return nil
}

// pairedRatio returns the median over rounds of f(a's round)/f(b's round)
// (a and b ran next to each other in each round) and the ratio of the
// pooled values.
func pairedRatio(a, b *result, f func(roundStat) float64, pooled func(*result) float64) (float64, float64) {
	var rs []float64
	for i := range min(len(a.rounds), len(b.rounds)) {
		if d := f(b.rounds[i]); d > 0 {
			rs = append(rs, f(a.rounds[i])/d)
		}
	}
	var p float64
	if d := pooled(b); d > 0 {
		p = pooled(a) / d
	}
	return median(rs), p
}

func computeTargets(results []*result) []target {
	p50 := func(s roundStat) float64 { return s.p50 }
	pooledP50 := func(r *result) float64 { return r.P50us }
	latency := func(sc, im, base string, limit float64) target {
		t := target{name: fmt.Sprintf("%s: %s p50 / %s p50", sc, im, base), want: fmt.Sprintf("<= %.2f", limit), ratio: true}
		a, b := find(results, sc, im), find(results, sc, base)
		if a == nil || b == nil {
			return t
		}
		t.known = true
		t.value, t.pooled = pairedRatio(a, b, p50, pooledP50)
		t.met = t.value <= limit
		return t
	}
	ts := []target{
		latency("read", "mcsession-none", "floor", 1.10),
		latency("write", "mcsession-none", "floor", 1.20),
		latency("write", "mcsession-all", "floor-locked", 0.75),
		latency("write", "mcsession-all", "floor-meta", 1.30),
		// Sticky mode and asynchronous writes: served from the app
		// server's cache with no memcached round trip (trust) or one tiny
		// version probe instead of the body; the backup copy off the
		// critical path.
		latency("read", "mcsession-sticky-trust", "floor", 0.80),
		latency("read", "mcsession-sticky", "floor", 1.00),
		latency("write", "mcsession-none-async", "floor", 1.10),
	}

	lost := target{name: "shared-counter: mcsession-all lost updates", want: "== 0"}
	if r := find(results, "shared-counter", "mcsession-all"); r != nil {
		lost.known, lost.value, lost.met = true, float64(r.LostUpdates), r.LostUpdates == 0
		var peers []string
		for _, p := range results {
			if p.Scenario == "shared-counter" && p != r {
				peers = append(peers, fmt.Sprintf("%s %d", p.Impl, p.LostUpdates))
			}
		}
		lost.note = "others: " + strings.Join(peers, ", ")
	}
	ts = append(ts, lost)

	// Sticky mode: all 16 clients on the one app server, whose in-process
	// lock serialises them.
	sticky := target{name: "shared-counter: mcsession-sticky(-trust) lost updates", want: "== 0"}
	var stickyRows []string
	for _, im := range []string{"mcsession-sticky", "mcsession-sticky-trust"} {
		if r := find(results, "shared-counter", im); r != nil {
			sticky.known = true
			sticky.value += math.Abs(float64(r.LostUpdates))
			stickyRows = append(stickyRows, fmt.Sprintf("%s %d", im, r.LostUpdates))
		}
	}
	if sticky.known {
		sticky.met = sticky.value == 0
		sticky.note = strings.Join(stickyRows, ", ")
	}
	ts = append(ts, sticky)

	tp := target{name: "throughput: mcsession-none rps / best peer rps", want: ">= 1.10", ratio: true}
	none := find(results, "throughput", "mcsession-none")
	var peers []*result
	for _, im := range []string{"scs", "gorilla"} {
		if p := find(results, "throughput", im); p != nil {
			peers = append(peers, p)
		}
	}
	if none != nil && len(peers) > 0 {
		tp.known = true
		var rs []float64
		for i := range none.rounds {
			best := 0.0
			for _, p := range peers {
				if i < len(p.rounds) {
					best = max(best, p.rounds[i].rps)
				}
			}
			if best > 0 {
				rs = append(rs, none.rounds[i].rps/best)
			}
		}
		tp.value = median(rs)
		best := peers[0]
		for _, p := range peers[1:] {
			if p.RPS > best.RPS {
				best = p
			}
		}
		if best.RPS > 0 {
			tp.pooled = none.RPS / best.RPS
		}
		tp.met = tp.value >= 1.10
		tp.note = fmt.Sprintf("best peer by pooled rps: %s", best.Impl)
	}
	ts = append(ts, tp)

	all := target{name: "throughput: mcsession-all rps / floor-locked rps", want: ">= 1.00", ratio: true}
	if a, b := find(results, "throughput", "mcsession-all"), find(results, "throughput", "floor-locked"); a != nil && b != nil {
		all.known = true
		all.value, all.pooled = pairedRatio(a, b,
			func(s roundStat) float64 { return s.rps }, func(r *result) float64 { return r.RPS })
		all.met = all.value >= 1
	}
	return append(ts, all)
}

func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep.results, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (rep *report) writeMarkdown(path string) error {
	var b strings.Builder
	cfg := rep.cfg
	fmt.Fprintf(&b, "# mcsession benchmark results\n\n")
	fmt.Fprintf(&b, "Generated by `cd bench && go run .%s` (`make bench` runs `go run . -out out`) on %s in %v. ",
		argsString(), time.Now().UTC().Format("2006-01-02 15:04 UTC"), rep.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "Every implementation serves the same application through real `net/http` handlers over loopback HTTP, "+
		"measured with the same client in the same run against the same 3 local memcached %s nodes. "+
		"Each (scenario, implementation) is measured for %v in %d interleaved rounds (implementations take turns, order rotated every round) after a %v warm-up. "+
		"Clients: %d (read, write, new; one session each), %d sharing one session (shared-counter), %d with distinct sessions, %.0f%% writes (throughput).\n\n",
		rep.machine.Memcached, cfg.duration, cfg.rounds, cfg.warmup, cfg.concurrency, cfg.sharedN, cfg.throughputN, cfg.writeShare*100)

	b.WriteString("| scenario | impl | p50 µs | p99 µs | rps | allocs/req | mc cmds/req | requests | failed | lost updates |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.results {
		lost := "–"
		if r.Scenario == "shared-counter" {
			lost = fmt.Sprintf("%d", r.LostUpdates)
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f | %.0f | %.1f | %.2f | %d | %d | %s |\n",
			r.Scenario, r.Impl, r.P50us, r.P99us, r.RPS, r.AllocsPerReq, r.cmdsPerReq(), r.Requests, r.errors, lost)
	}
	b.WriteString("\nLatency and rps count requests answered 200 only; \"failed\" counts the other answers " +
		"(409 conflict, 503 lock timeout, 500) and transport errors. allocs/req is the process-wide `runtime.MemStats.Mallocs` " +
		"delta over the measured windows divided by the requests answered 200: it includes the load generator and the HTTP " +
		"server and client, which are the same for every implementation, so compare differences, not absolute values. " +
		"mc cmds/req is the memcached commands served by all nodes during the measured windows (keys of get/gets, set/add/cas, touch, delete, " +
		"from the nodes' stats) per request sent, background work included.\n")

	if sc := find(rep.results, "shared-counter", "mcsession-all"); sc != nil || hasScenario(rep.results, "shared-counter") {
		b.WriteString("\nshared-counter: increments answered 200 (warm-up included) against the counter read back at the end:\n\n")
		b.WriteString("| impl | acknowledged | final counter | lost updates | failed (not acknowledged) |\n|---|--:|--:|--:|--:|\n")
		for _, r := range rep.results {
			if r.Scenario == "shared-counter" {
				fmt.Fprintf(&b, "| %s | %d | %d | %d | %d |\n", r.Impl, r.acked, r.final, r.LostUpdates, r.errors)
			}
		}
	}

	b.WriteString("\n## Targets\n\nReported, not asserted. Ratios are the median over the rounds of the ratio between the two implementations " +
		"measured next to each other in that round; \"pooled\" is the same ratio from the table.\n\n")
	b.WriteString("| target | goal | value | pooled | status |\n|---|---|--:|--:|---|\n")
	for _, t := range rep.targets {
		val, pooled := "n/a", "n/a"
		if t.known {
			if t.ratio {
				val, pooled = fmt.Sprintf("%.3f", t.value), fmt.Sprintf("%.3f", t.pooled)
			} else {
				val, pooled = fmt.Sprintf("%.0f", t.value), "–"
			}
		}
		status := t.status()
		if t.note != "" {
			status += " (" + t.note + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.name, t.want, val, pooled, status)
	}

	b.WriteString("\n## Implementations\n\n")
	for _, im := range rep.impls {
		fmt.Fprintf(&b, "- `%s`: %s\n", im.name, im.desc)
	}
	b.WriteString("\nPeers and the floor talk to node n1 only; mcsession uses all 3 nodes and writes every save to a primary and a backup node. " +
		"Every implementation keeps the same number of idle connections per node " +
		fmt.Sprintf("(%d; gomemcache's MaxIdleConns, mcsession's replica.Config.MaxIdleConns, floor-meta's pool). "+
			"See bench/README.md for what each one does per request.\n", cfg.maxIdle))

	m := rep.machine
	b.WriteString("\n## Machine\n\n")
	fmt.Fprintf(&b, "- CPU: %s, %d logical CPUs (nproc)\n", m.CPU, m.NProc)
	fmt.Fprintf(&b, "- memory: %s\n", m.Memory)
	fmt.Fprintf(&b, "- OS: %s\n", m.Kernel)
	fmt.Fprintf(&b, "- Go: %s, GOMAXPROCS %d\n", m.Go, m.GOMAXPROCS)
	if m.Commit != "" {
		fmt.Fprintf(&b, "- mcsession: commit %s\n", m.Commit)
	}
	fmt.Fprintf(&b, "- memcached: %s (3 local nodes, 2 threads each)\n", m.Memcached)
	b.WriteString("- the load generator, the HTTP servers and the 3 memcached nodes share the machine's CPUs\n")
	if m.LoadStart != "" {
		fmt.Fprintf(&b, "- load average (1, 5, 15 min) at the start: %s; at the end: %s (the bench's own load included)\n", m.LoadStart, m.LoadEnd)
	}
	if m.ForeignOK {
		fmt.Fprintf(&b, "- CPU used by other processes during the run: %.0f%% of the machine (user+nice+system+steal time from /proc/stat minus the bench's and the memcached nodes' own CPU time; an estimate)", m.Foreign*100)
		if m.Foreign > 0.10 {
			b.WriteString(" — the machine was busy: these numbers are disturbed")
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// argsString returns the command-line arguments, each prefixed by a space.
func argsString() string {
	var b strings.Builder
	for _, a := range os.Args[1:] {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	return b.String()
}

func hasScenario(results []*result, sc string) bool {
	for _, r := range results {
		if r.Scenario == sc {
			return true
		}
	}
	return false
}
