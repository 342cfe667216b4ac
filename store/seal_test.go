package store_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/store"
)

// Keys of the encryption tests: 32 bytes of one value each.
var (
	keyA = bytes.Repeat([]byte{0xa1}, codec.KeySize)
	keyB = bytes.Repeat([]byte{0xb2}, codec.KeySize)
)

// keyRing returns a key ring of keys, the first one sealing.
func keyRing(t testing.TB, keys ...[]byte) *codec.KeyRing {
	t.Helper()
	r, err := codec.NewKeyRing(keys...)
	require.NoError(t, err)
	return r
}

// encStore is newStore with Config.Encryption set to a ring of keys.
func encStore(t testing.TB, c *mcproc.Cluster, keys [][]byte, mod func(*store.Config)) *store.Store {
	t.Helper()
	ring := keyRing(t, keys...)
	return newStore(t, c, func(cfg *store.Config) {
		cfg.Encryption = ring
		if mod != nil {
			mod(cfg)
		}
	})
}

// keyIDOf returns the key id of a sealed value, in hex.
func keyIDOf(t testing.TB, sealed []byte) string {
	t.Helper()
	require.True(t, codec.IsSealed(sealed), "sealed: %x", sealed[:min(8, len(sealed))])
	return hex.EncodeToString(sealed[2:6])
}

// secretAttrs are attributes whose names and values must never be seen
// in memcached with encryption on.
var secretAttrs = map[string]any{
	"credit_card": "4111-1111-1111-1111",
	"api_token":   "tok_9d8c7b6a5f4e3d2c",
	"cart":        []string{"sku-secret-apple", "sku-secret-pear"},
}

// secretUser is the user of the encryption tests' sessions.
const secretUser = "ada.lovelace@example.com"

// requireNoPlaintext checks that raw holds none of the secret attribute
// names or values, nor the user id or the codec name.
func requireNoPlaintext(t testing.TB, what string, raw []byte) {
	t.Helper()
	for _, s := range []string{
		"credit_card", "4111-1111-1111-1111", "api_token", "tok_9d8c7b6a5f4e3d2c", "cart", "sku-secret",
		secretUser, "ada.lovelace", "cbor",
	} {
		require.False(t, bytes.Contains(raw, []byte(s)), "%s holds %q in clear: %q", what, s, raw)
	}
}

// savedSecret saves a session with secretAttrs linked to secretUser.
func savedSecret(t testing.TB, st *store.Store) *store.Session {
	t.Helper()
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	require.NoError(t, err)
	for k, v := range secretAttrs {
		require.NoError(t, s.Set(k, v))
	}
	require.NoError(t, s.SetUser(secretUser))
	require.NoError(t, st.Save(ctx, s))
	return s
}

// requireSecret checks that s holds secretAttrs and secretUser.
func requireSecret(t testing.TB, s *store.Session) {
	t.Helper()
	card, ok, err := store.Get[string](s, "credit_card")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, secretAttrs["credit_card"], card)
	cart, _, err := store.Get[[]string](s, "cart")
	require.NoError(t, err)
	require.Equal(t, secretAttrs["cart"], cart)
	require.Equal(t, secretUser, s.User())
}

