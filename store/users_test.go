package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// login creates a session linked to user and saves it.
func login(t testing.TB, st *store.Store, user string) *store.Session {
	t.Helper()
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	require.NoError(t, err)
	require.NoError(t, s.SetUser(user))
	require.NoError(t, st.Save(ctx, s))
	return s
}

// patientStore is a Store over c whose nodes get 5 s per round trip
// (newStore's 300 ms, for noticing dead nodes fast, are short for the
// parallel tests on a busy machine; no node dies in them).
func patientStore(t testing.TB, c *mcproc.Cluster) *store.Store {
	t.Helper()
	nodes, err := replica.ParseNodes(c.Spec())
	require.NoError(t, err)
	cl, err := replica.New(replica.Config{Nodes: nodes, Timeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	st, err := store.New(store.Config{Cluster: cl})
	require.NoError(t, err)
	return st
}

// listedIDs returns the ids UserSessions lists for user, sorted.
func listedIDs(t testing.TB, st *store.Store, user string) []string {
	t.Helper()
	list, err := st.UserSessions(context.Background(), user)
	require.NoError(t, err)
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

// sortedIDs returns the ids of sessions, sorted.
func sortedIDs(sessions ...*store.Session) []string {
	ids := make([]string, 0, len(sessions))
	for _, s := range sessions {
		ids = append(ids, s.ID())
	}
	slices.Sort(ids)
	return ids
}

// rawIndex reads the index item of user from node with a plain client:
// the ids it lists, sorted; ok is false when the node has no index item.
func rawIndex(t testing.TB, c *mcproc.Cluster, st *store.Store, node, user string) (ids []string, ok bool) {
	t.Helper()
	key, _, _ := st.UserIndexKey(user)
	it, err := c.Node(node).Client().Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, false
	}
	require.NoError(t, err)
	var v struct {
		Format   int    `json:"format"`
		User     string `json:"user"`
		Sessions []struct {
			ID string `json:"id"`
		} `json:"sessions"`
	}
	require.NoError(t, json.Unmarshal(it.Value, &v))
	require.Equal(t, 1, v.Format)
	require.Equal(t, user, v.User, "the user id is inside the value")
	ids = []string{}
	for _, s := range v.Sessions {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids, true
}

// requireGone requires that Load finds no session id and that no node
// holds any of its items.
func requireGone(t testing.TB, c *mcproc.Cluster, st *store.Store, id string) {
	t.Helper()
	_, err := st.Load(context.Background(), id)
	require.ErrorIs(t, err, store.ErrNotFound, id)
	session, backup, lockKey := st.MemcachedKeys(id)
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		for _, key := range []string{session, backup, lockKey} {
			_, err := n.Client().Get(key)
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "%s still on %s", key, n.ID)
		}
	}
}

func TestUserIndexLinkListDestroy(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, func(cfg *store.Config) { cfg.KeyPrefix = "app1:"; cfg.Lifetime = time.Hour })
	ctx := context.Background()

	a1, a2 := login(t, st, "ada"), login(t, st, "ada")
	b1 := login(t, st, "bob")
	plain := saved(t, st, map[string]any{"n": 1}) // no user
	require.Equal(t, "ada", a1.User())
	require.Empty(t, plain.User())

	list, err := st.UserSessions(ctx, "ada")
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, sortedIDs(a1, a2), listedIDs(t, st, "ada"))
	for _, us := range list {
		s := a1
		if us.ID == a2.ID() {
			s = a2
		}
		require.Equal(t, s.Created().UnixMilli(), us.Created.UnixMilli())
		require.False(t, us.LastSeen.Before(us.Created.Truncate(time.Second)), "last seen %v, created %v", us.LastSeen, us.Created)
		require.False(t, us.LastSeen.After(time.Now()))
	}
	require.Equal(t, sortedIDs(b1), listedIDs(t, st, "bob"))
	none, err := st.UserSessions(ctx, "carol")
	require.NoError(t, err)
	require.Empty(t, none)

	// The user is stored with the session: another store reads it.
	other := newStore(t, c, func(cfg *store.Config) { cfg.KeyPrefix = "app1:" })
	got, err := other.Load(ctx, a1.ID())
	require.NoError(t, err)
	require.Equal(t, "ada", got.User())

	// The index: key prefix + "user:" + SHA-256 hex, on two nodes, the user
	// inside, expiring with the sessions (deadline = created + 1 h).
	key, primary, secondary := st.UserIndexKey("ada")
	require.Regexp(t, `^app1:user:[0-9a-f]{64}$`, key)
	require.NotEmpty(t, secondary)
	require.NotEqual(t, primary, secondary)
	for _, n := range []string{primary, secondary} {
		ids, ok := rawIndex(t, c, st, n, "ada")
		require.True(t, ok, n)
		require.Equal(t, sortedIDs(a1, a2), ids, n)
		ttl := metaTTL(t, c.Node(n).Addr(), key)
		require.True(t, ttl > 3500 && ttl <= 3601, "index TTL %d: the latest deadline", ttl)
	}

	n, err := other.DestroyUser(ctx, "ada")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	requireGone(t, c, st, a1.ID())
	requireGone(t, c, st, a2.ID())
	for _, n := range []string{primary, secondary} {
		_, ok := rawIndex(t, c, st, n, "ada")
		require.False(t, ok, "index deleted on %s", n)
	}
	require.Empty(t, listedIDs(t, st, "ada"))
	n, err = st.DestroyUser(ctx, "ada")
	require.NoError(t, err)
	require.Zero(t, n, "idempotent")

	// Others are untouched.
	require.Equal(t, sortedIDs(b1), listedIDs(t, st, "bob"))
	_, err = st.Load(ctx, b1.ID())
	require.NoError(t, err)
	_, err = st.Load(ctx, plain.ID())
	require.NoError(t, err)
}

