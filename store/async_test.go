package store_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// asyncStore builds a Store with Config.AsyncWrites over c whose node
// timeout is timeout (long ones keep a write to a paused node pending for
// the whole test, so what the test observes does not depend on timing).
func asyncStore(t *testing.T, c *mcproc.Cluster, timeout time.Duration, mod func(*store.Config)) *store.Store {
	t.Helper()
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: timeout, OpenTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	cfg := store.Config{Cluster: cl, AsyncWrites: true, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	st, err := store.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = st.Shutdown(ctx)
	})
	return st
}

// newOn returns a new, unsaved session whose primary is node.
func newOn(t *testing.T, st *store.Store, node string) *store.Session {
	t.Helper()
	for range 64 {
		s, err := st.NewSession(context.Background())
		require.NoError(t, err)
		if nodeOf(s.ID()) == node {
			return s
		}
	}
	t.Fatalf("no new session on %s in 64 tries", node)
	return nil
}

// requireCopy requires the copy key on node with the client flags of
// version.
func requireCopy(t *testing.T, c *mcproc.Cluster, node, key string, version uint64) {
	t.Helper()
	it, err := get(t, c, node, key)
	require.NoError(t, err, "%s on %s", key, node)
	require.Equal(t, uint32(version), it.Flags, "%s on %s", key, node)
}

func flush(t *testing.T, st *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, st.Flush(ctx))
}

// TestAsyncBackupReturnsBeforeTheBackupWrite pauses the backup node: Save
// returns with the primary copy written and the backup copy queued; the
// queued write lands once the node is back.
func TestAsyncBackupReturnsBeforeTheBackupWrite(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := asyncStore(t, c, 30*time.Second, nil)
	ctx := context.Background()
	s := newOn(t, st, "n1")
	require.NoError(t, s.Set("k", 1))
	key, bkey, _ := st.MemcachedKeys(s.ID())

	require.NoError(t, c.Node("n2").Pause())
	require.NoError(t, st.Save(ctx, s))
	requireCopy(t, c, "n1", key, 1)
	stats := st.Stats()
	require.Equal(t, uint64(1), stats.AsyncQueued)
	require.Equal(t, 1, stats.AsyncPending, "the backup write waits for the paused node")
	require.Zero(t, stats.AsyncWritten)

	require.NoError(t, c.Node("n2").Resume())
	flush(t, st)
	requireCopy(t, c, "n2", bkey, 1)
	stats = st.Stats()
	require.Equal(t, uint64(1), stats.AsyncWritten)
	require.Zero(t, stats.AsyncPending)
	require.Zero(t, stats.AsyncFailed)
}

// TestAsyncCoalesces queues three saves of one session while its backup
// node is paused: the first is running, the second waits, the third
// replaces the second; the backup copy ends at the last version.
func TestAsyncCoalesces(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := asyncStore(t, c, 30*time.Second, nil)
	ctx := context.Background()
	s := newOn(t, st, "n1")
	_, bkey, _ := st.MemcachedKeys(s.ID())
	require.NoError(t, c.Node("n2").Pause())
	for i := range 3 {
		require.NoError(t, s.Set("k", i))
		require.NoError(t, st.Save(ctx, s))
		if i == 0 { // the first is running (waiting for n2) before the next is queued
			require.Eventually(t, func() bool { return st.Stats().AsyncRunning == 1 }, 10*time.Second, time.Millisecond)
		}
	}
	stats := st.Stats()
	require.Equal(t, uint64(2), stats.AsyncQueued)
	require.Equal(t, uint64(1), stats.AsyncCoalesced)
	require.NoError(t, c.Node("n2").Resume())
	flush(t, st)
	requireCopy(t, c, "n2", bkey, 3)
	require.Equal(t, uint64(2), st.Stats().AsyncWritten)
}

// TestAsyncQueueFullWritesSynchronously keeps every worker busy with a
// write to a paused node and fills a queue of one: the next save writes
// its backup copy before it returns, and nothing is dropped.
func TestAsyncQueueFullWritesSynchronously(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	// One worker: one write waits for the paused node, one is queued.
	st := asyncStore(t, c, 30*time.Second, func(cfg *store.Config) { cfg.AsyncQueue, cfg.AsyncWorkers = 1, 1 })
	ctx := context.Background()
	var stuck []*store.Session // backups on n2
	for range 2 {
		stuck = append(stuck, newOn(t, st, "n1"))
	}
	last := newOn(t, st, "n3") // backup on n1
	require.NoError(t, c.Node("n2").Pause())
	for i, s := range append(stuck, last) {
		require.NoError(t, s.Set("k", 1))
		require.NoError(t, st.Save(ctx, s))
		if i == 0 { // the worker has taken it: the queue is empty again
			require.Eventually(t, func() bool { return st.Stats().AsyncRunning == 1 }, 10*time.Second, time.Millisecond)
		}
	}
	_, lbkey, _ := st.MemcachedKeys(last.ID())
	requireCopy(t, c, "n1", lbkey, 1) // written before Save returned
	stats := st.Stats()
	require.Equal(t, uint64(1), stats.AsyncFull)
	require.Equal(t, uint64(len(stuck)), stats.AsyncQueued)

	require.NoError(t, c.Node("n2").Resume())
	flush(t, st)
	for _, s := range stuck {
		_, bkey, _ := st.MemcachedKeys(s.ID())
		requireCopy(t, c, "n2", bkey, 1)
	}
	require.Equal(t, uint64(len(stuck)), st.Stats().AsyncWritten)
}

