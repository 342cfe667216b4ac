package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/integration/mcproc"
)

// Keys of the encryption tests (64 hex characters = 32 bytes each).
const (
	encKeyOld = "6f6c64206b6579206f6c64206b6579206f6c64206b6579206f6c64206b657921"
	encKeyNew = "6e6577206b6579206e6577206b6579206e6577206b6579206e6577206b657921"
)

// Secrets the encryption tests store: none may show in memcached.
const (
	encUser   = "grace.hopper@example.com"
	encSecret = "cobol-4ever-secret-value"
)

// storedItems returns every item on every node of mc, read with a plain
// memcached client, by node and key. The keys are listed with
// "lru_crawler metadump hash", which walks the hash table ("metadump all"
// walks the LRUs and was seen to miss a fresh item).
func storedItems(t *testing.T, mc *mcproc.Cluster) map[string]map[string][]byte {
	t.Helper()
	out := map[string]map[string][]byte{}
	for _, n := range mc.Nodes {
		out[n.ID] = map[string][]byte{}
		for _, key := range metadumpKeys(t, n.Addr()) {
			it, err := n.Client().Get(key)
			if errors.Is(err, memcache.ErrCacheMiss) {
				continue // expired or deleted since the dump
			}
			require.NoError(t, err, "%s on %s", key, n.ID)
			out[n.ID][key] = it.Value
		}
	}
	return out
}

// metadumpKeys lists the keys of the node at addr.
func metadumpKeys(t *testing.T, addr string) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, "lru_crawler metadump hash\r\n")
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	var keys []string
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			return keys
		}
		require.True(t, strings.HasPrefix(line, "key="), "metadump: %q", line)
		field, _, _ := strings.Cut(line, " ")
		key, err := url.QueryUnescape(strings.TrimPrefix(field, "key="))
		require.NoError(t, err)
		keys = append(keys, key)
	}
}

// clearText returns the secrets found in clear in the items of mc, as
// "node key: secret".
func clearText(t *testing.T, mc *mcproc.Cluster, secrets ...string) []string {
	t.Helper()
	var found []string
	for node, items := range storedItems(t, mc) {
		for key, v := range items {
			for _, s := range secrets {
				if bytes.Contains(v, []byte(s)) {
					found = append(found, node+" "+key+": "+s)
				}
			}
		}
	}
	return found
}

// keyIDOf returns the key id (hex) of a ring of one hex key.
func keyIDOf(t *testing.T, hexKey string) string {
	t.Helper()
	ring, err := codec.ParseKeyRing(hexKey)
	require.NoError(t, err)
	return ring.KeyIDs()[0]
}

// sealedWith returns the key ids (hex) that seal the copies of session
// id on the nodes of mc, one per copy found.
func sealedWith(t *testing.T, mc *mcproc.Cluster, id string) []string {
	t.Helper()
	var ids []string
	for _, items := range storedItems(t, mc) {
		for key, v := range items {
			if key == id || key == "bak:"+id {
				require.True(t, codec.IsSealed(v), "%s in clear", key)
				ids = append(ids, hex.EncodeToString(v[2:6]))
			}
		}
	}
	require.NotEmpty(t, ids, "no copy of %s", id)
	return ids
}