func TestUserIndexInvalidUser(t *testing.T) {
	c := mcproc.NewCluster(t, 1)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, s.SetUser(strings.Repeat("x", store.MaxUserLen+1)), store.ErrInvalidUser)
	require.ErrorIs(t, s.SetUser("\xff"), store.ErrInvalidUser)
	require.NoError(t, s.SetUser(strings.Repeat("x", store.MaxUserLen)))
	_, err = st.UserSessions(ctx, "")
	require.ErrorIs(t, err, store.ErrInvalidUser)
	_, err = st.DestroyUser(ctx, "")
	require.ErrorIs(t, err, store.ErrInvalidUser)

	// One node: one copy of the index.
	key, primary, secondary := st.UserIndexKey("ada")
	require.NotEmpty(t, key)
	require.Equal(t, c.Nodes[0].ID, primary)
	require.Empty(t, secondary)
	login(t, st, "ada")
	require.Len(t, listedIDs(t, st, "ada"), 1)
}

// 50 logins of one user at once, through two app servers (two stores
// over the same nodes), each a read-modify-CAS of the same index item:
// none is lost, on either copy.
func TestUserIndexConcurrentLogins(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	stores := []*store.Store{patientStore(t, c), patientStore(t, c)}
	const n = 50
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			st := stores[i%2]
			s, err := st.NewSession(ctx)
			if err == nil {
				err = s.SetUser("erin")
			}
			if err == nil {
				err = st.Save(ctx, s)
			}
			ids[i], errs[i] = s.ID(), err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	slices.Sort(ids)
	require.Equal(t, ids, listedIDs(t, stores[0], "erin"))
	require.Equal(t, ids, listedIDs(t, stores[1], "erin"))
	_, primary, secondary := stores[0].UserIndexKey("erin")
	for _, node := range []string{primary, secondary} {
		got, ok := rawIndex(t, c, stores[0], node, "erin")
		require.True(t, ok)
		require.Equal(t, ids, got, "every login on the copy on %s", node)
	}
	n2, err := stores[1].DestroyUser(context.Background(), "erin")
	require.NoError(t, err)
	require.Equal(t, n, n2)
	require.Empty(t, listedIDs(t, stores[0], "erin"))
}

