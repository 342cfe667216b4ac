package codec

import (
	"testing"
	"time"
)

// benchSession returns a session of about 1 KB with 10 attributes encoded by c.
func benchSession(tb testing.TB, c Codec) *Record {
	tb.Helper()
	return &Record{
		Created:     time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		Deadline:    time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC),
		IdleTimeout: 30 * time.Minute,
		Version:     42,
		Attrs: map[string][]byte{
			"user":      mustMarshal(tb, c, "ann.example"),
			"email":     mustMarshal(tb, c, "ann@example.com"),
			"csrf":      mustMarshal(tb, c, "3f9c1e7a5b2d4f6e8a0c1b3d5f7e9a2c4b6d8f0e1a3c5e7b9d2f4a6c8e0b1d3f"),
			"locale":    mustMarshal(tb, c, "de-CH"),
			"visits":    mustMarshal(tb, c, 1234),
			"cartTotal": mustMarshal(tb, c, 129_95),
			"lastSeen":  mustMarshal(tb, c, int64(1748779200)),
			"profile": mustMarshal(tb, c, profile{
				Name: "Ann Example", Email: "ann@example.com", Age: 41, Admin: true,
				Tags: []string{"beta", "newsletter"},
			}),
			"roles": mustMarshal(tb, c, []string{"admin", "editor", "viewer"}),
			"recent": mustMarshal(tb, c, []string{
				"/products/espresso-machine-1234", "/products/milk-frother-5678",
				"/cart", "/checkout/shipping", "/checkout/payment",
				"/account/orders/2025-000123", "/account/orders/2025-000122",
				"/search?q=grinder&sort=price", "/products/burr-grinder-9012",
				"/help/returns-and-refunds", "/blog/how-to-dial-in-espresso",
				"/products/descaler-3456", "/account/settings/notifications",
				"/products/tamper-58mm-stainless", "/products/knock-box-large",
				"/stores/zurich-bahnhofstrasse", "/gift-cards/50",
				"/products/espresso-cups-set-of-6", "/account/addresses/edit/2",
				"/search?q=decaf+beans&page=2", "/products/scale-with-timer-0.1g",
				"/newsletter/preferences", "/checkout/confirmation/2025-000124",
			}),
		},
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	for _, c := range codecs() {
		b.Run(c.Name(), func(b *testing.B) {
			r := benchSession(b, c)
			data, err := EncodeRecord(c, r)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeRecord(c, r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "record-bytes")
		})
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	for _, c := range codecs() {
		b.Run(c.Name(), func(b *testing.B) {
			data, err := EncodeRecord(c, benchSession(b, c))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeRecord(c, data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "record-bytes")
		})
	}
}

func BenchmarkMarshalAttr(b *testing.B) {
	p := profile{Name: "Ann Example", Email: "ann@example.com", Age: 41, Admin: true, Tags: []string{"beta", "newsletter"}}
	for _, c := range codecs() {
		b.Run(c.Name(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Marshal(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUnmarshalAttr(b *testing.B) {
	p := profile{Name: "Ann Example", Email: "ann@example.com", Age: 41, Admin: true, Tags: []string{"beta", "newsletter"}}
	for _, c := range codecs() {
		b.Run(c.Name(), func(b *testing.B) {
			data := mustMarshal(b, c, p)
			b.ReportAllocs()
			for b.Loop() {
				var got profile
				if err := c.Unmarshal(data, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSeal seals the ~1 KB cbor envelope of benchSession (KeyRing,
// AES-256-GCM).
func BenchmarkSeal(b *testing.B) {
	data, ring, aad := benchSealed(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ring.Seal(aad, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen opens what BenchmarkSeal seals.
func BenchmarkOpen(b *testing.B) {
	data, ring, aad := benchSealed(b)
	sealed, err := ring.Seal(aad, data)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ring.Open(aad, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSealed returns the cbor envelope of benchSession, a key ring of two
// keys and a session id's random part.
func benchSealed(b *testing.B) ([]byte, *KeyRing, []byte) {
	b.Helper()
	c := NewCBOR()
	data, err := EncodeRecord(c, benchSession(b, c))
	if err != nil {
		b.Fatal(err)
	}
	ring, err := NewKeyRing(testKey(1), testKey(2))
	if err != nil {
		b.Fatal(err)
	}
	return data, ring, []byte("9f2c4e61b0d7a3854c1e9b2f6a0d8c3e")
}
