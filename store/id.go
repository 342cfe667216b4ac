package store

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// idBaseLen is the length of the random part of a session id: 128 bits as
// 32 lowercase hex characters.
const idBaseLen = 32

// newIDBase returns 32 lowercase hex characters from crypto/rand.
func newIDBase() string {
	var b [idBaseLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// makeID joins a random base and a node id into a session id.
func makeID(base, node string) string { return base + "-" + node }

// splitID parses a session id "<32 lowercase hex>-<node id>", splitting at
// the last '-'. It checks the length and alphabet of both parts but not
// whether the node is configured.
func splitID(id string) (base, node string, ok bool) {
	if len(id) > idBaseLen+1+16 {
		return "", "", false
	}
	i := strings.LastIndexByte(id, '-')
	if i != idBaseLen {
		return "", "", false
	}
	base, node = id[:i], id[i+1:]
	for j := 0; j < len(base); j++ {
		c := base[j]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", "", false
		}
	}
	if node == "" {
		return "", "", false
	}
	for j := 0; j < len(node); j++ {
		c := node[j]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return "", "", false
		}
	}
	return base, node, true
}
