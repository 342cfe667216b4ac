package chaos

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		err    error
		want   Outcome
		kind   string
	}{
		{200, `{"count":3}`, nil, Acked, kindOK},
		{409, "session changed concurrently; the change was not saved; retry", nil, Refused, kindConflict},
		{503, "session busy: another request of this session is still running; retry", nil, Refused, kindBusy},
		{503, "session storage unavailable; retry", nil, Unknown, kindUnavailable},
		{500, "Internal Server Error", nil, Unknown, kindOther5xx},
		{400, "bad", nil, Refused, kindOther4xx},
		{0, "", errors.New("EOF"), Unknown, kindTransport},
	} {
		got, kind := Classify(tc.status, tc.body, tc.err)
		require.Equal(t, tc.want, got, "%d %q %v", tc.status, tc.body, tc.err)
		require.Equal(t, tc.kind, kind)
	}
}

func TestVerdict(t *testing.T) {
	two := func(a, b int64) map[string]int64 { return map[string]int64{"A": a, "B": b} }
	for _, tc := range []struct {
		r    SessionResult
		want string
	}{
		{SessionResult{Acked: 5, Stored: 5, StoredBy: two(5, 5)}, VerdictOK},
		{SessionResult{Acked: 5, Unknown: 2, Stored: 7, StoredBy: two(7, 7)}, VerdictOK},
		{SessionResult{Acked: 5, Unknown: 2, Stored: 4, StoredBy: two(4, 4)}, VerdictLost},
		{SessionResult{Acked: 5, Unknown: 2, Stored: 8, StoredBy: two(8, 8)}, VerdictExcess},
		{SessionResult{Acked: 5, Stored: 5, StoredBy: two(5, 6)}, VerdictDiverged},
		{SessionResult{Acked: 5, Unknown: 1, Stored: 5, StoredBy: two(5, 5), Forks: []string{"count 3 twice"}}, VerdictFork},
		{SessionResult{Acked: 5, Stored: -1, StoredBy: map[string]int64{}}, VerdictUnread},
	} {
		require.Equal(t, tc.want, verdict(&tc.r, 2), "%+v", tc.r)
	}
	c := Summarize([]SessionResult{{Acked: 5, Stored: 4, Verdict: VerdictLost}, {Acked: 3, Unknown: 1, Stored: 4, Landed: 1, Verdict: VerdictOK}})
	require.Equal(t, int64(1), c.LostUpdates)
	require.Equal(t, map[string]int{VerdictLost: 1}, c.Failed)
	require.Contains(t, c.String(), "FAILED: 1 LOST")
}

func TestReplaceBetween(t *testing.T) {
	doc := "a\n" + FaultsBegin + "\nold\ntable\n" + FaultsEnd + "\nz\n"
	got, err := ReplaceBetween(doc, FaultsBegin, FaultsEnd, "new")
	require.NoError(t, err)
	require.Equal(t, "a\n"+FaultsBegin+"\nnew\n"+FaultsEnd+"\nz\n", got)
	_, err = ReplaceBetween("no markers", FaultsBegin, FaultsEnd, "x")
	require.ErrorIs(t, err, ErrNoMarkers)
	_, err = ReplaceBetween(FaultsEnd+"\n"+FaultsBegin, FaultsBegin, FaultsEnd, "x")
	require.ErrorIs(t, err, ErrNoMarkers)
}

func TestLogSinkCountsTrips(t *testing.T) {
	s, err := NewLogSink(t.TempDir() + "/app.log")
	require.NoError(t, err)
	lines := `time=x level=WARN msg="memcached node breaker changed state" instance=A node=n1 from=closed to=open
time=x level=WARN msg="memcached node breaker changed state" instance=A node=n1 from=open to=half-open
time=x level=WARN msg="memcached node breaker changed state" instance=A node=n1 from=half-open to=open
time=x level=WARN msg="memcached node breaker changed state" instance=A node=n2 from=closed to=open
time=x level=WARN msg="session relocated" instance=A from=abc-n1 to=abc-n2
`
	// Written in pieces, as a pipe delivers it.
	for i := 0; i < len(lines); i += 7 {
		_, err := s.Write([]byte(lines[i:min(i+7, len(lines))]))
		require.NoError(t, err)
	}
	require.Equal(t, map[string]int{"n1": 2, "n2": 1}, s.Trips())
	require.NoError(t, s.Close())
	require.Equal(t, []string{"app.log: " + strings.Split(lines, "\n")[4]}, Grep([]string{s.Path()}, []string{"abc"}, 10))
}

func TestParseActions(t *testing.T) {
	got, err := ParseActions("kill, toxic,kill")
	require.NoError(t, err)
	require.Equal(t, []string{ActionKill, ActionToxic}, got)
	_, err = ParseActions("kill,nuke")
	require.Error(t, err)
}

