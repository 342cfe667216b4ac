package codec

import (
	"bytes"
	"math"
	"math/big"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// profile is a small struct attribute used by the tests and benchmarks.
type profile struct {
	Name  string
	Email string
	Age   int
	Admin bool
	Tags  []string
}

// codecs returns one value of each codec in this package.
func codecs() []Codec { return []Codec{NewCBOR(), NewJSON()} }

func TestNames(t *testing.T) {
	require.Equal(t, "cbor", NewCBOR().Name())
	require.Equal(t, "json", NewJSON().Name())
}

func TestRoundTrip(t *testing.T) {
	when := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("X", 3600))
	tests := []struct {
		name string
		in   any
	}{
		{"int", 42},
		{"negative int", -7},
		{"max int64", int64(math.MaxInt64)},
		{"uint64", uint64(math.MaxUint64)},
		{"string", "héllo, wörld"},
		{"empty string", ""},
		{"bool", true},
		{"float", 3.25},
		{"string slice", []string{"admin", "editor"}},
		{"struct", profile{Name: "Ann", Email: "ann@example.com", Age: 41, Admin: true, Tags: []string{"a", "b"}}},
		{"map", map[string]int{"a": 1, "b": -2, "c": 3}},
		{"bytes", []byte{0, 1, 2, 255}},
		{"time", when},
		{"utc time", when.UTC()},
		{"zero time", time.Time{}},
	}
	for _, c := range codecs() {
		for _, tt := range tests {
			t.Run(c.Name()+"/"+tt.name, func(t *testing.T) {
				data, err := c.Marshal(tt.in)
				require.NoError(t, err)
				ptr := reflect.New(reflect.TypeOf(tt.in))
				require.NoError(t, c.Unmarshal(data, ptr.Interface()))
				got := ptr.Elem().Interface()
				if want, ok := tt.in.(time.Time); ok {
					require.True(t, want.Equal(got.(time.Time)), "got %v, want %v", got, want)
					return
				}
				require.Equal(t, tt.in, got)
			})
		}
	}
}

func TestDecodeIntoAny(t *testing.T) {
	huge, _ := new(big.Int).SetString("18446744073709551615", 10)
	tests := []struct {
		name  string
		codec Codec
		in    any
		want  any
	}{
		{"cbor small int", NewCBOR(), 42, int64(42)},
		{"cbor negative int", NewCBOR(), -42, int64(-42)},
		{"cbor uint64 beyond int64", NewCBOR(), uint64(math.MaxUint64), *huge},
		{"cbor string", NewCBOR(), "x", "x"},
		{"cbor map", NewCBOR(), map[string]int{"a": 1}, map[string]any{"a": int64(1)}},
		{"cbor struct", NewCBOR(), profile{Name: "Bo", Tags: []string{"t"}},
			map[string]any{"Name": "Bo", "Email": "", "Age": int64(0), "Admin": false, "Tags": []any{"t"}}},
		{"cbor nested", NewCBOR(), map[string]any{"m": map[string]int{"x": 2}},
			map[string]any{"m": map[string]any{"x": int64(2)}}},
		{"json int", NewJSON(), 42, float64(42)},
		{"json map", NewJSON(), map[string]int{"a": 1}, map[string]any{"a": float64(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := tt.codec.Marshal(tt.in)
			require.NoError(t, err)
			var got any
			require.NoError(t, tt.codec.Unmarshal(data, &got))
			require.Equal(t, tt.want, got)
		})
	}
}

func TestMarshalDeterministic(t *testing.T) {
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = strings.Repeat("k", i%7+1) + string(rune('a'+i%26)) + string(rune('A'+i/26))
	}
	forward := make(map[string]int, len(keys))
	for i, k := range keys {
		forward[k] = i
	}
	backward := make(map[string]int, len(keys))
	for i := len(keys) - 1; i >= 0; i-- {
		backward[keys[i]] = i
	}
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			a, err := c.Marshal(forward)
			require.NoError(t, err)
			for range 20 {
				b, err := c.Marshal(backward)
				require.NoError(t, err)
				require.Equal(t, a, b)
			}
			nestedA, err := c.Marshal(map[string]any{"x": forward, "y": []any{backward}})
			require.NoError(t, err)
			nestedB, err := c.Marshal(map[string]any{"y": []any{forward}, "x": backward})
			require.NoError(t, err)
			require.Equal(t, nestedA, nestedB)
		})
	}
}

