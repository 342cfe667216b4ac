package httpsession_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// counterHandler increments the attribute "n" and answers its new value.
func counterHandler(w http.ResponseWriter, r *http.Request) {
	s := httpsession.FromContext(r.Context())
	n, _, err := httpsession.Get[int](s, "n")
	if err != nil {
		return // the middleware answers
	}
	if err := s.Set("n", n+1); err != nil {
		return
	}
	fmt.Fprint(w, n+1)
}

// TestOpen checks the one-call setup: Open builds the cluster, the store
// (with opts.Store's settings) and the Manager; sessions work, both
// copies are in memcached under the configured prefix, and Close closes
// the connections (requests then get 503) and is idempotent.
func TestOpen(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	m, err := httpsession.Open(mc.Spec(), httpsession.Options{
		Logger:  discard,
		Store:   store.Config{KeyPrefix: "app1:", IdleTimeout: 5 * time.Minute},
		Cluster: replica.Config{Timeout: nodeTimeout},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	require.Equal(t, "app1:", m.Options().Store.KeyPrefix, "Options keeps what Open was given")
	require.Equal(t, nodeTimeout, m.Options().Cluster.Timeout)
	require.Equal(t, []string{"n1", "n2"}, m.Store().Cluster().NodeIDs())

	srv := &server{m: m, srv: httptest.NewServer(m.Middleware(http.HandlerFunc(counterHandler)))}
	t.Cleanup(srv.srv.Close)
	c := newClient(t)
	for i := 1; i <= 3; i++ {
		require.Equal(t, fmt.Sprint(i), c.ok(srv, "POST", "/"))
	}
	id := c.sessionID(srv)
	key, backup, _ := m.Store().MemcachedKeys(id)
	require.Equal(t, "app1:"+id, key)
	primary, backupNode, ok := m.Store().Placement(id)
	require.True(t, ok)
	for node, k := range map[string]string{primary: key, backupNode: backup} {
		_, err := memcache.New(mc.Node(node).Addr()).Get(k)
		require.NoError(t, err, "copy %s on node %s", k, node)
	}

	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "a second Close")
	r := c.do(srv, "POST", "/")
	require.Equal(t, http.StatusServiceUnavailable, r.code, r.body)
}

// TestOpenErrors checks that Open refuses bad node lists and settings it
// owns, and that New refuses the settings only Open reads.
func TestOpenErrors(t *testing.T) {
	t.Parallel()
	cl, err := replica.New(replica.Config{Nodes: []replica.Node{{ID: "n1", Addr: "127.0.0.1:1"}}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	for _, tc := range []struct {
		name, nodes string
		opts        httpsession.Options
		want        error  // errors.Is target, or nil
		text        string // substring of the error
	}{
		{name: "empty list", nodes: "", want: replica.ErrBadNodeList},
		{name: "no id", nodes: "127.0.0.1:11211", want: replica.ErrBadNodeList},
		{name: "duplicate id", nodes: "n1=127.0.0.1:1,n1=127.0.0.1:2", want: replica.ErrBadNodeList},
		{name: "store cluster set", nodes: "n1=127.0.0.1:1", opts: httpsession.Options{Store: store.Config{Cluster: cl}}, text: "Store.Cluster must be nil"},
		{name: "cluster nodes set", nodes: "n1=127.0.0.1:1", opts: httpsession.Options{Cluster: replica.Config{Nodes: []replica.Node{{ID: "n2", Addr: "127.0.0.1:2"}}}}, text: "Cluster.Nodes must be empty"},
		{name: "bad store config", nodes: "n1=127.0.0.1:1", opts: httpsession.Options{Store: store.Config{KeyPrefix: "has space"}}, text: "prefix"},
		{name: "bad manager option", nodes: "n1=127.0.0.1:1", opts: httpsession.Options{Locking: httpsession.LockMatching}, text: "LockPattern"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := httpsession.Open(tc.nodes, tc.opts)
			require.Error(t, err)
			require.Nil(t, m)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
			require.Contains(t, err.Error(), tc.text)
		})
	}

	st, err := store.New(store.Config{Cluster: cl})
	require.NoError(t, err)
	_, err = httpsession.New(st, httpsession.Options{Store: store.Config{KeyPrefix: "x"}})
	require.ErrorContains(t, err, "Options.Store is read by Open only")
	_, err = httpsession.New(st, httpsession.Options{Cluster: replica.Config{Timeout: time.Second}})
	require.ErrorContains(t, err, "Options.Cluster is read by Open only")
}

// TestCloseOfNewLeavesTheClusterOpen checks that Close of a Manager made
// by New waits but does not close the cluster it was not given to own.
func TestCloseOfNewLeavesTheClusterOpen(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	st := newStore(t, mc.Spec(), lock.Config{})
	m, err := httpsession.New(st, httpsession.Options{Store: store.Config{Lock: lock.Config{}}, Logger: discard})
	require.NoError(t, err, "a zero Store is not a setting")
	require.NoError(t, m.Close())
	require.NoError(t, st.Cluster().Ping(context.Background(), "n1"))
}

// TestCloseWhileServing closes a Manager while requests are still being
// served (an http.Server.Shutdown that timed out): Close must not race
// with the idle-timeout refreshes finished requests start, and requests
// after it fail with 503 instead of panicking.
func TestCloseWhileServing(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	m, err := httpsession.Open(mc.Spec(), httpsession.Options{
		Logger: discard, Locking: httpsession.LockNone,
		Store: store.Config{TouchAfter: -1}, // every read starts a background refresh
	})
	require.NoError(t, err)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			counterHandler(w, r)
			return
		}
		n, _, err := httpsession.Get[int](httpsession.FromContext(r.Context()), "n")
		if err == nil {
			fmt.Fprint(w, n) // read-only: a background refresh follows
		}
	})
	srv := &server{m: m, srv: httptest.NewServer(m.Middleware(handler))}
	t.Cleanup(srv.srv.Close)
	c := newClient(t)
	require.Equal(t, "1", c.ok(srv, "POST", "/"))
	id := c.sessionID(srv)

	var wg sync.WaitGroup
	codes := make(chan int, 8*50)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := newClient(t)
			rc.setCookie(srv, id)
			for range 50 {
				r, err := rc.try(srv, "GET", "/")
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				codes <- r.code
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, m.Close())
	wg.Wait()
	close(codes)
	seen := map[int]int{}
	for code := range codes {
		seen[code]++
	}
	for code := range seen {
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, code, "codes seen: %v", seen)
	}
	r := c.do(srv, "GET", "/")
	require.Equal(t, http.StatusServiceUnavailable, r.code, "after Close")
}

// TestShutdownWritesQueuedSessions runs a sticky Manager with
// asynchronous writes and shuts it down: every acknowledged increment is
// in memcached afterwards, as another (non-sticky) app server sees.
func TestShutdownWritesQueuedSessions(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 2)
	m, err := httpsession.Open(mc.Spec(), httpsession.Options{
		Logger: discard,
		Store:  store.Config{Sticky: true, AsyncWrites: true},
	})
	require.NoError(t, err)
	srv := &server{m: m, srv: httptest.NewServer(m.Middleware(http.HandlerFunc(counterHandler)))}
	t.Cleanup(srv.srv.Close)
	c := newClient(t)
	for i := 1; i <= 20; i++ {
		require.Equal(t, fmt.Sprint(i), c.ok(srv, "POST", "/"))
	}
	require.Positive(t, m.Store().Stats().AsyncQueued)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, m.Shutdown(ctx))
	require.Zero(t, m.Store().Stats().AsyncPending)

	other := newStore(t, mc.Spec(), lock.Config{})
	s, err := other.Load(ctx, c.sessionID(srv))
	require.NoError(t, err)
	n, _, err := store.Get[int](s, "n")
	require.NoError(t, err)
	require.Equal(t, 20, n)
}
