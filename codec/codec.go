package codec

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Codec encodes and decodes single attribute values.
//
// Implementations must be safe for concurrent use and deterministic: equal
// values must give equal bytes.
type Codec interface {
	// Name identifies the codec inside the envelope ("cbor", "json").
	Name() string
	// Marshal returns the encoding of v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into the value pointed to by v.
	Unmarshal(data []byte, v any) error
}

// Decoding limits of the CBOR attribute codec.
const (
	cborMaxNestedLevels  = 16
	cborMaxArrayElements = 65536
	cborMaxMapPairs      = 65536
)

// cborCodec is the Codec returned by NewCBOR. Its modes are immutable and
// safe for concurrent use.
type cborCodec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

// NewCBOR returns the default Codec, named "cbor", built on
// github.com/fxamacker/cbor/v2.
//
// Encoding is core deterministic (RFC 8949 section 4.2.1: map keys sorted,
// shortest forms, no indefinite lengths), so equal values give equal bytes.
// time.Time values are written as RFC 3339 text with nanoseconds and the
// zone offset, untagged.
//
// Decoding is hardened: at most 16 nested arrays and maps, 65536 array
// elements and 65536 map pairs, duplicate map keys are rejected, and
// trailing bytes are an error. Decoding into an interface value gives map[string]any for maps
// and int64 for integers that fit (big.Int beyond that); time values
// decoded into an interface value are strings.
//
// The returned Codec is safe for concurrent use.
func NewCBOR() Codec {
	encOpts := cbor.CoreDetEncOptions()
	encOpts.Time = cbor.TimeRFC3339Nano
	enc, err := encOpts.EncMode()
	if err != nil {
		panic("codec: invalid CBOR encoding options: " + err.Error()) // programmer error
	}
	dec, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  cborMaxNestedLevels,
		MaxArrayElements: cborMaxArrayElements,
		MaxMapPairs:      cborMaxMapPairs,
		IntDec:           cbor.IntDecConvertSignedOrBigInt,
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
	}.DecMode()
	if err != nil {
		panic("codec: invalid CBOR decoding options: " + err.Error()) // programmer error
	}
	return &cborCodec{enc: enc, dec: dec}
}

// Name returns "cbor".
func (c *cborCodec) Name() string { return "cbor" }

// Marshal returns the deterministic CBOR encoding of v.
func (c *cborCodec) Marshal(v any) ([]byte, error) {
	b, err := c.enc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("codec: cbor marshal: %w", err)
	}
	return b, nil
}

// Unmarshal decodes the CBOR data item in data into the value pointed to by v.
func (c *cborCodec) Unmarshal(data []byte, v any) error {
	if err := c.dec.Unmarshal(data, v); err != nil {
		return fmt.Errorf("codec: cbor unmarshal: %w", err)
	}
	return nil
}

// jsonMaxDepth bounds the nesting of JSON values, like cborMaxNestedLevels.
const jsonMaxDepth = 16

// errJSONDepth is returned for JSON values nested deeper than jsonMaxDepth.
var errJSONDepth = errors.New("exceeded max nesting depth")

// jsonCodec is the Codec returned by NewJSON.
type jsonCodec struct{}

// NewJSON returns a Codec, named "json", built on encoding/json.
//
// Encoding is deterministic for maps because encoding/json sorts map keys.
// Decoding rejects trailing data and more than 16 nested arrays and objects.
// Decoding into an interface value gives map[string]any for objects and
// float64 for numbers, as with json.Unmarshal.
//
// The returned Codec is safe for concurrent use.
func NewJSON() Codec { return jsonCodec{} }

// Name returns "json".
func (jsonCodec) Name() string { return "json" }

// Marshal returns the JSON encoding of v.
func (jsonCodec) Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("codec: json marshal: %w", err)
	}
	return b, nil
}

// Unmarshal decodes the JSON value in data into the value pointed to by v.
func (jsonCodec) Unmarshal(data []byte, v any) error {
	if !jsonDepthOK(data, jsonMaxDepth) {
		return fmt.Errorf("codec: json unmarshal: %w", errJSONDepth)
	}
	// json.Unmarshal checks the whole input first, so trailing data is an
	// error ("invalid character ... after top-level value").
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("codec: json unmarshal: %w", err)
	}
	return nil
}

// jsonDepthOK reports whether no array or object in data is nested deeper
// than limit. It does not validate data; json.Unmarshal does that.
func jsonDepthOK(data []byte, limit int) bool {
	depth := 0
	inString, escaped := false, false
	for _, b := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '[' || b == '{':
			depth++
			if depth > limit {
				return false
			}
		case b == ']' || b == '}':
			depth--
		}
	}
	return true
}
