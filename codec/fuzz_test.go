package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeRecord decodes arbitrary bytes as an envelope with each codec
// (the seeds: records encoded here, and in testdata/fuzz/FuzzDecodeRecord
// the golden vectors of testdata/format and hand-made corruptions). It
// must not panic; an error must wrap ErrCorrupt, ErrFormat or
// ErrCodecMismatch; a record that decodes must encode again and decode to
// an equal record, whose encoding is then stable; and every attribute
// value of it, decoded into an interface value by the codec, must not
// panic and, when it decodes, must encode again and decode again.
func FuzzDecodeRecord(f *testing.F) {
	for _, c := range codecs() {
		for _, r := range []*Record{
			{},
			sampleRecord(f, c),
			{Created: time.UnixMilli(1), IdleTimeout: time.Millisecond, Attrs: map[string][]byte{"": {}}},
		} {
			data, err := EncodeRecord(c, r)
			require.NoError(f, err)
			f.Add(data)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x82, 0x02, 0xa0})
	cs := codecs()
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fast decoder accepts only what the CBOR library decodes the
		// same way.
		if fast, user, ok := decodeEnvelopeFast(data); ok {
			lib, libUser, err := decodeEnvelope(data)
			require.NoError(t, err, "the fast decoder accepted %x", data)
			require.Equal(t, lib, fast)
			require.Equal(t, libUser, user)
		}
		for _, c := range cs {
			rec, err := DecodeRecord(c, data)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrCodecMismatch) {
					t.Fatalf("%s: error wraps no sentinel: %v", c.Name(), err)
				}
				continue
			}
			again, err := EncodeRecord(c, rec)
			require.NoError(t, err)
			rec2, err := DecodeRecord(c, again)
			require.NoError(t, err)
			require.Equal(t, rec, rec2)
			again2, err := EncodeRecord(c, rec2)
			require.NoError(t, err)
			require.Equal(t, again, again2)
			for name, value := range rec.Attrs {
				var v any
				if c.Unmarshal(value, &v) != nil {
					continue
				}
				b, err := c.Marshal(v)
				require.NoError(t, err, "%s: attribute %q: %x decodes to %#v", c.Name(), name, value, v)
				require.NoError(t, c.Unmarshal(b, &v), "%s: attribute %q: %x decodes to %#v, encoded as %x", c.Name(), name, value, v, b)
			}
		}
	})
}