// A full index drops the entries of dead sessions first; then the oldest
// logins, whose sessions are destroyed.
func TestUserIndexBound(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, func(cfg *store.Config) { cfg.MaxUserSessions = 5 })
	ctx := context.Background()

	var sessions []*store.Session
	for range 8 {
		sessions = append(sessions, login(t, st, "fred"))
		require.LessOrEqual(t, len(listedIDs(t, st, "fred")), 5)
	}
	require.Equal(t, sortedIDs(sessions[3:]...), listedIDs(t, st, "fred"), "the 5 newest logins")
	for _, s := range sessions[:3] {
		requireGone(t, c, st, s.ID()) // the 3 oldest: destroyed, not just unlisted
	}
	for _, s := range sessions[3:] {
		_, err := st.Load(ctx, s.ID())
		require.NoError(t, err)
	}

	// Dead entries go first: two sessions destroyed by id (which does not
	// know their user, so they stay listed) make room for two logins
	// without destroying anyone.
	require.NoError(t, st.DestroyID(ctx, sessions[3].ID()))
	require.NoError(t, st.DestroyID(ctx, sessions[4].ID()))
	_, primary, _ := st.UserIndexKey("fred")
	raw, _ := rawIndex(t, c, st, primary, "fred")
	require.Len(t, raw, 5, "destroyed by id: still listed")
	late := []*store.Session{login(t, st, "fred"), login(t, st, "fred")}
	want := append(slices.Clone(sessions[5:]), late...)
	require.Equal(t, sortedIDs(want...), listedIDs(t, st, "fred"))
	for _, s := range want {
		_, err := st.Load(ctx, s.ID())
		require.NoError(t, err, "nobody alive was evicted")
	}
}

// Listing drops the entries of sessions that are gone, moved to another
// user or expired; a logout (Destroy) drops its own entry.
func TestUserIndexPrunesDeadEntries(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s1, s2, s3, s4 := login(t, st, "gina"), login(t, st, "gina"), login(t, st, "gina"), login(t, st, "gina")
	_, primary, secondary := st.UserIndexKey("gina")

	require.NoError(t, st.DestroyID(ctx, s1.ID())) // gone, still listed
	loaded, err := st.Load(ctx, s2.ID())
	require.NoError(t, err)
	require.NoError(t, loaded.SetUser("hank")) // moves to another user
	require.NoError(t, st.Save(ctx, loaded))
	raw, _ := rawIndex(t, c, st, primary, "gina")
	require.Equal(t, sortedIDs(s1, s3, s4), raw, "the new user's save dropped it from gina's index")
	require.Equal(t, sortedIDs(s2), listedIDs(t, st, "hank"))

	require.Equal(t, sortedIDs(s3, s4), listedIDs(t, st, "gina"))
	for _, n := range []string{primary, secondary} {
		raw, _ := rawIndex(t, c, st, n, "gina")
		require.Equal(t, sortedIDs(s3, s4), raw, "pruned on %s", n)
	}

	// Logout drops its entry at once; unlinking (SetUser("")) too.
	l3, err := st.LoadLocked(ctx, s3.ID())
	require.NoError(t, err)
	require.NoError(t, st.Destroy(ctx, l3))
	raw, _ = rawIndex(t, c, st, primary, "gina")
	require.Equal(t, sortedIDs(s4), raw)
	l4, err := st.Load(ctx, s4.ID())
	require.NoError(t, err)
	require.NoError(t, l4.SetUser(""))
	require.NoError(t, st.Save(ctx, l4))
	_, ok := rawIndex(t, c, st, primary, "gina")
	require.False(t, ok, "the last entry gone: the index is deleted")
	require.Empty(t, listedIDs(t, st, "gina"))
	got, err := st.Load(ctx, s4.ID())
	require.NoError(t, err)
	require.Empty(t, got.User())

	// Sessions past their deadline are dropped without a lookup.
	short := newStore(t, c, func(cfg *store.Config) { cfg.Lifetime = 1500 * time.Millisecond })
	e1 := login(t, short, "ivan")
	require.Equal(t, sortedIDs(e1), listedIDs(t, short, "ivan"))
	require.Eventually(t, func() bool { return time.Now().After(e1.Deadline()) }, 10*time.Second, 50*time.Millisecond)
	require.Empty(t, listedIDs(t, short, "ivan"))
}

