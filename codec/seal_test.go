package codec

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testKey returns a key whose bytes are all b.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestNewKeyRingValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys [][]byte
		err  string
	}{
		{"no key", nil, "no key"},
		{"short key", [][]byte{make([]byte, 31)}, "key 1 is 31 bytes, want 32"},
		{"long key", [][]byte{testKey(1), make([]byte, 33)}, "key 2 is 33 bytes, want 32"},
		{"empty key", [][]byte{{}}, "key 1 is 0 bytes"},
		{"duplicate", [][]byte{testKey(1), testKey(2), testKey(1)}, "key 3 is key 1 again"},
		{"one key", [][]byte{testKey(1)}, ""},
		{"three keys", [][]byte{testKey(1), testKey(2), testKey(3)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewKeyRing(tc.keys...)
			if tc.err == "" {
				require.NoError(t, err)
				require.Len(t, r.KeyIDs(), len(tc.keys))
				return
			}
			require.ErrorIs(t, err, ErrInvalidKey)
			require.ErrorContains(t, err, tc.err)
			require.Nil(t, r)
		})
	}
}

func TestParseKeyRing(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("0F", 32)
	for _, tc := range []struct {
		name, spec, err string
		ids             int
	}{
		{"one key", a, "", 1},
		{"two keys, spaces", " " + a + " , " + b + "\n", "", 2},
		{"upper case hex", strings.ToUpper(a), "", 1},
		{"empty", "", "key 1 is 0 characters, want 64 hex characters (32 bytes)", 0},
		{"trailing comma", a + ",", "key 2 is 0 characters", 0},
		{"short", a[:62], "key 1 is 62 characters", 0},
		{"long", a + "00", "key 1 is 66 characters", 0},
		{"not hex", a + "," + strings.Repeat("zz", 32), "key 2 is not hexadecimal", 0},
		{"duplicate", a + "," + strings.ToUpper(a), "key 2 is key 1 again", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseKeyRing(tc.spec)
			if tc.err != "" {
				require.ErrorIs(t, err, ErrInvalidKey)
				require.ErrorContains(t, err, tc.err)
				require.NotContains(t, err.Error(), a[:16], "an error never shows a key")
				return
			}
			require.NoError(t, err)
			require.Len(t, r.KeyIDs(), tc.ids)
		})
	}
}

func TestSealOpen(t *testing.T) {
	ring, err := NewKeyRing(testKey(1))
	require.NoError(t, err)
	aad := []byte("9f2c4e61b0d7a3854c1e9b2f6a0d8c3e")
	plain := []byte("the envelope, with user ada and attribute secret=s3cr3t")

	sealed, err := ring.Seal(aad, plain)
	require.NoError(t, err)
	require.Len(t, sealed, len(plain)+SealOverhead)
	require.True(t, IsSealed(sealed))
	require.False(t, bytes.Contains(sealed, []byte("s3cr3t")))
	require.False(t, bytes.Contains(sealed, []byte("ada")))
	require.Equal(t, []byte{0xe5, 0x01}, sealed[:2], "magic, sealed format")
	require.Equal(t, ring.KeyIDs()[0], hex.EncodeToString(sealed[2:6]), "key id")
	got, err := ring.Open(aad, sealed)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	t.Run("fresh nonce per seal", func(t *testing.T) {
		again, err := ring.Seal(aad, plain)
		require.NoError(t, err)
		require.NotEqual(t, sealed, again)
		require.NotEqual(t, sealed[6:18], again[6:18], "nonce")
		got, err := ring.Open(aad, again)
		require.NoError(t, err)
		require.Equal(t, plain, got)
	})

	t.Run("other associated data", func(t *testing.T) {
		_, err := ring.Open([]byte("0000000000000000000000000000000e"), sealed)
		require.ErrorIs(t, err, ErrDecrypt)
		_, err = ring.Open(nil, sealed)
		require.ErrorIs(t, err, ErrDecrypt)
	})

	t.Run("every changed byte", func(t *testing.T) {
		for i := range sealed {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x01
			_, err := ring.Open(aad, bad)
			require.Error(t, err, "byte %d", i)
			switch {
			case i == 0:
				require.ErrorIs(t, err, ErrNotSealed)
			case i >= 2 && i < 6:
				require.ErrorIs(t, err, ErrUnknownKey, "byte %d: key id", i)
			default:
				require.ErrorIs(t, err, ErrDecrypt, "byte %d", i)
			}
		}
	})

	t.Run("truncated", func(t *testing.T) {
		for n := 1; n < len(sealed); n++ {
			_, err := ring.Open(aad, sealed[:n])
			require.ErrorIs(t, err, ErrDecrypt, "%d bytes", n)
		}
		_, err := ring.Open(aad, append(bytes.Clone(sealed), 0))
		require.ErrorIs(t, err, ErrDecrypt, "a byte more")
	})

	t.Run("not sealed", func(t *testing.T) {
		for _, v := range [][]byte{nil, {}, {0x87, 0x01}, []byte(`{"format":1}`)} {
			_, err := ring.Open(aad, v)
			require.ErrorIs(t, err, ErrNotSealed, "%x", v)
			require.False(t, IsSealed(v))
		}
	})

	t.Run("empty plaintext", func(t *testing.T) {
		s, err := ring.Seal(aad, nil)
		require.NoError(t, err)
		require.Len(t, s, SealOverhead)
		got, err := ring.Open(aad, s)
		require.NoError(t, err)
		require.Empty(t, got)
	})
}