func TestEncryptionAtRest(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a := encStore(t, c, [][]byte{keyA}, nil)
	b := encStore(t, c, [][]byte{keyA}, nil)
	ctx := context.Background()
	s := savedSecret(t, a)
	id := s.ID()

	// Another app server with the same key reads it.
	got, err := b.Load(ctx, id)
	require.NoError(t, err)
	requireSecret(t, got)
	require.Equal(t, uint64(1), got.Version())

	// Both copies, read with a plain memcached client: sealed, no
	// attribute name or value, no user id; the flags (the version) in clear.
	primary, backup, ok := a.Placement(id)
	require.True(t, ok)
	p, err := get(t, c, primary, id)
	require.NoError(t, err)
	bk, err := get(t, c, backup, "bak:"+id)
	require.NoError(t, err)
	for _, it := range []*memcache.Item{p, bk} {
		requireNoPlaintext(t, it.Key, it.Value)
		require.Equal(t, keyRing(t, keyA).KeyIDs()[0], keyIDOf(t, it.Value))
		require.Equal(t, uint32(1), it.Flags, "client flags stay in clear")
		_, err := codec.DecodeRecord(codec.NewCBOR(), it.Value)
		require.ErrorIs(t, err, codec.ErrCorrupt, "not an envelope in clear")
	}
	plain, err := keyRing(t, keyA).Open([]byte(id[:32]), p.Value)
	require.NoError(t, err)
	rec, err := codec.DecodeRecord(codec.NewCBOR(), plain)
	require.NoError(t, err, "the sealed value is the envelope")
	require.Equal(t, secretUser, rec.User)

	// The user's index is sealed too, and lists the session.
	ikey, inodes, _ := a.UserIndexKey(secretUser)
	ix, err := get(t, c, inodes, ikey)
	require.NoError(t, err)
	requireNoPlaintext(t, ikey, ix.Value)
	require.False(t, bytes.Contains(ix.Value, []byte(id[:32])), "no session id in clear in the index")
	ixPlain, err := keyRing(t, keyA).Open([]byte(ikey), ix.Value) // associated data "user:"+hash (no prefix here)
	require.NoError(t, err)
	require.Contains(t, string(ixPlain), `"user":"`+secretUser+`"`)
	list, err := b.UserSessions(ctx, secretUser)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, id, list[0].ID)

	// Saves write sealed values as well.
	require.NoError(t, got.Set("api_token", "tok_rotated_secret"))
	require.NoError(t, b.Save(ctx, got))
	p, err = get(t, c, primary, id)
	require.NoError(t, err)
	requireNoPlaintext(t, id, p.Value)
	require.False(t, bytes.Contains(p.Value, []byte("tok_rotated_secret")))
	require.Equal(t, uint32(2), p.Flags)
	again, err := a.Load(ctx, id)
	require.NoError(t, err)
	tok, _, err := store.Get[string](again, "api_token")
	require.NoError(t, err)
	require.Equal(t, "tok_rotated_secret", tok)

	// A store without the key finds nothing, and says why.
	plainStore := newStore(t, c, nil)
	_, err = plainStore.Load(ctx, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorContains(t, err, "Config.Encryption is not set")
	require.Equal(t, uint64(1), plainStore.Stats().Undecryptable)
	require.Zero(t, plainStore.Stats().Corrupt)

	// Log out everywhere works on sealed indexes.
	n, err := b.DestroyUser(ctx, secretUser)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = a.Load(ctx, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, a.Stats().Undecryptable+b.Stats().Undecryptable)
	require.Zero(t, a.Stats().Corrupt+b.Stats().Corrupt)
}

func TestEncryptionFreshNoncePerWrite(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := encStore(t, c, [][]byte{keyA}, nil)
	ctx := context.Background()
	s := saved(t, st, map[string]any{"k": "v"})
	id := s.ID()
	primary, backup, _ := st.Placement(id)

	// Many saves: never the same nonce.
	nonces := map[string]bool{}
	for i := range 50 {
		require.NoError(t, s.Set("k", i))
		require.NoError(t, st.Save(ctx, s))
		it, err := get(t, c, primary, id)
		require.NoError(t, err)
		nonce := hex.EncodeToString(it.Value[6:18])
		require.False(t, nonces[nonce], "nonce %s used twice", nonce)
		nonces[nonce] = true
	}

	// The same content sealed twice differs: the backup node loses its
	// copy, Touch writes the same version again, with a new nonce.
	require.NoError(t, c.Node(backup).Client().Delete("bak:"+id))
	require.NoError(t, st.Touch(ctx, s))
	p, err := get(t, c, primary, id)
	require.NoError(t, err)
	bk, err := get(t, c, backup, "bak:"+id)
	require.NoError(t, err)
	require.Equal(t, p.Flags, bk.Flags, "same version")
	require.NotEqual(t, p.Value, bk.Value, "same content, different bytes")
	ring := keyRing(t, keyA)
	pp, err := ring.Open([]byte(id[:32]), p.Value)
	require.NoError(t, err)
	bp, err := ring.Open([]byte(id[:32]), bk.Value)
	require.NoError(t, err)
	require.Equal(t, pp, bp, "the same envelope inside")
}

