package codec_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/mcsession/mcsession/codec"
)

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
