package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/store"
)

const benchNodes = 2

// benchAttrs is a session of about 1 KB.
func benchAttrs() map[string]any {
	type user struct {
		ID    int
		Name  string
		Roles []string
	}
	return map[string]any{
		"user":    user{ID: 42, Name: "Ada Lovelace", Roles: []string{"admin", "editor"}},
		"csrf":    strings.Repeat("c", 64),
		"cart":    []string{"sku-1001", "sku-1002", "sku-1003", "sku-1004"},
		"count":   17,
		"locale":  "en-GB",
		"theme":   "dark",
		"flash":   strings.Repeat("f", 200),
		"history": []string{strings.Repeat("/a", 40), strings.Repeat("/b", 40), strings.Repeat("/c", 40)},
		"prefs":   map[string]int{"a": 1, "b": 2, "c": 3},
		"notes":   strings.Repeat("n", 300),
	}
}

// benchSetup starts two nodes and returns a store, a saved ~1 KB session
// and a raw gomemcache client on the session's primary node with the same
// pool size, for the floor.
func benchSetup(b testing.TB) (*store.Store, string, *memcache.Client, []byte) {
	c := mcproc.NewCluster(b, benchNodes)
	st := newStore(b, c, nil)
	s := saved(b, st, benchAttrs())
	raw := memcache.New(c.Node(nodeOf(s.ID())).Addr())
	raw.MaxIdleConns, raw.Timeout = 128, 300*time.Millisecond
	it, err := raw.Get(s.ID())
	require.NoError(b, err)
	require.NoError(b, raw.Set(&memcache.Item{Key: "floor", Value: it.Value, Expiration: 1800}))
	return st, s.ID(), raw, it.Value
}

// BenchmarkFloorGet is the raw gomemcache floor under BenchmarkLoad.
func BenchmarkFloorGet(b *testing.B) {
	_, _, raw, _ := benchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := raw.Get("floor"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	st, id, _, _ := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Load(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloorGetSet is the raw floor under BenchmarkLoadModifySave.
func BenchmarkFloorGetSet(b *testing.B) {
	_, _, raw, _ := benchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		it, err := raw.Get("floor")
		if err != nil {
			b.Fatal(err)
		}
		if err := raw.Set(&memcache.Item{Key: "floor", Value: it.Value, Expiration: 1800}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadModifySave(b *testing.B) {
	st, id, _, _ := benchSetup(b)
	benchModifySave(b, st, id)
}

// BenchmarkFloorLocked is the raw floor under BenchmarkLockedCycle:
// add lock, get, set, delete lock.
func BenchmarkFloorLocked(b *testing.B) {
	_, _, raw, _ := benchSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := raw.Add(&memcache.Item{Key: "floor-lock", Value: []byte("x"), Expiration: 10}); err != nil {
			b.Fatal(err)
		}
		it, err := raw.Get("floor")
		if err != nil {
			b.Fatal(err)
		}
		if err := raw.Set(&memcache.Item{Key: "floor", Value: it.Value, Expiration: 1800}); err != nil {
			b.Fatal(err)
		}
		if err := raw.Delete("floor-lock"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLockedCycle(b *testing.B) {
	st, id, _, _ := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s, err := st.LoadLocked(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		i++
		if err := s.Set("count", i); err != nil {
			b.Fatal(err)
		}
		if err := st.SaveAndRelease(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadParallel measures loads from many goroutines (the pool size matters here).
func BenchmarkLoadParallel(b *testing.B) {
	st, id, _, _ := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := st.Load(ctx, id); err != nil {
				panic(fmt.Sprint(err))
			}
		}
	})
}

// benchStickySetup is benchSetup with a Store configured by mod (sticky
// mode, asynchronous writes) whose session is cached.
func benchStickySetup(b *testing.B, mod func(*store.Config)) (*store.Store, string) {
	c := mcproc.NewCluster(b, benchNodes)
	st := newStore(b, c, mod)
	s := saved(b, st, benchAttrs())
	b.Cleanup(func() { _ = st.Shutdown(context.Background()) })
	return st, s.ID()
}

// BenchmarkLoadSticky loads a cached session after its version probe.
func BenchmarkLoadSticky(b *testing.B) {
	st, id := benchStickySetup(b, func(cfg *store.Config) { cfg.Sticky = true })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Load(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadStickyTrust loads a cached session without memcached.
func BenchmarkLoadStickyTrust(b *testing.B) {
	st, id := benchStickySetup(b, func(cfg *store.Config) { cfg.Sticky, cfg.TrustSticky = true, true })
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Load(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// benchModifySave loads, changes one attribute and saves, b.N times.
func benchModifySave(b *testing.B, st *store.Store, id string) {
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s, err := st.Load(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		i++
		if err := s.Set("count", i); err != nil {
			b.Fatal(err)
		}
		if err := st.Save(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadModifySaveAsync is BenchmarkLoadModifySave with the backup
// copy written after Save returns (non-sticky AsyncWrites).
func BenchmarkLoadModifySaveAsync(b *testing.B) {
	st, id := benchStickySetup(b, func(cfg *store.Config) { cfg.AsyncWrites = true })
	benchModifySave(b, st, id)
}

// BenchmarkLoadModifySaveStickyAsync: sticky mode, the whole write after
// Save returns (trusting stickiness: no round trip on the request's path
// unless the queue is full).
func BenchmarkLoadModifySaveStickyAsync(b *testing.B) {
	st, id := benchStickySetup(b, func(cfg *store.Config) { cfg.Sticky, cfg.TrustSticky, cfg.AsyncWrites = true, true, true })
	benchModifySave(b, st, id)
}

// benchEncrypted is Config.Encryption for the encrypted benchmarks: a key
// ring of two keys (AES-256-GCM).
func benchEncrypted(b *testing.B) func(*store.Config) {
	ring := keyRing(b, keyB, keyA)
	return func(cfg *store.Config) { cfg.Encryption = ring }
}

// BenchmarkLoadEncrypted is BenchmarkLoad with Config.Encryption: each
// load opens the sealed value before decoding it.
func BenchmarkLoadEncrypted(b *testing.B) {
	st, id := benchStickySetup(b, benchEncrypted(b))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.Load(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadModifySaveEncrypted is BenchmarkLoadModifySave with
// Config.Encryption: each save seals with a fresh nonce.
func BenchmarkLoadModifySaveEncrypted(b *testing.B) {
	st, id := benchStickySetup(b, benchEncrypted(b))
	benchModifySave(b, st, id)
}
