package httpsession

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// DefaultReadinessTimeout bounds the node checks of one readiness probe
// (ReadinessHandler, CheckReadiness without a deadline).
const DefaultReadinessTimeout = time.Second

// Readiness is the result of a readiness check: whether sessions can be
// served (at least one memcached node answered) and every node's detail.
type Readiness struct {
	// Ready is true when at least one node answered its check.
	Ready bool `json:"ready"`
	// Nodes holds every node's check in list order.
	Nodes []NodeReadiness `json:"nodes"`
}

// NodeReadiness is one node's part of a readiness check.
type NodeReadiness struct {
	// ID and Addr name the node.
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Up is true when the node answered a meta no-op.
	Up bool `json:"up"`
	// Breaker is the node's circuit breaker state after the check:
	// "closed", "half-open" or "open".
	Breaker string `json:"breaker"`
	// Millis is how long the check took, in milliseconds.
	Millis float64 `json:"ms"`
	// Error is why the node did not answer; empty when it did.
	Error string `json:"error,omitempty"`
}

// CheckReadiness pings every memcached node at once (a meta no-op through
// the node's breaker, so an open breaker answers at once and a node that
// came back closes it) and reports whether at least one answered. ctx
// bounds the checks; without a deadline, DefaultReadinessTimeout does.
func (m *Manager) CheckReadiness(ctx context.Context) Readiness {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultReadinessTimeout)
		defer cancel()
	}
	cluster := m.st.Cluster()
	status := cluster.Status()
	out := Readiness{Nodes: make([]NodeReadiness, len(status))}
	var wg sync.WaitGroup
	for i, n := range status {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := cluster.Ping(ctx, n.ID)
			nr := NodeReadiness{ID: n.ID, Addr: n.Addr, Up: err == nil, Millis: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				nr.Error = err.Error()
			}
			out.Nodes[i] = nr
		}()
	}
	wg.Wait()
	for i, n := range cluster.Status() {
		out.Nodes[i].Breaker = n.State
		out.Ready = out.Ready || out.Nodes[i].Up
	}
	return out
}

// ReadinessHandler returns an http.Handler for a readiness probe (for
// example Kubernetes' readinessProbe on /readyz): it runs CheckReadiness
// and answers 200 when at least one memcached node answered and 503
// (with Retry-After: 1) when none did, with the Readiness as a small JSON
// body. A liveness probe should not use it: an app server whose memcached
// nodes are all down is not helped by a restart. Mount it outside
// Manager.Middleware (it uses no session).
func (m *Manager) ReadinessHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rd := m.CheckReadiness(r.Context())
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		if !rd.Ready {
			h.Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	})
}
