// Command bench measures what mcsession costs per HTTP request next to the
// floor (raw gomemcache, no library) and to peer session libraries, side
// by side in one run on real memcached, and counts lost updates.
//
//	cd bench && go run . [-duration 2s] [-concurrency 4] [-out out]
//
// It starts 3 memcached nodes on free loopback ports, serves the same small
// application once per implementation over real loopback HTTP, runs every
// scenario against every implementation, and writes results.json,
// results.md and results.png to the output directory. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// quietLog silences net/http servers' error logs (clients hanging up at
// the end of a window).
var quietLog = log.New(io.Discard, "", 0)

var (
	allScenarios = []string{"read", "write", "new", "shared-counter", "throughput"}
	allImpls     = []string{"floor", "floor-locked", "floor-meta", "mcsession-none", "mcsession-all", "mcsession-auto",
		"mcsession-none-async", "mcsession-sticky", "mcsession-sticky-trust", "scs", "gorilla"}
	// extraImpls run only when named in -impls.
	extraImpls = []string{"scs-idle"}
)

type config struct {
	duration    time.Duration
	rounds      int
	warmup      time.Duration
	concurrency int
	sharedN     int
	throughputN int
	writeShare  float64
	maxIdle     int
	out         string
	cpuprofile  string
	memprofile  string
	scenarios   []string
	impls       []string
}

