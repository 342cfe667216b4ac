package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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
		}
	})
}
