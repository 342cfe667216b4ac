package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mcsession/mcsession/integration/mcproc"
)

// TestImplRegistry builds every implementation the -impls flag accepts and
// checks the scenarios each one runs in.
func TestImplRegistry(t *testing.T) {
	const spec = "n1=127.0.0.1:1,n2=127.0.0.1:2,n3=127.0.0.1:3"
	for _, name := range append(slices.Clone(allImpls), extraImpls...) {
		im, err := buildImpl(name, "127.0.0.1:1", spec, 4)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if im.name != name || im.desc == "" || im.handler == nil {
			t.Errorf("%s: built as %q, desc %q", name, im.name, im.desc)
		}
		for _, sc := range im.scenarios {
			if !slices.Contains(allScenarios, sc) {
				t.Errorf("%s: unknown scenario %q", name, sc)
			}
		}
		im.shutdown()
	}
	for name := range mcVariants {
		if !slices.Contains(allImpls, name) && !slices.Contains(extraImpls, name) {
			t.Errorf("mcsession variant %s is not selectable with -impls", name)
		}
	}
	if _, err := buildImpl("nope", "", spec, 4); err == nil {
		t.Error("unknown implementation built")
	}

	want := map[string][]string{
		"mcsession-none":         allScenarios,
		"mcsession-sticky":       {"read", "write", "shared-counter", "throughput"},
		"mcsession-sticky-trust": {"read", "write", "shared-counter", "throughput"},
		"mcsession-none-async":   {"write", "new"},
	}
	for name, scs := range want {
		im, err := buildImpl(name, "127.0.0.1:1", spec, 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range allScenarios {
			if got := im.runs(sc); got != slices.Contains(scs, sc) {
				t.Errorf("%s runs %s: %v", name, sc, got)
			}
		}
		im.shutdown()
	}
}

// TestMcsessionVariants runs the application of every mcsession variant
// on real memcached: create, read, write, and concurrent increments of one
// session with no update lost (sticky mode: its in-process lock), then
// settle and shut down (queued writes written).
func TestMcsessionVariants(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	for _, name := range []string{"mcsession-none-async", "mcsession-sticky", "mcsession-sticky-trust"} {
		t.Run(name, func(t *testing.T) {
			im, err := buildImpl(name, "", c.Spec(), 8)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(im.handler)
			defer srv.Close()
			defer im.close()

			do := func(method, path, cookie string) (int, string, string) {
				t.Helper()
				req, _ := http.NewRequest(method, srv.URL+path, nil)
				if cookie != "" {
					req.Header.Set("Cookie", cookie)
				}
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				sc := cookie
				for _, ck := range resp.Cookies() {
					sc = ck.Name + "=" + ck.Value
				}
				return resp.StatusCode, string(b), sc
			}
			code, _, cookie := do("POST", "/new", "")
			if code != 200 || cookie == "" {
				t.Fatalf("new: %d %q", code, cookie)
			}
			if code, body, _ := do("GET", "/read", cookie); code != 200 || !strings.HasPrefix(body, userPrefix) || !strings.HasSuffix(body, " 0\n") {
				t.Fatalf("read: %d %q", code, body)
			}
			if code, _, _ := do("POST", "/write?v=7", cookie); code != 200 {
				t.Fatalf("write: %d", code)
			}

			const workers, each = 8, 20
			var wg sync.WaitGroup
			var mu sync.Mutex
			acked := 0
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						if code, _, _ := do("POST", "/incr", cookie); code == 200 {
							mu.Lock()
							acked++
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			_, body, _ := do("GET", "/count", cookie)
			n, _ := strconv.Atoi(strings.TrimSpace(body))
			if n != acked {
				t.Fatalf("count %q, acked %d: %d updates lost", body, acked, acked-n)
			}
			if im.runs("shared-counter") && acked != workers*each {
				t.Fatalf("acked %d of %d increments under the lock", acked, workers*each)
			}
			im.settleBackground(context.Background())
		})
	}
}

// TestStickyAsyncTargets checks the targets of sticky mode and
// asynchronous writes on made-up results.
func TestStickyAsyncTargets(t *testing.T) {
	row := func(sc, im string, p50s ...float64) *result {
		r := &result{Scenario: sc, Impl: im}
		for _, p := range p50s {
			r.rounds = append(r.rounds, roundStat{p50: p})
		}
		r.P50us = median(p50s)
		return r
	}
	results := []*result{
		row("read", "floor", 100, 100, 100),
		row("read", "mcsession-sticky-trust", 70, 90, 75),
		row("read", "mcsession-sticky", 110, 95, 120),
		row("write", "floor", 200, 200, 200),
		row("write", "mcsession-none-async", 210, 230, 215),
		row("shared-counter", "mcsession-sticky"),
		row("shared-counter", "mcsession-sticky-trust"),
	}
	results[len(results)-1].LostUpdates = 2
	byName := map[string]target{}
	for _, tg := range computeTargets(results) {
		byName[tg.name] = tg
	}
	for _, tc := range []struct {
		name  string
		value float64
		met   bool
	}{
		{"read: mcsession-sticky-trust p50 / floor p50", 0.75, true},
		{"read: mcsession-sticky p50 / floor p50", 1.10, false},
		{"write: mcsession-none-async p50 / floor p50", 1.075, true},
		{"shared-counter: mcsession-sticky(-trust) lost updates", 2, false},
	} {
		tg, ok := byName[tc.name]
		if !ok {
			t.Errorf("no target %q", tc.name)
			continue
		}
		if !tg.known || tg.met != tc.met || tg.value < tc.value-1e-9 || tg.value > tc.value+1e-9 {
			t.Errorf("%s: known %v value %v met %v, want %v %v", tc.name, tg.known, tg.value, tg.met, tc.value, tc.met)
		}
	}
	if tg := byName["write: mcsession-all p50 / floor-locked p50"]; tg.known {
		t.Error("a target with rows not run is known")
	}
}