func main() {
	var cfg config
	var scen, impls string
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "measured time per scenario and implementation, split over -rounds interleaved rounds")
	flag.IntVar(&cfg.rounds, "rounds", 4, "interleaved rounds per scenario (implementations take turns in a rotating order)")
	flag.DurationVar(&cfg.warmup, "warmup", 250*time.Millisecond, "unmeasured warm-up per scenario and implementation")
	flag.IntVar(&cfg.concurrency, "concurrency", 4, "parallel clients (each with its own session) in the read, write and new scenarios")
	flag.IntVar(&cfg.sharedN, "shared-clients", 16, "parallel clients sharing one session in shared-counter")
	flag.IntVar(&cfg.throughputN, "throughput-clients", 64, "parallel clients (distinct sessions) in throughput")
	flag.Float64Var(&cfg.writeShare, "write-share", 0.2, "share of writes in throughput")
	flag.IntVar(&cfg.maxIdle, "max-idle-conns", 256, "gomemcache MaxIdleConns per node, the same for every implementation")
	flag.StringVar(&cfg.out, "out", "out", "output directory for results.json, results.md and results.png")
	flag.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run (servers, client and libraries) to this file")
	flag.StringVar(&cfg.memprofile, "memprofile", "", "write an allocation profile of the whole run to this file at its end (go tool pprof -sample_index=alloc_space)")
	flag.StringVar(&scen, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run")
	flag.StringVar(&impls, "impls", strings.Join(allImpls, ","), "comma-separated implementations to run; also available: "+strings.Join(extraImpls, ","))
	flag.Parse()
	var err error
	if cfg.scenarios, err = pick(scen, allScenarios, "scenario"); err == nil {
		cfg.impls, err = pick(impls, append(slices.Clone(allImpls), extraImpls...), "implementation")
	}
	if err == nil && (cfg.duration <= 0 || cfg.rounds < 1 || cfg.concurrency < 1 || cfg.sharedN < 1 ||
		cfg.throughputN < 1 || cfg.maxIdle < 1 || cfg.warmup < 0 || cfg.writeShare < 0 || cfg.writeShare > 1) {
		err = errors.New("durations, rounds, client counts and -max-idle-conns must be positive, -write-share in [0,1]")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		fmt.Fprintln(os.Stderr, "\nbench: interrupted; memcached nodes stopped, no results written")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func pick(list string, known []string, what string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("unknown %s %q (known: %s)", what, s, strings.Join(known, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s selected", what)
	}
	// Keep the canonical order.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(known, a) - slices.Index(known, b) })
	return out, nil
}

func run(ctx context.Context, cfg config) (err error) {
	started := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cluster, err := mcproc.StartCluster(startCtx, 3, mcproc.Options{
		MemoryMB: 256, ExtraArgs: []string{"-c", "4096"},
	})
	cancel()
	if err != nil {
		if errors.Is(err, mcproc.ErrNotInstalled) {
			return fmt.Errorf("%w (run `make deps` to install memcached)", err)
		}
		return err
	}
	defer func() {
		if cerr := cluster.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	n1 := cluster.Nodes[0].Addr()
	spec := cluster.Spec()

	var impls []*impl
	defer func() {
		for _, im := range impls {
			im.shutdown()
		}
	}()
	for _, name := range cfg.impls {
		im, err := buildImpl(name, n1, spec, cfg.maxIdle)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		impls = append(impls, im)
		if err := im.serve(); err != nil {
			return fmt.Errorf("%s: serve: %w", name, err)
		}
	}

	mach := describeMachine()
	nodesCPU := func() float64 {
		var sum float64
		for _, n := range cluster.Nodes {
			st, err := n.Stats(ctx)
			if err != nil {
				continue
			}
			u, _ := strconv.ParseFloat(st["rusage_user"], 64)
			sy, _ := strconv.ParseFloat(st["rusage_system"], 64)
			sum += u + sy
		}
		return sum
	}
	cpu0 := sampleCPU(nodesCPU)
	total := 0
	for _, sc := range cfg.scenarios {
		for _, im := range impls {
			if im.runs(sc) {
				total++
			}
		}
	}
	fmt.Printf("mcsession bench: memcached %s, nodes %s\n", mach.Memcached, spec)
	fmt.Printf("%d scenarios x %d implementations (%d rows: some implementations run in some scenarios only), %v measured each (%d interleaved rounds) after %v warm-up; concurrency %d, shared-counter %d, throughput %d\n",
		len(cfg.scenarios), len(impls), total, cfg.duration, cfg.rounds, cfg.warmup, cfg.concurrency, cfg.sharedN, cfg.throughputN)

	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.memprofile != "" {
		defer func() {
			f, err := os.Create(cfg.memprofile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench: memprofile:", err)
				return
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				fmt.Fprintln(os.Stderr, "bench: memprofile:", err)
			}
		}()
	}

	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	var results []*result
	done := 0
	for _, sc := range cfg.scenarios {
		rs, err := runScenario(ctx, cfg, hc, sc, impls, cmdCounter(cluster), func(r *result) {
			done++
			fmt.Printf("[%2d/%d] %s\n", done, total, r.line())
		})
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	elapsed := time.Since(started)
	mach.LoadEnd = loadavg()
	mach.Foreign, mach.ForeignOK = foreignShare(cpu0, sampleCPU(nodesCPU))

	rep := &report{cfg: cfg, results: results, machine: mach, elapsed: elapsed, spec: spec, impls: impls}
	rep.targets = computeTargets(results)
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	if err := rep.writeJSON(filepath.Join(cfg.out, "results.json")); err != nil {
		return err
	}
	if err := rep.writeMarkdown(filepath.Join(cfg.out, "results.md")); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(cfg.out, "results.png"), cfg, results); err != nil {
		return err
	}
	fmt.Println()
	fmt.Println("targets (reported, not asserted):")
	for _, t := range rep.targets {
		fmt.Println("  " + t.line())
	}
	if mach.ForeignOK {
		fmt.Printf("\nother processes used %.0f%% of the machine's CPU during the run", mach.Foreign*100)
		if mach.Foreign > 0.10 {
			fmt.Print(": the machine was busy, numbers are disturbed; run again when it is quiet")
		}
		fmt.Println()
	}
	fmt.Printf("\nwrote %s/results.{json,md,png} in %v\n", cfg.out, elapsed.Round(100*time.Millisecond))
	return nil
}

// cmdCounter returns a function that sums, over every node, the memcached
// commands served so far: keys asked by get/gets, storage commands (set,
// add, cas), touches and deletes. A node that does not answer counts 0.
func cmdCounter(c *mcproc.Cluster) func(context.Context) uint64 {
	names := []string{"cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses"}
	return func(ctx context.Context) uint64 {
		var sum uint64
		for _, n := range c.Nodes {
			st, err := n.Stats(ctx)
			if err != nil {
				continue
			}
			for _, name := range names {
				v, _ := strconv.ParseUint(st[name], 10, 64)
				sum += v
			}
		}
		return sum
	}
}

func buildImpl(name, n1, spec string, maxIdle int) (*impl, error) {
	if v, ok := mcVariants[name]; ok {
		return newMcsession(name, v, spec, maxIdle)
	}
	switch name {
	case "floor":
		return newFloor(n1, maxIdle, false), nil
	case "floor-locked":
		return newFloor(n1, maxIdle, true), nil
	case "floor-meta":
		return newFloorMeta(n1, maxIdle), nil
	case "scs":
		return newSCS(n1, maxIdle, false), nil
	case "scs-idle":
		return newSCS(n1, maxIdle, true), nil
	case "gorilla":
		return newGorilla(n1, maxIdle), nil
	}
	return nil, fmt.Errorf("unknown implementation %q", name)
}
