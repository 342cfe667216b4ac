package chaos

import (
	"slices"
	"sync"
	"time"
)

// Stats counts the answers of one period of a Load and keeps their
// latencies. It is safe for concurrent use.
type Stats struct {
	start time.Time
	mu    sync.Mutex
	kinds map[string]int64
	lat   []time.Duration
}

// newStats starts a period now.
func newStats() *Stats { return &Stats{start: time.Now(), kinds: map[string]int64{}} }

// add records one answer.
func (s *Stats) add(kind string, d time.Duration) {
	s.mu.Lock()
	s.kinds[kind]++
	s.lat = append(s.lat, d)
	s.mu.Unlock()
}

// Summary sums up the period until now.
func (s *Stats) Summary() Summary {
	s.mu.Lock()
	lat := slices.Clone(s.lat)
	k := s.kinds
	sum := Summary{
		Seconds: time.Since(s.start).Seconds(), Requests: int64(len(s.lat)),
		OK: k[kindOK], Conflicts: k[kindConflict], Busy: k[kindBusy], Unavailable: k[kindUnavailable],
		Other5xx: k[kindOther5xx], Other4xx: k[kindOther4xx], Transport: k[kindTransport],
	}
	s.mu.Unlock()
	slices.Sort(lat)
	sum.P50, sum.P99, sum.Max = ms(quantile(lat, 0.50)), ms(quantile(lat, 0.99)), ms(quantile(lat, 1))
	return sum
}

// Summary is a period's answers to POST /api/counter and their latency
// (every answer, errors included, from sending the request to the end of
// the body).
type Summary struct {
	Seconds  float64 `json:"seconds"`
	Requests int64   `json:"requests"`
	// OK are the 200s (acknowledged increments).
	OK int64 `json:"ok"`
	// Conflicts are the 409s, Busy the 503 "session busy" (lock timeout):
	// refused, known not stored.
	Conflicts int64 `json:"conflicts_409"`
	Busy      int64 `json:"busy_503"`
	// Unavailable are the other 503s ("session storage unavailable"),
	// Other5xx the other 5xx, Transport the transport errors: unknown
	// outcomes.
	Unavailable int64 `json:"unavailable_503"`
	Other5xx    int64 `json:"other_5xx"`
	Transport   int64 `json:"transport_errors"`
	// Other4xx are 4xx other than 409 (none expected).
	Other4xx int64 `json:"other_4xx"`
	// P50, P99 and Max are latencies in milliseconds.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// FiveXX returns the 5xx answers: busy, unavailable and others.
func (s Summary) FiveXX() int64 { return s.Busy + s.Unavailable + s.Other5xx }

// Rate returns n per request of the period, 0 without requests.
func (s Summary) Rate(n int64) float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(n) / float64(s.Requests)
}

// quantile returns the q-quantile of sorted durations (nearest rank), 0
// for none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// ms converts d to milliseconds, rounded to 0.1 ms.
func ms(d time.Duration) float64 {
	return float64(d.Round(100*time.Microsecond)) / float64(time.Millisecond)
}
