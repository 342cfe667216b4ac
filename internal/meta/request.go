// Package meta speaks memcached's meta protocol (mg, ms, md, mn; memcached
// 1.6 and later) over pooled, pipelined connections: a batch of requests
// goes out in one write and every answer is read back in order.
//
// It knows nothing of sessions, breakers or HTTP. It never retries a
// command whose outcome is unknown: once any byte of a batch may have
// reached the server, a failure is reported to the caller as it is.
package meta

import (
	"errors"
	"fmt"
	"strconv"
)

// Command is the meta command of a Request.
type Command uint8

const (
	// Get is "mg": read an item (value, CAS, TTL, client flags) and
	// optionally refresh its TTL.
	Get Command = iota + 1
	// Set is "ms": store an item in one of the SetMode modes.
	Set
	// Delete is "md": remove an item, optionally only when its CAS matches.
	Delete
	// NoOp is "mn": answers MN; it ends a pipeline of quiet requests.
	NoOp
)

// SetMode is the storage mode of a Set request ("M" flag).
type SetMode uint8

const (
	// ModeSet stores unconditionally (or, with CAS, compare-and-set).
	ModeSet SetMode = iota
	// ModeAdd stores only when the key is absent ("ME"); NS otherwise.
	ModeAdd
	// ModeReplace stores only when the key exists ("MR"); NS otherwise.
	ModeReplace
)

// MaxKeyLen is memcached's limit on key length.
const MaxKeyLen = 250

// Request is one meta command. The zero values of the optional fields send
// no flag.
type Request struct {
	// Command is the meta command; required.
	Command Command
	// Key is the item key: 1-250 bytes, no spaces or control characters.
	// Unused by NoOp.
	Key string
	// Value is the item data of a Set; any bytes, including "\r\n".
	Value []byte
	// Mode is the storage mode of a Set. Default ModeSet.
	Mode SetMode
	// CAS, when non-zero, makes a Set or Delete conditional on the item's
	// CAS id ("C" flag): EX when it differs, NF when the item is missing.
	CAS uint64
	// TTL is the exptime of a Set ("T" flag, always sent for Set: 0 means
	// never expires, a negative value expires at once, over 30 days is a
	// Unix time). For a Get it is sent only with Touch.
	TTL int32
	// Touch makes a Get refresh the item's TTL to TTL. Its ReturnTTL gives
	// the TTL from before the touch.
	Touch bool
	// Flags are the client flags stored by a Set ("F" flag; 32 bits).
	Flags uint32
	// Value, CAS, TTL and Flags of a Get, and CAS of a Set, are returned
	// only when asked for.
	ReturnValue, ReturnCAS, ReturnTTL, ReturnFlags bool
	// Quiet suppresses the success answer ("q" flag): HD for Set and
	// Delete, EN for Get. Failures are always answered. The batch must end
	// with a request that is not quiet, and a NoOp cannot be quiet (Do
	// checks both).
	Quiet bool
}

// ErrBadRequest is returned by Do, before anything is sent, for a request
// that cannot be encoded: a bad key, an unknown command, a quiet NoOp, or
// a batch whose last request is quiet.
var ErrBadRequest = errors.New("meta: bad request")

// validKey reports whether k can be sent as a key in the text protocol.
func validKey(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			return false
		}
	}
	return true
}

// check validates r before anything of its batch is written.
func (r *Request) check() error {
	switch r.Command {
	case Get, Set, Delete:
		if !validKey(r.Key) {
			return fmt.Errorf("%w: key %q must be 1-%d bytes without spaces or control characters", ErrBadRequest, r.Key, MaxKeyLen)
		}
	case NoOp:
		// mn takes no flags and is always answered: a "quiet" one would
		// be taken as silent and its MN matched to a later request.
		if r.Quiet {
			return fmt.Errorf("%w: mn cannot be quiet", ErrBadRequest)
		}
	default:
		return fmt.Errorf("%w: unknown command %d", ErrBadRequest, r.Command)
	}
	if r.Command == Set && r.Mode > ModeReplace {
		return fmt.Errorf("%w: unknown set mode %d", ErrBadRequest, r.Mode)
	}
	return nil
}

// appendTo appends the wire form of r to b. opaque, when >= 0, is sent as
// the "O" flag so that the answer of a quiet request can be recognised.
func (r *Request) appendTo(b []byte, opaque int) []byte {
	switch r.Command {
	case Get:
		b = append(b, "mg "...)
		b = append(b, r.Key...)
		if r.ReturnValue {
			b = append(b, " v"...)
		}
		if r.ReturnCAS {
			b = append(b, " c"...)
		}
		if r.ReturnTTL {
			b = append(b, " t"...)
		}
		if r.ReturnFlags {
			b = append(b, " f"...)
		}
		if r.Touch {
			b = appendFlag(b, 'T', int64(r.TTL))
		}
	case Set:
		b = append(b, "ms "...)
		b = append(b, r.Key...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(len(r.Value)), 10)
		switch r.Mode {
		case ModeAdd:
			b = append(b, " ME"...)
		case ModeReplace:
			b = append(b, " MR"...)
		}
		if r.CAS != 0 {
			b = append(b, " C"...)
			b = strconv.AppendUint(b, r.CAS, 10)
		}
		b = appendFlag(b, 'T', int64(r.TTL))
		if r.Flags != 0 {
			b = appendFlag(b, 'F', int64(r.Flags))
		}
		if r.ReturnCAS {
			b = append(b, " c"...)
		}
	case Delete:
		b = append(b, "md "...)
		b = append(b, r.Key...)
		if r.CAS != 0 {
			b = append(b, " C"...)
			b = strconv.AppendUint(b, r.CAS, 10)
		}
	case NoOp:
		return append(b, "mn\r\n"...)
	}
	if r.Quiet {
		b = append(b, " q"...)
	}
	if opaque >= 0 {
		b = appendFlag(b, 'O', int64(opaque))
	}
	b = append(b, "\r\n"...)
	if r.Command == Set {
		b = append(b, r.Value...)
		b = append(b, "\r\n"...)
	}
	return b
}

func appendFlag(b []byte, flag byte, v int64) []byte {
	b = append(b, ' ', flag)
	return strconv.AppendInt(b, v, 10)
}
