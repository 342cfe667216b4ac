package codec

import (
	"bytes"
	"errors"
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// mustMarshal encodes v with c or fails the test.
func mustMarshal(tb testing.TB, c Codec, v any) []byte {
	tb.Helper()
	b, err := c.Marshal(v)
	require.NoError(tb, err)
	return b
}

// sampleRecord returns a record whose attributes were encoded by c.
func sampleRecord(tb testing.TB, c Codec) *Record {
	tb.Helper()
	return &Record{
		Created:     time.Date(2025, 6, 1, 12, 30, 0, 123_000_000, time.UTC),
		Deadline:    time.Date(2025, 6, 2, 12, 30, 0, 0, time.UTC),
		IdleTimeout: 30 * time.Minute,
		Version:     7,
		Attrs: map[string][]byte{
			"user":    mustMarshal(tb, c, "ann"),
			"visits":  mustMarshal(tb, c, 12),
			"roles":   mustMarshal(tb, c, []string{"admin", "editor"}),
			"profile": mustMarshal(tb, c, profile{Name: "Ann", Age: 41}),
		},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, c := range codecs() {
		cet := time.FixedZone("CET", 3600)
		tests := []struct {
			name string
			in   *Record
			want *Record
		}{
			{"empty", &Record{}, &Record{Attrs: map[string][]byte{}}},
			{"sample", sampleRecord(t, c), sampleRecord(t, c)},
			{
				"truncated to milliseconds and UTC",
				&Record{
					Created:     time.Date(2025, 6, 1, 13, 30, 0, 123_456_789, cet),
					Deadline:    time.Date(2025, 6, 1, 14, 30, 0, 999_999, cet),
					IdleTimeout: 1500*time.Millisecond + 999*time.Microsecond,
					Version:     1<<64 - 1,
				},
				&Record{
					Created:     time.Date(2025, 6, 1, 12, 30, 0, 123_000_000, time.UTC),
					Deadline:    time.Date(2025, 6, 1, 13, 30, 0, 0, time.UTC),
					IdleTimeout: 1500 * time.Millisecond,
					Version:     1<<64 - 1,
					Attrs:       map[string][]byte{},
				},
			},
			{
				"before 1970",
				&Record{Created: time.Date(1969, 12, 31, 23, 59, 59, 500_000_000, time.UTC)},
				&Record{Created: time.Date(1969, 12, 31, 23, 59, 59, 500_000_000, time.UTC), Attrs: map[string][]byte{}},
			},
			{
				"nil and empty attribute values",
				&Record{Attrs: map[string][]byte{"nil": nil, "empty": {}}},
				&Record{Attrs: map[string][]byte{"nil": {}, "empty": {}}},
			},
		}
		for _, tt := range tests {
			t.Run(c.Name()+"/"+tt.name, func(t *testing.T) {
				data, err := EncodeRecord(c, tt.in)
				require.NoError(t, err)
				got, err := DecodeRecord(c, data)
				require.NoError(t, err)
				require.Equal(t, tt.want, got)
			})
		}
	}
}

func TestRecordAttrsDecode(t *testing.T) {
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			data, err := EncodeRecord(c, sampleRecord(t, c))
			require.NoError(t, err)
			got, err := DecodeRecord(c, data)
			require.NoError(t, err)
			var user string
			require.NoError(t, c.Unmarshal(got.Attrs["user"], &user))
			require.Equal(t, "ann", user)
			var visits int
			require.NoError(t, c.Unmarshal(got.Attrs["visits"], &visits))
			require.Equal(t, 12, visits)
			var p profile
			require.NoError(t, c.Unmarshal(got.Attrs["profile"], &p))
			require.Equal(t, profile{Name: "Ann", Age: 41}, p)
		})
	}
}

