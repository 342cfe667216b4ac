package store

import (
	"errors"
	"fmt"

	"github.com/mcsession/mcsession/codec"
)

// errUndecryptable marks a stored value that did not open
// (Config.Encryption), as opposed to one that opened but did not decode.
var errUndecryptable = errors.New("does not open")

// errSealedWithoutKey is the cause of errUndecryptable for a sealed value
// read by a store without Config.Encryption.
var errSealedWithoutKey = errors.New("the value is sealed (encrypted) but Config.Encryption is not set")

// sealSession seals the envelope of session id: the associated data is
// the id's random part, so that a relocation (which changes only the node
// suffix) keeps the value valid and a value copied under another id does
// not open.
func sealSession(s codec.Sealer, id string, envelope []byte) ([]byte, error) {
	base, _, ok := splitID(id)
	if !ok {
		return nil, fmt.Errorf("store: seal: malformed id %q", id)
	}
	return s.Seal([]byte(base), envelope)
}

// open returns the envelope or index value in stored, a value read from
// memcached whose associated data (Config.Encryption) is aad. Without
// Config.Encryption it is stored itself, unless it is sealed. An error
// wraps errUndecryptable.
func (st *Store) open(aad string, stored []byte) ([]byte, error) {
	if st.sealer == nil {
		if codec.IsSealed(stored) {
			return nil, fmt.Errorf("%w: %w", errUndecryptable, errSealedWithoutKey)
		}
		return stored, nil
	}
	plain, err := st.sealer.Open([]byte(aad), stored)
	if err == nil {
		return plain, nil
	}
	if st.allowPlain && errors.Is(err, codec.ErrNotSealed) {
		return stored, nil // written in clear before encryption was on
	}
	return nil, fmt.Errorf("%w: %w", errUndecryptable, err)
}

// record opens and decodes the stored value of session id. Nothing is
// counted or logged (see noteUnreadable).
func (st *Store) record(id string, stored []byte) (*codec.Record, error) {
	base, _, ok := splitID(id)
	if !ok {
		return nil, fmt.Errorf("%w: malformed id %q", codec.ErrCorrupt, id)
	}
	plain, err := st.open(base, stored)
	if err != nil {
		return nil, err
	}
	return codec.DecodeRecord(st.codec, plain)
}

// noteUnreadable counts and logs a stored value of key that record
// refused with err.
func (st *Store) noteUnreadable(key string, err error) {
	switch {
	case !errors.Is(err, errUndecryptable):
		st.stats.corrupt.Add(1)
		st.log.Error("corrupt session record in memcached: treated as not found", "key", key, "err", err)
	case errors.Is(err, codec.ErrNotSealed):
		st.stats.undecryptable.Add(1)
		st.log.Error("session record in clear refused (Config.Encryption without AllowPlaintext): treated as not found", "key", key)
	default:
		st.stats.undecryptable.Add(1)
		st.log.Error("session record in memcached does not open: treated as not found", "key", key, "err", err)
	}
}