// TestAsyncShutdownWritesEverything queues backup writes behind a paused
// node and shuts down after it resumed: Shutdown returns once every copy
// is written, and saves after it are synchronous.
func TestAsyncShutdownWritesEverything(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := asyncStore(t, c, 30*time.Second, func(cfg *store.Config) { cfg.AsyncWorkers = 1 })
	ctx := context.Background()
	var sessions []*store.Session
	require.NoError(t, c.Node("n2").Pause())
	for range 5 {
		s := newOn(t, st, "n1")
		require.NoError(t, s.Set("k", 1))
		require.NoError(t, st.Save(ctx, s))
		sessions = append(sessions, s)
	}
	require.Equal(t, 5, st.Stats().AsyncPending)
	require.NoError(t, c.Node("n2").Resume())
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, st.Shutdown(sctx))
	require.Zero(t, st.Stats().AsyncPending)
	for _, s := range sessions {
		_, bkey, _ := st.MemcachedKeys(s.ID())
		requireCopy(t, c, "n2", bkey, 1)
	}
	s := sessions[0]
	require.NoError(t, s.Set("k", 2))
	require.NoError(t, st.Save(ctx, s))
	_, bkey, _ := st.MemcachedKeys(s.ID())
	requireCopy(t, c, "n2", bkey, 2) // synchronous after Shutdown
	require.Equal(t, uint64(5), st.Stats().AsyncQueued)
}

// TestAsyncShutdownBoundedByContext: a queued write stuck behind a paused
// node makes Shutdown return the context's error with the count.
func TestAsyncShutdownBoundedByContext(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := asyncStore(t, c, 30*time.Second, nil)
	s := newOn(t, st, "n1")
	require.NoError(t, s.Set("k", 1))
	require.NoError(t, c.Node("n2").Pause())
	t.Cleanup(func() { _ = c.Node("n2").Resume() })
	require.NoError(t, st.Save(context.Background(), s))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := st.Shutdown(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "1 asynchronous writes not done")
}

// TestAsyncBackupNodeDown kills the backup node: with a third node the
// queued write moves the copy there; with none left it fails (counted),
// and the next save after the node is back writes the copy again.
func TestAsyncBackupNodeDown(t *testing.T) {
	t.Run("third node takes the copy", func(t *testing.T) {
		c := mcproc.NewCluster(t, 3)
		st := asyncStore(t, c, 300*time.Millisecond, nil)
		s := newOn(t, st, "n1")
		require.NoError(t, s.Set("k", 1))
		require.NoError(t, c.Node("n2").Kill())
		require.NoError(t, st.Save(context.Background(), s))
		flush(t, st)
		_, bkey, _ := st.MemcachedKeys(s.ID())
		requireCopy(t, c, "n3", bkey, 1)
		stats := st.Stats()
		require.Equal(t, uint64(1), stats.AsyncWritten)
		require.Positive(t, stats.BackupFailures)
	})
	t.Run("no node left", func(t *testing.T) {
		c := mcproc.NewCluster(t, 2)
		st := asyncStore(t, c, 300*time.Millisecond, nil)
		ctx := context.Background()
		s := newOn(t, st, "n1")
		require.NoError(t, s.Set("k", 1))
		require.NoError(t, c.Node("n2").Kill())
		require.NoError(t, st.Save(ctx, s))
		flush(t, st)
		require.Equal(t, uint64(1), st.Stats().AsyncFailed)

		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		require.NoError(t, c.Node("n2").Restart(rctx))
		require.Eventually(t, func() bool { return st.Cluster().Healthy("n2") }, 10*time.Second, 50*time.Millisecond)
		require.NoError(t, s.Set("k", 2))
		require.NoError(t, st.Save(ctx, s))
		flush(t, st)
		_, bkey, _ := st.MemcachedKeys(s.ID())
		requireCopy(t, c, "n2", bkey, 2)
	})
}