func TestEncodeRecordDeterministic(t *testing.T) {
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			a := sampleRecord(t, c)
			b := &Record{Created: a.Created, Deadline: a.Deadline, IdleTimeout: a.IdleTimeout, Version: a.Version,
				Attrs: map[string][]byte{}}
			names := []string{"roles", "profile", "visits", "user"}
			for _, n := range names {
				b.Attrs[n] = a.Attrs[n]
			}
			for i := 0; i < 100; i++ {
				a.Attrs[string(rune('a'+i%26))+string(rune('0'+i/26))] = []byte{byte(i)}
			}
			for i := 99; i >= 0; i-- {
				b.Attrs[string(rune('a'+i%26))+string(rune('0'+i/26))] = []byte{byte(i)}
			}
			want, err := EncodeRecord(c, a)
			require.NoError(t, err)
			for range 20 {
				got, err := EncodeRecord(c, b)
				require.NoError(t, err)
				require.Equal(t, want, got)
			}
			b.Version++
			got, err := EncodeRecord(c, b)
			require.NoError(t, err)
			require.NotEqual(t, want, got)
		})
	}
}

func TestEncodeRecordErrors(t *testing.T) {
	tests := []struct {
		name  string
		codec Codec
		rec   *Record
	}{
		{"nil codec", nil, &Record{}},
		{"nil record", NewCBOR(), nil},
		{"negative idle timeout", NewCBOR(), &Record{IdleTimeout: -time.Second}},
		{"invalid utf-8 attribute name", NewCBOR(), &Record{Attrs: map[string][]byte{"\xff": {}}}},
		{"too many attributes", NewCBOR(), &Record{Attrs: func() map[string][]byte {
			m := make(map[string][]byte, envMaxAttrs+1)
			for i := 0; i <= envMaxAttrs; i++ {
				m[strconv.Itoa(i)] = nil
			}
			return m
		}()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EncodeRecord(tt.codec, tt.rec)
			require.Error(t, err)
		})
	}
	_, err := DecodeRecord(nil, []byte{0x80})
	require.Error(t, err)
}

// envelopeBytes encodes env with the envelope mode, bypassing EncodeRecord's checks.
func envelopeBytes(tb testing.TB, env envelope) []byte {
	tb.Helper()
	b, err := envEnc.Marshal(&env)
	require.NoError(tb, err)
	return b
}

