package store_test

// The golden vector of a sealed value (Config.Encryption, docs/FORMAT.md
// §4.5): testdata/format/sealed.{json,bin}, the envelope of key-prefix.bin
// sealed with a fixed key and nonce. It is built here with crypto/aes and
// crypto/cipher directly, from the documented layout, not with
// codec.KeyRing: the tests below check KeyRing against it in both
// directions (codec's own test checks that KeyRing with that nonce gives
// exactly these bytes).

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/store"
)

// The fixed key and nonce of the sealed vector (never use a fixed nonce
// outside a test vector).
const (
	sealedKeyHex   = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	sealedNonceHex = "a0a1a2a3a4a5a6a7a8a9aaab"
	sealedOf       = "key-prefix" // the vector whose envelope is sealed
)

// sealedVector is the JSON description of testdata/format/sealed.bin.
type sealedVector struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Bin         string `json:"bin"`
	// PlaintextBin is the vector whose envelope is sealed.
	PlaintextBin string `json:"plaintext_bin"`
	KeyHex       string `json:"key_hex"`
	KeyIDHex     string `json:"key_id_hex"`
	NonceHex     string `json:"nonce_hex"`
	// AssociatedData is the random part of the session id (ASCII).
	AssociatedData string `json:"associated_data"`
	// HeaderHex is the 18-byte header: magic, sealed format, key id, nonce.
	HeaderHex string `json:"header_hex"`
	// AdditionalDataHex is the GCM additional data: header and associated data.
	AdditionalDataHex string `json:"additional_data_hex"`
	CiphertextHex     string `json:"ciphertext_hex"`
	TagHex            string `json:"tag_hex"`
	Memcached         struct {
		KeyPrefix   string `json:"key_prefix"`
		ID          string `json:"id"`
		Node        string `json:"node"`
		PrimaryKey  string `json:"primary_key"`
		BackupKey   string `json:"backup_key"`
		ClientFlags uint32 `json:"client_flags"`
	} `json:"memcached"`
}

// specGCM is AES-256-GCM with key, as the format specifies it.
func specGCM(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	aead, err := cipher.NewGCM(block)
	require.NoError(t, err)
	return aead
}

// specKeyID is the key id of key: the first 4 bytes of its SHA-256.
func specKeyID(key []byte) []byte {
	sum := sha256.Sum256(key)
	return sum[:4]
}

// specOpen opens a sealed value by the format's rules alone.
func specOpen(t testing.TB, key, aad, sealed []byte) ([]byte, error) {
	t.Helper()
	require.GreaterOrEqual(t, len(sealed), 34)
	require.Equal(t, byte(0xe5), sealed[0], "magic")
	require.Equal(t, byte(0x01), sealed[1], "sealed format")
	require.Equal(t, specKeyID(key), sealed[2:6], "key id")
	header := sealed[:18]
	return specGCM(t, key).Open(nil, header[6:18], sealed[18:], append(bytes.Clone(header), aad...))
}

// buildSealed returns sealed.json and sealed.bin.
func buildSealed(t testing.TB) ([]byte, []byte) {
	t.Helper()
	var def vectorDef
	for _, d := range vectorDefs() {
		if d.name == sealedOf {
			def = d
		}
	}
	require.Equal(t, sealedOf, def.name)
	_, plain := buildVector(t, def)
	key, err := hex.DecodeString(sealedKeyHex)
	require.NoError(t, err)
	nonce, err := hex.DecodeString(sealedNonceHex)
	require.NoError(t, err)
	aad := def.id[:32]

	header := append(append([]byte{0xe5, 0x01}, specKeyID(key)...), nonce...)
	ad := append(bytes.Clone(header), aad...)
	bin := specGCM(t, key).Seal(bytes.Clone(header), nonce, plain, ad)

	fst := formatStore(t, def.prefix)
	primary, backup, _ := fst.MemcachedKeys(def.id)
	v := sealedVector{
		Name: "sealed",
		Description: "The envelope of " + sealedOf + ".bin as a store with Config.Encryption stores it: " +
			"AES-256-GCM under key_hex (the ring's first key) with the nonce nonce_hex, the associated data " +
			"being the random part of the session id. Layout: magic 0xE5, sealed format 1, key id (the first " +
			"4 bytes of SHA-256 of the key), the 12-byte nonce, then the ciphertext and the 16-byte tag; the " +
			"GCM additional data is those 18 header bytes followed by the associated data. A real writer " +
			"draws a fresh random nonce for every value.",
		Bin: "sealed.bin", PlaintextBin: sealedOf + ".bin",
		KeyHex: sealedKeyHex, KeyIDHex: hex.EncodeToString(specKeyID(key)), NonceHex: sealedNonceHex,
		AssociatedData: aad, HeaderHex: hex.EncodeToString(header), AdditionalDataHex: hex.EncodeToString(ad),
		CiphertextHex: hex.EncodeToString(bin[18 : len(bin)-16]), TagHex: hex.EncodeToString(bin[len(bin)-16:]),
	}
	m := &v.Memcached
	m.KeyPrefix, m.ID, m.Node = def.prefix, def.id, nodeOf(def.id)
	m.PrimaryKey, m.BackupKey, m.ClientFlags = primary, backup, uint32(def.version)
	return marshalFile(t, v), bin
}

