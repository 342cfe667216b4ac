package httpsession_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// fuzzID is the session FuzzSessionCookie plants in memcached, on node n1,
// with the attribute "who" set to "fuzz": a fixed id, so that the seeds in
// testdata/fuzz/FuzzSessionCookie (and the fuzzer) can name a session that
// exists.
const fuzzID = "0123456789abcdef0123456789abcdef-n1"

// wellFormed is the session id grammar of docs/FORMAT.md §2 for the nodes
// of FuzzSessionCookie's cluster (n1 and n2): the test's own reading of
// the format, checked against Store.ValidID.
var wellFormed = regexp.MustCompile(`^[0-9a-f]{32}-n[12]$`)

// memcachedCounters are the stats of a node that any request changes:
// bytes_read grows with every byte sent to it, and the cmd_ and delete_
// counters name the kind of call.
var memcachedCounters = []string{"bytes_read", "cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses"}

// nodeCounters reads memcachedCounters of every node of mc, in order.
func nodeCounters(t testing.TB, mc *mcproc.Cluster) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := make([]uint64, 0, len(mc.Nodes)*len(memcachedCounters))
	for _, n := range mc.Nodes {
		stats, err := n.Stats(ctx)
		require.NoError(t, err)
		for _, name := range memcachedCounters {
			v, err := strconv.ParseUint(stats[name], 10, 64)
			require.NoError(t, err, "node %s: stat %s", n.ID, name)
			out = append(out, v)
		}
	}
	return out
}

// poolCounters sums what the cluster's pools count: round trips, dials,
// failed dials and waits for a connection.
func poolCounters(st *store.Store) uint64 {
	var sum uint64
	for _, p := range st.Cluster().PoolStats() {
		sum += p.RoundTrips + p.Dials + p.DialErrors + p.Waits
	}
	return sum
}

// plantSession writes the session fuzzID as another implementation would
// (docs/FORMAT.md §1): the envelope under the id on its node, client flags
// the version, no backup copy.
func plantSession(t testing.TB, mc *mcproc.Cluster) {
	t.Helper()
	c := codec.NewCBOR()
	who, err := c.Marshal("fuzz")
	require.NoError(t, err)
	now := time.Now()
	env, err := codec.EncodeRecord(c, &codec.Record{
		Created: now, Deadline: now.Add(24 * time.Hour), IdleTimeout: 24 * time.Hour,
		Version: 1, Attrs: map[string][]byte{"who": who},
	})
	require.NoError(t, err)
	require.NoError(t, mc.Node("n1").Client().Set(&memcache.Item{
		Key: fuzzID, Value: env, Flags: 1, Expiration: int32((25 * time.Hour).Seconds())}))
}

// fuzzSeen is what FuzzSessionCookie's handler saw of its session.
type fuzzSeen struct {
	exists bool
	id     string
	who    string
	keys   []string
	err    error
}

// FuzzSessionCookie sends requests whose Cookie header is arbitrary bytes
// (one header line per line of the input; the seeds are browser-like
// headers, the planted id in various places, ids that are overlong, name
// unknown nodes or hold control characters) through the middleware over
// real memcached, to a handler that reads its session. It must not panic;
// the handler must get the planted session fuzzID when the first
// well-formed session cookie names it (or its random part on the other
// node: then the response sets the cookie to fuzzID), and a fresh session
// otherwise, without a cookie in the response (nothing was written); and
// when no session cookie is a well-formed id of a configured node, no
// memcached call may be made: neither the pools nor the nodes (bytes_read,
// cmd_*) count one.
func FuzzSessionCookie(f *testing.F) {
	mc := mcproc.NewCluster(f, 2)
	st := newStore(f, mc.Spec(), lock.Config{})
	m, err := httpsession.New(st, httpsession.Options{Logger: discard, LockTimeout: time.Second})
	require.NoError(f, err)
	f.Cleanup(m.Wait)
	plantSession(f, mc)

	var seen fuzzSeen
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		var errs [3]error
		seen = fuzzSeen{id: s.ID()}
		seen.exists, errs[0] = s.Exists()
		_, errs[1] = s.Get("who", &seen.who)
		seen.keys, errs[2] = s.Keys()
		seen.err = errors.Join(errs[:]...)
		w.WriteHeader(http.StatusNoContent)
	}))

	// Each nodeCounters call is itself read by the nodes: its cost in
	// bytes_read is measured once, then subtracted.
	before := nodeCounters(f, mc)
	after := nodeCounters(f, mc)
	statCost := make([]uint64, len(after))
	for i := range after {
		statCost[i] = after[i] - before[i]
	}

	f.Fuzz(func(t *testing.T, header []byte) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header["Cookie"] = strings.Split(string(header), "\n")

		// The test's oracle: the first cookie of the session's name whose
		// value is a well-formed id, as net/http parses the header.
		want := ""
		for _, c := range req.CookiesNamed(httpsession.DefaultCookieName) {
			require.Equal(t, wellFormed.MatchString(c.Value), st.ValidID(c.Value), "ValidID(%q)", c.Value)
			if want == "" && wellFormed.MatchString(c.Value) {
				want = c.Value
			}
		}

		pools := poolCounters(st)
		rec := httptest.NewRecorder()
		seen = fuzzSeen{}
		h.ServeHTTP(rec, req)
		m.Wait() // background touches of the planted session
		prev := after
		after = nodeCounters(t, mc)

		require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
		if want == "" {
			require.Equal(t, pools, poolCounters(st), "pool counters after a request without a valid id")
			for i := range after {
				require.Equal(t, prev[i]+statCost[i], after[i], "node %s: %s after a request without a valid id",
					mc.Nodes[i/len(memcachedCounters)].ID, memcachedCounters[i%len(memcachedCounters)])
			}
		}
		cookies := rec.Result().Cookies()
		switch {
		case want == fuzzID:
			require.Equal(t, fuzzSeen{exists: true, id: fuzzID, who: "fuzz", keys: []string{"who"}}, seen)
			require.Empty(t, cookies, "a read sets no cookie")
		case want != "" && want[:32] == fuzzID[:32]:
			// The same random part on the other node: the store takes it
			// for the session's id before it moved to n1 (store.Load) and
			// finds the planted session, whose id the client gets.
			require.Equal(t, fuzzSeen{exists: true, id: fuzzID, who: "fuzz", keys: []string{"who"}}, seen)
			require.Len(t, cookies, 1)
			require.Equal(t, fuzzID, cookies[0].Value)
		default:
			require.Equal(t, fuzzSeen{}, seen, "a fresh session")
			require.Empty(t, cookies, "a read sets no cookie")
		}
	})
}
