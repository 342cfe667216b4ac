package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"sync"
	"time"
)

// result is one row of results.json (the tagged fields) plus what the
// markdown report and the targets need.
type result struct {
	Scenario     string  `json:"scenario"`
	Impl         string  `json:"impl"`
	P50us        float64 `json:"p50_us"`
	P99us        float64 `json:"p99_us"`
	RPS          float64 `json:"rps"`
	AllocsPerReq float64 `json:"allocs_per_req"`
	Requests     uint64  `json:"requests"`
	LostUpdates  int64   `json:"lost_updates"`

	errors  uint64
	mcCmds  uint64 // memcached commands (all nodes) during the measured windows
	rounds  []roundStat
	acked   uint64 // shared-counter: increments answered 200, warm-up included
	final   int64  // shared-counter: the counter at the end
	h       hist
	elapsed time.Duration
	mallocs uint64
}

// roundStat is one implementation's share of one interleaved round.
type roundStat struct {
	p50, p99, rps float64
}

// cmdsPerReq is the memcached commands per request sent (answered 200 or
// not) over the measured windows.
func (r *result) cmdsPerReq() float64 {
	if n := r.Requests + r.errors; n > 0 {
		return float64(r.mcCmds) / float64(n)
	}
	return 0
}

func (r *result) line() string {
	s := fmt.Sprintf("%-14s %-22s p50 %8.1fµs  p99 %9.1fµs  %7.0f rps  %5.1f allocs/req  %4.1f mc cmds/req  %6d req",
		r.Scenario, r.Impl, r.P50us, r.P99us, r.RPS, r.AllocsPerReq, r.cmdsPerReq(), r.Requests)
	if r.errors > 0 {
		s += fmt.Sprintf("  %d failed", r.errors)
	}
	if r.Scenario == "shared-counter" {
		s += fmt.Sprintf("  acked %d final %d lost %d", r.acked, r.final, r.LostUpdates)
	}
	return s
}

type opFunc func(v *vclient, ctx context.Context) (bool, error)

// runScenario runs one scenario for every implementation: set-up, a
// warm-up, then cfg.rounds measured windows of duration/rounds each, the
// implementations taking turns in an order rotated every round so that
// slow drifts of the machine spread over all of them.
func runScenario(ctx context.Context, cfg config, hc *http.Client, sc string, all []*impl, mcCmds func(context.Context) uint64, progress func(*result)) ([]*result, error) {
	var impls []*impl
	for _, im := range all {
		if im.runs(sc) {
			impls = append(impls, im)
		}
	}
	if len(impls) == 0 {
		return nil, nil
	}
	n := cfg.concurrency
	switch sc {
	case "shared-counter":
		n = cfg.sharedN
	case "throughput":
		n = cfg.throughputN
	}
	var op opFunc
	switch sc {
	case "read":
		op = (*vclient).read
	case "write":
		op = (*vclient).write
	case "new":
		op = (*vclient).newSession
	case "shared-counter":
		op = (*vclient).incr
	case "throughput":
		share := cfg.writeShare
		op = func(v *vclient, ctx context.Context) (bool, error) {
			if v.rng.Float64() < share {
				return v.write(ctx)
			}
			return v.read(ctx)
		}
	default:
		return nil, fmt.Errorf("unknown scenario %q", sc)
	}

	fmt.Printf("%s: set-up", sc)
	clients := make([][]*vclient, len(impls))
	results := make([]*result, len(impls))
	for i, im := range impls {
		cs := make([]*vclient, n)
		for j := range cs {
			cs[j] = newVClient(hc, im.base, j)
		}
		if err := setup(ctx, sc, cs); err != nil {
			return nil, fmt.Errorf("%s/%s: set-up: %w", sc, im.name, err)
		}
		im.settleBackground(ctx)
		clients[i] = cs
		results[i] = &result{Scenario: sc, Impl: im.name}
	}
	fmt.Print(", warm-up")
	for i := range impls {
		w := load(ctx, clients[i], cfg.warmup, op)
		impls[i].settleBackground(ctx)
		results[i].acked += w.ok
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	per := cfg.duration / time.Duration(cfg.rounds)
	for round := 0; round < cfg.rounds; round++ {
		fmt.Printf(", round %d/%d", round+1, cfg.rounds)
		for k := range impls {
			i := (k + round) % len(impls)
			if round%2 == 1 {
				i = len(impls) - 1 - i
			}
			r := results[i]
			cmds0 := mcCmds(ctx)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			w := load(ctx, clients[i], per, op)
			// The window's background work (touches, queued writes) is
			// its own: done before the next window, counted in its
			// memcached commands and allocations, not in its latency.
			impls[i].settleBackground(ctx)
			runtime.ReadMemStats(&after)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r.mcCmds += mcCmds(ctx) - cmds0
			r.h.merge(&w.h)
			r.Requests += w.ok
			r.acked += w.ok
			r.errors += w.errs
			r.elapsed += w.elapsed
			r.mallocs += after.Mallocs - before.Mallocs
			r.rounds = append(r.rounds, roundStat{
				p50: w.h.quantile(0.50), p99: w.h.quantile(0.99),
				rps: float64(w.ok) / w.elapsed.Seconds(),
			})
		}
	}
	fmt.Println()
	for i, r := range results {
		r.P50us = round1(r.h.quantile(0.50))
		r.P99us = round1(r.h.quantile(0.99))
		if r.elapsed > 0 {
			r.RPS = round1(float64(r.Requests) / r.elapsed.Seconds())
		}
		if r.Requests > 0 {
			r.AllocsPerReq = round1(float64(r.mallocs) / float64(r.Requests))
		}
		if sc == "shared-counter" {
			final, err := clients[i][0].count(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: reading the final counter: %w", sc, r.Impl, err)
			}
			r.final = int64(final)
			r.LostUpdates = int64(r.acked) - r.final
		}
		progress(r)
	}
	return results, nil
}

// setup gives the clients their sessions: one each for read, write and
// throughput; one shared by all for shared-counter; none for new.
func setup(ctx context.Context, sc string, cs []*vclient) error {
	switch sc {
	case "new":
		return nil
	case "shared-counter":
		if ok, err := cs[0].newSession(ctx); !ok || err != nil {
			return fmt.Errorf("creating the shared session: ok=%v err=%v", ok, err)
		}
		for _, v := range cs[1:] {
			v.copyCookiesFrom(cs[0])
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(cs))
	sem := make(chan struct{}, 8)
	for i, v := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if ok, err := v.newSession(ctx); !ok || err != nil {
				errs[i] = fmt.Errorf("creating a session: ok=%v err=%v", ok, err)
				return
			}
			// Check the session works before measuring anything.
			if ok, err := v.read(ctx); !ok || err != nil {
				errs[i] = fmt.Errorf("reading a new session: ok=%v err=%v", ok, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func round1(v float64) float64 {
	return float64(int64(v*10+0.5)) / 10
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
