package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/httpsession"
)

// statusClient asks the app servers for their stats and readiness.
var statusClient = &http.Client{Timeout: 5 * time.Second}

// getJSON decodes the JSON answer to GET url into v; any status is
// accepted (GET /readyz answers 503 with its detail).
func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %d: %w", url, resp.StatusCode, err)
	}
	return nil
}

// AppCounters are the session layer's counters that a run reports, summed
// over the app servers (GET /api/stats).
type AppCounters struct {
	Relocations uint64 `json:"relocations"`
	Restores    uint64 `json:"restores"`
	Conflicts   uint64 `json:"conflicts"`
	// BackupFailures are backup writes that failed; SingleCopySaves saves
	// acknowledged with one copy (no second node usable).
	BackupFailures  uint64 `json:"backup_failures"`
	SingleCopySaves uint64 `json:"single_copy_saves"`
	LockTimeouts    uint64 `json:"lock_timeouts"`
	// BreakerTrips counts the circuit breaker changes to open, per node,
	// from the apps' logs ("memcached node breaker changed state").
	BreakerTrips map[string]int `json:"breaker_trips"`
}

// Trips returns the breaker trips of every node.
func (c AppCounters) Trips() int {
	n := 0
	for _, v := range c.BreakerTrips {
		n += v
	}
	return n
}

// TripsString describes the trips per node, e.g. "5 (n1 3, n2 2)".
func (c AppCounters) TripsString() string {
	if c.Trips() == 0 {
		return "0"
	}
	var parts []string
	for _, k := range sortedKeys(c.BreakerTrips) {
		parts = append(parts, fmt.Sprintf("%s %d", k, c.BreakerTrips[k]))
	}
	return fmt.Sprintf("%d (%s)", c.Trips(), strings.Join(parts, ", "))
}

// Counters reads the counters of every app server of e.
func (e *Env) Counters(ctx context.Context) (AppCounters, error) {
	c := AppCounters{BreakerTrips: map[string]int{}}
	for _, a := range e.Apps {
		var st server.StatsResponse
		if err := getJSON(ctx, a.URL()+"/api/stats", &st); err != nil {
			return c, fmt.Errorf("chaos: stats of app %s: %w", a.Name(), err)
		}
		c.Relocations += st.Store.Relocations
		c.Restores += st.Store.Restores
		c.Conflicts += st.Store.Conflicts
		c.BackupFailures += st.Store.BackupFailures
		c.SingleCopySaves += st.Store.SingleCopySaves
		c.LockTimeouts += st.Manager.LockTimeouts
		for node, n := range a.Log.Trips() {
			c.BreakerTrips[node] += n
		}
	}
	return c, nil
}

// NodesUp reports whether every app server's GET /readyz sees every node
// up with its breaker closed (the check itself pings each node through
// its breaker, so it also closes a breaker whose node came back). The
// string describes the first node that is not.
func (e *Env) NodesUp(ctx context.Context) (bool, string) {
	for _, a := range e.Apps {
		var r httpsession.Readiness
		if err := getJSON(ctx, a.URL()+"/readyz", &r); err != nil {
			return false, fmt.Sprintf("app %s: %v", a.Name(), err)
		}
		for _, n := range r.Nodes {
			if !n.Up || n.Breaker != "closed" {
				return false, fmt.Sprintf("app %s: node %s up=%v breaker=%s %s", a.Name(), n.ID, n.Up, n.Breaker, n.Error)
			}
		}
	}
	return true, ""
}

// URLs returns the app servers' base URLs.
func (e *Env) URLs() []string {
	out := make([]string, len(e.Apps))
	for i, a := range e.Apps {
		out[i] = a.URL()
	}
	return out
}

// LogPaths returns the app servers' log files.
func (e *Env) LogPaths() []string {
	out := make([]string, len(e.Apps))
	for i, a := range e.Apps {
		a.Log.Flush()
		out[i] = a.Log.Path()
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
