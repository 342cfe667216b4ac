package httpsession_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/httpsession"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/lock"
)

// TestPersistentCookie checks Options.PersistentCookie: the cookie
// expires at the session's deadline, is sent again when a request changes
// the deadline ("remember me") or the id, and not otherwise; without the
// option the cookie has no Expires.
func TestPersistentCookie(t *testing.T) {
	t.Parallel()
	mc := mcproc.NewCluster(t, 1)
	st := newStore(t, mc.Spec(), lock.Config{})
	handler := func(m *httpsession.Manager) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := httpsession.FromContext(r.Context())
			var err error
			switch r.URL.Path {
			case "/write":
				err = s.Set("n", 1)
			case "/remember":
				err = s.SetLifetime(30 * 24 * time.Hour)
			case "/renew":
				err = s.RenewID(r.Context())
			case "/logout":
				err = s.Destroy(r.Context())
			default:
				_, err = s.Has("n")
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})
	}
	for _, persistent := range []bool{false, true} {
		m, err := httpsession.New(st, httpsession.Options{PersistentCookie: persistent, Logger: discard})
		require.NoError(t, err)
		srv := &server{m: m, srv: httptest.NewServer(m.Middleware(handler(m)))}
		t.Cleanup(srv.srv.Close)
		c := newClient(t)

		r := c.do(srv, "POST", "/write")
		require.Equal(t, http.StatusOK, r.code, r.body)
		ck := sessionCookie(r.hdr)
		require.NotNil(t, ck)
		if !persistent {
			require.True(t, ck.Expires.IsZero(), "a browser-session cookie by default")
			require.Zero(t, ck.MaxAge)
			continue
		}
		require.WithinDuration(t, time.Now().Add(24*time.Hour), ck.Expires, time.Minute, "the default lifetime")

		r = c.do(srv, "GET", "/read")
		require.Nil(t, sessionCookie(r.hdr), "unchanged deadline and id: no cookie")
		r = c.do(srv, "POST", "/write")
		require.Nil(t, sessionCookie(r.hdr), "a write does not change the deadline")

		r = c.do(srv, "POST", "/remember")
		ck = sessionCookie(r.hdr)
		require.NotNil(t, ck, "a new deadline sends the cookie again")
		require.WithinDuration(t, time.Now().Add(30*24*time.Hour), ck.Expires, time.Minute)
		r = c.do(srv, "GET", "/read")
		require.Nil(t, sessionCookie(r.hdr))

		old := c.sessionID(srv)
		r = c.do(srv, "POST", "/renew")
		ck = sessionCookie(r.hdr)
		require.NotNil(t, ck)
		require.NotEqual(t, old, ck.Value)
		require.WithinDuration(t, time.Now().Add(30*24*time.Hour), ck.Expires, time.Minute, "the renewed id keeps the deadline")

		r = c.do(srv, "POST", "/logout")
		ck = sessionCookie(r.hdr)
		require.NotNil(t, ck)
		require.Equal(t, -1, ck.MaxAge, "logout deletes the cookie")
	}
}
