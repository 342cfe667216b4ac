package replica_test

import (
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

func TestParseNodes(t *testing.T) {
	tests := []struct {
		name, spec string
		want       []replica.Node
		wantErr    string
	}{
		{name: "two", spec: "n1=127.0.0.1:11211,n2=127.0.0.1:11212",
			want: []replica.Node{{ID: "n1", Addr: "127.0.0.1:11211"}, {ID: "n2", Addr: "127.0.0.1:11212"}}},
		{name: "spaces", spec: " a = localhost:1 , b_2=[::1]:2 ",
			want: []replica.Node{{ID: "a", Addr: "localhost:1"}, {ID: "b_2", Addr: "[::1]:2"}}},
		{name: "empty", spec: "  ", wantErr: "empty"},
		{name: "no equals", spec: "127.0.0.1:11211", wantErr: "not id=host:port"},
		{name: "empty entry", spec: "n1=127.0.0.1:1,", wantErr: "not id=host:port"},
		{name: "empty id", spec: "=127.0.0.1:1", wantErr: "node id"},
		{name: "dash in id", spec: "n-1=127.0.0.1:1", wantErr: "node id"},
		{name: "long id", spec: "n12345678901234567=127.0.0.1:1", wantErr: "node id"},
		{name: "no port", spec: "n1=127.0.0.1", wantErr: "not host:port"},
		{name: "bad port", spec: "n1=127.0.0.1:99999", wantErr: "bad port"},
		{name: "no host", spec: "n1=:11211", wantErr: "not host:port"},
		{name: "duplicate id", spec: "n1=127.0.0.1:1,n1=127.0.0.1:2", wantErr: "given twice"},
		{name: "duplicate addr", spec: "n1=127.0.0.1:1,n2=127.0.0.1:1", wantErr: "given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := replica.ParseNodes(tt.spec)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, replica.ErrBadNodeList)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	_, err := replica.New(replica.Config{})
	require.ErrorIs(t, err, replica.ErrBadNodeList)
}

func TestExpiration(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		ttl  time.Duration
		want int32
	}{
		{0, -1},
		{-time.Second, -1},
		{time.Millisecond, 1},
		{1200 * time.Millisecond, 2},
		{30 * time.Minute, 1800},
		{30 * 24 * time.Hour, 2_592_000},
		{30*24*time.Hour + time.Second, int32(now.Unix()) + 2_592_001},
		{31 * 24 * time.Hour, int32(now.Unix()) + 31*24*3600},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, replica.Expiration(tt.ttl, now), "ttl %v", tt.ttl)
		require.NotZero(t, replica.Expiration(tt.ttl, now), "never 0 (= never expires)")
	}

	// Past January 2038 the absolute exptime is clamped, never wrapped.
	late := time.Date(2037, 6, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, int32(math.MaxInt32), replica.Expiration(400*24*time.Hour, late))
	require.Equal(t, int32(late.Unix()+31*24*3600), replica.Expiration(31*24*time.Hour, late))
}

func newCluster(t *testing.T, c *mcproc.Cluster) *replica.Cluster {
	t.Helper()
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: 300 * time.Millisecond, OpenTimeout: 400 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func TestAnswersDoNotTripTheBreaker(t *testing.T) {
	c := mcproc.NewCluster(t, 1)
	cl := newCluster(t, c)
	ctx := context.Background()
	for range 10 {
		_, err := ops.Get(ctx, ops.Of(cl), "n1", "missing")
		require.ErrorIs(t, err, ops.ErrMiss)
	}
	v := ops.Of(cl)
	_, err := ops.Store(ctx, v, "n1", meta.ModeAdd, &ops.Item{Key: "k", Value: []byte("v")}, 60)
	require.NoError(t, err)
	for range 5 {
		_, err = ops.Store(ctx, v, "n1", meta.ModeAdd, &ops.Item{Key: "k", Value: []byte("v")}, 60)
		require.ErrorIs(t, err, ops.ErrNotStored)
		_, err = ops.Store(ctx, v, "n1", meta.ModeSet, &ops.Item{Key: "k", Value: []byte("v"), CAS: 1 << 40}, 60)
		require.ErrorIs(t, err, ops.ErrCASConflict)
		require.ErrorIs(t, ops.Delete(ctx, v, "n1", "missing", 0), ops.ErrMiss)
	}
	st := cl.Status()[0]
	require.Equal(t, "closed", st.State)
	require.Zero(t, st.ConsecutiveFailures)
	_, err = ops.Get(ctx, ops.Of(cl), "n9", "k")
	require.ErrorIs(t, err, replica.ErrUnknownNode)
}

func TestBreakerOpensAndPlacementSkipsDeadNode(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	cl := newCluster(t, c)
	ctx := context.Background()
	require.Equal(t, "n2", cl.BackupOf("n1"))
	require.Equal(t, "n1", cl.BackupOf("n3"))
	require.Equal(t, []string{"n3", "n1"}, ops.Of(cl).BackupCandidates("n2"))

	require.NoError(t, c.Node("n2").Kill())
	for range replica.DefaultFailureThreshold {
		_, err := ops.Get(ctx, ops.Of(cl), "n2", "k")
		require.ErrorIs(t, err, replica.ErrNodeDown)
	}
	require.False(t, cl.Healthy("n2"))
	require.Equal(t, "open", cl.Status()[1].State)
	_, err := ops.Get(ctx, ops.Of(cl), "n2", "k")
	require.ErrorIs(t, err, replica.ErrNodeDown, "an open breaker fails fast")
	require.Equal(t, "n3", cl.BackupOf("n1"), "backup skips the dead node")
	require.Equal(t, "n3", cl.BackupOf("n1", "n9"))
	require.Equal(t, "", cl.BackupOf("n1", "n3"))
	for range 10 {
		id, err := ops.Of(cl).PickNew()
		require.NoError(t, err)
		require.NotEqual(t, "n2", id)
	}

	// Restarted: after OpenTimeout one probe closes the breaker again.
	require.NoError(t, c.Node("n2").Restart(ctx))
	var getErr error
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, getErr = ops.Get(ctx, ops.Of(cl), "n2", "k"); getErr == ops.ErrMiss {
			break
		}
	}
	require.ErrorIs(t, getErr, ops.ErrMiss)
	require.True(t, cl.Healthy("n2"))
}

func TestAllBreakersOpen(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	cl := newCluster(t, c)
	ctx := context.Background()
	for _, n := range c.Nodes {
		require.NoError(t, n.Kill())
		for range replica.DefaultFailureThreshold {
			_, _ = ops.Get(ctx, ops.Of(cl), n.ID, "k")
		}
	}
	_, err := ops.Of(cl).PickNew()
	require.ErrorIs(t, err, replica.ErrNoHealthyNode)
}

func TestStaleConnectionsAfterRestartAreDropped(t *testing.T) {
	c := mcproc.NewCluster(t, 1)
	cl := newCluster(t, c)
	ctx := context.Background()
	// Fill the idle pool with several connections.
	errs := make(chan error, 8)
	for range 8 {
		go func() { _, err := ops.Get(ctx, ops.Of(cl), "n1", "k"); errs <- err }()
	}
	for range 8 {
		require.ErrorIs(t, <-errs, ops.ErrMiss)
	}
	require.NoError(t, c.Node("n1").Restart(ctx))
	_, err := ops.Get(ctx, ops.Of(cl), "n1", "k")
	require.ErrorIs(t, err, ops.ErrMiss, "a stale pooled connection is not a node failure")
	require.Zero(t, cl.Status()[0].ConsecutiveFailures)
	require.NotZero(t, cl.PoolStats()[0].Stale, "the closed idle connections were found and dropped")
}

func TestPingAndPoolStats(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	cl := newCluster(t, c)
	ctx := context.Background()
	require.NoError(t, cl.Ping(ctx, "n1"))
	require.NoError(t, cl.Ping(ctx, "n2"))
	require.ErrorIs(t, cl.Ping(ctx, "n9"), replica.ErrUnknownNode)
	ps := cl.PoolStats()
	require.Len(t, ps, 2)
	require.Equal(t, "n1", ps[0].Node)
	require.Equal(t, 1, ps[0].Open)
	require.Equal(t, 1, ps[0].Idle)
	require.Equal(t, uint64(1), ps[0].RoundTrips)
	require.Equal(t, uint64(1), ps[0].Dials)

	require.NoError(t, c.Node("n2").Kill())
	err := cl.Ping(ctx, "n2")
	require.ErrorIs(t, err, replica.ErrNodeDown)
	require.ErrorIs(t, err, meta.ErrNotSent, "a refused dial sent nothing")
	require.Equal(t, uint64(1), cl.PoolStats()[1].DialErrors)
}

func TestExecManyCountsEachNodeOnItsOwn(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	cl := newCluster(t, c)
	ctx := context.Background()
	require.NoError(t, c.Node("n2").Kill())
	mk := func(node string) ops.Batch {
		return ops.Batch{Node: node, Reqs: []meta.Request{{Command: meta.Set, Key: "k", Value: []byte("v"), TTL: 60}},
			Out: make([]meta.Response, 1)}
	}
	batches := []ops.Batch{mk("n1"), mk("n2"), mk("n9")}
	ops.Of(cl).ExecMany(ctx, batches)
	require.NoError(t, batches[0].Err)
	require.Equal(t, meta.StatusOK, batches[0].Out[0].Status)
	require.ErrorIs(t, batches[1].Err, replica.ErrNodeDown)
	require.ErrorIs(t, batches[2].Err, replica.ErrUnknownNode)
	st := cl.Status()
	require.Zero(t, st[0].ConsecutiveFailures)
	require.Equal(t, uint32(1), st[1].ConsecutiveFailures)
}

// TestExecManyCrossedNeverWaitForEachOther: with one connection per node,
// calls that write n1 then n2 and calls that write n2 then n1 must not
// hold one node's last connection while waiting for the other's (they
// would wait until the deadline and fail on healthy nodes).
func TestExecManyCrossedNeverWaitForEachOther(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, MaxConns: 1, MaxIdleConns: 1, Timeout: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	v := ops.Of(cl)
	ctx := context.Background()
	mk := func(node string) ops.Batch {
		return ops.Batch{Node: node, Reqs: []meta.Request{{Command: meta.Set, Key: "k", Value: []byte("v"), TTL: 60}},
			Out: make([]meta.Response, 1)}
	}
	errs := make(chan error, 400)
	var wg sync.WaitGroup
	for _, order := range [][2]string{{"n1", "n2"}, {"n2", "n1"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				b := []ops.Batch{mk(order[0]), mk(order[1])}
				v.ExecMany(ctx, b)
				errs <- errors.Join(b[0].Err, b[1].Err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, st := range cl.Status() {
		require.Equal(t, "closed", st.State)
	}
}

// TestBreakerCountsNodeTimeoutsNotCallerDeadlines: a host that never
// accepts connections (dial timeout) opens its breaker like a refused one;
// callers whose own deadline ends mid-batch do not count against a node.
func TestBreakerCountsNodeTimeoutsNotCallerDeadlines(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	hangAddr := nodes[1].Addr
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: 100 * time.Millisecond,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == hangAddr {
				<-ctx.Done() // an unreachable host: the dial times out
				return nil, ctx.Err()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	ctx := context.Background()
	for range replica.DefaultFailureThreshold {
		require.ErrorIs(t, cl.Ping(ctx, "n2"), replica.ErrNodeDown)
	}
	require.False(t, cl.Healthy("n2"), "dial timeouts opened the breaker")

	require.NoError(t, c.Node("n1").Pause())
	t.Cleanup(func() { _ = c.Node("n1").Resume() })
	for range 2 * replica.DefaultFailureThreshold {
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		err := cl.Ping(short, "n1")
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NotErrorIs(t, err, replica.ErrNodeDown, "the caller's deadline, not the node's failure")
	}
	require.True(t, cl.Healthy("n1"))
	require.Zero(t, cl.Status()[0].ConsecutiveFailures)
}

// TestRoundTripLatency checks that every batch sent to a node is timed in
// its PoolStats, and only there.
func TestRoundTripLatency(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	cl := newCluster(t, c)
	for range 5 {
		require.NoError(t, cl.Ping(context.Background(), "n1"))
	}
	ps := cl.PoolStats()
	require.Equal(t, uint64(5), ps[0].RoundTrip.Count)
	require.Equal(t, ps[0].RoundTrips, ps[0].RoundTrip.Count)
	require.Positive(t, ps[0].RoundTrip.Sum)
	require.Zero(t, ps[1].RoundTrip.Count)
}