func TestEncryptionCopyUnderAnotherID(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := encStore(t, c, [][]byte{keyA}, nil)
	ctx := context.Background()
	victim := saved(t, st, map[string]any{"role": "admin"})
	attacker := saved(t, st, map[string]any{"role": "guest"})

	// Someone with write access to memcached copies the victim's body
	// (and flags) over the attacker's session.
	from, err := get(t, c, nodeOf(victim.ID()), victim.ID())
	require.NoError(t, err)
	require.NoError(t, c.Node(nodeOf(attacker.ID())).Client().Set(&memcache.Item{
		Key: attacker.ID(), Value: from.Value, Flags: from.Flags, Expiration: 600}))
	_, err = st.Load(ctx, attacker.ID())
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, err, codec.ErrDecrypt)
	require.Equal(t, uint64(1), st.Stats().Undecryptable)
	require.Zero(t, st.Stats().Corrupt)

	// The victim's own session is untouched.
	got, err := st.Load(ctx, victim.ID())
	require.NoError(t, err)
	role, _, err := store.Get[string](got, "role")
	require.NoError(t, err)
	require.Equal(t, "admin", role)
}

func TestEncryptionTamperedByte(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := encStore(t, c, [][]byte{keyA}, nil)
	ctx := context.Background()
	// Change one byte in each part: the key id, the nonce, the ciphertext,
	// the tag, the sealed format.
	for _, pos := range []struct {
		name string
		at   func(n int) int
		err  error
	}{
		{"format", func(int) int { return 1 }, codec.ErrDecrypt},
		{"key id", func(int) int { return 3 }, codec.ErrUnknownKey},
		{"nonce", func(int) int { return 10 }, codec.ErrDecrypt},
		{"ciphertext", func(n int) int { return 18 + (n-34)/2 }, codec.ErrDecrypt},
		{"tag", func(n int) int { return n - 1 }, codec.ErrDecrypt},
	} {
		t.Run(pos.name, func(t *testing.T) {
			before := st.Stats().Undecryptable
			s := saved(t, st, map[string]any{"k": strings.Repeat("v", 40)})
			id := s.ID()
			it, err := get(t, c, nodeOf(id), id)
			require.NoError(t, err)
			bad := bytes.Clone(it.Value)
			bad[pos.at(len(bad))] ^= 0x20
			require.NoError(t, c.Node(nodeOf(id)).Client().Set(&memcache.Item{Key: id, Value: bad, Flags: it.Flags, Expiration: 600}))
			var loadErr error
			require.NotPanics(t, func() { _, loadErr = st.Load(ctx, id) })
			require.ErrorIs(t, loadErr, store.ErrNotFound)
			require.ErrorIs(t, loadErr, pos.err)
			require.Equal(t, before+1, st.Stats().Undecryptable)
		})
	}
	require.Zero(t, st.Stats().Corrupt)
}

func TestEncryptionKeyRotation(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	ctx := context.Background()
	idA, idB := keyRing(t, keyA).KeyIDs()[0], keyRing(t, keyB).KeyIDs()[0]

	// Before: every server seals with A.
	old := encStore(t, c, [][]byte{keyA}, nil)
	s1 := saved(t, old, map[string]any{"n": 1})
	s2 := saved(t, old, map[string]any{"n": 2}) // never requested after the rotation

	// During: B first, A second. A-sealed sessions open; saves seal with B.
	rotated := encStore(t, c, [][]byte{keyB, keyA}, nil)
	got, err := rotated.Load(ctx, s1.ID())
	require.NoError(t, err)
	require.Equal(t, 1, counter(t, got))
	require.NoError(t, got.Set("n", 10))
	require.NoError(t, rotated.Save(ctx, got))
	primary, backup, _ := rotated.Placement(s1.ID())
	for _, k := range []struct{ node, key string }{{primary, s1.ID()}, {backup, "bak:" + s1.ID()}} {
		it, err := get(t, c, k.node, k.key)
		require.NoError(t, err)
		require.Equal(t, idB, keyIDOf(t, it.Value), k.key)
	}
	s3 := saved(t, rotated, map[string]any{"n": 3})
	it, err := get(t, c, nodeOf(s3.ID()), s3.ID())
	require.NoError(t, err)
	require.Equal(t, idB, keyIDOf(t, it.Value), "new sessions are sealed with the first key")
	it, err = get(t, c, nodeOf(s2.ID()), s2.ID())
	require.NoError(t, err)
	require.Equal(t, idA, keyIDOf(t, it.Value), "an untouched session keeps its key")

	// After: A removed. B-sealed sessions open, A-sealed ones are not found.
	onlyB := encStore(t, c, [][]byte{keyB}, nil)
	for _, tc := range []struct {
		id string
		n  int
	}{{s1.ID(), 10}, {s3.ID(), 3}} {
		got, err := onlyB.Load(ctx, tc.id)
		require.NoError(t, err)
		require.Equal(t, tc.n, counter(t, got))
	}
	_, err = onlyB.Load(ctx, s2.ID())
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, err, codec.ErrUnknownKey)
	require.Equal(t, uint64(1), onlyB.Stats().Undecryptable)
	require.Zero(t, onlyB.Stats().Corrupt)
	require.Zero(t, rotated.Stats().Undecryptable)
}

