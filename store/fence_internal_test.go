package store

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
)

// internalStore builds a Store over the nodes of c with the given node
// timeout.
func internalStore(t *testing.T, spec string, timeout time.Duration, window time.Duration) *Store {
	t.Helper()
	nodes, err := replica.ParseNodes(spec)
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: timeout, OpenTimeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	st, err := New(Config{Cluster: cl, FenceWindow: window})
	require.NoError(t, err)
	return st
}

// TestFenceDeadlineIsExtendedNeverShortened: a fence written for a later
// deadline extends the one there (compare-and-set); one for an earlier
// deadline leaves it.
func TestFenceDeadlineIsExtendedNeverShortened(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := internalStore(t, c.Spec(), time.Second, time.Millisecond)
	ctx := context.Background()
	stored := func(node string) int64 {
		it, err := c.Node(node).Client().Get(st.fkey("n1"))
		require.NoError(t, err)
		v, err := strconv.ParseInt(string(it.Value), 10, 64)
		require.NoError(t, err)
		return v
	}
	now := time.Now()
	for _, tt := range []struct {
		name        string
		until, want time.Time
	}{
		{"first", now.Add(10 * time.Minute), now.Add(10 * time.Minute)},
		{"later deadline: extended", now.Add(time.Hour), now.Add(time.Hour)},
		{"earlier deadline: kept", now.Add(5 * time.Minute), now.Add(time.Hour)},
	} {
		since, err := st.writeFence(ctx, "n1", tt.until)
		require.NoError(t, err, tt.name)
		require.False(t, since.IsZero(), tt.name)
		for _, n := range []string{"n2", "n3"} {
			require.Equal(t, tt.want.Unix(), stored(n), "%s on %s", tt.name, n)
		}
	}
}

// TestFenceNoNodeTakesIt: a relocation whose fence no other node takes
// fails with ErrUnavailable rather than move the session unfenced.
func TestFenceNoNodeTakesIt(t *testing.T) {
	c := mcproc.NewCluster(t, 1)
	st := internalStore(t, c.Spec()+",n2=127.0.0.1:1,n3=127.0.0.1:2", 300*time.Millisecond, time.Second)
	err := st.fence(context.Background(), "n1", time.Now().Add(time.Minute))
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "fencing node n1")
}

// TestStaleKnowledgeDuringTheReadReadsTheMarker: a load that skipped the
// marker because the Store's knowledge of the fences was fresh when it
// started, but finds it stale once the primary answered (the node was
// slow), reads the marker then, in a round trip of its own, and follows it.
func TestStaleKnowledgeDuringTheReadReadsTheMarker(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	window := 10 * time.Second
	st := internalStore(t, c.Spec(), 3*time.Second, window)
	ctx := context.Background()
	save := func() *Session {
		s, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("n", 1))
		require.NoError(t, st.Save(ctx, s))
		return s
	}
	var s *Session
	for s == nil || !strings.HasSuffix(s.ID(), "-n1") {
		s = save()
	}
	moved := save()
	// A marker, as a relocation would have written it, saying that s lives
	// at moved's id now.
	value := moved.ID() + " " + strconv.FormatUint(s.Version(), 10)
	require.NoError(t, c.Node(st.markerNode("n1")).Client().Set(&memcache.Item{Key: st.mkey(s.ID()), Value: []byte(value), Expiration: 60}))

	// Knowledge that was fresh 300 ms ago says nobody is fenced; it turns
	// stale 300 ms into the read, which the paused n1 makes last 600 ms.
	now := time.Now()
	nodes := st.view.ActiveNodes()
	readAt := make([]time.Time, len(nodes))
	for i := range readAt {
		readAt[i] = now.Add(-window + 600*time.Millisecond)
	}
	st.fences.snap.Store(&fenceSnap{taken: now.Add(time.Hour), nodes: nodes, readAt: readAt, found: make([][]string, len(nodes)), fenced: map[string]fenceInfo{}})
	require.True(t, st.markerNotNeeded("n1"), "fresh at the start")
	require.NoError(t, c.Node("n1").Pause())
	go func() {
		time.Sleep(900 * time.Millisecond)
		_ = c.Node("n1").Resume()
	}()
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.False(t, st.markerNotNeeded("n1"), "stale at the end")
	require.Equal(t, moved.ID(), got.ID(), "the marker read after the primary answered was followed")
}
