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
// parallel clients across two app servers while memcached nodes are killed
// and restarted empty, one at a time. Every increment the app acknowledged
// must be in the final count.
func TestNothingLostWhileNodesFail(t *testing.T) {
	for _, mode := range []httpsession.LockMode{httpsession.LockAll, httpsession.LockAuto} {
		t.Run(mode.String(), func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			srvA, stA := appServer(t, c, mode)
			srvB, stB := appServer(t, c, mode)
			servers := []*httptest.Server{srvA, srvB}
			jar, err := cookiejar.New(nil)
			require.NoError(t, err)
			client := &http.Client{Jar: jar, Timeout: 10 * time.Second}

			post := func(i int) (int, bool) {
				resp, err := client.Post(servers[i%2].URL+"/count", "", nil)
				if err != nil {
					return 0, false
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				var n int
				if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &n) != nil {
					return 0, false
				}
				return n, true
			}
			_, ok := post(0) // creates the session
			require.True(t, ok)

			var acked, sent atomic.Int64
			acked.Store(1)
			sent.Store(1)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := range 4 {
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
						if _, ok := post(i); ok {
							acked.Add(1)
						}
					}
				}()
			}

			// Kill and restart every node once, one at a time, waiting for
			// acknowledged increments in between so that each save can
			// re-create the backup copy on a live node.
			ctx := context.Background()
			waitProgress := func() {
				target := acked.Load() + 20
				for end := time.Now().Add(10 * time.Second); acked.Load() < target && time.Now().Before(end); {
					time.Sleep(10 * time.Millisecond)
				}
			}
			for _, n := range c.Nodes {
				waitProgress()
				require.NoError(t, n.Kill())
				waitProgress()
				require.NoError(t, n.Restart(ctx))
			}
			waitProgress()
			close(stop)
			wg.Wait()

			resp, err := client.Get(servers[0].URL + "/count")
			require.NoError(t, err)
			var final int
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&final))
			resp.Body.Close()
			t.Logf("mode %s: sent %d, acknowledged %d, final count %d", mode, sent.Load(), acked.Load(), final)
			require.GreaterOrEqual(t, int64(final), acked.Load(), "an acknowledged increment was lost")
			require.LessOrEqual(t, int64(final), sent.Load())
			require.Greater(t, acked.Load(), int64(100), "the app kept serving through the failures")
			a, b := stA.Stats(), stB.Stats()
			t.Logf("relocations %d, restores %d, conflicts %d", a.Relocations+b.Relocations, a.Restores+b.Restores, a.Conflicts+b.Conflicts)
			require.Positive(t, a.Relocations+b.Relocations, "the session's primary died at least once")
		})
	}
}
