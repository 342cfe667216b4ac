package codec

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// FormatVersion is the envelope format version written by EncodeRecord.
// DecodeRecord accepts only this version.
const FormatVersion = 1

// Sentinel errors returned (wrapped) by DecodeRecord; check them with errors.Is.
var (
	// ErrCorrupt reports bytes that are not a valid envelope.
	ErrCorrupt = errors.New("codec: corrupt session record")
	// ErrFormat reports an envelope written with another format version.
	ErrFormat = errors.New("codec: unsupported envelope format version")
	// ErrCodecMismatch reports an envelope whose attributes were written by
	// a codec with another name.
	ErrCodecMismatch = errors.New("codec: record was written by another codec")
)

// Record is one session as stored in memcached (the envelope).
//
// On the wire, times and the idle timeout have millisecond precision;
// DecodeRecord returns times in UTC and the zero time.Time for a zero
// (unset) time.
type Record struct {
	// Created is the creation time (millisecond precision on the wire).
	Created time.Time
	// Deadline is the absolute deadline; the zero time means none.
	Deadline time.Time
	// IdleTimeout is the idle timeout (millisecond precision on the wire);
	// it must not be negative.
	IdleTimeout time.Duration
	// Version is the save counter, incremented by the store on each save.
	Version uint64
	// Attrs maps attribute names to value bytes encoded by the Codec.
	// A nil value is written as an empty byte string. DecodeRecord always
	// returns a non-nil map.
	Attrs map[string][]byte
	// User is the id of the user the session is linked to (see
	// store.Session.SetUser); "" for none. It is written as an optional 8th
	// envelope item only when set, so a record without a user has the same
	// 7-item bytes as before users existed. It must be valid UTF-8.
	User string
}

// envelope is the wire shape of a Record without a user: a CBOR array of
// 7 items.
type envelope struct {
	_        struct{} `cbor:",toarray"`
	Format   uint64
	Codec    string
	Created  int64 // Unix milliseconds, 0 = zero time
	Deadline int64 // Unix milliseconds, 0 = none
	Idle     uint64
	Version  uint64
	Attrs    map[string][]byte
}

// envelopeUser is the wire shape of a Record with a user: the 7 items of
// envelope and the user id as an 8th, a text string.
type envelopeUser struct {
	_        struct{} `cbor:",toarray"`
	Format   uint64
	Codec    string
	Created  int64
	Deadline int64
	Idle     uint64
	Version  uint64
	Attrs    map[string][]byte
	User     string
}

// Envelope decoding limits.
const (
	envMaxAttrs        = 65536
	envMaxNestedLevels = 4  // array > map > byte string; 4 is the library minimum
	envMaxArrayItems   = 16 // the envelope array has 7 items; 16 is the library minimum
)

// envEnc and envDec are the CBOR modes of the envelope. They are built once
// at package initialisation from constant options and are immutable and safe
// for concurrent use afterwards, so they are not mutable package state.
var envEnc, envDec = mustEnvelopeModes()

// mustEnvelopeModes builds the envelope modes. It panics only if the
// constant options are invalid, which is a programmer error.
func mustEnvelopeModes() (cbor.EncMode, cbor.DecMode) {
	encOpts := cbor.CoreDetEncOptions()
	encOpts.NilContainers = cbor.NilContainerAsEmpty
	encOpts.TagsMd = cbor.TagsForbidden
	enc, err := encOpts.EncMode()
	if err != nil {
		panic("codec: invalid envelope encoding options: " + err.Error())
	}
	dec, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  envMaxNestedLevels,
		MaxArrayElements: envMaxArrayItems,
		MaxMapPairs:      envMaxAttrs,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic("codec: invalid envelope decoding options: " + err.Error())
	}
	return enc, dec
}

// maxIdleMillis is the largest idle timeout in milliseconds that fits a
// time.Duration.
const maxIdleMillis = math.MaxInt64 / int64(time.Millisecond)

