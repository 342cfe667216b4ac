// Package codec turns session records into bytes and back.
//
// A session is stored in memcached as one item: a versioned envelope that
// holds the creation time, the absolute deadline, the idle timeout, a save
// counter and the attributes. The envelope is always CBOR, a fixed-shape
// array written with deterministic encoding, so that equal records give
// equal bytes (that is how a store can skip writing an unmodified session):
//
//	[FormatVersion, codecName, createdUnixMilli, deadlineUnixMilli,
//	 idleMillis, version, {attrName: attrBytes, ...}]
//
// Attribute values are encoded one by one with a [Codec] and stored in the
// envelope as CBOR byte strings. [NewCBOR] is the default codec; [NewJSON]
// is an alternative for values that must stay readable by other languages.
//
// Decoding is hardened against hostile bytes: nesting, array lengths and
// map sizes are bounded, duplicate map keys are rejected, and malformed
// input returns an error wrapping [ErrCorrupt] instead of panicking.
//
// # Encryption at rest
//
// [KeyRing] is an opt-in codec wrapper that encrypts whole stored values
// with AES-256-GCM (store.Config.Encryption): the envelope, with its
// attribute names and values, timestamps and user id, is sealed with the
// first key of the ring, a fresh random nonce and the random part of the
// session id as associated data, and opened with whichever key of the ring
// sealed it, so that keys rotate without logging anyone out. A sealed value
// starts with a small header (magic byte 0xE5, sealed format, key id,
// nonce); [Sealer] is the interface a store uses.
package codec
