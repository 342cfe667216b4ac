package codec_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/mcsession/mcsession/codec"
)

// A key ring seals with its first key and opens with any of them; the
// associated data (for a session, the random part of its id) must match.
func ExampleKeyRing() {
	oldKey, newKey := strings.Repeat("0a", 32), strings.Repeat("0b", 32) // openssl rand -hex 32
	before, err := codec.ParseKeyRing(oldKey)
	if err != nil {
		log.Fatal(err)
	}
	id := []byte("9f2c4e61b0d7a3854c1e9b2f6a0d8c3e")
	sealed, err := before.Seal(id, []byte("the envelope"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(codec.IsSealed(sealed), bytes.Contains(sealed, []byte("envelope")), len(sealed)-len("the envelope"))

	// Rotation: the new key first, the old one still opens.
	after, err := codec.ParseKeyRing(newKey + "," + oldKey)
	if err != nil {
		log.Fatal(err)
	}
	plain, err := after.Open(id, sealed)
	fmt.Printf("%s %v\n", plain, err)

	// Copied under another session id: it does not open.
	_, err = after.Open([]byte("00000000000000000000000000000000"), sealed)
	fmt.Println(errors.Is(err, codec.ErrDecrypt))

	// Bad keys are refused with their position, never their value.
	_, err = codec.ParseKeyRing(newKey + ",abc")
	fmt.Println(err)
	// Output:
	// true false 34
	// the envelope <nil>
	// true
	// codec: invalid encryption key: key 2 is 3 characters, want 64 hex characters (32 bytes)
}
