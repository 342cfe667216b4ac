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

// internalStore builds a Store over the nodes of spec with the given node
// timeout and fence window; sticky turns sticky mode on.
func internalStore(t *testing.T, spec string, timeout, window time.Duration, sticky ...bool) *Store {
	t.Helper()
	nodes, err := replica.ParseNodes(spec)
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: timeout, OpenTimeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	st, err := New(Config{Cluster: cl, FenceWindow: window, Sticky: len(sticky) > 0 && sticky[0]})
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
		since, _, err := st.writeFence(ctx, "n1", tt.until)
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
// slow), reads the marker then and follows it: for Load, LoadLocked and
// the sticky probe of a cached session.
func TestStaleKnowledgeDuringTheReadReadsTheMarker(t *testing.T) {
	for _, tt := range []struct {
		name           string
		locked, sticky bool
	}{{"Load", false, false}, {"LoadLocked", true, false}, {"sticky probe", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			window := MaxFenceWindow
			st := internalStore(t, c.Spec(), 3*time.Second, window, tt.sticky)
			st.fences.manual = true
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
			// A marker, as a relocation would have written it, saying that
			// s lives at moved's id now.
			value := moved.ID() + " " + strconv.FormatUint(s.Version(), 10)
			require.NoError(t, c.Node(st.markerNode("n1")).Client().Set(&memcache.Item{Key: st.mkey(s.ID()), Value: []byte(value), Expiration: 60}))

			// Knowledge fresh for 600 ms more says nobody is fenced; the
			// paused n1 makes the read last about 900 ms.
			now := time.Now()
			nodes := st.view.ActiveNodes()
			readAt := make([]time.Time, len(nodes))
			for i := range readAt {
				readAt[i] = now.Add(-window + 600*time.Millisecond)
			}
			st.fences.snap.Store(&fenceSnap{taken: now, nodes: nodes, readAt: readAt, found: make([][]string, len(nodes)), fenced: map[string]fenceInfo{}})
			require.True(t, st.markerNotNeeded("n1"), "fresh at the start")
			require.NoError(t, c.Node("n1").Pause())
			go func() {
				time.Sleep(900 * time.Millisecond)
				_ = c.Node("n1").Resume()
			}()
			var got *Session
			var err error
			if tt.locked {
				got, err = st.LoadLocked(ctx, s.ID())
			} else {
				got, err = st.Load(ctx, s.ID())
			}
			require.NoError(t, err)
			require.False(t, st.markerNotNeeded("n1"), "stale at the end")
			require.Equal(t, moved.ID(), got.ID(), "the marker read after the primary answered was followed")
			if tt.locked {
				require.NoError(t, st.Release(ctx, got))
			}
		})
	}
}

// TestFenceCountsPastItsDeadline: a fence still counts for loads for
// fenceSlack after its deadline (a mover extends a fence it saw without
// waiting, and clocks differ), and stops counting after that.
func TestFenceCountsPastItsDeadline(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := internalStore(t, c.Spec(), time.Second, MaxFenceWindow)
	st.fences.manual = true
	require.NoError(t, st.RefreshFences(context.Background()))
	require.True(t, st.markerNotNeeded("n1"), "nobody fenced")
	for _, tt := range []struct {
		name   string
		until  time.Duration // the deadline, from now
		counts bool
	}{
		{"deadline ahead", time.Minute, true},
		{"deadline passed a second ago", -time.Second, true},
		{"deadline passed almost fenceSlack ago", -fenceSlack + 5*time.Second, true},
		{"deadline passed more than fenceSlack ago", -fenceSlack - time.Second, false},
	} {
		sn := *st.fences.snap.Load()
		sn.fenced = map[string]fenceInfo{"n1": {since: time.Now(), until: time.Now().Add(tt.until), confirmed: true}}
		st.fences.snap.Store(&sn)
		require.Equal(t, !tt.counts, st.markerNotNeeded("n1"), tt.name)
		require.True(t, st.markerNotNeeded("n2"), "%s: n2 is not fenced", tt.name)
	}
}

