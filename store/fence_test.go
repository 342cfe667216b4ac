package store_test

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/syncbuf"
	"github.com/mcsession/mcsession/store"
)

// quietFences gives a store the longest fence window, so that what it
// read with RefreshFences stays fresh through a test that counts commands
// (with ManualFences, which keeps it from re-reading them).
func quietFences(cfg *store.Config) { cfg.FenceWindow = store.MaxFenceWindow }

// sessionOn saves sessions through st until one has its primary on node.
func sessionOn(t *testing.T, st *store.Store, node string, attrs map[string]any) *store.Session {
	t.Helper()
	for range 200 {
		if s := saved(t, st, attrs); nodeOf(s.ID()) == node {
			return s
		}
	}
	t.Fatalf("no session landed on %s", node)
	return nil
}

// TestFenceWaitCoversEveryStoresView is the case fences exist for: app
// server B read the fences just before A fenced n1 (so B's knowledge says
// "n1 not fenced" and is fresh), A relocates a session off the hung n1 and
// writes it, n1 resumes, and B gets the old cookie at once. A's move waited
// a whole window after the fence, so B's knowledge is stale by then and B
// reads the moved marker: it follows the session instead of serving (and
// writing) the old copy. Without the wait B would load the old copy.
func TestFenceWaitCoversEveryStoresView(t *testing.T) {
	for _, locked := range []bool{false, true} {
		t.Run(map[bool]string{false: "unlocked", true: "locked"}[locked], func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			a, b := newStore(t, c, nil), newStore(t, c, nil)
			ctx := context.Background()
			s := sessionOn(t, a, "n1", map[string]any{"n": 0})
			oldID := s.ID()

			require.NoError(t, b.RefreshFences(ctx))
			require.NoError(t, c.Node("n1").Pause())
			start := time.Now()
			id, err := incr(t, a, oldID, locked) // relocated (fence, wait, move), then written
			require.NoError(t, err)
			took := time.Since(start)
			require.NotEqual(t, oldID, id)
			require.NoError(t, c.Node("n1").Resume())
			_, err = c.Node("n1").Client().Get(oldID)
			require.NoError(t, err, "the resumed node has its old copy")
			t.Logf("relocation with the fence wait took %v", took)

			got, err := incr(t, b, oldID, locked)
			require.NoError(t, err)
			require.Equal(t, id, got, "B followed the marker to the relocated session")
			n, _ := counterOf(t, a, id)
			require.Equal(t, 2, n, "acknowledged increments == stored")
		})
	}
}

// TestFencesAreWrittenOnTheOtherNodes checks the fence a relocation writes:
// key fence:<node> on every other node (not on the node itself), holding a
// deadline no earlier than the moved session's expiry, with a TTL to match.
func TestFencesAreWrittenOnTheOtherNodes(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, func(cfg *store.Config) { cfg.KeyPrefix = "app:"; cfg.FenceWindow = 100 * time.Millisecond })
	ctx := context.Background()
	s := sessionOn(t, st, "n1", map[string]any{"n": 0})
	start := time.Now()
	require.NoError(t, c.Node("n1").Pause())
	moved, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.NotEqual(t, s.ID(), moved.ID())
	require.NoError(t, c.Node("n1").Resume())

	for _, n := range []string{"n2", "n3"} {
		it, err := get(t, c, n, "app:fence:n1")
		require.NoError(t, err, n)
		until, err := strconv.ParseInt(string(it.Value), 10, 64)
		require.NoError(t, err)
		require.GreaterOrEqual(t, until, start.Add(s.IdleTimeout()).Unix(), "the fence outlives the moved session's markers")
	}
	_, err = get(t, c, "n1", "app:fence:n1")
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "a node does not hold its own fence")
	for _, n := range []string{"n2", "n3"} {
		_, err := get(t, c, "n1", "app:fence:"+n)
		require.ErrorIs(t, err, memcache.ErrCacheMiss, "%s is not fenced", n)
	}
}