func TestEncryptionAndSessionsInClear(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	ctx := context.Background()
	plainStore := newStore(t, c, nil)
	s := saved(t, plainStore, map[string]any{"k": "in clear"})

	// Refused by default: a value in clear could have been forged.
	strict := encStore(t, c, [][]byte{keyA}, nil)
	_, err := strict.Load(ctx, s.ID())
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, err, codec.ErrNotSealed)
	require.Equal(t, uint64(1), strict.Stats().Undecryptable)

	// AllowPlaintext reads it (migration), and its next save seals it.
	migrating := encStore(t, c, [][]byte{keyA}, func(cfg *store.Config) { cfg.AllowPlaintext = true })
	got, err := migrating.Load(ctx, s.ID())
	require.NoError(t, err)
	k, _, err := store.Get[string](got, "k")
	require.NoError(t, err)
	require.Equal(t, "in clear", k)
	require.NoError(t, got.Set("k", "sealed now"))
	require.NoError(t, migrating.Save(ctx, got))
	it, err := get(t, c, nodeOf(s.ID()), s.ID())
	require.NoError(t, err)
	require.True(t, codec.IsSealed(it.Value))
	require.False(t, bytes.Contains(it.Value, []byte("sealed now")))
	got, err = strict.Load(ctx, s.ID())
	require.NoError(t, err, "sealed: the strict store reads it now")
	k, _, err = store.Get[string](got, "k")
	require.NoError(t, err)
	require.Equal(t, "sealed now", k)
	require.Zero(t, migrating.Stats().Undecryptable)
}

func TestEncryptionFailover(t *testing.T) {
	c := mcproc.NewCluster(t, 3)
	a := encStore(t, c, [][]byte{keyA}, nil)
	b := encStore(t, c, [][]byte{keyA}, nil)
	ctx := context.Background()

	t.Run("relocation after the primary died", func(t *testing.T) {
		s := savedSecret(t, a)
		id := s.ID()
		require.NoError(t, c.Node(nodeOf(id)).Kill())
		t.Cleanup(func() { require.NoError(t, c.Node(nodeOf(id)).Restart(context.Background())) })
		got, err := b.Load(ctx, id)
		require.NoError(t, err)
		require.NotEqual(t, id, got.ID(), "relocated")
		require.Equal(t, id[:32], got.ID()[:32])
		requireSecret(t, got)
		// The relocated copies are sealed (same random part: they open).
		_, backup, _ := b.Placement(got.ID())
		for _, k := range []struct{ node, key string }{{nodeOf(got.ID()), got.ID()}, {backup, "bak:" + got.ID()}} {
			it, err := get(t, c, k.node, k.key)
			require.NoError(t, err, k.key)
			requireNoPlaintext(t, k.key, it.Value)
			require.True(t, codec.IsSealed(it.Value))
		}
		// Another server follows the old id to the relocated copy.
		again, err := a.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, got.ID(), again.ID())
		requireSecret(t, again)
		require.NoError(t, again.Set("after", true))
		require.NoError(t, a.Save(ctx, again))
		require.Equal(t, uint64(1), b.Stats().Relocations)
	})

	t.Run("restore after the primary restarted empty", func(t *testing.T) {
		s := savedSecret(t, a)
		id := s.ID()
		require.NoError(t, c.Node(nodeOf(id)).Restart(ctx))
		got, err := b.Load(ctx, id)
		require.NoError(t, err)
		require.Equal(t, id, got.ID(), "restored under the same id")
		requireSecret(t, got)
		it, err := get(t, c, nodeOf(id), id)
		require.NoError(t, err)
		requireNoPlaintext(t, id, it.Value)
	})
	require.Zero(t, a.Stats().Undecryptable+b.Stats().Undecryptable)
}