// nested returns n nested one-element arrays around 0.
func nested(c Codec, n int) []byte {
	if c.Name() == "json" {
		return []byte(strings.Repeat("[", n) + "0" + strings.Repeat("]", n))
	}
	return append(bytes.Repeat([]byte{0x81}, n), 0x00)
}

func TestUnmarshalHostile(t *testing.T) {
	// 70000 zero elements behind a correct 4-byte array length: well formed,
	// but above MaxArrayElements.
	tooLong := append([]byte{0x9a, 0x00, 0x01, 0x11, 0x70}, make([]byte, 70000)...)
	tests := []struct {
		name  string
		codec Codec
		data  []byte
	}{
		{"cbor nil", NewCBOR(), nil},
		{"cbor empty", NewCBOR(), []byte{}},
		{"cbor deep nesting", NewCBOR(), nested(NewCBOR(), 1000)},
		{"cbor nesting just above limit", NewCBOR(), nested(NewCBOR(), cborMaxNestedLevels+1)},
		{"cbor huge array length", NewCBOR(), []byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}},
		{"cbor huge map length", NewCBOR(), []byte{0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x61, 0x61, 0x01}},
		{"cbor huge byte string length", NewCBOR(), []byte{0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}},
		{"cbor too many array elements", NewCBOR(), tooLong},
		{"cbor duplicate map keys", NewCBOR(), []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}},
		{"cbor duplicate nested map keys", NewCBOR(), []byte{0xa1, 0x61, 'm', 0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}},
		{"cbor non-string map key", NewCBOR(), []byte{0xa1, 0x01, 0x02}},
		{"cbor trailing data", NewCBOR(), []byte{0x01, 0x02}},
		{"cbor truncated", NewCBOR(), []byte{0x63, 'a', 'b'}},
		{"cbor invalid utf-8", NewCBOR(), []byte{0x62, 0xff, 0xfe}},
		{"cbor reserved info", NewCBOR(), []byte{0x1c}},
		{"cbor json bytes", NewCBOR(), []byte(`{"a":1}`)},
		{"json nil", NewJSON(), nil},
		{"json empty", NewJSON(), []byte{}},
		{"json deep nesting", NewJSON(), nested(NewJSON(), 1000)},
		{"json nesting just above limit", NewJSON(), nested(NewJSON(), jsonMaxDepth+1)},
		{"json trailing data", NewJSON(), []byte(`{"a":1} {"b":2}`)},
		{"json trailing garbage", NewJSON(), []byte(`1x`)},
		{"json truncated", NewJSON(), []byte(`{"a":`)},
		{"json cbor bytes", NewJSON(), []byte{0xa1, 0x61, 'a', 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			require.Error(t, tt.codec.Unmarshal(tt.data, &v))
		})
	}
}

func TestUnmarshalNestingLimit(t *testing.T) {
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			// Both codecs accept 16 nested arrays and reject 17.
			var v any
			require.NoError(t, c.Unmarshal(nested(c, 16), &v))
			require.Error(t, c.Unmarshal(nested(c, 17), &v))
		})
	}
}

func TestJSONDepthIgnoresStrings(t *testing.T) {
	s := `{"k":"` + strings.Repeat(`[{\"`, 100) + `"}`
	var v map[string]string
	require.NoError(t, NewJSON().Unmarshal([]byte(s), &v))
	require.Equal(t, strings.Repeat(`[{"`, 100), v["k"])
}

func TestUnmarshalRandomBytes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			for range 2000 {
				data := make([]byte, rng.Intn(64))
				rng.Read(data)
				var v any
				require.NotPanics(t, func() { _ = c.Unmarshal(data, &v) })
				var p profile
				require.NotPanics(t, func() { _ = c.Unmarshal(data, &p) })
			}
		})
	}
}

func TestMarshalError(t *testing.T) {
	for _, c := range codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			_, err := c.Marshal(make(chan int))
			require.Error(t, err)
		})
	}
}