// The index has a second copy on another node: killing either node loses
// no login, and logins and log-out-everywhere go on.
func TestUserIndexSurvivesNodeDeath(t *testing.T) {
	for _, which := range []string{"primary", "secondary"} {
		t.Run(which, func(t *testing.T) {
			c := mcproc.NewCluster(t, 3)
			st := newStore(t, c, nil)
			ctx := context.Background()
			var sessions []*store.Session
			for range 6 {
				sessions = append(sessions, login(t, st, "judy"))
			}
			_, primary, secondary := st.UserIndexKey("judy")
			dead := primary
			if which == "secondary" {
				dead = secondary
			}
			require.NoError(t, c.Node(dead).Kill())

			// Another app server, which did not see the node die.
			st2 := newStore(t, c, nil)
			require.Equal(t, sortedIDs(sessions...), listedIDs(t, st2, "judy"))
			more := login(t, st2, "judy")
			sessions = append(sessions, more)
			require.Equal(t, sortedIDs(sessions...), listedIDs(t, st2, "judy"))

			n, err := st2.DestroyUser(ctx, "judy")
			require.NoError(t, err)
			require.Equal(t, len(sessions), n)
			for _, s := range sessions {
				requireGone(t, c, st2, s.ID())
			}
			require.Empty(t, listedIDs(t, st2, "judy"))

			// The node comes back empty: still nothing listed.
			require.NoError(t, c.Node(dead).Restart(ctx))
			require.Empty(t, listedIDs(t, newStore(t, c, nil), "judy"))
		})
	}
}

// RenewID replaces the old id in the index; a relocation after the
// primary node died too, and DestroyUser then destroys the new id.
func TestUserIndexFollowsRenewAndRelocation(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	s := login(t, st, "kate")
	other := login(t, st, "kate")
	old := s.ID()

	require.NoError(t, st.RenewID(ctx, s))
	require.NotEqual(t, old, s.ID())
	require.Equal(t, sortedIDs(s, other), listedIDs(t, st, "kate"))
	requireGone(t, c, st, old)

	// A session on a node that holds neither copy of the index, so that
	// killing it leaves the index whole and the relocation is the only
	// change (TestUserIndexSurvivesNodeDeath kills index nodes).
	_, ip, is := st.UserIndexKey("kate")
	var victim string
	for _, n := range c.Nodes {
		if n.ID != ip && n.ID != is {
			victim = n.ID
		}
	}
	require.NoError(t, st.Destroy(ctx, s)) // a logout: it leaves the index too
	s = newOn(t, st, victim)
	require.NoError(t, s.SetUser("kate"))
	require.NoError(t, s.Set("n", 1))
	require.NoError(t, st.Save(ctx, s))
	before := s.ID()
	require.NoError(t, c.Node(victim).Kill())

	st2 := newStore(t, c, nil)
	moved, err := st2.Load(ctx, before)
	require.NoError(t, err)
	require.NotEqual(t, before, moved.ID(), "relocated")
	require.Equal(t, before, moved.PreviousID())
	require.Equal(t, "kate", moved.User())
	_, primary, _ := st.UserIndexKey("kate")
	raw, _ := rawIndex(t, c, st2, primary, "kate")
	require.Equal(t, sortedIDs(moved, other), raw, "the load listed the new id in place of the old one")
	require.Equal(t, sortedIDs(moved, other), listedIDs(t, st2, "kate"))

	// A save of the relocated session keeps it so.
	require.NoError(t, moved.Set("n", 2))
	require.NoError(t, st2.Save(ctx, moved))
	require.Equal(t, sortedIDs(moved, other), listedIDs(t, st2, "kate"))

	n, err := st.DestroyUser(ctx, "kate")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	requireGone(t, c, st2, moved.ID())
	requireGone(t, c, st2, other.ID())
	_, err = st2.Load(ctx, before)
	require.ErrorIs(t, err, store.ErrNotFound, "nor through its old id")
}