func TestEncryptionStickyAndAsync(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*store.Config)
	}{
		{"sticky", func(cfg *store.Config) { cfg.Sticky = true }},
		{"sticky async", func(cfg *store.Config) { cfg.Sticky, cfg.AsyncWrites = true, true }},
		{"async backup", func(cfg *store.Config) { cfg.AsyncWrites = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mcproc.NewCluster(t, 2)
			st := encStore(t, c, [][]byte{keyA}, tc.mod)
			t.Cleanup(func() { _ = st.Shutdown(context.Background()) })
			ctx := context.Background()
			s := savedSecret(t, st)
			id := s.ID()
			for i := 1; i <= 3; i++ {
				got, err := st.LoadLocked(ctx, id)
				require.NoError(t, err)
				requireSecret(t, got)
				require.NoError(t, got.Set("n", i))
				require.NoError(t, st.SaveAndRelease(ctx, got))
			}
			require.NoError(t, st.Flush(ctx))
			primary, backup, _ := st.Placement(id)
			for _, k := range []struct{ node, key string }{{primary, id}, {backup, "bak:" + id}} {
				it, err := get(t, c, k.node, k.key)
				require.NoError(t, err, k.key)
				requireNoPlaintext(t, k.key, it.Value)
				require.Equal(t, uint32(4), it.Flags, k.key)
			}
			// Another server (not sticky) reads what this one wrote.
			other := encStore(t, c, [][]byte{keyA}, nil)
			got, err := other.Load(ctx, id)
			require.NoError(t, err)
			requireSecret(t, got)
			require.Equal(t, 3, counter(t, got))
			require.Zero(t, st.Stats().Undecryptable+other.Stats().Undecryptable)
			require.Zero(t, st.Stats().AsyncFailed)
		})
	}
}

func TestEncryptionUserIndexWithAnotherKey(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	ctx := context.Background()
	a := encStore(t, c, [][]byte{keyA}, nil)
	s := savedSecret(t, a)

	// An index sealed with a key this store lacks counts as empty (its
	// sessions do not open for it either), and is counted.
	b := encStore(t, c, [][]byte{keyB}, nil)
	list, err := b.UserSessions(ctx, secretUser)
	require.NoError(t, err)
	require.Empty(t, list)
	require.GreaterOrEqual(t, b.Stats().Undecryptable, uint64(1))

	// The right key lists it.
	list, err = a.UserSessions(ctx, secretUser)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, s.ID(), list[0].ID)
}

func TestEncryptionRenewID(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	st := encStore(t, c, [][]byte{keyA}, nil)
	ctx := context.Background()
	s := savedSecret(t, st)
	old := s.ID()
	require.NoError(t, st.RenewID(ctx, s))
	require.NotEqual(t, old[:32], s.ID()[:32])
	got, err := st.Load(ctx, s.ID())
	require.NoError(t, err, "sealed for the new id's random part")
	requireSecret(t, got)
	_, err = st.Load(ctx, old)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Zero(t, st.Stats().Undecryptable)
}

func TestEncryptionMaxSizeBoundsTheSealedValue(t *testing.T) {
	c := mcproc.NewCluster(t, 2)
	ctx := context.Background()
	attrs := map[string]any{"v": strings.Repeat("x", 150)}
	// The size of this session in clear (the same for every such session:
	// times are 8-byte integers, the version 1).
	s := saved(t, newStore(t, c, nil), attrs)
	it, err := get(t, c, nodeOf(s.ID()), s.ID())
	require.NoError(t, err)
	size := len(it.Value)

	for _, tc := range []struct {
		max int
		err error
	}{
		{size + codec.SealOverhead - 1, store.ErrTooLarge},
		{size + codec.SealOverhead, nil},
	} {
		st := encStore(t, c, [][]byte{keyA}, func(cfg *store.Config) { cfg.MaxSize = tc.max })
		s, err := st.NewSession(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Set("v", attrs["v"]))
		err = st.Save(ctx, s)
		if tc.err != nil {
			require.ErrorIs(t, err, tc.err, "MaxSize %d", tc.max)
			continue
		}
		require.NoError(t, err, "MaxSize %d", tc.max)
		it, err := get(t, c, nodeOf(s.ID()), s.ID())
		require.NoError(t, err)
		require.Len(t, it.Value, size+codec.SealOverhead)
	}
}