func TestDecodeRecordHostile(t *testing.T) {
	valid, err := EncodeRecord(NewCBOR(), sampleRecord(t, NewCBOR()))
	require.NoError(t, err)
	validJSON, err := EncodeRecord(NewJSON(), sampleRecord(t, NewJSON()))
	require.NoError(t, err)
	// head of a valid envelope without attributes: [1, "cbor", 0, 0, 0, 0, ...
	head := []byte{0x87, 0x01, 0x64, 'c', 'b', 'o', 'r', 0x00, 0x00, 0x00, 0x00}
	withAttrs := func(attrs ...byte) []byte { return append(append([]byte{}, head...), attrs...) }
	manyAttrs := func(n int) []byte {
		b := withAttrs(0xba, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		for i := 0; i < n; i++ {
			b = append(b, 0x64, byte(i>>21)&0x7f, byte(i>>14)&0x7f, byte(i>>7)&0x7f, byte(i)&0x7f, 0x40)
		}
		return b
	}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"nil", nil, ErrCorrupt},
		{"empty", []byte{}, ErrCorrupt},
		{"json envelope", []byte(`{"format":1,"codec":"cbor","attrs":{}}`), ErrCorrupt},
		{"json record bytes", bytes.ReplaceAll(validJSON, []byte("json"), []byte("jsox")), ErrCodecMismatch},
		{"text", []byte("hello, memcached"), ErrCorrupt},
		{"cbor attribute value", mustMarshal(t, NewCBOR(), map[string]int{"a": 1}), ErrCorrupt},
		{"format version 2", append([]byte{0x87, 0x02}, valid[2:]...), ErrFormat},
		{"format version 0", append([]byte{0x87, 0x00}, valid[2:]...), ErrFormat},
		{"format version 2 other shape", []byte{0x82, 0x02, 0xa0}, ErrFormat},
		{"format version 2^64-1", []byte{0x81, 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrFormat},
		{"format version as text", []byte{0x87, 0x61, '1', 0x64, 'c', 'b', 'o', 'r', 0x00, 0x00, 0x00, 0x00, 0xa0}, ErrCorrupt},
		{"array head only", []byte{0x87}, ErrCorrupt},
		{"negative format version", []byte{0x87, 0x20, 0x64, 'c', 'b', 'o', 'r', 0x00, 0x00, 0x00, 0x00, 0xa0}, ErrCorrupt},
		{"codec mismatch", validJSON, ErrCodecMismatch},
		{"codec name not text", []byte{0x87, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0xa0}, ErrCorrupt},
		{"trailing bytes", append(append([]byte{}, valid...), 0x00), ErrCorrupt},
		{"short array", []byte{0x86, 0x01, 0x64, 'c', 'b', 'o', 'r', 0x00, 0x00, 0x00, 0xa0}, ErrCorrupt},
		{"eight items", append([]byte{0x88}, append(withAttrs(0xa0)[1:], 0x00)...), ErrCorrupt},
		{"not an array", []byte{0xa1, 0x01, 0x01}, ErrCorrupt},
		{"indefinite array", append(append([]byte{0x9f}, withAttrs(0xa0)[1:]...), 0xff), ErrCorrupt},
		{"indefinite attrs map", withAttrs(0xbf, 0x61, 'a', 0x40, 0xff), ErrCorrupt},
		{"tagged envelope", append([]byte{0xc0}, valid...), ErrCorrupt},
		{"tagged attribute value", withAttrs(0xa1, 0x61, 'a', 0xd8, 0x18, 0x41, 0x00), ErrCorrupt},
		{"duplicate attribute names", withAttrs(0xa2, 0x61, 'a', 0x41, 0x01, 0x61, 'a', 0x41, 0x02), ErrCorrupt},
		{"null attribute value", withAttrs(0xa1, 0x61, 'a', 0xf6), ErrCorrupt},
		{"text attribute value", withAttrs(0xa1, 0x61, 'a', 0x61, 'x'), ErrCorrupt},
		{"non-text attribute name", withAttrs(0xa1, 0x01, 0x41, 0x00), ErrCorrupt},
		{"invalid utf-8 attribute name", withAttrs(0xa1, 0x61, 0xff, 0x41, 0x00), ErrCorrupt},
		{"nested attribute value", withAttrs(0xa1, 0x61, 'a', 0x81, 0x81, 0x81, 0x81, 0x00), ErrCorrupt},
		{"huge declared array length", []byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrCorrupt},
		{"huge declared attrs length", withAttrs(0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), ErrCorrupt},
		{"huge declared value length", withAttrs(0xa1, 0x61, 'a', 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), ErrCorrupt},
		{"too many attributes", manyAttrs(envMaxAttrs + 1), ErrCorrupt},
		{"negative idle timeout", []byte{0x87, 0x01, 0x64, 'c', 'b', 'o', 'r', 0x00, 0x00, 0x20, 0x00, 0xa0}, ErrCorrupt},
		{"idle timeout overflow", envelopeBytes(t, envelope{Format: 1, Codec: "cbor", Idle: 1 << 62}), ErrCorrupt},
		{"version as float", []byte{0x87, 0x01, 0x64, 'c', 'b', 'o', 'r', 0x00, 0x00, 0x00, 0xf9, 0x3c, 0x00, 0xa0}, ErrCorrupt},
		{"reserved additional info", []byte{0x87, 0x1c}, ErrCorrupt},
		{"break byte", []byte{0xff}, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec *Record
			var err error
			require.NotPanics(t, func() { rec, err = DecodeRecord(NewCBOR(), tt.data) })
			require.Nil(t, rec)
			require.ErrorIs(t, err, tt.want)
		})
	}
	// Sanity: the crafted head is a valid envelope.
	rec, err := DecodeRecord(NewCBOR(), withAttrs(0xa1, 0x61, 'a', 0x41, 0x01))
	require.NoError(t, err)
	require.Equal(t, &Record{Attrs: map[string][]byte{"a": {1}}}, rec)
	rec, err = DecodeRecord(NewCBOR(), manyAttrs(envMaxAttrs))
	require.NoError(t, err)
	require.Len(t, rec.Attrs, envMaxAttrs)
}

