package codec_test

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mcsession/mcsession/codec"
)

// A session record round trip: attribute values are encoded with a Codec,
// the record with EncodeRecord; DecodeRecord refuses bytes written by
// another codec (ErrCodecMismatch) and truncated bytes (ErrCorrupt).
func ExampleEncodeRecord() {
	c := codec.NewCBOR()
	user, err := c.Marshal("gopher")
	if err != nil {
		panic(err)
	}
	rec := &codec.Record{
		Created:     time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		IdleTimeout: 30 * time.Minute,
		Version:     1,
		Attrs:       map[string][]byte{"user": user},
	}
	data, err := codec.EncodeRecord(c, rec)
	if err != nil {
		panic(err)
	}

	got, err := codec.DecodeRecord(c, data)
	if err != nil {
		panic(err)
	}
	var name string
	if err := c.Unmarshal(got.Attrs["user"], &name); err != nil {
		panic(err)
	}
	fmt.Println(got.Created, got.IdleTimeout, got.Version, name)

	_, err = codec.DecodeRecord(codec.NewJSON(), data)
	fmt.Println(errors.Is(err, codec.ErrCodecMismatch))
	_, err = codec.DecodeRecord(c, data[:len(data)-1])
	fmt.Println(errors.Is(err, codec.ErrCorrupt))
	// Output:
	// 2025-06-01 12:00:00 +0000 UTC 30m0s 1 gopher
	// true
	// true
}

// The default codec: deterministic CBOR (equal values give equal bytes,
// so an unchanged session is never rewritten), hardened decoding that
// rejects duplicate map keys.
func ExampleNewCBOR() {
	c := codec.NewCBOR()
	data, err := c.Marshal(map[string]int{"b": 2, "a": 1})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%x\n", data) // keys sorted: equal maps give equal bytes

	var v any
	if err := c.Unmarshal(data, &v); err != nil {
		panic(err)
	}
	fmt.Printf("%T %v\n", v, v)

	err = c.Unmarshal([]byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, &v)
	fmt.Println(err)
	// Output:
	// a2616101616202
	// map[string]interface {} map[a:1 b:2]
	// codec: cbor unmarshal: cbor: found duplicate map key "a" at map element index 1
}

// Typed values through the default codec: structs, slices, times and
// integers come back as the type they are decoded into. Decoded into an
// interface value, maps become map[string]any and integers int64.
func ExampleNewCBOR_typedValues() {
	type Cart struct {
		Items []string
		Total int
		Saved time.Time
	}
	c := codec.NewCBOR()
	in := Cart{Items: []string{"book", "pen"}, Total: 1250, Saved: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	data, err := c.Marshal(in)
	if err != nil {
		panic(err)
	}
	var out Cart
	if err := c.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	fmt.Println(out.Items, out.Total, out.Saved.Equal(in.Saved))

	var v any
	if err := c.Unmarshal(data, &v); err != nil {
		panic(err)
	}
	m := v.(map[string]any)
	fmt.Printf("%T %T %v\n", m["Total"], m["Saved"], m["Saved"])

	var n int
	fmt.Println(c.Unmarshal(data, &n) != nil) // a struct is not an int
	// Output:
	// [book pen] 1250 true
	// int64 string 2025-06-01T12:00:00Z
	// true
}

// The JSON codec, for attribute values that other languages must read.
// Typed values round-trip like with CBOR; decoded into an interface value,
// numbers become float64 as with encoding/json. Map keys are sorted, so
// equal maps give equal bytes.
func ExampleNewJSON() {
	type Prefs struct {
		Theme string    `json:"theme"`
		Size  int       `json:"size"`
		Since time.Time `json:"since"`
	}
	c := codec.NewJSON()
	data, err := c.Marshal(Prefs{Theme: "dark", Size: 14, Since: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(data))

	var p Prefs
	if err := c.Unmarshal(data, &p); err != nil {
		panic(err)
	}
	fmt.Println(p.Theme, p.Size, p.Since.Format(time.DateOnly))

	var v any
	if err := c.Unmarshal(data, &v); err != nil {
		panic(err)
	}
	fmt.Printf("%T\n", v.(map[string]any)["size"])

	data, _ = c.Marshal(map[string]int{"b": 2, "a": 1})
	fmt.Println(string(data))
	// Output:
	// {"theme":"dark","size":14,"since":"2025-06-01T12:00:00Z"}
	// dark 14 2025-06-01
	// float64
	// {"a":1,"b":2}
}

// textCodec is a custom Codec that stores strings as their plain UTF-8
// bytes, readable by any program without a decoder. It handles strings
// only. Like every Codec it is deterministic and safe for concurrent use.
type textCodec struct{}

// Name identifies the codec in the envelope of every session it writes.
func (textCodec) Name() string { return "text" }

// Marshal returns the bytes of a string.
func (textCodec) Marshal(v any) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("text codec: cannot encode %T, only strings", v)
	}
	return []byte(s), nil
}

// Unmarshal stores data in the string v points to.
func (textCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*string)
	if !ok {
		return fmt.Errorf("text codec: cannot decode into %T, only *string", v)
	}
	*p = string(data)
	return nil
}

// A custom Codec: implement Name, Marshal and Unmarshal, then use it for
// the attribute values of a record (and in store.Config.Codec). Records
// written with it are refused by every other codec with ErrCodecMismatch.
func ExampleCodec() {
	var c codec.Codec = textCodec{}
	user, err := c.Marshal("ada")
	if err != nil {
		panic(err)
	}
	_, err = c.Marshal(42)
	fmt.Println(err)

	data, err := codec.EncodeRecord(c, &codec.Record{
		Created: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		Version: 1,
		Attrs:   map[string][]byte{"user": user},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.Contains(string(data), "ada")) // stored as plain text

	rec, err := codec.DecodeRecord(c, data)
	if err != nil {
		panic(err)
	}
	var name string
	if err := c.Unmarshal(rec.Attrs["user"], &name); err != nil {
		panic(err)
	}
	fmt.Println(name, rec.Version)

	_, err = codec.DecodeRecord(codec.NewCBOR(), data)
	fmt.Println(errors.Is(err, codec.ErrCodecMismatch))
	// Output:
	// text codec: cannot encode int, only strings
	// true
	// ada 1
	// true
}

// DecodeRecord never panics on hostile or damaged bytes: anything that is
// not an envelope written by EncodeRecord is an error wrapping ErrCorrupt
// (a store treats such a session as not found).
func ExampleDecodeRecord() {
	c := codec.NewCBOR()
	good, err := codec.EncodeRecord(c, &codec.Record{Version: 1})
	if err != nil {
		panic(err)
	}
	for _, data := range [][]byte{
		nil,
		[]byte("garbage"),
		{0xff, 0xff, 0xff},
		good[:len(good)-2],                       // truncated
		append(good[:len(good):len(good)], 0x00), // trailing byte
	} {
		_, err := codec.DecodeRecord(c, data)
		fmt.Println(errors.Is(err, codec.ErrCorrupt))
	}
	_, err = codec.DecodeRecord(c, good)
	fmt.Println(err)
	// Output:
	// true
	// true
	// true
	// true
	// true
	// <nil>
}
