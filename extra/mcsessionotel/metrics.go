package mcsessionotel

import (
	"fmt"

	"go.opentelemetry.io/otel/metric"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/latency"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// kind is the instrument a spec becomes.
type kind int

const (
	counter kind = iota // Int64ObservableCounter
	upDown              // Int64ObservableUpDownCounter
	gauge               // Int64ObservableGauge
	seconds             // Float64ObservableCounter, unit "s"
)

// spec describes one instrument read from a snapshot of type S: n for the
// Int64 kinds, secs for seconds.
type spec[S any] struct {
	name, unit, desc string
	kind             kind
	n                func(*S) int64
	secs             func(*S) float64
}

// latSpec describes one latency histogram of a snapshot of type S: name
// is the prefix of its instruments (name+".time" and name+".calls" for
// Register, name+".duration" for a Producer).
type latSpec[S any] struct {
	name, desc, callUnit string
	val                  func(*S) latency.Snapshot
}

func i(v uint64) int64 { return int64(v) }

var storeSpecs = []spec[store.Stats]{
	{"mcsession.session.loads", "{load}", "Sessions found by Load and LoadLocked.", counter, func(s *store.Stats) int64 { return i(s.Loads) }, nil},
	{"mcsession.session.saves", "{save}", "Session bodies written by Save.", counter, func(s *store.Stats) int64 { return i(s.Saves) }, nil},
	{"mcsession.session.skipped_saves", "{save}", "Saves of unchanged sessions that wrote nothing.", counter, func(s *store.Stats) int64 { return i(s.SkippedSaves) }, nil},
	{"mcsession.session.touches", "{touch}", "Idle-timeout refreshes of sessions.", counter, func(s *store.Stats) int64 { return i(s.Touches) }, nil},
	{"mcsession.session.skipped_touches", "{touch}", "Idle-timeout refreshes skipped as not yet due (Config.TouchAfter).", counter, func(s *store.Stats) int64 { return i(s.TouchesSkipped) }, nil},
	{"mcsession.session.conflicts", "{conflict}", "Saves refused with ErrConflict: the session was saved by someone else since it was loaded.", counter, func(s *store.Stats) int64 { return i(s.Conflicts) }, nil},
	{"mcsession.session.restores", "{restore}", "Sessions copied back from their backup to a primary node that had restarted empty.", counter, func(s *store.Stats) int64 { return i(s.Restores) }, nil},
	{"mcsession.session.relocations", "{relocation}", "Sessions moved to a new primary node (new id) after their node failed, or off a draining node.", counter, func(s *store.Stats) int64 { return i(s.Relocations) }, nil},
	{"mcsession.session.drained", "{session}", "Sessions moved off a node removed from the node list (also in relocations), or copied to a node's new address.", counter, func(s *store.Stats) int64 { return i(s.Drained) }, nil},
	{"mcsession.session.stale_removed", "{copy}", "Old copies of relocated sessions found on their former node (it hung and came back) and deleted.", counter, func(s *store.Stats) int64 { return i(s.StaleRemoved) }, nil},
	{"mcsession.session.stale_refused", "{load}", "Loads refused because the session had moved and its relocated copy could not be read.", counter, func(s *store.Stats) int64 { return i(s.StaleRefused) }, nil},
	{"mcsession.session.corrupt_records", "{record}", "Stored session records that did not decode (treated as not found).", counter, func(s *store.Stats) int64 { return i(s.Corrupt) }, nil},
	{"mcsession.session.undecryptable_records", "{record}", "Stored values that did not open with Config.Encryption: changed, copied from another session, sealed with a key no longer in the ring, or in clear without AllowPlaintext (treated as not found).", counter, func(s *store.Stats) int64 { return i(s.Undecryptable) }, nil},
	{"mcsession.session.backup_failures", "{failure}", "Backup-copy writes that failed.", counter, func(s *store.Stats) int64 { return i(s.BackupFailures) }, nil},
	{"mcsession.session.single_copy_saves", "{save}", "Saves acknowledged with the session on one node only, no second node being usable.", counter, func(s *store.Stats) int64 { return i(s.SingleCopySaves) }, nil},
	{"mcsession.async.writes.queued", "{write}", "Writes queued to run after Save returned (Config.AsyncWrites).", counter, func(s *store.Stats) int64 { return i(s.AsyncQueued) }, nil},
	{"mcsession.async.writes.coalesced", "{write}", "Queued writes replaced by a newer save of the same session before they ran.", counter, func(s *store.Stats) int64 { return i(s.AsyncCoalesced) }, nil},
	{"mcsession.async.writes.succeeded", "{write}", "Queued writes that ran and succeeded.", counter, func(s *store.Stats) int64 { return i(s.AsyncWritten) }, nil},
	{"mcsession.async.writes.failed", "{write}", "Queued writes that ran and failed (the session's next save writes its whole copy again).", counter, func(s *store.Stats) int64 { return i(s.AsyncFailed) }, nil},
	{"mcsession.async.queue_full", "{save}", "Saves written synchronously because the write queue was full.", counter, func(s *store.Stats) int64 { return i(s.AsyncFull) }, nil},
	{"mcsession.async.writes.pending", "{session}", "Sessions with a queued or running write: what an abrupt end of the process would lose.", upDown, func(s *store.Stats) int64 { return int64(s.AsyncPending) }, nil},
	{"mcsession.async.writes.running", "{write}", "Queued writes running now.", upDown, func(s *store.Stats) int64 { return int64(s.AsyncRunning) }, nil},
}

var storeLatencies = []latSpec[store.Stats]{
	{"mcsession.session.load", "Load and LoadLocked calls, lock waits and failures included", "{call}", func(s *store.Stats) latency.Snapshot { return s.LoadLatency }},
	{"mcsession.session.save", "Save calls until they returned, failures included", "{call}", func(s *store.Stats) latency.Snapshot { return s.SaveLatency }},
}

var cacheSpecs = []spec[store.CacheStats]{
	{"mcsession.cache.sessions", "{session}", "Sessions in the sticky-mode cache.", upDown, func(s *store.CacheStats) int64 { return int64(s.Sessions) }, nil},
	{"mcsession.cache.usage", "By", "Encoded size of the sessions in the sticky-mode cache.", upDown, func(s *store.CacheStats) int64 { return s.Bytes }, nil},
	{"mcsession.cache.limit", "By", "Bound of the sticky-mode cache (Config.CacheBytes).", upDown, func(s *store.CacheStats) int64 { return s.MaxBytes }, nil},
	{"mcsession.cache.unwritten", "{session}", "Cached sessions whose last asynchronous write failed: newer than memcached's copy.", upDown, func(s *store.CacheStats) int64 { return int64(s.Unwritten) }, nil},
	{"mcsession.cache.hits", "{hit}", "Lookups that found the session in the sticky-mode cache.", counter, func(s *store.CacheStats) int64 { return i(s.Hits) }, nil},
	{"mcsession.cache.misses", "{miss}", "Lookups that did not find the session in the sticky-mode cache.", counter, func(s *store.CacheStats) int64 { return i(s.Misses) }, nil},
	{"mcsession.cache.probes", "{probe}", "Version checks of memcached sent for cache hits.", counter, func(s *store.CacheStats) int64 { return i(s.Probes) }, nil},
	{"mcsession.cache.stale_hits", "{hit}", "Cache hits memcached had a newer version of (reloaded).", counter, func(s *store.CacheStats) int64 { return i(s.Stale) }, nil},
	{"mcsession.cache.evictions", "{session}", "Sessions dropped from the cache to make room.", counter, func(s *store.CacheStats) int64 { return i(s.Evictions) }, nil},
}

var lockSpecs = []spec[lock.Stats]{
	{"mcsession.lock.acquired", "{lock}", "Session locks taken.", counter, func(s *lock.Stats) int64 { return i(s.Acquired) }, nil},
	{"mcsession.lock.waits", "{wait}", "Lock acquisitions that found the lock held and waited.", counter, func(s *lock.Stats) int64 { return i(s.Waited) }, nil},
	{"mcsession.lock.wait.time", "s", "Time spent waiting for held locks.", seconds, nil, func(s *lock.Stats) float64 { return s.WaitTime.Seconds() }},
	{"mcsession.lock.timeouts", "{timeout}", "Lock acquisitions that gave up with ErrLockTimeout.", counter, func(s *lock.Stats) int64 { return i(s.Timeouts) }, nil},
	{"mcsession.lock.renewals", "{renewal}", "Lease renewals of held locks.", counter, func(s *lock.Stats) int64 { return i(s.Renewals) }, nil},
	{"mcsession.lock.lost", "{lock}", "Locks found to belong to someone else on renewal or release.", counter, func(s *lock.Stats) int64 { return i(s.Lost) }, nil},
	{"mcsession.lock.released", "{lock}", "Locks released by their owner.", counter, func(s *lock.Stats) int64 { return i(s.Released) }, nil},
	{"mcsession.lock.lapsed", "{lock}", "Locks given up after being held for lock.Config.MaxHold (a hung handler).", counter, func(s *lock.Stats) int64 { return i(s.Lapsed) }, nil},
}

var lockLatencies = []latSpec[lock.Stats]{
	{"mcsession.lock.acquire", "lock acquisitions, waits for held locks and failures included", "{call}", func(s *lock.Stats) latency.Snapshot { return s.AcquireLatency }},
}

var poolSpecs = []spec[replica.PoolStats]{
	{"mcsession.memcached.dials", "{dial}", "Connections opened to the node.", counter, func(s *replica.PoolStats) int64 { return i(s.Dials) }, nil},
	{"mcsession.memcached.dial_errors", "{error}", "Failed dials of the node.", counter, func(s *replica.PoolStats) int64 { return i(s.DialErrors) }, nil},
	{"mcsession.memcached.pool.waits", "{wait}", "Requests that found every connection to the node busy and waited.", counter, func(s *replica.PoolStats) int64 { return i(s.Waits) }, nil},
	{"mcsession.memcached.timeouts", "{timeout}", "Round trips and connection waits that ran out of time.", counter, func(s *replica.PoolStats) int64 { return i(s.Timeouts) }, nil},
	{"mcsession.memcached.stale_connections", "{connection}", "Idle connections found closed by the node (it restarted) and dropped before use.", counter, func(s *replica.PoolStats) int64 { return i(s.Stale) }, nil},
	{"mcsession.memcached.broken_connections", "{connection}", "Connections closed after a failed round trip.", counter, func(s *replica.PoolStats) int64 { return i(s.Broken) }, nil},
	{"mcsession.memcached.round_trips", "{round_trip}", "Batches of commands sent to the node.", counter, func(s *replica.PoolStats) int64 { return i(s.RoundTrips) }, nil},
	{"mcsession.memcached.commands", "{command}", "Commands sent to the node.", counter, func(s *replica.PoolStats) int64 { return i(s.Commands) }, nil},
}

var poolLatencies = []latSpec[replica.PoolStats]{
	{"mcsession.memcached.round_trip", "round trips to the node as callers see them, connection waits and failures included", "{round_trip}", func(s *replica.PoolStats) latency.Snapshot { return s.RoundTrip }},
}

var statusSpecs = []spec[replica.NodeStatus]{
	{"mcsession.memcached.node.up", "1", "1 when the node's circuit breaker lets calls through (closed or half-open), 0 when it is open. No ping is sent at collection time.", gauge, func(s *replica.NodeStatus) int64 {
		if s.State == "open" {
			return 0
		}
		return 1
	}, nil},
	{"mcsession.memcached.breaker.consecutive_failures", "{failure}", "The node's current run of consecutive failures, as its circuit breaker counts them.", gauge, func(s *replica.NodeStatus) int64 { return int64(s.ConsecutiveFailures) }, nil},
}

var httpSpecs = []spec[httpsession.Stats]{
	{"mcsession.http.requests", "{request}", "Requests whose handler used the session.", counter, func(s *httpsession.Stats) int64 { return i(s.Requests) }, nil},
	{"mcsession.http.locked_requests", "{request}", "Requests that held the session lock.", counter, func(s *httpsession.Stats) int64 { return i(s.Locked) }, nil},
	{"mcsession.http.lock_timeouts", "{request}", "Requests whose wait for the session lock timed out.", counter, func(s *httpsession.Stats) int64 { return i(s.LockTimeouts) }, nil},
	{"mcsession.http.fail_opens", "{request}", "Requests that went on without the lock after a lock timeout (Options.FailOpen).", counter, func(s *httpsession.Stats) int64 { return i(s.FailOpens) }, nil},
	{"mcsession.http.conflicts", "{request}", "Requests whose save was refused because a concurrent request changed the session.", counter, func(s *httpsession.Stats) int64 { return i(s.Conflicts) }, nil},
	{"mcsession.http.auto_unlocked_requests", "{request}", "Requests that LockAuto ran without the lock.", counter, func(s *httpsession.Stats) int64 { return i(s.AutoUnlocked) }, nil},
	{"mcsession.http.errors", "{request}", "Requests whose session failed (load, lock or save), conflicts and lock timeouts included.", counter, func(s *httpsession.Stats) int64 { return i(s.Errors) }, nil},
	{"mcsession.http.sessions.created", "{session}", "New sessions saved.", counter, func(s *httpsession.Stats) int64 { return i(s.Created) }, nil},
	{"mcsession.http.sessions.renewed", "{session}", "Session ids renewed with Session.RenewID.", counter, func(s *httpsession.Stats) int64 { return i(s.Renewed) }, nil},
	{"mcsession.http.sessions.destroyed", "{session}", "Sessions destroyed with Session.Destroy.", counter, func(s *httpsession.Stats) int64 { return i(s.Destroyed) }, nil},
	{"mcsession.http.sessions.relocated", "{session}", "Sessions that got a new id after a node failure.", counter, func(s *httpsession.Stats) int64 { return i(s.Relocated) }, nil},
	{"mcsession.http.touches", "{touch}", "Background idle-timeout refreshes after responses.", counter, func(s *httpsession.Stats) int64 { return i(s.Touches) }, nil},
	{"mcsession.http.ignored_requests", "{request}", "Requests matched by Options.Ignore or IgnoreFunc (no session).", counter, func(s *httpsession.Stats) int64 { return i(s.Ignored) }, nil},
}

// withTimes returns specs followed by the two counters of each latency
// that Register exports: the time spent and the number of timed calls.
func withTimes[S any](specs []spec[S], lats []latSpec[S]) []spec[S] {
	out := append([]spec[S](nil), specs...)
	for _, l := range lats {
		val := l.val
		out = append(out,
			spec[S]{name: l.name + ".time", unit: "s", kind: seconds,
				desc: "Total time of " + l.desc + "; divided by " + l.name + ".calls, the mean latency.",
				secs: func(s *S) float64 { return val(s).Sum.Seconds() }},
			spec[S]{name: l.name + ".calls", unit: l.callUnit, kind: counter,
				desc: "Number of " + l.desc + " timed in " + l.name + ".time.",
				n:    func(s *S) int64 { return i(val(s).Count) }})
	}
	return out
}

// inst is a spec with its instrument.
type inst[S any] struct {
	spec[S]
	n    metric.Int64Observable
	secs metric.Float64Observable
}

func create[S any](m metric.Meter, specs []spec[S]) ([]inst[S], error) {
	out := make([]inst[S], len(specs))
	for k, s := range specs {
		out[k].spec = s
		desc, unit := metric.WithDescription(s.desc), metric.WithUnit(s.unit)
		var err error
		switch s.kind {
		case counter:
			out[k].n, err = m.Int64ObservableCounter(s.name, desc, unit)
		case upDown:
			out[k].n, err = m.Int64ObservableUpDownCounter(s.name, desc, unit)
		case gauge:
			out[k].n, err = m.Int64ObservableGauge(s.name, desc, unit)
		case seconds:
			out[k].secs, err = m.Float64ObservableCounter(s.name, desc, unit)
		}
		if err != nil {
			return nil, fmt.Errorf("mcsessionotel: instrument %s: %w", s.name, err)
		}
	}
	return out, nil
}

func observables[S any](all []metric.Observable, insts []inst[S]) []metric.Observable {
	for _, in := range insts {
		if in.secs != nil {
			all = append(all, in.secs)
		} else {
			all = append(all, in.n)
		}
	}
	return all
}

func observe[S any](o metric.Observer, insts []inst[S], s *S, opt metric.ObserveOption) {
	for _, in := range insts {
		if in.secs != nil {
			o.ObserveFloat64(in.secs, in.spec.secs(s), opt)
		} else {
			o.ObserveInt64(in.n, in.spec.n(s), opt)
		}
	}
}