func TestDecodeRecordTruncated(t *testing.T) {
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			data, err := EncodeRecord(c, sampleRecord(t, c))
			require.NoError(t, err)
			for n := 0; n < len(data); n++ {
				_, err := DecodeRecord(c, data[:n])
				require.ErrorIs(t, err, ErrCorrupt, "prefix of %d bytes", n)
			}
		})
	}
}

func TestDecodeRecordRandomBytes(t *testing.T) {
	valid, err := EncodeRecord(NewCBOR(), sampleRecord(t, NewCBOR()))
	require.NoError(t, err)
	rng := rand.New(rand.NewSource(42))
	for i := 0; i < 4000; i++ {
		var data []byte
		switch i % 3 {
		case 0: // random bytes
			data = make([]byte, rng.Intn(96))
			rng.Read(data)
		case 1: // random bytes behind a plausible envelope head
			data = make([]byte, 2+rng.Intn(96))
			rng.Read(data)
			data[0], data[1] = 0x87, 0x01
		case 2: // a valid record with a few bytes changed
			data = append([]byte{}, valid...)
			for range 1 + rng.Intn(4) {
				data[rng.Intn(len(data))] = byte(rng.Intn(256))
			}
		}
		var rec *Record
		require.NotPanics(t, func() { rec, err = DecodeRecord(NewCBOR(), data) }, "input %x", data)
		if err != nil {
			require.Nil(t, rec)
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrFormat) || errors.Is(err, ErrCodecMismatch),
				"input %x: unexpected error %v", data, err)
		}
	}
}

// TestRecordUser checks the optional 8th envelope item: written only when
// a user is set (a record without one keeps its 7-item bytes), read back
// from both shapes, and refused when it is not a text string.
func TestRecordUser(t *testing.T) {
	c := NewCBOR()
	without := sampleRecord(t, c)
	b7, err := EncodeRecord(c, without)
	require.NoError(t, err)
	require.Equal(t, byte(0x87), b7[0], "no user: 7 items")

	with := sampleRecord(t, c)
	with.User = "ann@example.com"
	b8, err := EncodeRecord(c, with)
	require.NoError(t, err)
	require.Equal(t, byte(0x88), b8[0], "a user: 8 items")
	require.Equal(t, b7[1:], b8[1:len(b7)], "the first 7 items are unchanged")
	require.Equal(t, append([]byte{0x6f}, "ann@example.com"...), b8[len(b7):], "the user is a text string at the end")

	got, err := DecodeRecord(c, b8)
	require.NoError(t, err)
	require.Equal(t, with, got)
	got, err = DecodeRecord(c, b7)
	require.NoError(t, err)
	require.Empty(t, got.User)

	// Non-shortest array head of 8 items: read like 0x88.
	long := append([]byte{0x98, 0x08}, b8[1:]...)
	got, err = DecodeRecord(c, long)
	require.NoError(t, err)
	require.Equal(t, "ann@example.com", got.User)

	for name, data := range map[string][]byte{
		"user as bytes":   append(bytes.Clone(b7[:len(b7):len(b7)]), 0x41, 'a'),
		"nine items":      append(append([]byte{0x89}, b8[1:]...), 0x00),
		"invalid utf-8":   append(append([]byte{0x88}, b7[1:]...), 0x61, 0xff),
		"user then trash": append(bytes.Clone(b8), 0x00),
	} {
		if name == "user as bytes" {
			data[0] = 0x88
		}
		_, err := DecodeRecord(c, data)
		require.ErrorIs(t, err, ErrCorrupt, name)
	}

	bad := sampleRecord(t, c)
	bad.User = "\xff"
	_, err = EncodeRecord(c, bad)
	require.Error(t, err)
}
