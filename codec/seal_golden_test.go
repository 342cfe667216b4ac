package codec

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// sealedVector is the part of testdata/format/sealed.json this package
// checks (store/format_test.go writes and checks the whole file).
type sealedVector struct {
	Bin            string `json:"bin"`
	PlaintextBin   string `json:"plaintext_bin"`
	KeyHex         string `json:"key_hex"`
	KeyIDHex       string `json:"key_id_hex"`
	NonceHex       string `json:"nonce_hex"`
	AssociatedData string `json:"associated_data"`
	HeaderHex      string `json:"header_hex"`
}

// TestSealGoldenVector seals the plaintext of testdata/format/sealed.json
// with its key and nonce and gets exactly sealed.bin, and opens sealed.bin.
func TestSealGoldenVector(t *testing.T) {
	dir := filepath.Join("..", "testdata", "format")
	b, err := os.ReadFile(filepath.Join(dir, "sealed.json"))
	require.NoError(t, err)
	var v sealedVector
	require.NoError(t, json.Unmarshal(b, &v))
	want, err := os.ReadFile(filepath.Join(dir, v.Bin))
	require.NoError(t, err)
	plain, err := os.ReadFile(filepath.Join(dir, v.PlaintextBin))
	require.NoError(t, err)
	key, err := hex.DecodeString(v.KeyHex)
	require.NoError(t, err)
	nonce, err := hex.DecodeString(v.NonceHex)
	require.NoError(t, err)

	ring, err := ParseKeyRing(v.KeyHex)
	require.NoError(t, err)
	require.Equal(t, []string{v.KeyIDHex}, ring.KeyIDs())
	ring.nonce = func(b []byte) error { copy(b, nonce); return nil } // the test-only fixed nonce
	got, err := ring.Seal([]byte(v.AssociatedData), plain)
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(want), hex.EncodeToString(got))
	require.Equal(t, v.HeaderHex, hex.EncodeToString(got[:sealHeaderLen]))

	fresh, err := NewKeyRing(key)
	require.NoError(t, err)
	opened, err := fresh.Open([]byte(v.AssociatedData), want)
	require.NoError(t, err)
	require.Equal(t, plain, opened)
}
