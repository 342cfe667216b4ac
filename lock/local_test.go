package lock_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/internal/syncbuf"
	"github.com/mcsession/mcsession/lock"
)

// TestLocalSerialises runs 200 increments of one counter under a Local
// lock from 20 goroutines: none is lost, and the key table is empty after.
func TestLocalSerialises(t *testing.T) {
	l := lock.NewLocal(lock.Config{WaitTimeout: 10 * time.Second})
	n := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				lk, err := l.Acquire(context.Background(), "k")
				if err != nil {
					t.Error(err)
					return
				}
				v := n
				time.Sleep(10 * time.Microsecond)
				n = v + 1
				lk.Release()
				lk.Release() // no-op
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 200, n)
	require.Zero(t, l.Held())
}

// TestLocalTimeoutAndContext checks the wait timeout (Config and
// WithWaitTimeout) and a cancelled context while the key is held, and that
// other keys are independent.
func TestLocalTimeoutAndContext(t *testing.T) {
	l := lock.NewLocal(lock.Config{WaitTimeout: 20 * time.Millisecond})
	held, err := l.Acquire(context.Background(), "a")
	require.NoError(t, err)

	_, err = l.Acquire(context.Background(), "a")
	require.ErrorIs(t, err, lock.ErrLockTimeout)
	_, err = l.Acquire(lock.WithWaitTimeout(context.Background(), time.Millisecond), "a")
	require.ErrorIs(t, err, lock.ErrLockTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.Acquire(lock.WithWaitTimeout(ctx, time.Hour), "a")
	require.ErrorIs(t, err, context.Canceled)
	_, err = l.Acquire(ctx, "free")
	require.ErrorIs(t, err, context.Canceled, "an ended context gets no lock, free or not")

	other, err := l.Acquire(context.Background(), "b")
	require.NoError(t, err, "another key is free")
	other.Release()
	require.Equal(t, 1, l.Held())

	done := make(chan error, 1)
	go func() {
		lk, err := l.Acquire(lock.WithWaitTimeout(context.Background(), 10*time.Second), "a")
		if err == nil {
			lk.Release()
		}
		done <- err
	}()
	held.Release()
	require.NoError(t, <-done, "a waiter gets the lock once it is released")
	require.Zero(t, l.Held())

	st := l.Stats()
	require.Equal(t, uint64(3), st.Acquired, "held, other, the waiter")
	require.Equal(t, uint64(2), st.Timeouts)
	require.Equal(t, uint64(3), st.Released)
	require.Contains(t, []uint64{2, 3}, st.Waited, "the two timeouts, and the waiter unless it came after the release")
	require.Positive(t, st.WaitTime)
	require.Equal(t, uint64(7), st.AcquireLatency.Count, "every Acquire call, failures included")
	require.Zero(t, st.Renewals+st.Lost)
}

// A lock held for MaxHold is released by itself, counted and logged; the
// holder's late Release does not release the next holder's lock.
func TestLocalMaxHold(t *testing.T) {
	var logs syncbuf.Buffer
	l := lock.NewLocal(lock.Config{MaxHold: 50 * time.Millisecond, WaitTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	hung, err := l.Acquire(context.Background(), "a")
	require.NoError(t, err)
	next, err := l.Acquire(context.Background(), "a") // waits until hung lapses
	require.NoError(t, err)
	require.True(t, hung.Lapsed())
	require.False(t, next.Lapsed())
	hung.Release() // late: a no-op
	_, err = l.Acquire(lock.WithWaitTimeout(context.Background(), 20*time.Millisecond), "a")
	require.ErrorIs(t, err, lock.ErrLockTimeout, "next still holds it")
	next.Release()
	st := l.Stats()
	require.Equal(t, uint64(1), st.Lapsed)
	require.Equal(t, uint64(1), st.Released)
	require.Contains(t, logs.String(), "session lock held too long in process")

	unlimited := lock.NewLocal(lock.Config{MaxHold: -1})
	lk, err := unlimited.Acquire(context.Background(), "a")
	require.NoError(t, err)
	require.False(t, lk.Lapsed())
	lk.Release()
	require.Zero(t, unlimited.Stats().Lapsed)
}
