package httpsession_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/store"
)

// usersMux is a small app with logins: POST /login?user=U renews the id
// and links the session to U; GET /me answers "user id" (the session's
// user and id); GET /sessions the ids of the current user's sessions, as
// JSON; POST /logout-all destroys them all and answers their count.
func usersMux(m *httpsession.Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		if err := s.RenewID(r.Context()); err != nil {
			return // answered by the ErrorHandler
		}
		if err := s.SetUser(r.URL.Query().Get("user")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		fmt.Fprintf(w, "%s %s", s.User(), s.ID())
	})
	mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, r *http.Request) {
		list, err := m.UserSessions(r.Context(), m.Session(r).User())
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		ids := []string{}
		for _, us := range list {
			ids = append(ids, us.ID)
		}
		_ = json.NewEncoder(w).Encode(ids)
	})
	mux.HandleFunc("POST /logout-all", func(w http.ResponseWriter, r *http.Request) {
		s := m.Session(r)
		n, err := m.DestroyUser(r.Context(), s.User())
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if err := s.Destroy(r.Context()); err != nil {
			return
		}
		fmt.Fprint(w, n)
	})
	return mux
}

// usersServer starts one app server of usersMux over the nodes of mc.
func usersServer(t *testing.T, mc *mcproc.Cluster) (*httpsession.Manager, *httptest.Server) {
	t.Helper()
	m, err := httpsession.New(newStore(t, mc.Spec(), lock.Config{}), httpsession.Options{Logger: discard})
	require.NoError(t, err)
	srv := httptest.NewServer(m.Middleware(usersMux(m)))
	t.Cleanup(func() {
		srv.Close()
		m.Wait()
	})
	return m, srv
}

// jarClient is a browser: one cookie jar.
type jarClient struct {
	t *testing.T
	c *http.Client
}

func newJarClient(t *testing.T) *jarClient {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &jarClient{t: t, c: &http.Client{Jar: jar, Timeout: clientTimeout}}
}

func (b *jarClient) call(srv *httptest.Server, method, path string) (int, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	require.NoError(b.t, err)
	resp, err := b.c.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return resp.StatusCode, string(body)
}

func (b *jarClient) ok(srv *httptest.Server, method, path string) string {
	b.t.Helper()
	code, body := b.call(srv, method, path)
	require.Equal(b.t, http.StatusOK, code, "%s %s: %s", method, path, body)
	return body
}

func (b *jarClient) sessions(srv *httptest.Server) []string {
	b.t.Helper()
	var ids []string
	require.NoError(b.t, json.Unmarshal([]byte(b.ok(srv, "GET", "/sessions")), &ids))
	slices.Sort(ids)
	return ids
}

// One user logged in from three browsers on two app servers: listed from
// either, logged out everywhere from one; another user is untouched.
func TestLogOutEverywhere(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	_, a := usersServer(t, mc)
	_, b := usersServer(t, mc)

	var ids []string
	var ada []*jarClient
	for i := range 3 {
		br := newJarClient(t)
		srv := []*httptest.Server{a, b}[i%2]
		br.ok(srv, "POST", "/login?user=ada")
		var user, id string
		_, err := fmt.Sscan(br.ok(srv, "GET", "/me"), &user, &id)
		require.NoError(t, err)
		require.Equal(t, "ada", user)
		ids = append(ids, id)
		ada = append(ada, br)
	}
	slices.Sort(ids)
	bob := newJarClient(t)
	bob.ok(b, "POST", "/login?user=bob")
	require.Equal(t, ids, ada[0].sessions(a))
	require.Equal(t, ids, ada[1].sessions(b))
	require.Len(t, bob.sessions(a), 1)

	require.Equal(t, "3", ada[2].ok(a, "POST", "/logout-all"))
	for i, br := range ada {
		srv := []*httptest.Server{a, b}[i%2]
		require.Equal(t, " ", br.ok(srv, "GET", "/me"), "jarClient %d: no session any more", i)
	}
	code, _ := ada[0].call(a, "GET", "/sessions")
	require.Equal(t, http.StatusUnauthorized, code, "no user")

	require.Len(t, bob.sessions(a), 1)
	require.Contains(t, bob.ok(a, "GET", "/me"), "bob ")
}

// A login whose user index cannot be written (both of its nodes are
// down) fails, and leaves no session behind that the user's log-out
// could not reach.
func TestLoginFailsWithoutUserIndex(t *testing.T) {
	mc := mcproc.NewCluster(t, 3)
	m, a := usersServer(t, mc)
	_, primary, secondary := m.Store().UserIndexKey("zoe")
	require.NoError(t, mc.Node(primary).Kill())
	require.NoError(t, mc.Node(secondary).Kill())

	br := newJarClient(t)
	code, _ := br.call(a, "POST", "/login?user=zoe")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, " ", br.ok(a, "GET", "/me"), "no cookie: no session")
	for _, n := range mc.Nodes {
		if n.Running() {
			items, err := n.Stat(context.Background(), "curr_items")
			require.NoError(t, err)
			require.Zero(t, items, "the saved session was destroyed again on %s", n.ID)
		}
	}

	require.NoError(t, mc.Node(primary).Restart(context.Background()))
	require.NoError(t, mc.Node(secondary).Restart(context.Background()))
	_, err := m.UserSessions(context.Background(), "")
	require.ErrorIs(t, err, store.ErrInvalidUser)
}
