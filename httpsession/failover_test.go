package httpsession_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
)

// TestRelocationAfterPrimaryDies kills the primary node of a session: the
// next request, on either server, finds the data on the backup node and
// sends a new cookie naming the new primary.
func TestRelocationAfterPrimaryDies(t *testing.T) {
	t.Parallel()
	for _, mode := range []httpsession.LockMode{httpsession.LockAll, httpsession.LockNone} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 3, httpsession.Options{Locking: mode}, nil)
			c := newClient(t)
			c.ok(e.a, "POST", "/incr?key=k")
			c.ok(e.b, "POST", "/incr?key=k")
			e.a.m.Wait()
			e.b.m.Wait()
			old := c.sessionID(e.a)
			primary, _, ok := e.a.st.Placement(old)
			require.True(t, ok)
			require.NoError(t, e.mc.Node(primary).Kill())

			r := c.do(e.b, "GET", "/get?key=k")
			require.Equal(t, http.StatusOK, r.code, r.body)
			require.Equal(t, "2", r.body)
			ck := sessionCookie(r.hdr)
			require.NotNil(t, ck, "no new cookie after relocation")
			require.NotEqual(t, old, ck.Value)
			require.Equal(t, old[:strings.LastIndexByte(old, '-')], ck.Value[:strings.LastIndexByte(ck.Value, '-')])
			moved, _, _ := e.b.st.Placement(ck.Value)
			require.NotEqual(t, primary, moved)
			require.Equal(t, uint64(1), e.b.m.Stats().Relocated)

			// Both servers continue with the new id.
			require.Equal(t, "3", c.ok(e.a, "POST", "/incr?key=k"))
			require.Equal(t, "4", c.ok(e.b, "POST", "/incr?key=k"))
			require.Equal(t, ck.Value, c.sessionID(e.a))
		})
	}
}

// TestAllNodesDown checks that with every node down requests that need the
// session answer 503 quickly (no 500, no hang, no panic), requests that do
// not keep working, and that service comes back after a restart.
func TestAllNodesDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2, httpsession.Options{}, nil)
	c := newClient(t)
	c.ok(e.a, "POST", "/incr?key=k")
	e.a.m.Wait()
	for _, n := range e.mc.Nodes {
		require.NoError(t, n.Kill())
	}
	fresh := newClient(t)
	for i := range 6 {
		srv := e.a
		if i%2 == 1 {
			srv = e.b
		}
		for _, req := range []struct {
			c            *client
			method, path string
		}{
			{c, "GET", "/get?key=k"},
			{c, "POST", "/incr?key=k"},
			{fresh, "POST", "/incr?key=k"},
		} {
			r := req.c.do(srv, req.method, req.path)
			require.Equal(t, http.StatusServiceUnavailable, r.code, "%s %s: %s", req.method, req.path, r.body)
			require.Equal(t, "1", r.hdr.Get("Retry-After"))
			require.Less(t, r.took, 3*time.Second, "%s %s took too long", req.method, req.path)
			require.Nil(t, sessionCookie(r.hdr))
		}
		// Requests that need no memcached still work.
		require.Equal(t, "-", fresh.ok(srv, "GET", "/get?key=k"))
		require.Equal(t, "no session used", c.ok(srv, "GET", "/nouse"))
	}
	require.NotZero(t, e.a.m.Stats().Errors)
	require.NotZero(t, e.b.m.Stats().Errors)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range e.mc.Nodes {
		require.NoError(t, n.Restart(ctx))
	}
	// The nodes restarted empty: the old session is gone and a new one starts.
	for _, srv := range []*server{e.a, e.b} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := c.do(srv, "POST", "/incr?key=k")
			if r.code == http.StatusOK {
				break
			}
			require.Equal(t, http.StatusServiceUnavailable, r.code, r.body)
			require.True(t, time.Now().Before(deadline), "no recovery after the restart")
			time.Sleep(50 * time.Millisecond)
		}
	}
	require.Equal(t, "2", c.ok(e.a, "GET", "/get?key=k"))
}
