package store

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// refreshShards and refreshMaxPerShard bound the memory of the record of
// recent idle-timeout refreshes: at most 16 × 4096 session ids.
const (
	refreshShards      = 16
	refreshMaxPerShard = 4096
)

// refreshLog remembers when this Store last wrote or touched each session,
// so that TouchIfDue can skip refreshes that would change little.
type refreshLog struct {
	seed   maphash.Seed
	shards [refreshShards]refreshShard
}

type refreshShard struct {
	mu sync.Mutex
	at map[string]time.Time
}

func newRefreshLog() *refreshLog {
	l := &refreshLog{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].at = make(map[string]time.Time)
	}
	return l
}

func (l *refreshLog) shard(id string) *refreshShard {
	return &l.shards[maphash.String(l.seed, id)%refreshShards]
}

// note records that the session's items got a full idle timeout at t.
func (l *refreshLog) note(id string, t time.Time, keep time.Duration) {
	sh := l.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.at) >= refreshMaxPerShard {
		for k, v := range sh.at {
			if t.Sub(v) > keep {
				delete(sh.at, k)
			}
		}
		if len(sh.at) >= refreshMaxPerShard {
			clear(sh.at) // forgetting only costs an extra touch
		}
	}
	sh.at[id] = t
}

// last returns when the session was last refreshed by this Store.
func (l *refreshLog) last(id string) (time.Time, bool) {
	sh := l.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t, ok := sh.at[id]
	return t, ok
}

// forget drops the record of a session.
func (l *refreshLog) forget(id string) {
	sh := l.shard(id)
	sh.mu.Lock()
	delete(sh.at, id)
	sh.mu.Unlock()
}

// touchAfter returns how long after a refresh TouchIfDue skips the next one
// for a session with idle timeout idle.
func (st *Store) touchAfter(idle time.Duration) time.Duration {
	if st.touchEvery != 0 {
		return st.touchEvery
	}
	return idle / 10
}

// TouchIfDue refreshes the idle timeout of an unchanged session like Touch,
// unless this Store wrote or touched it less than Config.TouchAfter ago
// (default: a tenth of the session's idle timeout): the items then expire
// at most that much earlier than a touch would make them, and a read-only
// request costs no extra memcached command. It reports whether it touched.
func (st *Store) TouchIfDue(ctx context.Context, s *Session) (bool, error) {
	if st.SkipTouch(s) {
		return false, nil
	}
	return true, st.Touch(ctx, s)
}

// SkipTouch reports whether TouchIfDue would skip s now: s is new, or this
// Store wrote or touched it less than Config.TouchAfter ago. A skip is
// counted in Stats.TouchesSkipped, as TouchIfDue counts it. Callers that
// refresh idle timeouts in the background ask first, so that a request
// whose session needs no refresh starts no background work.
func (st *Store) SkipTouch(s *Session) bool {
	s.mu.Lock()
	id, idle, isNew := s.id, s.idle, s.isNew
	s.mu.Unlock()
	if isNew {
		return true
	}
	if every := st.touchAfter(idle); every > 0 {
		if t, ok := st.refreshed.last(id); ok && time.Since(t) < every {
			st.stats.touchesSkipped.Add(1)
			return true
		}
	}
	return false
}