// EncodeRecord encodes r with the envelope format, FormatVersion, and the
// name of c. The envelope is deterministic CBOR (attribute names sorted), so
// equal records give equal bytes. Times and the idle timeout are truncated to
// milliseconds; a zero Created or Deadline is written as 0 (so the Unix
// epoch itself reads back as the zero time). The attribute values in r.Attrs
// are stored as they are: they should have been produced by c. A nil record,
// a negative idle timeout, more than 65536 attributes or an attribute name
// that is not valid UTF-8 is an error.
func EncodeRecord(c Codec, r *Record) ([]byte, error) {
	if c == nil {
		return nil, errors.New("codec: encode record: nil Codec")
	}
	if r == nil {
		return nil, errors.New("codec: encode record: nil Record")
	}
	if r.IdleTimeout < 0 {
		return nil, fmt.Errorf("codec: encode record: negative idle timeout %v", r.IdleTimeout)
	}
	// Refuse what DecodeRecord would reject, so a saved session stays readable.
	if len(r.Attrs) > envMaxAttrs {
		return nil, fmt.Errorf("codec: encode record: %d attributes, at most %d", len(r.Attrs), envMaxAttrs)
	}
	for name := range r.Attrs {
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("codec: encode record: attribute name %q is not valid UTF-8", name)
		}
	}
	if !utf8.ValidString(r.User) {
		return nil, fmt.Errorf("codec: encode record: user %q is not valid UTF-8", r.User)
	}
	env := envelope{
		Format:   FormatVersion,
		Codec:    c.Name(),
		Created:  unixMilli(r.Created),
		Deadline: unixMilli(r.Deadline),
		Idle:     uint64(r.IdleTimeout.Milliseconds()),
		Version:  r.Version,
		Attrs:    r.Attrs,
	}
	var v any = &env
	if r.User != "" {
		v = &envelopeUser{Format: env.Format, Codec: env.Codec, Created: env.Created, Deadline: env.Deadline,
			Idle: env.Idle, Version: env.Version, Attrs: env.Attrs, User: r.User}
	}
	b, err := envEnc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("codec: encode record: %w", err)
	}
	return b, nil
}

// DecodeRecord decodes data written by EncodeRecord with the same codec.
// It does not keep data; the returned attribute values may share one
// copy of it (so one value kept alive keeps that copy alive).
//
// Malformed, truncated, hostile or foreign bytes return an error wrapping
// ErrCorrupt; DecodeRecord never panics on any input. An envelope of another
// format version returns an error wrapping ErrFormat, and one written with a
// codec whose name is not c.Name() an error wrapping ErrCodecMismatch.
// Duplicate attribute names, more than 65536 attributes, null attribute
// values, indefinite lengths, tags and trailing bytes are rejected as corrupt.
// Both shapes are read: the 7-item envelope, and the 8-item envelope whose
// last item is the user id (a text string).
func DecodeRecord(c Codec, data []byte) (*Record, error) {
	if c == nil {
		return nil, errors.New("codec: decode record: nil Codec")
	}
	// Check the format version before the shape, so that a future format
	// with another shape reports ErrFormat rather than ErrCorrupt.
	if v, ok := peekFormat(data); ok && v != FormatVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrFormat, v, FormatVersion)
	}
	env, user, ok := decodeEnvelopeFast(data)
	if !ok {
		var err error
		if env, user, err = decodeEnvelope(data); err != nil {
			return nil, err
		}
	}
	if env.Format != FormatVersion { // unreachable after peekFormat; kept as a guard
		return nil, fmt.Errorf("%w: version %d, want %d", ErrFormat, env.Format, FormatVersion)
	}
	if name := c.Name(); env.Codec != name {
		return nil, fmt.Errorf("%w: written by %q, decoding with %q", ErrCodecMismatch, env.Codec, name)
	}
	if env.Idle > uint64(maxIdleMillis) {
		return nil, fmt.Errorf("%w: idle timeout %d ms out of range", ErrCorrupt, env.Idle)
	}
	if env.Attrs == nil {
		env.Attrs = map[string][]byte{}
	}
	for name, v := range env.Attrs {
		if v == nil { // CBOR null or undefined; an empty byte string decodes as []byte{}
			return nil, fmt.Errorf("%w: attribute %q is not a byte string", ErrCorrupt, name)
		}
	}
	return &Record{
		Created:     fromUnixMilli(env.Created),
		Deadline:    fromUnixMilli(env.Deadline),
		IdleTimeout: time.Duration(env.Idle) * time.Millisecond,
		Version:     env.Version,
		Attrs:       env.Attrs,
		User:        user,
	}, nil
}

