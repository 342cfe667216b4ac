package codec

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of an encryption key: 32 bytes (AES-256).
const KeySize = 32

// Layout of a sealed value (docs/FORMAT.md, "Encryption at rest"):
//
//	magic (1) | sealed format (1) | key id (4) | nonce (12) | ciphertext | tag (16)
//
// The GCM additional data is the 18-byte header followed by the caller's
// associated data (for a session: the random part of its id).
const (
	sealMagic     = 0xE5 // no envelope (a CBOR array: 0x80-0x9f) and no JSON starts with it
	sealVersion   = 1    // AES-256-GCM, 96-bit random nonce, 128-bit tag
	keyIDSize     = 4
	nonceSize     = 12
	tagSize       = 16
	sealHeaderLen = 2 + keyIDSize + nonceSize
	// SealOverhead is how many bytes sealing adds to a value: the 18-byte
	// header and the 16-byte authentication tag.
	SealOverhead = sealHeaderLen + tagSize
)

// Sentinel errors of the key ring; check them with errors.Is.
var (
	// ErrInvalidKey reports an unusable key ring: no key, a key that is not
	// KeySize bytes (or not 64 hex characters for ParseKeyRing), or the same
	// key twice.
	ErrInvalidKey = errors.New("codec: invalid encryption key")
	// ErrNotSealed reports a value that does not start with the sealed
	// header: it was stored in clear (or by another program).
	ErrNotSealed = errors.New("codec: value is not sealed")
	// ErrUnknownKey reports a sealed value whose key id matches no key of
	// the ring: it was sealed with a key that has been removed.
	ErrUnknownKey = errors.New("codec: value sealed with a key that is not in the key ring")
	// ErrDecrypt reports a sealed value that does not open: it was changed,
	// truncated, sealed under other associated data (copied from another
	// session id), or is of an unknown sealed format.
	ErrDecrypt = errors.New("codec: sealed value does not open")
)

// Sealer encrypts and authenticates stored values (store.Config.Encryption).
// aad is associated data that is authenticated but not stored: a value
// sealed with one aad opens only with the same aad.
//
// Implementations must be safe for concurrent use. Open must return an
// error wrapping ErrNotSealed for a value stored in clear, so that a store
// can tell it from a value that fails to open.
type Sealer interface {
	// Seal returns plaintext encrypted and authenticated together with aad.
	Seal(aad, plaintext []byte) ([]byte, error)
	// Open returns the plaintext of a value Seal returned for the same aad.
	Open(aad, sealed []byte) ([]byte, error)
}

// KeyRing is the Sealer of the AES-256-GCM codec wrapper: it encrypts
// whole stored values with the first of its keys and opens values sealed
// with any of them, so that keys rotate without logging anyone out (put a
// new key first, keep the old one second until every value sealed with it
// has been rewritten or has expired, then remove it).
//
// Every Seal uses a fresh 96-bit random nonce, so two seals of the same
// value differ. A sealed value names its key by a key id (the first 4
// bytes of the SHA-256 of the key; not secret), and Open picks that key.
// With random nonces, one key should seal at most 2^32 values (NIST SP
// 800-38D): rotate the first key well before (at a thousand saves a
// second, 2^32 saves take 50 days).
//
// Create one with NewKeyRing or ParseKeyRing: the zero KeyRing has no key
// and refuses to seal. A KeyRing is immutable and safe for concurrent use.
type KeyRing struct {
	keys []ringKey
	// nonce fills a nonce; crypto/rand except in this package's tests.
	nonce func([]byte) error
}

// ringKey is one key of a KeyRing.
type ringKey struct {
	id   [keyIDSize]byte
	aead cipher.AEAD
}

// NewKeyRing returns a key ring of the given keys, each KeySize (32) bytes
// from a cryptographically secure source. The first key seals, every key
// opens. No key, a key of another length and a key given twice are errors
// wrapping ErrInvalidKey. The keys are copied.
func NewKeyRing(keys ...[]byte) (*KeyRing, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key", ErrInvalidKey)
	}
	r := &KeyRing{keys: make([]ringKey, 0, len(keys)), nonce: randomNonce}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("%w: key %d is %d bytes, want %d", ErrInvalidKey, i+1, len(k), KeySize)
		}
		id := keyID(k)
		for j, o := range r.keys {
			if o.id == id {
				if bytes.Equal(keys[j], k) {
					return nil, fmt.Errorf("%w: key %d is key %d again", ErrInvalidKey, i+1, j+1)
				}
				// Two different keys with the same 32-bit id: so unlikely
				// that it is worth refusing rather than trying both.
				return nil, fmt.Errorf("%w: keys %d and %d have the same key id %x; generate another key", ErrInvalidKey, j+1, i+1, id)
			}
		}
		block, err := aes.NewCipher(k) // copies the key schedule, not k
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %v", ErrInvalidKey, i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %v", ErrInvalidKey, i+1, err)
		}
		r.keys = append(r.keys, ringKey{id: id, aead: aead})
	}
	return r, nil
}

