package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAsyncWriterOrderCancelAndCoalesce drives the queue with writes that
// block until released: one session's writes never overlap, a queued
// write can be cancelled, a newer one replaces a queued one, failures are
// counted and reported, and close runs what is left.
func TestAsyncWriterOrderCancelAndCoalesce(t *testing.T) {
	var failures atomic.Int32
	w := newAsyncWriter(10, 2, time.Minute, func(string, error) { failures.Add(1) })
	release := make(chan struct{})
	var ran []string
	var running atomic.Int32
	done := make(chan string, 10)
	job := func(name string, err error) func(context.Context) error {
		return func(ctx context.Context) error {
			if running.Add(1) > 2 {
				t.Error("more writes at once than workers")
			}
			<-release
			running.Add(-1)
			done <- name
			return err
		}
	}
	require.True(t, w.enqueue("a", job("a1", nil)))
	require.Eventually(t, func() bool { return running.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.True(t, w.enqueue("a", job("a2", nil))) // waits: a1 runs
	require.True(t, w.enqueue("a", job("a3", nil))) // replaces a2
	require.True(t, w.enqueue("b", job("b1", nil))) // runs on the second worker
	require.True(t, w.enqueue("c", job("c1", nil))) // queued
	w.cancel("c")                                   // dropped
	require.True(t, w.enqueue("d", job("d1", errors.New("boom"))))
	require.Equal(t, uint64(1), w.coalesced.Load())

	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.close(ctx))
	close(done)
	for name := range done {
		ran = append(ran, name)
	}
	require.ElementsMatch(t, []string{"a1", "a3", "b1", "d1"}, ran)
	require.Less(t, indexOf(ran, "a1"), indexOf(ran, "a3"), "a session's writes run in order")
	require.Equal(t, int32(1), failures.Load())
	require.Equal(t, uint64(1), w.failed.Load())
	require.Equal(t, uint64(3), w.written.Load())
	require.False(t, w.enqueue("e", job("e1", nil)), "closed: the caller writes synchronously")
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// TestAsyncWriterCloseWakesEveryWorker closes the writer while one worker
// runs a session's write and the session's next write waits for it: the
// other workers, asleep because that write could not start, must wake up
// and exit once it ran (close used to wait for them forever).
func TestAsyncWriterCloseWakesEveryWorker(t *testing.T) {
	for range 20 {
		w := newAsyncWriter(10, 4, time.Minute, func(string, error) {})
		release := make(chan struct{})
		var ran atomic.Int32
		block := func(ctx context.Context) error { <-release; ran.Add(1); return nil }
		quick := func(ctx context.Context) error { ran.Add(1); return nil }
		require.True(t, w.enqueue("a", block))
		require.Eventually(t, func() bool { _, r := w.counts(); return r == 1 }, 5*time.Second, time.Millisecond)
		require.True(t, w.enqueue("a", quick)) // waits for the running one
		closed := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			closed <- w.close(ctx)
		}()
		require.Eventually(t, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.closed }, 5*time.Second, time.Millisecond)
		close(release) // after close woke the idle workers once
		require.NoError(t, <-closed)
		require.Equal(t, int32(2), ran.Load())
	}
}
