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
package codec
