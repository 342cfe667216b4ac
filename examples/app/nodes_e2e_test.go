package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/examples/internal/appproc"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/internal/syncbuf"
)

// spec is the node list of the given nodes of mc.
func spec(mc *mcproc.Cluster, ids ...string) string {
	out := ""
	for i, id := range ids {
		if i > 0 {
			out += ",\n" // the file may hold one node per line
		}
		out += id + "=" + mc.Node(id).Addr()
	}
	return out
}

// nodesOf asks app for its node list: the listed ids and the draining ids.
func nodesOf(t *testing.T, app *appproc.Proc) (listed, draining []string) {
	t.Helper()
	resp, err := http.Get(app.URL() + "/api/nodes")
	require.NoError(t, err)
	defer resp.Body.Close()
	var nr server.NodesResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&nr))
	for _, n := range nr.Nodes {
		if n.Draining {
			draining = append(draining, n.ID)
		} else {
			listed = append(listed, n.ID)
		}
	}
	return listed, draining
}

// hangup writes content to the nodes file, sends SIGHUP to every app and
// waits (bounded) until each reports the listed nodes want.
func hangup(t *testing.T, file, content string, apps []*appproc.Proc, want []string) {
	t.Helper()
	require.NoError(t, os.WriteFile(file, []byte("# written by the test\n"+content+"\n"), 0o600))
	for _, app := range apps {
		require.NoError(t, syscall.Kill(app.Pid(), syscall.SIGHUP))
	}
	for _, app := range apps {
		var listed []string
		for i := 0; i < 400; i++ {
			if listed, _ = nodesOf(t, app); fmt.Sprint(listed) == fmt.Sprint(want) {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		require.Equal(t, want, listed, "app %s after SIGHUP", app.Name())
	}
}

// Node changes without restart, through -nodes-file and SIGHUP, under
// load from parallel users on two app servers: an added node receives new
// sessions; a removed node is drained (its sessions move on their next
// request) and dropped after -drain-timeout, then killed; every
// acknowledged increment is in the final counts.
func TestNodesFileAndSIGHUP(t *testing.T) {
	bin := buildApp(t)
	mc := mcproc.NewCluster(t, 4)
	file := filepath.Join(t.TempDir(), "nodes")
	require.NoError(t, os.WriteFile(file, []byte(spec(mc, "n1", "n2", "n3")), 0o600))
	const drainTimeout = 4 * time.Second
	var apps []*appproc.Proc
	var logs []*syncbuf.Buffer
	for _, name := range []string{"A", "B"} {
		lb := &syncbuf.Buffer{}
		ctx, cancel := context.WithTimeout(context.Background(), appproc.DefaultStartTimeout)
		// -nodes names only n4: the file's content is used instead.
		p, err := appproc.Start(ctx, appproc.Options{Binary: bin, Name: name, Nodes: spec(mc, "n4"), Stderr: lb,
			Args: []string{"-nodes-file", file, "-drain-timeout", drainTimeout.String(), "-lock-timeout", "5s"}})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() {
			require.NoError(t, p.Stop())
			if t.Failed() {
				t.Logf("log of app %s:\n%s", name, lb.String())
			}
		})
		apps, logs = append(apps, p), append(logs, lb)
	}
	listed, draining := nodesOf(t, apps[0])
	require.Equal(t, []string{"n1", "n2", "n3"}, listed)
	require.Empty(t, draining)

	// Users, each with a cookie jar, increment their counter through A and
	// B in turn until told to stop.
	const users = 12
	clients := make([]*client, users)
	var acked [users]atomic.Int64
	var refused atomic.Int64
	for u := range clients {
		clients[u] = newClient(t)
		clients[u].ok(apps[u%2], http.MethodPost, "/api/counter")
		acked[u].Add(1)
	}
	var stop atomic.Bool
	var requests atomic.Int64
	var wg sync.WaitGroup
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000 && !stop.Load(); i++ {
				r, err := clients[u].do(apps[i%2], http.MethodPost, "/api/counter")
				requests.Add(1)
				switch {
				case err != nil:
					t.Errorf("user %d: %v", u, err)
					return
				case r.status == http.StatusOK:
					acked[u].Add(1)
				default:
					refused.Add(1) // 409/503: not acknowledged
				}
			}
		}()
	}
	waitRequests := func(n int64) {
		target := requests.Load() + n
		for i := 0; i < 2000 && requests.Load() < target; i++ {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitRequests(100)

	// Add n4: new sessions go there too.
	hangup(t, file, spec(mc, "n1", "n2", "n3", "n4"), apps, []string{"n1", "n2", "n3", "n4"})
	onN4 := 0
	for range 8 {
		c := newClient(t)
		if nodeOf(c.ok(apps[0], http.MethodPost, "/api/counter").ID) == "n4" {
			onN4++
		}
	}
	require.Positive(t, onN4, "the added node receives new sessions")
	waitRequests(100)

	// Remove n2: drained under load.
	onN2 := 0
	for _, c := range clients {
		if id := c.cookie(apps[0]); nodeOf(id) == "n2" {
			onN2++
		}
	}
	hangup(t, file, spec(mc, "n1", "n3", "n4"), apps, []string{"n1", "n3", "n4"})
	_, draining = nodesOf(t, apps[1])
	require.Equal(t, []string{"n2"}, draining)
	waitRequests(200)
	stop.Store(true)
	wg.Wait()

	// Every user's session has left n2 (each made requests since).
	for u, c := range clients {
		require.NotEqual(t, "n2", nodeOf(c.cookie(apps[0])), "user %d", u)
	}
	// The drain ends by itself; then n2 goes away for good.
	for _, app := range apps {
		for i := 0; i < 400; i++ {
			if _, draining = nodesOf(t, app); len(draining) == 0 {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		require.Empty(t, draining, "app %s: drain over after -drain-timeout", app.Name())
	}
	require.NoError(t, mc.Node("n2").Kill())

	var total int64
	for u, c := range clients {
		got := c.ok(apps[u%2], http.MethodGet, "/api/session").Count
		require.Equal(t, acked[u].Load(), int64(got), "user %d: acknowledged increments == stored count", u)
		total += acked[u].Load()
	}
	for i, lb := range logs {
		require.Contains(t, lb.String(), "SIGHUP: node list applied", "app %s", apps[i].Name())
		require.Contains(t, lb.String(), "drained memcached node dropped", "app %s", apps[i].Name())
	}
	t.Logf("%d users, %d requests, %d increments acknowledged (%d refused with 409/503), %d users started on n2, %d of 8 new sessions on n4",
		users, requests.Load(), total, refused.Load(), onN2, onN4)
}

// A bad node file at SIGHUP is logged and the current list kept.
func TestNodesFileBadContentKeepsList(t *testing.T) {
	bin := buildApp(t)
	mc := mcproc.NewCluster(t, 2)
	file := filepath.Join(t.TempDir(), "nodes")
	require.NoError(t, os.WriteFile(file, []byte(spec(mc, "n1", "n2")), 0o600))
	lb := &syncbuf.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), appproc.DefaultStartTimeout)
	defer cancel()
	p, err := appproc.Start(ctx, appproc.Options{Binary: bin, Name: "A", Nodes: spec(mc, "n1"), Stderr: lb,
		Args: []string{"-nodes-file", file}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Stop()) })
	c := newClient(t)
	c.ok(p, http.MethodPost, "/api/counter")

	require.NoError(t, os.WriteFile(file, []byte("n1=127.0.0.1:1,n1=127.0.0.1:2"), 0o600))
	require.NoError(t, syscall.Kill(p.Pid(), syscall.SIGHUP))
	for i := 0; i < 400 && !strings.Contains(lb.String(), "node list not changed"); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	require.Contains(t, lb.String(), "given twice")
	listed, _ := nodesOf(t, p)
	require.Equal(t, []string{"n1", "n2"}, listed)
	require.Equal(t, 2, c.ok(p, http.MethodPost, "/api/counter").Count)
}