// decodeEnvelope decodes an envelope with the CBOR library (see
// decodeEnvelopeFast for the usual case).
func decodeEnvelope(data []byte) (envelope, string, error) {
	var env envelope
	var user string
	if n, ok := arrayLen(data); ok && n == 8 { // with a user
		var eu envelopeUser
		if err := envDec.Unmarshal(data, &eu); err != nil {
			return env, "", fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		env = envelope{Format: eu.Format, Codec: eu.Codec, Created: eu.Created, Deadline: eu.Deadline,
			Idle: eu.Idle, Version: eu.Version, Attrs: eu.Attrs}
		user = eu.User
	} else if err := envDec.Unmarshal(data, &env); err != nil {
		return env, "", fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return env, user, nil
}

// CBOR major types the envelope uses.
const (
	majorUint  = 0
	majorNeg   = 1
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
)

// decodeEnvelopeFast decodes the envelope EncodeRecord writes without the
// CBOR library's reflection: a definite 7- or 8-item array of the item
// types of envelope, every head of the shortest form, valid UTF-8 text,
// no duplicate attribute name and nothing after the array. It returns
// false for anything else, which decodeEnvelope then decodes (or
// rejects): so every envelope it accepts, the library accepts with the
// same result (FuzzDecodeRecord checks that). The attribute names (and
// the user) share one string, and the values one copy of data, rather
// than one allocation each.
func decodeEnvelopeFast(data []byte) (env envelope, user string, ok bool) {
	d := fastDecoder{data: data}
	n, ok := d.head(majorArray)
	if !ok || n != 7 && n != 8 {
		return env, "", false
	}
	if env.Format, ok = d.head(majorUint); !ok {
		return env, "", false
	}
	codecName, ok := d.text()
	if !ok {
		return env, "", false
	}
	if env.Created, ok = d.int64(); !ok {
		return env, "", false
	}
	if env.Deadline, ok = d.int64(); !ok {
		return env, "", false
	}
	if env.Idle, ok = d.head(majorUint); !ok {
		return env, "", false
	}
	if env.Version, ok = d.head(majorUint); !ok {
		return env, "", false
	}
	pairs, ok := d.head(majorMap)
	if !ok || pairs > envMaxAttrs {
		return env, "", false
	}
	type span struct{ k0, k1, v0, v1 int }
	var spansBuf [16]span
	spans := spansBuf[:0]
	for range pairs {
		var sp span
		if sp.k0, sp.k1, ok = d.textSpan(); !ok {
			return env, "", false
		}
		if sp.v0, sp.v1, ok = d.bytesSpan(); !ok {
			return env, "", false
		}
		spans = append(spans, sp)
	}
	var userSpan [2]int
	if n == 8 {
		if userSpan[0], userSpan[1], ok = d.textSpan(); !ok {
			return env, "", false
		}
	}
	if d.pos != len(data) {
		return env, "", false
	}
	// One string holds the names (and the user), one copy of data the values.
	var namesBuf [256]byte
	names := namesBuf[:0]
	for _, sp := range spans {
		names = append(names, data[sp.k0:sp.k1]...)
	}
	names = append(names, data[userSpan[0]:userSpan[1]]...)
	str, raw := string(names), append([]byte(nil), data...)
	env.Codec = codecName
	env.Attrs = make(map[string][]byte, len(spans))
	at := 0
	for _, sp := range spans {
		name := str[at : at+sp.k1-sp.k0]
		at += sp.k1 - sp.k0
		if _, dup := env.Attrs[name]; dup {
			return env, "", false
		}
		env.Attrs[name] = raw[sp.v0:sp.v1:sp.v1]
	}
	return env, str[at:], true
}

// fastDecoder reads CBOR items of data from pos (see decodeEnvelopeFast).
type fastDecoder struct {
	data []byte
	pos  int
}

// head reads a head of the given major type in its shortest form and
// returns its argument.
func (d *fastDecoder) head(major byte) (uint64, bool) {
	if d.pos >= len(d.data) || d.data[d.pos]>>5 != major {
		return 0, false
	}
	info := d.data[d.pos] & 0x1f
	if info < 24 {
		d.pos++
		return uint64(info), true
	}
	if info > 27 {
		return 0, false // reserved, or an indefinite length
	}
	size := 1 << (info - 24)
	if len(d.data)-d.pos-1 < size {
		return 0, false
	}
	var v uint64
	for _, b := range d.data[d.pos+1 : d.pos+1+size] {
		v = v<<8 | uint64(b)
	}
	// The shortest form only: a longer one goes to the library.
	if least := [4]uint64{24, 1 << 8, 1 << 16, 1 << 32}[info-24]; v < least {
		return 0, false
	}
	d.pos += 1 + size
	return v, true
}

// int64 reads an unsigned or negative integer that fits an int64.
func (d *fastDecoder) int64() (int64, bool) {
	if d.pos < len(d.data) && d.data[d.pos]>>5 == majorNeg {
		v, ok := d.head(majorNeg)
		if !ok || v > math.MaxInt64 {
			return 0, false
		}
		return -1 - int64(v), true
	}
	v, ok := d.head(majorUint)
	if !ok || v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

// span reads a definite string head of the given major type and returns
// the bounds of its content.
func (d *fastDecoder) span(major byte) (int, int, bool) {
	n, ok := d.head(major)
	if !ok || n > uint64(len(d.data)-d.pos) {
		return 0, 0, false
	}
	start := d.pos
	d.pos += int(n)
	return start, d.pos, true
}

// textSpan reads a text string of valid UTF-8 and returns its bounds.
func (d *fastDecoder) textSpan() (int, int, bool) {
	start, end, ok := d.span(majorText)
	if !ok || !utf8.Valid(d.data[start:end]) {
		return 0, 0, false
	}
	return start, end, true
}

// text reads a text string of valid UTF-8.
func (d *fastDecoder) text() (string, bool) {
	start, end, ok := d.textSpan()
	if !ok {
		return "", false
	}
	return string(d.data[start:end]), true
}

// bytesSpan reads a byte string and returns its bounds.
func (d *fastDecoder) bytesSpan() (int, int, bool) { return d.span(majorBytes) }

// unixMilli returns t as Unix milliseconds, or 0 for the zero time.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromUnixMilli is the inverse of unixMilli; it returns UTC times.
func fromUnixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// peekFormat returns the first item of data if data starts with a CBOR
// array head followed by an unsigned integer. It reads at most 18 bytes.
func peekFormat(data []byte) (uint64, bool) {
	n, ok := headLen(data, majorArray)
	if !ok {
		return 0, false
	}
	data = data[n:]
	m, ok := headLen(data, majorUint)
	if !ok {
		return 0, false
	}
	var v uint64
	switch info := data[0] & 0x1f; {
	case info < 24:
		v = uint64(info)
	default:
		for _, b := range data[1:m] {
			v = v<<8 | uint64(b)
		}
	}
	return v, true
}

// arrayLen returns the number of items of the CBOR array data starts
// with (a definite length, in any head size).
func arrayLen(data []byte) (uint64, bool) {
	n, ok := headLen(data, majorArray)
	if !ok || data[0]&0x1f == 31 {
		return 0, false
	}
	if n == 1 {
		return uint64(data[0] & 0x1f), true
	}
	var v uint64
	for _, b := range data[1:n] {
		v = v<<8 | uint64(b)
	}
	return v, true
}

// headLen returns the length of the CBOR head at the start of data if it
// has the given major type and is complete. Indefinite lengths (info 31)
// count as a one-byte head; reserved values (28-30) are rejected.
func headLen(data []byte, major byte) (int, bool) {
	if len(data) == 0 || data[0]>>5 != major {
		return 0, false
	}
	var n int
	switch info := data[0] & 0x1f; {
	case info < 24, info == 31:
		n = 1
	case info <= 27:
		n = 1 + 1<<(info-24)
	default:
		return 0, false
	}
	if len(data) < n {
		return 0, false
	}
	return n, true
}
