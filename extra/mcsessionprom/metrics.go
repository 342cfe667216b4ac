package mcsessionprom

import (
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/latency"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// spec describes one metric read from a snapshot of type S; name has no
// namespace.
type spec[S any] struct {
	name, help string
	typ        prometheus.ValueType
	val        func(*S) float64
}

// histSpec describes one histogram read from a snapshot of type S.
type histSpec[S any] struct {
	name, help string
	val        func(*S) latency.Snapshot
}

func u(v uint64) float64 { return float64(v) }

var storeSpecs = []spec[store.Stats]{
	{"session_loads_total", "Sessions found by Load and LoadLocked.", counter, func(s *store.Stats) float64 { return u(s.Loads) }},
	{"session_saves_total", "Session bodies written by Save.", counter, func(s *store.Stats) float64 { return u(s.Saves) }},
	{"session_saves_skipped_total", "Saves of unchanged sessions that wrote nothing.", counter, func(s *store.Stats) float64 { return u(s.SkippedSaves) }},
	{"session_touches_total", "Idle-timeout refreshes of sessions.", counter, func(s *store.Stats) float64 { return u(s.Touches) }},
	{"session_touches_skipped_total", "Idle-timeout refreshes skipped as not yet due (Config.TouchAfter).", counter, func(s *store.Stats) float64 { return u(s.TouchesSkipped) }},
	{"session_conflicts_total", "Saves refused with ErrConflict: the session was saved by someone else since it was loaded.", counter, func(s *store.Stats) float64 { return u(s.Conflicts) }},
	{"session_restores_total", "Sessions copied back from their backup to a primary node that had restarted empty.", counter, func(s *store.Stats) float64 { return u(s.Restores) }},
	{"session_relocations_total", "Sessions moved to a new primary node (new id) after their node failed, or off a draining node.", counter, func(s *store.Stats) float64 { return u(s.Relocations) }},
	{"session_drained_total", "Sessions moved off a node removed from the node list (also in relocations), or copied to a node's new address.", counter, func(s *store.Stats) float64 { return u(s.Drained) }},
	{"session_stale_removed_total", "Old copies of relocated sessions found on their former node (it hung and came back) and deleted.", counter, func(s *store.Stats) float64 { return u(s.StaleRemoved) }},
	{"session_stale_refused_total", "Loads refused because the session had moved and its relocated copy could not be read.", counter, func(s *store.Stats) float64 { return u(s.StaleRefused) }},
	{"session_corrupt_records_total", "Stored session records that did not decode (treated as not found).", counter, func(s *store.Stats) float64 { return u(s.Corrupt) }},
	{"session_undecryptable_records_total", "Stored values that did not open with Config.Encryption: changed, copied from another session, sealed with a key no longer in the ring, or in clear without AllowPlaintext (treated as not found).", counter, func(s *store.Stats) float64 { return u(s.Undecryptable) }},
	{"session_backup_failures_total", "Backup-copy writes that failed.", counter, func(s *store.Stats) float64 { return u(s.BackupFailures) }},
	{"session_single_copy_saves_total", "Saves acknowledged with the session on one node only, no second node being usable.", counter, func(s *store.Stats) float64 { return u(s.SingleCopySaves) }},
	{"async_writes_queued_total", "Writes queued to run after Save returned (Config.AsyncWrites).", counter, func(s *store.Stats) float64 { return u(s.AsyncQueued) }},
	{"async_writes_coalesced_total", "Queued writes replaced by a newer save of the same session before they ran.", counter, func(s *store.Stats) float64 { return u(s.AsyncCoalesced) }},
	{"async_writes_succeeded_total", "Queued writes that ran and succeeded.", counter, func(s *store.Stats) float64 { return u(s.AsyncWritten) }},
	{"async_writes_failed_total", "Queued writes that ran and failed (the session's next save writes its whole copy again).", counter, func(s *store.Stats) float64 { return u(s.AsyncFailed) }},
	{"async_queue_full_total", "Saves written synchronously because the write queue was full.", counter, func(s *store.Stats) float64 { return u(s.AsyncFull) }},
	{"async_writes_pending", "Sessions with a queued or running write: what an abrupt end of the process would lose.", gauge, func(s *store.Stats) float64 { return float64(s.AsyncPending) }},
	{"async_writes_running", "Queued writes running now.", gauge, func(s *store.Stats) float64 { return float64(s.AsyncRunning) }},
}

var storeHists = []histSpec[store.Stats]{
	{"session_load_duration_seconds", "Time Load and LoadLocked took, lock waits and failures included.", func(s *store.Stats) latency.Snapshot { return s.LoadLatency }},
	{"session_save_duration_seconds", "Time Save took until it returned, failures included.", func(s *store.Stats) latency.Snapshot { return s.SaveLatency }},
}

var cacheSpecs = []spec[store.CacheStats]{
	{"cache_sessions", "Sessions in the sticky-mode cache.", gauge, func(s *store.CacheStats) float64 { return float64(s.Sessions) }},
	{"cache_bytes", "Encoded size of the sessions in the sticky-mode cache.", gauge, func(s *store.CacheStats) float64 { return float64(s.Bytes) }},
	{"cache_max_bytes", "Bound of the sticky-mode cache (Config.CacheBytes).", gauge, func(s *store.CacheStats) float64 { return float64(s.MaxBytes) }},
	{"cache_unwritten_sessions", "Cached sessions whose last asynchronous write failed: newer than memcached's copy.", gauge, func(s *store.CacheStats) float64 { return float64(s.Unwritten) }},
	{"cache_hits_total", "Lookups that found the session in the sticky-mode cache.", counter, func(s *store.CacheStats) float64 { return u(s.Hits) }},
	{"cache_misses_total", "Lookups that did not find the session in the sticky-mode cache.", counter, func(s *store.CacheStats) float64 { return u(s.Misses) }},
	{"cache_probes_total", "Version checks of memcached sent for cache hits.", counter, func(s *store.CacheStats) float64 { return u(s.Probes) }},
	{"cache_stale_hits_total", "Cache hits memcached had a newer version of (reloaded).", counter, func(s *store.CacheStats) float64 { return u(s.Stale) }},
	{"cache_evictions_total", "Sessions dropped from the cache to make room.", counter, func(s *store.CacheStats) float64 { return u(s.Evictions) }},
}

var lockSpecs = []spec[lock.Stats]{
	{"lock_acquired_total", "Session locks taken.", counter, func(s *lock.Stats) float64 { return u(s.Acquired) }},
	{"lock_waits_total", "Lock acquisitions that found the lock held and waited.", counter, func(s *lock.Stats) float64 { return u(s.Waited) }},
	{"lock_wait_seconds_total", "Time spent waiting for held locks.", counter, func(s *lock.Stats) float64 { return s.WaitTime.Seconds() }},
	{"lock_timeouts_total", "Lock acquisitions that gave up with ErrLockTimeout.", counter, func(s *lock.Stats) float64 { return u(s.Timeouts) }},
	{"lock_renewals_total", "Lease renewals of held locks.", counter, func(s *lock.Stats) float64 { return u(s.Renewals) }},
	{"lock_lost_total", "Locks found to belong to someone else on renewal or release.", counter, func(s *lock.Stats) float64 { return u(s.Lost) }},
	{"lock_released_total", "Locks released by their owner.", counter, func(s *lock.Stats) float64 { return u(s.Released) }},
	{"lock_lapsed_total", "Locks given up after being held for lock.Config.MaxHold (a hung handler).", counter, func(s *lock.Stats) float64 { return u(s.Lapsed) }},
}

var lockHists = []histSpec[lock.Stats]{
	{"lock_acquire_duration_seconds", "Time lock acquisitions took, waits for held locks and failures included.", func(s *lock.Stats) latency.Snapshot { return s.AcquireLatency }},
}

var poolSpecs = []spec[replica.PoolStats]{
	{"memcached_open_connections", "Connections open to the node.", gauge, func(s *replica.PoolStats) float64 { return float64(s.Open) }},
	{"memcached_idle_connections", "Idle connections to the node.", gauge, func(s *replica.PoolStats) float64 { return float64(s.Idle) }},
	{"memcached_dials_total", "Connections opened to the node.", counter, func(s *replica.PoolStats) float64 { return u(s.Dials) }},
	{"memcached_dial_errors_total", "Failed dials of the node.", counter, func(s *replica.PoolStats) float64 { return u(s.DialErrors) }},
	{"memcached_pool_waits_total", "Requests that found every connection to the node busy and waited.", counter, func(s *replica.PoolStats) float64 { return u(s.Waits) }},
	{"memcached_timeouts_total", "Round trips and connection waits that ran out of time.", counter, func(s *replica.PoolStats) float64 { return u(s.Timeouts) }},
	{"memcached_stale_connections_total", "Idle connections found closed by the node (it restarted) and dropped before use.", counter, func(s *replica.PoolStats) float64 { return u(s.Stale) }},
	{"memcached_broken_connections_total", "Connections closed after a failed round trip.", counter, func(s *replica.PoolStats) float64 { return u(s.Broken) }},
	{"memcached_round_trips_total", "Batches of commands sent to the node.", counter, func(s *replica.PoolStats) float64 { return u(s.RoundTrips) }},
	{"memcached_commands_total", "Commands sent to the node.", counter, func(s *replica.PoolStats) float64 { return u(s.Commands) }},
}

var poolHists = []histSpec[replica.PoolStats]{
	{"memcached_round_trip_duration_seconds", "Latency of the node's batches as callers see it, connection waits and failures included.", func(s *replica.PoolStats) latency.Snapshot { return s.RoundTrip }},
}

var statusSpecs = []spec[replica.NodeStatus]{
	{"memcached_node_up", "1 when the node's circuit breaker lets calls through (closed or half-open), 0 when it is open. No ping is sent at scrape time.", gauge, func(s *replica.NodeStatus) float64 { return boolValue(s.State != "open") }},
	{"memcached_breaker_consecutive_failures", "The node's current run of consecutive failures, as its circuit breaker counts them.", gauge, func(s *replica.NodeStatus) float64 { return float64(s.ConsecutiveFailures) }},
}

var httpSpecs = []spec[httpsession.Stats]{
	{"http_requests_total", "Requests whose handler used the session.", counter, func(s *httpsession.Stats) float64 { return u(s.Requests) }},
	{"http_locked_requests_total", "Requests that held the session lock.", counter, func(s *httpsession.Stats) float64 { return u(s.Locked) }},
	{"http_lock_timeouts_total", "Requests whose wait for the session lock timed out.", counter, func(s *httpsession.Stats) float64 { return u(s.LockTimeouts) }},
	{"http_fail_opens_total", "Requests that went on without the lock after a lock timeout (Options.FailOpen).", counter, func(s *httpsession.Stats) float64 { return u(s.FailOpens) }},
	{"http_conflicts_total", "Requests whose save was refused because a concurrent request changed the session.", counter, func(s *httpsession.Stats) float64 { return u(s.Conflicts) }},
	{"http_auto_unlocked_requests_total", "Requests that LockAuto ran without the lock.", counter, func(s *httpsession.Stats) float64 { return u(s.AutoUnlocked) }},
	{"http_errors_total", "Requests whose session failed (load, lock or save), conflicts and lock timeouts included.", counter, func(s *httpsession.Stats) float64 { return u(s.Errors) }},
	{"http_sessions_created_total", "New sessions saved.", counter, func(s *httpsession.Stats) float64 { return u(s.Created) }},
	{"http_sessions_renewed_total", "Session ids renewed with Session.RenewID.", counter, func(s *httpsession.Stats) float64 { return u(s.Renewed) }},
	{"http_sessions_destroyed_total", "Sessions destroyed with Session.Destroy.", counter, func(s *httpsession.Stats) float64 { return u(s.Destroyed) }},
	{"http_sessions_relocated_total", "Sessions that got a new id after a node failure.", counter, func(s *httpsession.Stats) float64 { return u(s.Relocated) }},
	{"http_touches_total", "Background idle-timeout refreshes after responses.", counter, func(s *httpsession.Stats) float64 { return u(s.Touches) }},
	{"http_ignored_requests_total", "Requests matched by Options.Ignore or IgnoreFunc (no session).", counter, func(s *httpsession.Stats) float64 { return u(s.Ignored) }},
}

// builder makes descriptors with the Collector's options.
type builder struct{ o options }

func (b builder) desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(b.o.namespace, "", name), help, labels, b.o.constLabels)
}

