package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/examples/app/server"
	"github.com/mcsession/mcsession/examples/internal/appproc"
)

// userSessions sends GET /api/sessions to app and decodes the answer; it
// returns the status and, for 200, the list.
func (c *client) userSessions(app *appproc.Proc) (int, server.UserSessionsResponse) {
	c.t.Helper()
	r, err := c.do(app, "GET", "/api/sessions")
	require.NoError(c.t, err)
	var list server.UserSessionsResponse
	if r.status == http.StatusOK {
		require.NoError(c.t, json.Unmarshal([]byte(r.raw), &list), r.raw)
		require.Equal(c.t, app.Name(), list.Instance)
	}
	return r.status, list
}

// idsOf returns the session ids of a list, sorted.
func idsOf(list server.UserSessionsResponse) []string {
	var ids []string
	for _, s := range list.Sessions {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

// "Log out everywhere" over two app processes: a user logged in from
// three browsers on two servers is logged out of all three by one
// request to either server; another user is untouched. Run in the
// default (non-sticky) mode, and in sticky mode, where each server keeps
// the sessions it served in memory and must notice they are gone.
func TestTwoProcessesLogOutEverywhere(t *testing.T) {
	bin := buildApp(t)
	for _, mode := range [][]string{nil, {"-sticky"}, {"-async-backup"}} {
		t.Run(fmtMode(mode), func(t *testing.T) {
			e := startEnv(t, bin, mode...)
			a, b := e.apps[0], e.apps[1]

			// ada logs in from three browsers (A, B, A), each used on both
			// servers; bob from one.
			var adas []*client
			var ids []string
			for i := range 3 {
				c := newClient(t)
				c.ok(e.apps[i%2], "POST", "/api/counter") // an anonymous session first
				got := c.ok(e.apps[i%2], "POST", "/api/login?user=ada")
				require.Equal(t, "ada", got.User)
				require.Equal(t, 1, got.Count, "login keeps the data")
				require.Equal(t, got.ID, c.cookie(a))
				again := c.ok(e.apps[(i+1)%2], "GET", "/api/session")
				require.Equal(t, got.ID, again.ID)
				require.Equal(t, "ada", again.User, "the user is stored with the session")
				adas = append(adas, c)
				ids = append(ids, got.ID)
			}
			slices.Sort(ids)
			bob := newClient(t)
			bobID := bob.ok(b, "POST", "/api/login?user=bob").ID

			// Listed from either server, the asking session marked current.
			for i, c := range adas {
				code, list := c.userSessions(e.apps[i%2])
				require.Equal(t, http.StatusOK, code)
				require.Equal(t, "ada", list.User)
				require.Equal(t, ids, idsOf(list))
				for _, s := range list.Sessions {
					require.Equal(t, s.ID == c.cookie(a), s.Current, s.ID)
					require.False(t, s.Created.IsZero())
					require.False(t, s.LastSeen.Before(s.Created.Truncate(1e9)))
				}
			}

			// Log out everywhere, from the second browser on B.
			r, err := adas[1].do(b, "POST", "/api/logout-all")
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, r.status, r.raw)
			var out server.LogoutAllResponse
			require.NoError(t, json.Unmarshal([]byte(r.raw), &out))
			require.Equal(t, server.LogoutAllResponse{Instance: "B", User: "ada", Destroyed: 3}, out)
			require.Empty(t, adas[1].cookie(a), "its own cookie is deleted")

			// Every browser of ada, on either server: its cookie names no
			// session any more (a fresh, empty one), and no user.
			for i, c := range adas {
				for _, app := range e.apps {
					got := c.ok(app, "GET", "/api/session")
					require.Empty(t, got.ID, "browser %d via %s", i, app.Name())
					require.Empty(t, got.Attrs)
					require.Empty(t, got.User)
					code, _ := c.userSessions(app)
					require.Equal(t, http.StatusUnauthorized, code)
				}
			}
			for _, id := range ids {
				requireNoItems(t, e.mc, id)
			}
			sum := sha256.Sum256([]byte("ada"))
			for _, n := range e.mc.Nodes {
				_, err := n.Client().Get("user:" + hex.EncodeToString(sum[:]))
				require.True(t, errors.Is(err, memcache.ErrCacheMiss), "index of ada on %s: %v", n.ID, err)
			}

			// A new login of ada is her only session: 0 of the old ones.
			fresh := adas[0].ok(a, "POST", "/api/login?user=ada")
			code, list := adas[0].userSessions(b)
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, []string{fresh.ID}, idsOf(list))
			require.True(t, list.Sessions[0].Current)

			// bob is untouched.
			got := bob.ok(a, "GET", "/api/session")
			require.Equal(t, bobID, got.ID)
			require.Equal(t, "bob", got.User)
			code, list = bob.userSessions(a)
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, []string{bobID}, idsOf(list))
		})
	}
}

// fmtMode names a subtest by the app's flags.
func fmtMode(args []string) string {
	if len(args) == 0 {
		return "non-sticky"
	}
	return args[0][1:]
}