// Sticky mode with asynchronous writes: a login is written before Save
// returns, so the index never lists a session memcached does not have;
// DestroyUser on another server ends it there too.
func TestUserIndexStickyAsync(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	sticky := newStore(t, c, func(cfg *store.Config) { cfg.Sticky, cfg.AsyncWrites = true, true })
	t.Cleanup(func() { _ = sticky.Shutdown(context.Background()) })
	plain := newStore(t, c, nil)
	ctx := context.Background()

	s := login(t, sticky, "liam")
	_, err := plain.Load(ctx, s.ID())
	require.NoError(t, err, "written before Save returned")
	require.Equal(t, sortedIDs(s), listedIDs(t, plain, "liam"))

	loaded, err := sticky.LoadLocked(ctx, s.ID())
	require.NoError(t, err)
	require.NoError(t, sticky.RenewID(ctx, loaded))
	require.NoError(t, sticky.SaveAndRelease(ctx, loaded))
	require.Equal(t, sortedIDs(loaded), listedIDs(t, plain, "liam"))

	n, err := plain.DestroyUser(ctx, "liam")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = sticky.Load(ctx, loaded.ID())
	require.ErrorIs(t, err, store.ErrNotFound, "the probe sees it gone")
}

// Logins racing DestroyUser: every session still there afterwards is
// listed (it logged in after the log-out), none escapes the index.
func TestUserIndexLoginRacesDestroyUser(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a, b := patientStore(t, c), patientStore(t, c)
	ctx := context.Background()
	for range 10 {
		login(t, a, "mia")
	}
	const n = 30
	ids := make(chan string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := a.NewSession(ctx)
			if err == nil {
				err = s.SetUser("mia")
			}
			if err == nil {
				err = a.Save(ctx, s)
			}
			if err != nil {
				errs <- err
				return
			}
			ids <- s.ID()
		}()
	}
	destroyed, err := b.DestroyUser(ctx, "mia")
	require.NoError(t, err)
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.GreaterOrEqual(t, destroyed, 10)
	listed := listedIDs(t, a, "mia")
	alive := 0
	for id := range ids {
		_, err := a.Load(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		require.NoError(t, err)
		alive++
		require.Contains(t, listed, id, "a session that survived DestroyUser is listed")
	}
	require.Len(t, listed, alive)
	require.Equal(t, n+10, destroyed+alive, fmt.Sprintf("destroyed %d, alive %d", destroyed, alive))
	m, err := a.DestroyUser(ctx, "mia")
	require.NoError(t, err)
	require.Equal(t, alive, m)
}

// A save whose primary node died relocates the session (see Save): the
// index lists the new id in place of the old one.
func TestUserIndexFollowsRelocationOnSave(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	st := newStore(t, c, nil)
	ctx := context.Background()
	_, ip, is := st.UserIndexKey("nora")
	var victim string
	for _, n := range c.Nodes {
		if n.ID != ip && n.ID != is {
			victim = n.ID
		}
	}
	s := newOn(t, st, victim)
	require.NoError(t, s.SetUser("nora"))
	require.NoError(t, st.Save(ctx, s))
	old := s.ID()
	loaded, err := st.Load(ctx, old)
	require.NoError(t, err)
	require.NoError(t, c.Node(victim).Kill())

	require.NoError(t, loaded.Set("n", 1))
	require.NoError(t, st.Save(ctx, loaded))
	require.NotEqual(t, old, loaded.ID(), "relocated by the save")
	raw, _ := rawIndex(t, c, st, ip, "nora")
	require.Equal(t, sortedIDs(loaded), raw)

	n, err := st.DestroyUser(ctx, "nora")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	requireGone(t, c, st, loaded.ID())
}