func TestKeyRotation(t *testing.T) {
	aad := []byte("c4d2e8f0a1b3c5d7e9f1a2b4c6d8e0f2")
	a, b := testKey(0xa), testKey(0xb)
	onlyA, err := NewKeyRing(a)
	require.NoError(t, err)
	sealedA, err := onlyA.Seal(aad, []byte("value"))
	require.NoError(t, err)

	// The new key first, the old one second: old values open, new ones
	// are sealed with the new key.
	rotated, err := NewKeyRing(b, a)
	require.NoError(t, err)
	got, err := rotated.Open(aad, sealedA)
	require.NoError(t, err)
	require.Equal(t, []byte("value"), got)
	sealedB, err := rotated.Seal(aad, []byte("value"))
	require.NoError(t, err)
	require.Equal(t, rotated.KeyIDs()[0], hex.EncodeToString(sealedB[2:6]))
	require.NotEqual(t, onlyA.KeyIDs()[0], rotated.KeyIDs()[0])
	require.Equal(t, onlyA.KeyIDs()[0], rotated.KeyIDs()[1])

	// A process that still has the old ring only opens what it sealed
	// itself until it gets the new key.
	_, err = onlyA.Open(aad, sealedB)
	require.ErrorIs(t, err, ErrUnknownKey)

	// The old key removed: its values no longer open.
	onlyB, err := NewKeyRing(b)
	require.NoError(t, err)
	_, err = onlyB.Open(aad, sealedA)
	require.ErrorIs(t, err, ErrUnknownKey)
	got, err = onlyB.Open(aad, sealedB)
	require.NoError(t, err)
	require.Equal(t, []byte("value"), got)
}

func TestKeyRingCopiesKeys(t *testing.T) {
	k := testKey(7)
	ring, err := NewKeyRing(k)
	require.NoError(t, err)
	sealed, err := ring.Seal(nil, []byte("x"))
	require.NoError(t, err)
	clear(k)
	got, err := ring.Open(nil, sealed)
	require.NoError(t, err)
	require.Equal(t, []byte("x"), got)
}

func TestZeroKeyRing(t *testing.T) {
	var r KeyRing
	_, err := r.Seal(nil, []byte("x"))
	require.ErrorIs(t, err, ErrInvalidKey)
	_, err = r.Open(nil, append([]byte{0xe5, 0x01}, make([]byte, 40)...))
	require.ErrorIs(t, err, ErrUnknownKey)
	require.Empty(t, r.KeyIDs())
}

func TestSealNonceFailure(t *testing.T) {
	ring, err := NewKeyRing(testKey(1))
	require.NoError(t, err)
	ring.nonce = func([]byte) error { return errors.New("no entropy") }
	_, err = ring.Seal(nil, []byte("x"))
	require.ErrorContains(t, err, "no entropy")
}

// FuzzOpen opens arbitrary bytes with a ring of two keys: it must not
// panic, an error must wrap ErrNotSealed, ErrUnknownKey or ErrDecrypt,
// and nothing but the seeds sealed here may open.
func FuzzOpen(f *testing.F) {
	ring, err := NewKeyRing(testKey(1), testKey(2))
	require.NoError(f, err)
	aad := []byte("9f2c4e61b0d7a3854c1e9b2f6a0d8c3e")
	for _, p := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("session"), 40)} {
		s, err := ring.Seal(aad, p)
		require.NoError(f, err)
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{0xe5})
	f.Add([]byte{0xe5, 0x02, 0, 0, 0, 0})
	f.Add([]byte{0x87, 0x01, 0x64, 0x63, 0x62, 0x6f, 0x72, 0, 0, 0, 0, 0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		pt, err := ring.Open(aad, data)
		if err != nil {
			if !errors.Is(err, ErrNotSealed) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			require.Nil(t, pt)
			return
		}
		// Only a genuine seal opens: sealing again and opening round-trips.
		again, err := ring.Seal(aad, pt)
		require.NoError(t, err)
		pt2, err := ring.Open(aad, again)
		require.NoError(t, err)
		require.Equal(t, pt, pt2)
	})
}