// family is a spec with its descriptor.
type family[S any] struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	val  func(*S) float64
}

type histFamily[S any] struct {
	desc *prometheus.Desc
	val  func(*S) latency.Snapshot
}

func build[S any](b builder, specs []spec[S], labels []string) []family[S] {
	out := make([]family[S], len(specs))
	for i, s := range specs {
		out[i] = family[S]{b.desc(s.name, s.help, labels), s.typ, s.val}
	}
	return out
}

func buildHist[S any](b builder, specs []histSpec[S], labels []string) []histFamily[S] {
	out := make([]histFamily[S], len(specs))
	for i, s := range specs {
		out[i] = histFamily[S]{b.desc(s.name, s.help, labels), s.val}
	}
	return out
}

func describe[S any](ch chan<- *prometheus.Desc, fams []family[S]) {
	for _, f := range fams {
		ch <- f.desc
	}
}

func describeHist[S any](ch chan<- *prometheus.Desc, fams []histFamily[S]) {
	for _, f := range fams {
		ch <- f.desc
	}
}

func collect[S any](ch chan<- prometheus.Metric, fams []family[S], s *S, labels ...string) {
	for _, f := range fams {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, f.val(s), labels...)
	}
}

func collectHist[S any](ch chan<- prometheus.Metric, fams []histFamily[S], s *S, labels ...string) {
	for _, f := range fams {
		count, sum, buckets := histogram(f.val(s))
		ch <- prometheus.MustNewConstHistogram(f.desc, count, sum, buckets, labels...)
	}
}

// histogram converts a latency snapshot into a Prometheus histogram: the
// count, the sum in seconds and cumulative bucket counts by upper bound in
// seconds. The snapshot's last bucket, without bound, is the implicit +Inf
// bucket (the count).
func histogram(s latency.Snapshot) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(s.Buckets))
	var cum uint64
	for _, b := range s.Buckets {
		cum += b.Count
		if b.UpperBound > 0 {
			buckets[b.UpperBound.Seconds()] = cum
		}
	}
	return cum, s.Sum.Seconds(), buckets
}