// TestOnlyFencedNodesCostAMarkerRead: once n1 is fenced (a session moved
// off it), loads of sessions on n1 read their moved marker on the backup
// node, in the same round trip; loads of sessions on unfenced nodes do not.
func TestOnlyFencedNodesCostAMarkerRead(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a := newStore(t, c, func(cfg *store.Config) { cfg.FenceWindow = 100 * time.Millisecond })
	// B reads the fences once the move is done, and not again during the
	// counts (ManualFences).
	b := newStore(t, c, quietFences)
	store.ManualFences(b)
	ctx := context.Background()
	on1 := sessionOn(t, a, "n1", map[string]any{"n": 0})
	stays := sessionOn(t, a, "n1", map[string]any{"n": 0})
	on2 := sessionOn(t, a, "n2", map[string]any{"n": 0})

	require.NoError(t, c.Node("n1").Pause())
	_, err := a.Load(ctx, on1.ID())
	require.NoError(t, err)
	require.NoError(t, c.Node("n1").Resume())
	require.NoError(t, b.RefreshFences(ctx))

	cost := func(id string) map[string]wireCount {
		before := wireCounts(b)
		_, err := b.Load(ctx, id)
		require.NoError(t, err)
		return wireDelta(before, wireCounts(b))
	}
	_, backup, _ := b.Placement(stays.ID())
	got := cost(stays.ID())
	require.Equal(t, wireCount{1, 1}, got["n1"], "the session's get on fenced n1")
	require.Equal(t, wireCount{1, 1}, got[backup], "its marker read on the backup node %s", backup)

	_, backup, _ = b.Placement(on2.ID())
	got = cost(on2.ID())
	require.Equal(t, wireCount{1, 1}, got["n2"], "the session's get on n2")
	require.Equal(t, wireCount{}, got[backup], "no marker read on %s: n2 is not fenced", backup)
}

// TestLoadsStopReadingMarkersByThemselves: a Store that was never told to
// read the fences starts reading them in the background as it serves
// loads, and its loads then read no marker.
func TestLoadsStopReadingMarkersByThemselves(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"n": 0})
	primary, backup, _ := st.Placement(s.ID())
	// A Store that knows nothing of the fences yet reads the marker.
	blank := newStore(t, c, nil)
	store.ManualFences(blank) // stays blank
	before := wireCounts(blank)
	_, err := blank.Load(ctx, s.ID())
	require.NoError(t, err)
	require.Equal(t, wireCount{1, 1}, wireDelta(before, wireCounts(blank))[backup], "the marker read on the backup node")

	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		before := wireCounts(st)
		_, err := st.Load(ctx, s.ID())
		assert.NoError(ct, err)
		got := wireDelta(before, wireCounts(st))
		assert.Equal(ct, wireCount{1, 1}, got[primary], "one get on the primary")
		assert.Equal(ct, wireCount{}, got[backup], "nothing on the backup node")
	}, 10*time.Second, 20*time.Millisecond)
}

// TestFencesOnOneNode: a cluster of one node has no fence to read; reading
// them sends nothing (no failed call that would count against the node's
// breaker) and loads go on.
func TestFencesOnOneNode(t *testing.T) {
	c := mcproc.NewCluster(t, 1)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"n": 1})
	before := wireCounts(st)
	require.NoError(t, st.RefreshFences(ctx))
	require.Equal(t, before, wireCounts(st), "nothing sent")
	for range 3 {
		_, err := st.Load(ctx, s.ID())
		require.NoError(t, err)
	}
	for _, ns := range st.Cluster().Status() {
		require.Zero(t, ns.ConsecutiveFailures, ns.ID)
		require.Equal(t, "closed", ns.State, ns.ID)
	}
}

// TestRelocationFencesOnce: a relocation by a Store that knows nothing of
// the fences writes the fence once and waits once (relocate fences the
// node before its "-" markers, and moveTo finds that fresh).
func TestRelocationFencesOnce(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	var logs syncbuf.Buffer
	st := newStore(t, c, func(cfg *store.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	store.ManualFences(st) // nothing known: the move must write the fence
	ctx := context.Background()
	s := sessionOn(t, st, "n1", map[string]any{"n": 0})
	require.NoError(t, c.Node("n1").Pause())
	moved, err := st.Load(ctx, s.ID())
	require.NoError(t, err)
	require.NotEqual(t, s.ID(), moved.ID())
	require.NoError(t, c.Node("n1").Resume())
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "node fenced"), "%s", out)
	require.Equal(t, 1, strings.Count(out, "fenced a node before moving sessions off it: waiting"), "%s", out)
}
