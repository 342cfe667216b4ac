package lock_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
)

// benchIdle is the idle connection pool of both the replica cluster and
// the raw client, so that the comparison is fair.
const benchIdle = replica.DefaultMaxIdleConns

// benchCluster starts one memcached node and returns a replica cluster of
// that node and its address.
func benchCluster(b *testing.B) (*replica.Cluster, string) {
	b.Helper()
	p := mcproc.NewProcess(b)
	rc, err := replica.New(replica.Config{Nodes: []replica.Node{{ID: "n1", Addr: p.Addr()}}, MaxIdleConns: benchIdle})
	require.NoError(b, err)
	b.Cleanup(func() { _ = rc.Close() })
	return rc, p.Addr()
}

// BenchmarkAcquireRelease: an uncontended lock cycle on distinct keys
// (add, gets, cas -1: three round trips, plus a renewal timer).
func BenchmarkAcquireRelease(b *testing.B) {
	rc, _ := benchCluster(b)
	l, err := lock.New(rc, lock.Config{})
	require.NoError(b, err)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		lk, err := l.Acquire(ctx, "n1", "lock:"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := lk.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawAddDelete is the floor: a plain gomemcache add and delete
// (two round trips), same pool size and keys as BenchmarkAcquireRelease.
func BenchmarkRawAddDelete(b *testing.B) {
	_, addr := benchCluster(b)
	mc := memcache.New(addr)
	mc.Timeout = replica.DefaultTimeout
	mc.MaxIdleConns = benchIdle
	value := []byte("0123456789abcdef0123456789abcdef") // a token's size
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		key := "lock:" + strconv.Itoa(i)
		if err := mc.Add(&memcache.Item{Key: key, Value: value, Expiration: 11}); err != nil {
			b.Fatal(err)
		}
		if err := mc.Delete(key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawAddGetsCAS is the like-for-like floor of an owner-checked
// lock: add, gets, cas -1 with a plain client (three round trips).
func BenchmarkRawAddGetsCAS(b *testing.B) {
	_, addr := benchCluster(b)
	mc := memcache.New(addr)
	mc.Timeout = replica.DefaultTimeout
	mc.MaxIdleConns = benchIdle
	value := []byte("0123456789abcdef0123456789abcdef")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		key := "lock:" + strconv.Itoa(i)
		if err := mc.Add(&memcache.Item{Key: key, Value: value, Expiration: 11}); err != nil {
			b.Fatal(err)
		}
		it, err := mc.Get(key)
		if err != nil {
			b.Fatal(err)
		}
		it.Expiration = -1
		if err := mc.CompareAndSwap(it); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkContended16: 16 goroutines take and release ONE lock with a
// small backoff (100 µs doubling to 2 ms). ops/s is lock handovers per second.
func BenchmarkContended16(b *testing.B) {
	const workers = 16
	rc, _ := benchCluster(b)
	l, err := lock.New(rc, lock.Config{WaitTimeout: 30 * time.Second,
		BackoffStart: 100 * time.Microsecond, BackoffMax: 2 * time.Millisecond})
	require.NoError(b, err)
	ctx := context.Background()
	var next atomic.Int64
	var inside, overlaps atomic.Int32
	errs := make(chan error, workers)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				lk, err := l.Acquire(ctx, "n1", "lock:hot")
				if err != nil {
					errs <- err
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				inside.Add(-1)
				if err := lk.Release(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if n := overlaps.Load(); n != 0 {
		b.Fatalf("%d overlapping critical sections", n)
	}
	m := l.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(m.Waited)/float64(b.N), "waited/op")
}