// ParseKeyRing returns the key ring of spec: keys as 64 hexadecimal
// characters (32 bytes) each, separated by commas, the sealing key first
// ("HEX,HEX..."); spaces around a key are ignored. A key that is not 64 hex
// characters, an empty key and a key given twice are errors wrapping
// ErrInvalidKey that name the key's position, never its value. Generate a
// key with, for example, "openssl rand -hex 32".
func ParseKeyRing(spec string) (*KeyRing, error) {
	parts := strings.Split(spec, ",")
	keys := make([][]byte, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if len(p) != 2*KeySize {
			return nil, fmt.Errorf("%w: key %d is %d characters, want %d hex characters (%d bytes)", ErrInvalidKey, i+1, len(p), 2*KeySize, KeySize)
		}
		k, err := hex.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d is not hexadecimal", ErrInvalidKey, i+1)
		}
		keys = append(keys, k)
	}
	return NewKeyRing(keys...)
}

// KeyIDs returns the key ids of the ring's keys in order, as 8 hex
// characters each: the first one seals. Key ids are not secret; they tell
// in logs which keys a process uses.
func (r *KeyRing) KeyIDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = hex.EncodeToString(k.id[:])
	}
	return ids
}

// Seal encrypts plaintext with the ring's first key and a fresh random
// nonce, authenticating it together with aad, and returns the sealed value:
// the header (magic byte 0xE5, sealed format 1, key id, nonce) followed by
// the ciphertext and its tag, SealOverhead bytes longer than plaintext.
func (r *KeyRing) Seal(aad, plaintext []byte) ([]byte, error) {
	if len(r.keys) == 0 {
		return nil, fmt.Errorf("%w: no key (use NewKeyRing)", ErrInvalidKey)
	}
	k := &r.keys[0]
	out := make([]byte, sealHeaderLen, sealHeaderLen+len(plaintext)+tagSize)
	out[0], out[1] = sealMagic, sealVersion
	copy(out[2:], k.id[:])
	nonce := out[2+keyIDSize : sealHeaderLen]
	fill := r.nonce
	if fill == nil {
		fill = randomNonce
	}
	if err := fill(nonce); err != nil {
		return nil, fmt.Errorf("codec: seal: nonce: %w", err)
	}
	return k.aead.Seal(out, nonce, plaintext, additionalData(out[:sealHeaderLen], aad)), nil
}

// Open returns the plaintext of sealed, a value Seal returned for the same
// aad with any key of the ring. It returns an error wrapping ErrNotSealed
// for a value without the sealed header (stored in clear), ErrUnknownKey
// for one sealed with a key the ring does not hold, and ErrDecrypt for one
// that was changed, truncated, sealed under another aad or in an unknown
// sealed format. It never panics on any input.
func (r *KeyRing) Open(aad, sealed []byte) ([]byte, error) {
	if !IsSealed(sealed) {
		return nil, ErrNotSealed
	}
	if len(sealed) < SealOverhead {
		return nil, fmt.Errorf("%w: %d bytes, at least %d", ErrDecrypt, len(sealed), SealOverhead)
	}
	if sealed[1] != sealVersion {
		return nil, fmt.Errorf("%w: sealed format %d, want %d", ErrDecrypt, sealed[1], sealVersion)
	}
	var id [keyIDSize]byte
	copy(id[:], sealed[2:])
	for i := range r.keys {
		if k := &r.keys[i]; k.id == id {
			header := sealed[:sealHeaderLen]
			pt, err := k.aead.Open(nil, header[2+keyIDSize:], sealed[sealHeaderLen:], additionalData(header, aad))
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
			}
			return pt, nil
		}
	}
	return nil, fmt.Errorf("%w: key id %x", ErrUnknownKey, id)
}

// IsSealed reports whether data starts like a value sealed by a KeyRing
// (its magic byte): a store uses it to tell a sealed value from a session
// stored in clear, which never starts with that byte.
func IsSealed(data []byte) bool {
	return len(data) > 0 && data[0] == sealMagic
}

// keyID is the id of key k in sealed values: the first 4 bytes of its
// SHA-256.
func keyID(k []byte) [keyIDSize]byte {
	sum := sha256.Sum256(k)
	var id [keyIDSize]byte
	copy(id[:], sum[:])
	return id
}

// additionalData is the GCM additional data of a sealed value: its header
// followed by the caller's associated data.
func additionalData(header, aad []byte) []byte {
	ad := make([]byte, 0, len(header)+len(aad))
	return append(append(ad, header...), aad...)
}

// randomNonce fills b from crypto/rand.
func randomNonce(b []byte) error {
	_, err := rand.Read(b)
	return err
}