// TestFenceOnlyRememberedIsNotConfirmed: a fence known only from a node
// that does not answer now still counts for loads, but is not confirmed:
// a mover writes it again (on the nodes that answer) and waits.
func TestFenceOnlyRememberedIsNotConfirmed(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := internalStore(t, c.Spec(), 300*time.Millisecond, DefaultFenceWindow)
	st.fences.manual = true
	ctx := context.Background()
	// Only n3 holds n1's fence.
	until := time.Now().Add(time.Hour)
	require.NoError(t, c.Node("n3").Client().Set(&memcache.Item{Key: st.fkey("n1"), Value: []byte(strconv.FormatInt(until.Unix(), 10)), Expiration: 3600}))
	require.NoError(t, st.RefreshFences(ctx))
	info, ok := st.fences.snap.Load().get("n1")
	require.True(t, ok)
	require.True(t, info.confirmed)

	require.NoError(t, c.Node("n3").Kill())
	require.ErrorIs(t, st.RefreshFences(ctx), ErrUnavailable)
	info, ok = st.fences.snap.Load().get("n1")
	require.True(t, ok, "still known")
	require.False(t, info.confirmed, "only remembered from n3, which did not answer")
	require.False(t, st.markerNotNeeded("n1"), "still counts for loads")

	// A mover writes it on n2 (n1 is the fenced node, n3 is down).
	start := time.Now()
	require.NoError(t, st.fence(ctx, "n1", time.Now().Add(time.Minute)))
	require.GreaterOrEqual(t, time.Since(start), DefaultFenceWindow, "the mover waited a whole window")
	_, err := c.Node("n2").Client().Get(st.fkey("n1"))
	require.NoError(t, err, "written on n2")
}

// TestFenceMoverTrustsOnlyFreshKnowledge: a mover moves without waiting
// only on a fence its own reads found less than half a window ago and its
// write found still there; a fence it knew but that is gone from memcached
// (nodes restarted empty) is written again, and it waits a whole window.
func TestFenceMoverTrustsOnlyFreshKnowledge(t *testing.T) {
	for _, tt := range []struct {
		name  string
		stale bool          // the mover's last read of the fences is old
		need  time.Duration // the deadline the move needs, from now
	}{
		{"knowledge older than half a window", true, time.Minute},
		{"fresh knowledge, a longer deadline needed, the fence gone", false, 2 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			st := internalStore(t, c.Spec(), time.Second, DefaultFenceWindow)
			st.fences.manual = true
			ctx := context.Background()
			until := time.Now().Add(time.Hour)
			for _, n := range []string{"n2", "n3"} {
				require.NoError(t, c.Node(n).Client().Set(&memcache.Item{Key: st.fkey("n1"), Value: []byte(strconv.FormatInt(until.Unix(), 10)), Expiration: 7200}))
			}
			// Seen by three reads, each less than a window after the one
			// before: known without a break since the first, more than a
			// window ago, and read lately.
			for i := range 3 {
				if i > 0 {
					time.Sleep(DefaultFenceWindow * 6 / 10)
				}
				require.NoError(t, st.RefreshFences(ctx))
			}
			info, ok := st.fences.snap.Load().get("n1")
			require.True(t, ok)
			require.True(t, info.confirmed)
			require.Less(t, time.Since(info.since), time.Hour)
			sent := func() (n uint64) {
				for _, ps := range st.cluster.PoolStats() {
					n += ps.RoundTrips
				}
				return n
			}
			before := sent()
			require.NoError(t, st.fence(ctx, "n1", time.Now().Add(time.Minute)))
			require.Equal(t, before, sent(), "a fence known well enough: nothing written")
			info, _ = st.fences.snap.Load().get("n1")
			require.Negative(t, time.Until(info.since.Add(DefaultFenceWindow*11/10)), "and nothing to wait for")

			// The fence is lost from every node.
			for _, n := range []string{"n2", "n3"} {
				require.NoError(t, c.Node(n).Client().Delete(st.fkey("n1")))
			}
			if tt.stale {
				sn := *st.fences.snap.Load()
				sn.taken = time.Now().Add(-DefaultFenceWindow)
				st.fences.snap.Store(&sn)
			}
			start := time.Now()
			require.NoError(t, st.fence(ctx, "n1", time.Now().Add(tt.need)))
			require.GreaterOrEqual(t, time.Since(start), DefaultFenceWindow, "written again, and waited a whole window")
			for _, n := range []string{"n2", "n3"} {
				_, err := c.Node(n).Client().Get(st.fkey("n1"))
				require.NoError(t, err, "the fence is back on %s", n)
			}
		})
	}
}