// The proxies listen on 127.0.0.1 only, forward to their node, and apply
// and remove toxics.
func TestProxies(t *testing.T) {
	// An echo server as the upstream.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	_, err = StartProxies([]string{"n1"}, []string{"10.0.0.1:11211"})
	require.ErrorIs(t, err, ErrNotLoopback)

	p, err := StartProxies([]string{"n1", "n2"}, []string{ln.Addr().String(), ln.Addr().String()})
	require.NoError(t, err)
	defer p.Close()
	for _, id := range []string{"n1", "n2"} {
		host, _, err := net.SplitHostPort(p.Addr(id))
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", host)
	}
	require.Equal(t, "n1="+p.Addr("n1")+",n2="+p.Addr("n2"), p.Spec())

	c, err := net.Dial("tcp", p.Addr("n1"))
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func() time.Duration {
		start := time.Now()
		_, err := c.Write([]byte("ping\n"))
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ping\n", line)
		return time.Since(start)
	}
	require.Less(t, roundTrip(), 100*time.Millisecond)
	require.NoError(t, p.Add("n1", Toxic{"latency", "downstream", map[string]int{"latency": 200}}))
	require.Equal(t, 1, p.Toxics("n1"))
	require.GreaterOrEqual(t, roundTrip(), 200*time.Millisecond)
	require.NoError(t, p.Clear("n1"))
	require.Equal(t, 0, p.Toxics("n1"))
	require.Less(t, roundTrip(), 100*time.Millisecond)
	require.NoError(t, p.Add("n1", Toxic{"timeout", "both", map[string]int{"timeout": 0}}))
	require.Equal(t, 2, p.Toxics("n1"))
	require.Error(t, p.Add("n1", Toxic{"latency", "sideways", nil}))
}

// app is the example app, built once for the tests that need it, in dir
// (removed by TestMain).
var app struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if app.dir != "" {
		_ = os.RemoveAll(app.dir)
	}
	os.Exit(code)
}

// envConfig builds the app (once) and returns an EnvConfig logging to a
// temporary directory; it skips the test without memcached (fails under
// CI=true).
func envConfig(t *testing.T) EnvConfig {
	t.Helper()
	mc := mcproc.RequireBinary(t)
	app.once.Do(func() {
		app.dir, app.err = os.MkdirTemp("", "chaos-test-app-")
		if app.err == nil {
			app.bin, app.err = BuildApp(context.Background(), app.dir)
		}
	})
	require.NoError(t, app.err)
	return EnvConfig{Binary: app.bin, LogDir: t.TempDir(), Memcached: mc}
}

// The fault matrix, every row briefly: nothing acknowledged is lost, every
// client recovers, and the faults that break round trips are seen (breaker
// trips, relocations).
func TestFaultMatrixShort(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cfg := envConfig(t)
	var progress strings.Builder
	results, err := RunMatrix(context.Background(), MatrixConfig{
		Env: cfg, Clients: 8, Think: 20 * time.Millisecond,
		Before: 500 * time.Millisecond, Fault: 1500 * time.Millisecond, After: 500 * time.Millisecond,
		Progress: &progress,
	})
	require.NoError(t, err)
	t.Log("\n" + progress.String() + "\n" + MatrixTable(results))
	require.Len(t, results, len(Rows))
	for _, r := range results {
		require.Empty(t, r.Error, r.Row.Name)
		require.True(t, r.Check.OK(), "%s: %s\n%s", r.Row.Name, r.Check, strings.Join(r.Diagnosis, "\n"))
		require.GreaterOrEqual(t, r.RecoverMs, 0.0, "%s: every client recovers", r.Row.Name)
		require.Positive(t, r.Check.Acked, r.Row.Name)
		switch r.Row.Name {
		case "latency-50ms":
			require.GreaterOrEqual(t, r.During.P99, 50.0, "a session on the slow node waits at least 50 ms")
		case "latency-600ms", "blackhole", "reset-peer":
			require.Positive(t, r.Counters.BreakerTrips[r.Node], "%s: the node's breaker opens", r.Row.Name)
		}
	}
}

// ciToxics are the toxics of the short soak: every row of the fault
// matrix, hung nodes (latency-600ms, blackhole) included.
var ciToxics = []string{"latency-50ms", "latency-600ms", "blackhole", "reset-peer", "slow-close", "bandwidth-10KB", "slicer"}

// ciActions are the actions of the short soak: all of them, hung nodes
// (SIGSTOP) included.
var ciActions = []string{ActionKill, ActionStop, ActionRestart, ActionToxic}

// A short chaos soak: 30 s of kills, restarts and toxics, one every 1-3 s
// once every client has been served again; nothing acknowledged is lost.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cfg := envConfig(t)
	var progress strings.Builder
	toxics, err := ParseRows(strings.Join(ciToxics, ","))
	require.NoError(t, err)
	res, err := RunSoak(context.Background(), SoakConfig{
		Env: cfg, Duration: 30 * time.Second, Clients: 16, Think: 20 * time.Millisecond, Seed: uint64(time.Now().UnixNano()),
		Actions: ciActions, Toxics: toxics, Every: 2 * time.Second, Progress: &progress,
	})
	require.NoError(t, err)
	t.Logf("seed %d\n%s%s\nbreaker trips %s, relocations %d", res.Seed, progress.String(), res.Check, res.Counters.TripsString(), res.Counters.Relocations)
	require.Empty(t, res.Error)
	require.True(t, res.Check.OK(), "seed %d: %s\n%s", res.Seed, res.Check, strings.Join(res.Diagnosis, "\n"))
	require.NotEmpty(t, res.Taken)
	require.Positive(t, res.Total.OK)
}