func TestEncryptionAtRest(t *testing.T) {
	bin := buildApp(t)
	secrets := []string{encSecret, "secret_note", encUser, "grace.hopper"}

	t.Run("without encryption the secrets are in clear", func(t *testing.T) {
		// The control: the same requests without -encrypt-keys.
		mc := mcproc.NewCluster(t, 3)
		a := startApp(t, bin, mc, "A")
		c := newClient(t)
		c.ok(a, "POST", "/api/session?secret_note="+encSecret)
		c.ok(a, "POST", "/api/login?user="+url.QueryEscape(encUser))
		require.NotEmpty(t, clearText(t, mc, secrets...))
	})

	mc := mcproc.NewCluster(t, 3)
	a, logs := startAppWithLog(t, bin, mc, "A", "-encrypt-keys", encKeyOld)
	b := startApp(t, bin, mc, "B", "-encrypt-keys", encKeyOld)
	c := newClient(t)
	c.ok(a, "POST", "/api/session?secret_note="+encSecret)
	logged := c.ok(a, "POST", "/api/login?user="+url.QueryEscape(encUser))
	require.Equal(t, encUser, logged.User)
	c.ok(b, "POST", "/api/counter")
	id := c.cookie(a)
	got := c.ok(b, "GET", "/api/session")
	require.Equal(t, id, got.ID)
	require.Equal(t, encSecret, got.Attrs["secret_note"])
	require.Equal(t, 1, got.Count)
	require.True(t, appStats(t, a).Encrypted)
	require.Contains(t, logs.String(), "sessions encrypted at rest")
	require.Contains(t, logs.String(), "encrypting_key_id="+keyIDOf(t, encKeyOld))
	require.NotContains(t, logs.String(), encKeyOld, "a key never shows in the log")

	// Every item on every node, read with a plain client: no attribute
	// name or value, no user id; the copies are sealed with the key.
	require.Empty(t, clearText(t, mc, secrets...))
	for _, kid := range sealedWith(t, mc, id) {
		require.Equal(t, keyIDOf(t, encKeyOld), kid)
	}
	userKey := "user:" + hex.EncodeToString(sha256Sum(encUser))
	indexes := 0
	for _, items := range storedItems(t, mc) {
		if v, ok := items[userKey]; ok {
			indexes++
			require.True(t, codec.IsSealed(v), "the user index is sealed")
		}
	}
	require.Equal(t, 2, indexes, "the user index has two copies")

	// Restart A with the keys rotated (the new key first, the old one
	// second): the session still reads, and its next save is sealed with
	// the new key.
	require.NoError(t, a.Stop())
	a2 := startApp(t, bin, mc, "A2", "-encrypt-keys", encKeyNew+","+encKeyOld)
	got = c.ok(a2, "GET", "/api/session")
	require.Equal(t, id, got.ID, "the same session")
	require.Equal(t, encSecret, got.Attrs["secret_note"])
	require.Equal(t, encUser, got.User)
	require.Equal(t, 2, c.ok(a2, "POST", "/api/counter").Count)
	for _, kid := range sealedWith(t, mc, id) {
		require.Equal(t, keyIDOf(t, encKeyNew), kid, "re-sealed with the new key")
	}
	require.Empty(t, clearText(t, mc, secrets...))

	// B still has only the old key: the re-sealed session does not open
	// there (update every server's ring before sealing with a new key).
	r := withCookie(t, b, "GET", "/api/session", id) // not with the jar: keep its cookie
	require.Equal(t, 200, r.status, r.raw)
	require.NotEqual(t, id, r.body.ID, "not opened: no session")
	require.Empty(t, r.body.Attrs)
	require.Equal(t, uint64(1), appStats(t, b).Store.Undecryptable)

	// The old key removed: what the new key sealed still reads; a session
	// sealed with the old key only is a fresh session.
	oldOnly := newClient(t)
	oldOnly.ok(b, "POST", "/api/session?secret_note=sealed-with-old-key-only")
	oldID := oldOnly.cookie(b)
	require.NoError(t, a2.Stop())
	a3 := startApp(t, bin, mc, "A3", "-encrypt-keys", encKeyNew)
	got = c.ok(a3, "GET", "/api/session")
	require.Equal(t, id, got.ID)
	require.Equal(t, 2, got.Count)
	fresh := oldOnly.ok(a3, "GET", "/api/session")
	require.NotEqual(t, oldID, fresh.ID)
	require.Empty(t, fresh.Attrs)
	require.Equal(t, uint64(1), appStats(t, a3).Store.Undecryptable)

	// An app without a key cannot read any of it.
	plain := startApp(t, bin, mc, "P")
	r = withCookie(t, plain, "GET", "/api/session", id)
	require.Equal(t, 200, r.status, r.raw)
	require.NotEqual(t, id, r.body.ID)
	require.Equal(t, uint64(1), appStats(t, plain).Store.Undecryptable)
	require.False(t, appStats(t, plain).Encrypted)
}

