package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// appServer is one app server: its own cluster client, store and manager.
func appServer(t *testing.T, c *mcproc.Cluster, mode httpsession.LockMode) (*httptest.Server, *store.Store) {
	t.Helper()
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: 300 * time.Millisecond, OpenTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	st, err := store.New(store.Config{Cluster: cl, Lock: lock.Config{WaitTimeout: 5 * time.Second}})
	require.NoError(t, err)
	m, err := httpsession.New(st, httpsession.Options{Locking: mode, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /count", func(w http.ResponseWriter, r *http.Request) {
		s := httpsession.FromContext(r.Context())
		n, _, err := httpsession.Get[int](s, "count")
		if err != nil {
			return // the middleware answers
		}
		if err := s.Set("count", n+1); err != nil {
			return
		}
		fmt.Fprint(w, n+1)
	})
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		n, _, err := httpsession.Get[int](httpsession.FromContext(r.Context()), "count")
		if err != nil {
			return
		}
		_ = json.NewEncoder(w).Encode(n)
	})
	srv := httptest.NewServer(m.Middleware(mux))
	t.Cleanup(func() {
		srv.Close()
		m.Wait()
		_ = cl.Close()
	})
	return srv, st
}

// TestNothingLostWhileNodesFail increments one session's counter from
// clients spread over two app servers while memcached nodes fail one at a
// time. Every increment the app acknowledged must be in the final count.
//
// Crashes (kill, then restart empty) are run with parallel clients. Hangs
// (SIGSTOP, then resume with the old data) are run with one client at a
// time: a hung node that comes back still holds an old copy under the old
// id, and a request that was sent with the old cookie while the session
// moved can, on an app server that never saw the node fail, fork the
// session there (see README, "What happens when things fail").
func TestNothingLostWhileNodesFail(t *testing.T) {
	crash := func(t *testing.T, n *mcproc.Node, between func()) {
		require.NoError(t, n.Kill())
		between()
		require.NoError(t, n.Restart(context.Background()))
	}
	hang := func(t *testing.T, n *mcproc.Node, between func()) {
		require.NoError(t, n.Pause())
		between()
		require.NoError(t, n.Resume())
	}
	tests := []struct {
		name    string
		mode    httpsession.LockMode
		clients int
		fault   func(*testing.T, *mcproc.Node, func())
	}{
		{"crash/all", httpsession.LockAll, 4, crash},
		{"crash/auto", httpsession.LockAuto, 4, crash},
		{"hang/all", httpsession.LockAll, 1, hang},
		{"hang/none", httpsession.LockNone, 1, hang},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			srvA, stA := appServer(t, c, tt.mode)
			srvB, stB := appServer(t, c, tt.mode)
			servers := []*httptest.Server{srvA, srvB}
			jar, err := cookiejar.New(nil)
			require.NoError(t, err)
			client := &http.Client{Jar: jar, Timeout: 10 * time.Second}

			post := func(i int) bool {
				resp, err := client.Post(servers[i%2].URL+"/count", "", nil)
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				var n int
				return resp.StatusCode == http.StatusOK && json.Unmarshal(body, &n) == nil
			}
			require.True(t, post(0), "creates the session")

			var acked, sent atomic.Int64
			acked.Store(1)
			sent.Store(1)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := range tt.clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						sent.Add(1)
						if post(i) {
							acked.Add(1)
						}
					}
				}()
			}

			// Fail every node once, one at a time, waiting for acknowledged
			// increments in between so that saves re-create the backup copy
			// on a live node (bounded waits).
			waitProgress := func() {
				target := acked.Load() + 20
				for end := time.Now().Add(10 * time.Second); acked.Load() < target && time.Now().Before(end); {
					time.Sleep(10 * time.Millisecond)
				}
			}
			for _, n := range c.Nodes {
				waitProgress()
				tt.fault(t, n, waitProgress)
			}
			waitProgress()
			close(stop)
			wg.Wait()

			resp, err := client.Get(servers[0].URL + "/count")
			require.NoError(t, err)
			var final int
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&final))
			resp.Body.Close()
			a, b := stA.Stats(), stB.Stats()
			t.Logf("%s: sent %d, acknowledged %d, final count %d; relocations %d, restores %d, conflicts %d",
				tt.name, sent.Load(), acked.Load(), final, a.Relocations+b.Relocations, a.Restores+b.Restores, a.Conflicts+b.Conflicts)
			require.GreaterOrEqual(t, int64(final), acked.Load(), "an acknowledged increment was lost")
			require.LessOrEqual(t, int64(final), sent.Load())
			require.Greater(t, acked.Load(), int64(60), "the app kept serving through the failures")
			require.Positive(t, a.Relocations+b.Relocations, "the session's primary failed at least once")
		})
	}
}
