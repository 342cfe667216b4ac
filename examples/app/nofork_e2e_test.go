package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The README's former "known limit": the primary node hangs (SIGSTOP)
// while app A relocates the session and writes to it; the node resumes
// with its old copy; then a request with the old cookie reaches app B,
// which never saw the outage. Its answer must be refused (409/503) or
// applied to the newest copy, and acknowledged increments == stored.
func TestOldCookieAfterAHungNodeAtTheOtherApp(t *testing.T) {
	e := startEnv(t, buildApp(t))
	a, b := e.apps[0], e.apps[1]
	c := newClient(t)
	acked := 0
	c.ok(a, http.MethodPost, "/api/counter")
	acked++
	oldID := c.cookie(a)
	c.ok(b, http.MethodPost, "/api/counter") // B knows the session too
	acked++

	node := e.mc.Node(nodeOf(oldID))
	require.NoError(t, node.Pause())
	for range 3 {
		r, err := c.do(a, http.MethodPost, "/api/counter")
		require.NoError(t, err)
		if r.status == http.StatusOK {
			acked++
		}
	}
	newID := c.cookie(a)
	require.NotEqual(t, oldID, newID, "A relocated the session off the hung node")
	require.Equal(t, acked, c.ok(a, http.MethodGet, "/api/session").Count)
	require.NoError(t, node.Resume())

	// A late request with the old cookie at B. It may be refused (409/503:
	// A's lock adds sent while the node hung land when it resumes, and
	// hold the old id's lock until A cleans them up); a client retries,
	// and the first one answered 200 must be applied to the newest copy.
	var r result
	refused := 0
	for attempt := 0; attempt < 40; attempt++ {
		r = withCookie(t, b, http.MethodPost, "/api/counter", oldID)
		if r.status != http.StatusConflict && r.status != http.StatusServiceUnavailable {
			break
		}
		refused++
		time.Sleep(250 * time.Millisecond)
	}
	require.Equal(t, http.StatusOK, r.status, "old cookie at B: %s", r.raw)
	acked++
	require.Equal(t, newID, r.body.ID, "applied to the newest copy, under its id")
	require.Equal(t, acked, r.body.Count)
	require.Equal(t, acked, c.ok(b, http.MethodGet, "/api/session").Count, "acknowledged increments == stored")
	require.Equal(t, acked, c.ok(a, http.MethodGet, "/api/session").Count)
	t.Logf("old cookie at B: refused %d times, then applied to the newest copy; %d increments acknowledged and stored", refused, acked)
}