// TestEncryptionTurnedOnOverLiveSessions turns encryption on with
// -encrypt-allow-plaintext: sessions stored in clear keep working and are
// sealed by their next save; without the flag they would be fresh ones.
func TestEncryptionTurnedOnOverLiveSessions(t *testing.T) {
	bin := buildApp(t)
	mc := mcproc.NewCluster(t, 3)
	a := startApp(t, bin, mc, "A")
	c := newClient(t)
	c.ok(a, "POST", "/api/session?secret_note="+encSecret)
	id := c.cookie(a)
	require.NotEmpty(t, clearText(t, mc, encSecret))
	require.NoError(t, a.Stop())

	strict := startApp(t, bin, mc, "S", "-encrypt-keys", encKeyNew)
	r := withCookie(t, strict, "GET", "/api/session", id)
	require.NotEqual(t, id, r.body.ID, "in clear: refused")
	require.Equal(t, uint64(1), appStats(t, strict).Store.Undecryptable)

	migrating := startApp(t, bin, mc, "M", "-encrypt-keys", encKeyNew, "-encrypt-allow-plaintext")
	require.Equal(t, encSecret, c.ok(migrating, "GET", "/api/session").Attrs["secret_note"])
	c.ok(migrating, "POST", "/api/counter")
	require.Empty(t, clearText(t, mc, encSecret), "sealed by its save")
	got := c.ok(strict, "GET", "/api/session")
	require.Equal(t, id, got.ID)
	require.Equal(t, encSecret, got.Attrs["secret_note"])
}

func TestEncryptionFlags(t *testing.T) {
	nodes := []string{"-nodes", "n1=127.0.0.1:1"}
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	good := file("good", "# sealing key first\n"+encKeyNew+"\n"+encKeyOld+", # the old one\n")
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"not hex", []string{"-encrypt-keys", strings.Repeat("zz", 32)}, "-encrypt-keys: codec: invalid encryption key: key 1 is not hexadecimal"},
		{"short", []string{"-encrypt-keys", encKeyNew[:62]}, "key 1 is 62 characters, want 64 hex characters (32 bytes)"},
		{"long second key", []string{"-encrypt-keys", encKeyNew + "," + encKeyOld + "00"}, "key 2 is 66 characters"},
		{"empty second key", []string{"-encrypt-keys", encKeyNew + ","}, "key 2 is 0 characters"},
		{"twice", []string{"-encrypt-keys", encKeyNew + "," + encKeyNew}, "key 2 is key 1 again"},
		{"plaintext without keys", []string{"-encrypt-allow-plaintext"}, "-encrypt-allow-plaintext needs -encrypt-keys"},
		{"both", []string{"-encrypt-keys", encKeyNew, "-encrypt-keys-file", good}, "exclude each other"},
		{"missing file", []string{"-encrypt-keys-file", filepath.Join(dir, "nope")}, "-encrypt-keys-file"},
		{"empty file", []string{"-encrypt-keys-file", file("empty", "# nothing\n\n")}, "no key in it"},
		{"bad key in file", []string{"-encrypt-keys-file", file("bad", encKeyNew+"\nxyz\n")}, "key 2 is 3 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(append(nodes, tc.args...), io.Discard)
			require.ErrorContains(t, err, tc.err)
			require.NotContains(t, err.Error(), encKeyNew[:20], "an error never shows a key")
			require.NotContains(t, err.Error(), encKeyOld[:20], "an error never shows a key")
		})
	}

	o, err := parseFlags(nodes, io.Discard)
	require.NoError(t, err)
	require.Nil(t, o.cfg.Encryption, "in clear without -encrypt-keys")
	o, err = parseFlags(append(nodes, "-encrypt-keys", " "+strings.ToUpper(encKeyNew)+" , "+encKeyOld), io.Discard)
	require.NoError(t, err)
	require.NotNil(t, o.cfg.Encryption)
	require.Equal(t, []string{keyIDOf(t, encKeyNew), keyIDOf(t, encKeyOld)}, o.keyIDs)
	o, err = parseFlags(append(nodes, "-encrypt-keys-file", good, "-encrypt-allow-plaintext"), io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{keyIDOf(t, encKeyNew), keyIDOf(t, encKeyOld)}, o.keyIDs)
	require.True(t, o.cfg.AllowPlaintext)
}

// sha256Sum returns the SHA-256 of s.
func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