// loadSealed reads the sealed vector, its bytes and its plaintext from
// the files alone.
func loadSealed(t *testing.T) (sealedVector, []byte, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(formatDir, "sealed.json"))
	require.NoError(t, err)
	var v sealedVector
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&v))
	bin, err := os.ReadFile(filepath.Join(formatDir, v.Bin))
	require.NoError(t, err)
	plain, err := os.ReadFile(filepath.Join(formatDir, v.PlaintextBin))
	require.NoError(t, err)
	return v, bin, plain
}

// TestFormatSealed checks the sealed vector against the documented layout,
// and codec.KeyRing against the vector in both directions.
func TestFormatSealed(t *testing.T) {
	v, bin, plain := loadSealed(t)
	key, err := hex.DecodeString(v.KeyHex)
	require.NoError(t, err)
	require.Len(t, key, codec.KeySize)
	aad := []byte(v.AssociatedData)
	require.Equal(t, v.Memcached.ID[:32], v.AssociatedData, "the random part of the id")

	// The layout.
	require.Equal(t, v.KeyIDHex, hex.EncodeToString(specKeyID(key)))
	require.Equal(t, "e501"+v.KeyIDHex+v.NonceHex, v.HeaderHex)
	require.Equal(t, v.HeaderHex, hex.EncodeToString(bin[:18]))
	require.Equal(t, v.HeaderHex+hex.EncodeToString(aad), v.AdditionalDataHex)
	require.Equal(t, v.HeaderHex+v.CiphertextHex+v.TagHex, hex.EncodeToString(bin))
	require.Len(t, bin, len(plain)+codec.SealOverhead)
	got, err := specOpen(t, key, aad, bin)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	// KeyRing opens the vector, also as the second key of a ring.
	for _, spec := range []string{v.KeyHex, "ff" + v.KeyHex[2:] + "," + v.KeyHex} {
		ring, err := codec.ParseKeyRing(spec)
		require.NoError(t, err)
		got, err = ring.Open(aad, bin)
		require.NoError(t, err)
		require.Equal(t, plain, got)
	}
	ring, err := codec.ParseKeyRing(v.KeyHex)
	require.NoError(t, err)
	require.Equal(t, []string{v.KeyIDHex}, ring.KeyIDs())
	other := bytes.Clone(aad)
	other[31] ^= 0x01
	_, err = ring.Open(other, bin)
	require.ErrorIs(t, err, codec.ErrDecrypt, "another random part")
	without, err := codec.ParseKeyRing("ff" + v.KeyHex[2:])
	require.NoError(t, err)
	_, err = without.Open(aad, bin)
	require.ErrorIs(t, err, codec.ErrUnknownKey)

	// What KeyRing seals opens by the format's rules alone.
	sealed, err := ring.Seal(aad, plain)
	require.NoError(t, err)
	got, err = specOpen(t, key, aad, sealed)
	require.NoError(t, err)
	require.Equal(t, plain, got)
}

// TestFormatSealedOnMemcached plays a foreign writer of a sealed session:
// the golden bytes under the documented keys and flags load with the key,
// and the store's next save is sealed as documented.
func TestFormatSealedOnMemcached(t *testing.T) {
	v, bin, plain := loadSealed(t)
	key, err := hex.DecodeString(v.KeyHex)
	require.NoError(t, err)
	m := v.Memcached
	c := mcproc.NewCluster(t, 3)
	ctx := context.Background()
	ring, err := codec.NewKeyRing(key)
	require.NoError(t, err)
	st := newStore(t, c, func(cfg *store.Config) { cfg.KeyPrefix, cfg.Encryption = m.KeyPrefix, ring })
	primary, backup, ok := st.Placement(m.ID)
	require.True(t, ok)
	require.Equal(t, m.Node, primary)
	for _, w := range []struct{ node, key string }{{primary, m.PrimaryKey}, {backup, m.BackupKey}} {
		require.NoError(t, c.Node(w.node).Client().Set(&memcache.Item{Key: w.key, Value: bin, Flags: m.ClientFlags, Expiration: 600}))
	}
	want, err := codec.DecodeRecord(codec.NewCBOR(), plain)
	require.NoError(t, err)

	s, err := st.Load(ctx, m.ID)
	require.NoError(t, err)
	require.Equal(t, want.Version, s.Version())
	require.Equal(t, want.Created, s.Created())
	user, _, err := store.Get[string](s, "user")
	require.NoError(t, err)
	require.Equal(t, "ada", user)

	// The next save: version + 1, sealed for the same random part, to both keys.
	require.NoError(t, s.Set("n", 4))
	require.NoError(t, st.Save(ctx, s))
	for _, w := range []struct{ node, key string }{{primary, m.PrimaryKey}, {backup, m.BackupKey}} {
		it, err := get(t, c, w.node, w.key)
		require.NoError(t, err, w.key)
		require.Equal(t, uint32(want.Version+1), it.Flags)
		require.NotEqual(t, bin[6:18], it.Value[6:18], "a fresh nonce")
		env, err := specOpen(t, key, []byte(v.AssociatedData), it.Value)
		require.NoError(t, err, w.key)
		rec, err := codec.DecodeRecord(codec.NewCBOR(), env)
		require.NoError(t, err)
		require.Equal(t, want.Version+1, rec.Version)
	}

	// Without the key the session is not found.
	plainStore := newStore(t, c, func(cfg *store.Config) { cfg.KeyPrefix = m.KeyPrefix })
	_, err = plainStore.Load(ctx, m.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, uint64(1), plainStore.Stats().Undecryptable)
}
