package store_test

// Golden vectors of the storage format (docs/FORMAT.md), in
// testdata/format at the repository root. The normal run checks every
// vector in both directions: decoding its .bin gives exactly the session
// its .json describes, and encoding that description gives exactly the
// .bin bytes. It also checks that the files are what the definitions below
// produce; after a deliberate format change, regenerate them with
//
//	go test ./store -run Format -update-format

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/fxamacker/cbor/v2"
	"github.com/stretchr/testify/require"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/integration/mcproc"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

var updateFormat = flag.Bool("update-format", false,
	"rewrite the golden vectors in testdata/format from the definitions in store/format_test.go")

// formatDir holds the golden vectors, relative to this package.
const formatDir = "../testdata/format"

// fval is an attribute value in the vectors' JSON files, with its type
// spelled out (JSON alone cannot tell 3 from 3.0, nor bytes from text).
//
// Types: "string", "int" (64-bit signed integer), "float" (64-bit float),
// "number" (a JSON number as the json codec decodes it), "bool", "null",
// "bytes" (hex in Hex), "time" (RFC 3339 text of a Go time.Time), "list"
// (Items), "map" (Entries, text keys).
type fval struct {
	Type    string          `json:"type"`
	Value   json.RawMessage `json:"value,omitempty"`
	Hex     string          `json:"hex,omitempty"`
	Items   []fval          `json:"items,omitempty"`
	Entries []fentry        `json:"entries,omitempty"`
}

// fentry is one key of a "map" fval.
type fentry struct {
	Key   string `json:"key"`
	Value fval   `json:"value"`
}

// rawJSON returns the JSON text of v, without escaping <, > and &.
func rawJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func fString(s string) fval       { return fval{Type: "string", Value: rawJSON(s)} }
func fInt(i int64) fval           { return fval{Type: "int", Value: rawJSON(i)} }
func fFloat(f float64) fval       { return fval{Type: "float", Value: rawJSON(f)} }
func fBool(b bool) fval           { return fval{Type: "bool", Value: rawJSON(b)} }
func fNull() fval                 { return fval{Type: "null"} }
func fBytes(b ...byte) fval       { return fval{Type: "bytes", Hex: hex.EncodeToString(b)} }
func fTime(rfc3339 string) fval   { return fval{Type: "time", Value: rawJSON(rfc3339)} }
func fList(items ...fval) fval    { return fval{Type: "list", Items: items} }
func fMap(entries ...fentry) fval { return fval{Type: "map", Entries: entries} }
func fKey(k string, v fval) fentry {
	return fentry{Key: k, Value: v}
}

// toGo returns the Go value that f describes, as an application would
// store it with Session.Set.
func (f fval) toGo() (any, error) {
	switch f.Type {
	case "string":
		var s string
		err := json.Unmarshal(f.Value, &s)
		return s, err
	case "int":
		return strconv.ParseInt(string(f.Value), 10, 64)
	case "float", "number":
		return strconv.ParseFloat(string(f.Value), 64)
	case "bool":
		var b bool
		err := json.Unmarshal(f.Value, &b)
		return b, err
	case "null":
		return nil, nil
	case "bytes":
		b, err := hex.DecodeString(f.Hex)
		if b == nil {
			b = []byte{}
		}
		return b, err
	case "time":
		var s string
		if err := json.Unmarshal(f.Value, &s); err != nil {
			return nil, err
		}
		return time.Parse(time.RFC3339Nano, s)
	case "list":
		out := make([]any, 0, len(f.Items))
		for _, it := range f.Items {
			v, err := it.toGo()
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case "map":
		out := make(map[string]any, len(f.Entries))
		for _, e := range f.Entries {
			if _, dup := out[e.Key]; dup {
				return nil, fmt.Errorf("map key %q given twice", e.Key)
			}
			v, err := e.Value.toGo()
			if err != nil {
				return nil, err
			}
			out[e.Key] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown value type %q", f.Type)
}

// fromGo describes a value decoded into an interface value by the codec
// named codecName (its numbers are "number" for json, "int" or "float" for
// cbor).
func fromGo(v any, codecName string) (fval, error) {
	switch v := v.(type) {
	case string:
		return fString(v), nil
	case int64:
		return fInt(v), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fval{}, fmt.Errorf("%v has no JSON form", v)
		}
		if codecName == "json" {
			return fval{Type: "number", Value: rawJSON(v)}, nil
		}
		return fFloat(v), nil
	case bool:
		return fBool(v), nil
	case nil:
		return fNull(), nil
	case []byte:
		return fBytes(v...), nil
	case []any:
		items := make([]fval, 0, len(v))
		for _, it := range v {
			f, err := fromGo(it, codecName)
			if err != nil {
				return fval{}, err
			}
			items = append(items, f)
		}
		return fList(items...), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		entries := make([]fentry, 0, len(v))
		for _, k := range keys {
			f, err := fromGo(v[k], codecName)
			if err != nil {
				return fval{}, err
			}
			entries = append(entries, fKey(k, f))
		}
		return fMap(entries...), nil
	}
	return fval{}, fmt.Errorf("decoded value of unsupported Go type %T", v)
}

// normalized returns f with its scalar values re-spelled canonically and
// map entries sorted, so that equal values compare equal however the JSON
// file spells them.
func (f fval) normalized() (fval, error) {
	out := fval{Type: f.Type, Hex: strings.ToLower(f.Hex)}
	switch f.Type {
	case "string", "int", "float", "number", "bool", "time":
		v, err := f.toGo()
		if err != nil {
			return fval{}, fmt.Errorf("%s value %s: %w", f.Type, f.Value, err)
		}
		if t, ok := v.(time.Time); ok {
			v = t.Format(time.RFC3339Nano)
		}
		out.Value = rawJSON(v)
	case "list":
		for _, it := range f.Items {
			n, err := it.normalized()
			if err != nil {
				return fval{}, err
			}
			out.Items = append(out.Items, n)
		}
	case "map":
		for _, e := range f.Entries {
			n, err := e.Value.normalized()
			if err != nil {
				return fval{}, err
			}
			out.Entries = append(out.Entries, fKey(e.Key, n))
		}
		sort.Slice(out.Entries, func(i, j int) bool { return out.Entries[i].Key < out.Entries[j].Key })
	case "null", "bytes":
	default:
		return fval{}, fmt.Errorf("unknown value type %q", f.Type)
	}
	return out, nil
}

// formatVector is the JSON description of one golden vector.
type formatVector struct {
	Name           string       `json:"name"`
	Description    string       `json:"description"`
	Bin            string       `json:"bin"`
	FormatVersion  uint64       `json:"format_version"`
	Codec          string       `json:"codec"`
	CreatedUnixMs  int64        `json:"created_unix_ms"`
	Created        string       `json:"created"`
	DeadlineUnixMs int64        `json:"deadline_unix_ms"`
	Deadline       string       `json:"deadline"`
	IdleTimeoutMs  uint64       `json:"idle_timeout_ms"`
	Version        uint64       `json:"version"`
	Attributes     []formatAttr `json:"attributes"`
	// User is envelope item 7 (the 8th), absent without a user.
	User      string     `json:"user,omitempty"`
	Memcached formatKeys `json:"memcached"`
}

// formatAttr is one attribute of a vector, in envelope order.
type formatAttr struct {
	Name string `json:"name"`
	// Value is the value the application stored.
	Value fval `json:"value"`
	// Decoded is what a generic decode of EncodedHex gives, when it is not
	// Value itself.
	Decoded *fval `json:"decoded,omitempty"`
	// EncodedHex is the attribute value as the codec encodes it: the
	// content of the envelope's byte string.
	EncodedHex string `json:"encoded_hex"`
	// EncodedText is EncodedHex as text, for the json codec.
	EncodedText string `json:"encoded_text,omitempty"`
}

// formatKeys is where a vector's bytes live in memcached.
type formatKeys struct {
	KeyPrefix   string `json:"key_prefix"`
	ID          string `json:"id"`
	Node        string `json:"node"`
	PrimaryKey  string `json:"primary_key"`
	BackupKey   string `json:"backup_key"`
	LockKey     string `json:"lock_key"`
	ClientFlags uint32 `json:"client_flags"`
	// UserIndexKey and UserIndexNodes (primary, secondary) are where the
	// index of the vector's user lives, with formatNodes as the cluster.
	UserIndexKey   string   `json:"user_index_key,omitempty"`
	UserIndexNodes []string `json:"user_index_nodes,omitempty"`
}

// vectorDef defines one golden vector.
type vectorDef struct {
	name, desc        string
	codec             codec.Codec
	created, deadline time.Time
	idle              time.Duration
	version           uint64
	attrs             []fentry
	prefix, id        string
	user              string
}

// formatNodes are the node ids of the cluster the vectors are checked
// against (addresses are never contacted).
var formatNodes = []string{"n1", "n2", "n3", "node_A", "abcdefghijklmnop"}

// formatCreated is the creation time of most vectors: 2023-11-14T22:13:20.123Z.
var formatCreated = time.UnixMilli(1_700_000_000_123).UTC()

// typicalAttrs are the attributes of the "typical" vectors, one of each kind.
func typicalAttrs() []fentry {
	return []fentry{
		fKey("n", fInt(42)),
		fKey("ok", fBool(true)),
		fKey("pi", fFloat(3.141592653589793)),
		fKey("avg", fFloat(2.5)),
		fKey("big", fInt(1<<40)),
		fKey("neg", fInt(-7)),
		fKey("blob", fBytes(0x00, 0x01, 0xfe, 0xff)),
		fKey("cart", fMap(
			fKey("currency", fString("EUR")),
			fKey("items", fList(
				fMap(fKey("qty", fInt(2)), fKey("sku", fString("A-1"))),
				fMap(fKey("qty", fInt(1)), fKey("sku", fString("B-7"))),
			)),
			fKey("total", fFloat(19.99)),
		)),
		fKey("none", fNull()),
		fKey("note", fString("<b>café & co</b>")),
		fKey("seen", fTime("2023-11-14T23:13:20.5+01:00")),
		fKey("tags", fList(fString("a"), fString("b"))),
		fKey("user", fString("ada")),
		fKey("a_long_attribute_name_over_23_bytes", fInt(1)),
	}
}

// vectorDefs are the golden vectors.
func vectorDefs() []vectorDef {
	return []vectorDef{
		{
			name: "minimal-cbor",
			desc: "A new session as Store.Save first writes it with the default configuration: version 1, " +
				"deadline = created + 24 h (DefaultLifetime), idle timeout 30 min (DefaultIdleTimeout), no attributes.",
			codec: codec.NewCBOR(), created: formatCreated, deadline: formatCreated.Add(24 * time.Hour),
			idle: 30 * time.Minute, version: 1,
			id: "5f0c2a9e7b3d41c8a6e9f1d2b4c8e0a7-n1",
		},
		{
			name: "typical-cbor",
			desc: "A session after 7 saves with one attribute of each kind under the cbor codec: int, bool, " +
				"float (16- and 64-bit forms), 64-bit int, negative int, bytes, nested map and list, null, " +
				"a string with HTML characters and non-ASCII text, a time.Time, a list, and a name over 23 bytes.",
			codec: codec.NewCBOR(), created: formatCreated, deadline: formatCreated.Add(24 * time.Hour),
			idle: 30 * time.Minute, version: 7, attrs: typicalAttrs(),
			id: "9f2c4e61b0d7a3854c1e9b2f6a0d8c3e-n2",
		},
		{
			name: "typical-json",
			desc: "The attributes of typical-cbor under the json codec (encoding/json): numbers decode as " +
				"JSON numbers, bytes as base64 text, times as RFC 3339 text; <, > and & are escaped as \\u003c, " +
				"\\u003e and \\u0026.",
			codec: codec.NewJSON(), created: formatCreated, deadline: formatCreated.Add(24 * time.Hour),
			idle: 30 * time.Minute, version: 7, attrs: typicalAttrs(),
			id: "3b8e0f5a2c6d49e1b7a4c0d9e2f1a6b5-n2",
		},
		{
			name: "zero-fields",
			desc: "Every field zero or unset: created 0 (the zero time), deadline 0 (none), idle timeout 0, " +
				"version 0, no attributes. EncodeRecord(&Record{}) gives these bytes; the store itself never " +
				"writes a session like this.",
			codec: codec.NewCBOR(),
			id:    "00000000000000000000000000000000-n1",
		},
		{
			name: "key-prefix",
			desc: "A small session under the key prefix \"app1:\" on node n3, without an absolute deadline " +
				"(deadline 0), idle timeout 1 h, version 3. The worked example of docs/FORMAT.md.",
			codec: codec.NewCBOR(), created: formatCreated, idle: time.Hour, version: 3,
			attrs:  []fentry{fKey("user", fString("ada")), fKey("n", fInt(3))},
			prefix: "app1:", id: "c4d2e8f0a1b3c5d7e9f1a2b4c6d8e0f2-n3",
		},
		{
			name: "large-version",
			desc: "A version above 2^32 (client flags hold its low 32 bits: 7), a creation time in 2100 " +
				"(8-byte integer head), no deadline, and an idle timeout of 45 days (over memcached's 30-day " +
				"relative limit, so its exptime is an absolute Unix time).",
			codec:   codec.NewCBOR(),
			created: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), idle: 45 * 24 * time.Hour,
			version: 1<<32 + 7, attrs: []fentry{fKey("n", fInt(1))},
			id: "ffffffffffffffffffffffffffffffff-n3",
		},
		{
			name: "attribute-order",
			desc: "Attribute names that show the envelope's map order: by encoded bytes, so shorter names " +
				"first (length counted in UTF-8 bytes), then bytewise; a name of 24 bytes or more has a " +
				"two-byte head (0x78 n) and sorts after every shorter one.",
			codec: codec.NewCBOR(), created: formatCreated, idle: 10 * time.Minute, version: 2,
			attrs: []fentry{
				fKey("zz", fInt(1)), fKey("b", fInt(2)), fKey("aa", fInt(3)), fKey("é", fInt(4)),
				fKey("日本語", fInt(5)), fKey("a", fInt(6)), fKey("B", fInt(7)),
				fKey("abcdefghijklmnopqrstuvw", fInt(8)), fKey("abcdefghijklmnopqrstuvwx", fInt(9)),
			},
			prefix: "tenant/42:", id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9-node_A",
		},
		{
			name: "user-cbor",
			desc: "A session linked to a user (Session.SetUser): the user id is the optional 8th envelope item, " +
				"a text string, after the 7 items a session without a user has (array head 0x88 instead of 0x87). " +
				"memcached.user_index_key is the key of the user's session index (prefix + \"user:\" + SHA-256 " +
				"of the user id in hex), user_index_nodes its primary and secondary node by rendezvous hashing " +
				"over the vectors' cluster.",
			codec: codec.NewCBOR(), created: formatCreated, idle: time.Hour, version: 5,
			attrs: []fentry{fKey("cart", fInt(2))}, user: "ada@example.com",
			prefix: "app1:", id: "7e3a9c1f5b2d4e6a8c0b1d3f5e7a9c2b-n2",
		},
	}
}

// codecByName returns the codec a vector names.
func codecByName(t testing.TB, name string) codec.Codec {
	t.Helper()
	for _, c := range []codec.Codec{codec.NewCBOR(), codec.NewJSON()} {
		if c.Name() == name {
			return c
		}
	}
	t.Fatalf("unknown codec %q", name)
	return nil
}

// otherCodec returns a codec with another name than c.
func otherCodec(c codec.Codec) codec.Codec {
	if c.Name() == "json" {
		return codec.NewCBOR()
	}
	return codec.NewJSON()
}

// formatStore returns a Store with prefix over formatNodes (never contacted).
func formatStore(t testing.TB, prefix string) *store.Store {
	t.Helper()
	nodes := make([]replica.Node, len(formatNodes))
	for i, id := range formatNodes {
		nodes[i] = replica.Node{ID: id, Addr: "127.0.0.1:" + strconv.Itoa(1+i)}
	}
	cl, err := replica.New(replica.Config{Nodes: nodes})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	st, err := store.New(store.Config{Cluster: cl, KeyPrefix: prefix})
	require.NoError(t, err)
	return st
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func rfc3339Ms(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func fromUnixMs(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// cborPair returns the envelope's encoding of one attribute: its name as
// a text string, then its value as a byte string.
func cborPair(t testing.TB, name string, value []byte) []byte {
	t.Helper()
	k, err := cbor.Marshal(name)
	require.NoError(t, err)
	v, err := cbor.Marshal(value)
	require.NoError(t, err)
	return append(k, v...)
}

// buildVector turns a definition into its JSON description and bytes.
func buildVector(t testing.TB, d vectorDef) ([]byte, []byte) {
	t.Helper()
	rec := codec.Record{Created: d.created, Deadline: d.deadline, IdleTimeout: d.idle, Version: d.version,
		Attrs: map[string][]byte{}, User: d.user}
	var attrs []formatAttr
	for _, e := range d.attrs {
		v, err := e.Value.toGo()
		require.NoError(t, err, "%s: %s", d.name, e.Key)
		raw, err := d.codec.Marshal(v)
		require.NoError(t, err, "%s: %s", d.name, e.Key)
		var back any
		require.NoError(t, d.codec.Unmarshal(raw, &back), "%s: %s", d.name, e.Key)
		dec, err := fromGo(back, d.codec.Name())
		require.NoError(t, err, "%s: %s", d.name, e.Key)
		a := formatAttr{Name: e.Key, Value: e.Value, EncodedHex: hex.EncodeToString(raw)}
		if want, _ := e.Value.normalized(); !equalJSON(t, want, dec) {
			a.Decoded = &dec
		}
		if d.codec.Name() == "json" {
			a.EncodedText = string(raw)
		}
		rec.Attrs[e.Key] = raw
		attrs = append(attrs, a)
	}
	bin, err := codec.EncodeRecord(d.codec, &rec)
	require.NoError(t, err, d.name)
	// List the attributes in the order the envelope holds them.
	sort.SliceStable(attrs, func(i, j int) bool {
		return pairOffset(t, bin, attrs[i]) < pairOffset(t, bin, attrs[j])
	})
	fst := formatStore(t, d.prefix)
	session, backup, lockKey := fst.MemcachedKeys(d.id)
	desc := formatVector{
		Name: d.name, Description: d.desc, Bin: d.name + ".bin",
		FormatVersion: codec.FormatVersion, Codec: d.codec.Name(),
		CreatedUnixMs: unixMs(d.created), Created: rfc3339Ms(unixMs(d.created)),
		DeadlineUnixMs: unixMs(d.deadline), Deadline: rfc3339Ms(unixMs(d.deadline)),
		IdleTimeoutMs: uint64(d.idle.Milliseconds()), Version: d.version,
		Attributes: attrs,
		User:       d.user,
		Memcached: formatKeys{
			KeyPrefix: d.prefix, ID: d.id, Node: d.id[strings.LastIndexByte(d.id, '-')+1:],
			PrimaryKey: session, BackupKey: backup, LockKey: lockKey,
			ClientFlags: uint32(d.version), // the low 32 bits of the version
		},
	}
	if d.user != "" {
		key, primary, secondary := fst.UserIndexKey(d.user)
		desc.Memcached.UserIndexKey, desc.Memcached.UserIndexNodes = key, []string{primary, secondary}
	}
	if desc.Attributes == nil {
		desc.Attributes = []formatAttr{}
	}
	return marshalFile(t, desc), bin
}

// pairOffset returns where attribute a is in the envelope bin, or -1.
func pairOffset(t testing.TB, bin []byte, a formatAttr) int {
	t.Helper()
	raw, err := hex.DecodeString(a.EncodedHex)
	require.NoError(t, err)
	return bytes.Index(bin, cborPair(t, a.Name, raw))
}

// equalJSON reports whether a and b have the same JSON form.
func equalJSON(t testing.TB, a, b any) bool {
	t.Helper()
	return bytes.Equal(marshalFile(t, a), marshalFile(t, b))
}

func marshalFile(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	require.NoError(t, enc.Encode(v))
	return buf.Bytes()
}

// idVectors are the session id cases of ids.json.
type idVectors struct {
	Description     string     `json:"description"`
	ConfiguredNodes []string   `json:"configured_nodes"`
	IDs             []idVector `json:"ids"`
}

type idVector struct {
	ID     string `json:"id"`
	Valid  bool   `json:"valid"`
	Node   string `json:"node,omitempty"`
	Reason string `json:"reason"`
}

func idCases() []idVector {
	const b = "9f2c4e61b0d7a3854c1e9b2f6a0d8c3e"
	return []idVector{
		{ID: b + "-n1", Reason: "32 lowercase hex, '-', a configured node id"},
		{ID: b + "-node_A", Reason: "node ids may hold letters of both cases, digits and '_'"},
		{ID: b + "-abcdefghijklmnop", Reason: "a node id of 16 characters, the maximum"},
		{ID: "00000000000000000000000000000000-n2", Reason: "any 128-bit value"},
		{ID: "", Reason: "empty"},
		{ID: b, Reason: "no node id"},
		{ID: b + "-", Reason: "empty node id"},
		{ID: strings.ToUpper(b) + "-n1", Reason: "uppercase hex"},
		{ID: b[:31] + "-n1", Reason: "31 hex characters"},
		{ID: b + "0-n1", Reason: "33 hex characters"},
		{ID: "g" + b[1:] + "-n1", Reason: "'g' is not hex"},
		{ID: b + "-n-1", Reason: "split at the last '-': the random part is not 32 characters"},
		{ID: b + "-n.1", Reason: "'.' in the node id"},
		{ID: b + "-nö", Reason: "non-ASCII node id"},
		{ID: b + "-abcdefghijklmnopq", Reason: "node id of 17 characters"},
		{ID: b + "-n9", Reason: "well-formed, but n9 is not a configured node"},
		{ID: " " + b + "-n1", Reason: "leading space"},
		{ID: b + "-n1\n", Reason: "trailing newline"},
	}
}

func buildIDs(t testing.TB) []byte {
	t.Helper()
	st := formatStore(t, "")
	cases := idCases()
	for i := range cases {
		c := &cases[i]
		c.Valid = st.ValidID(c.ID)
		if c.Valid {
			c.Node = c.ID[strings.LastIndexByte(c.ID, '-')+1:]
		}
	}
	return marshalFile(t, idVectors{
		Description: "Session ids: valid means Store.ValidID accepts the id with configured_nodes as the " +
			"cluster; node is then the node holding the primary copy. An invalid id is never sent to " +
			"memcached (it is \"no session\").",
		ConfiguredNodes: formatNodes,
		IDs:             cases,
	})
}

// exptimeVectors are the TTL -> exptime cases of exptime.json.
type exptimeVectors struct {
	Description string        `json:"description"`
	NowUnixMs   int64         `json:"now_unix_ms"`
	Cases       []exptimeCase `json:"cases"`
	Session     sessionRule   `json:"session"`
	Lock        lockRule      `json:"lock"`
}

type exptimeCase struct {
	TTLMs   int64  `json:"ttl_ms"`
	Exptime int32  `json:"exptime"`
	Note    string `json:"note"`
}

type sessionRule struct {
	Rule  string        `json:"rule"`
	Cases []sessionCase `json:"cases"`
}

type sessionCase struct {
	IdleTimeoutMs  int64  `json:"idle_timeout_ms"`
	DeadlineUnixMs int64  `json:"deadline_unix_ms"`
	Expired        bool   `json:"expired"`
	Exptime        int32  `json:"exptime"`
	Note           string `json:"note"`
}

type lockRule struct {
	Rule  string     `json:"rule"`
	Cases []lockCase `json:"cases"`
}

type lockCase struct {
	LockTTLMs int64 `json:"lock_ttl_ms"`
	Exptime   int32 `json:"exptime"`
}

// exptimeNow is the fixed "now" of exptime.json: 2023-11-14T22:13:20.750Z.
const exptimeNowMs = 1_700_000_000_750

func buildExptime(t testing.TB) []byte {
	t.Helper()
	now := time.UnixMilli(exptimeNowMs)
	const day = 24 * time.Hour
	ttls := []struct {
		d    time.Duration
		note string
	}{
		{0, "zero: -1 (expire at once), never 0, which memcached reads as \"never expires\""},
		{-time.Second, "negative: -1"},
		{time.Millisecond, "rounded up to whole seconds"},
		{time.Second, "1 s"},
		{time.Second + time.Millisecond, "rounded up"},
		{11 * time.Second, "a lock item with the default 10 s lock TTL (TTL + 1 s)"},
		{30*time.Minute + time.Second, "a session item with the default 30 min idle timeout (idle + 1 s)"},
		{30 * day, "30 days: the largest relative exptime"},
		{30*day + time.Millisecond, "just over 30 days: absolute, floor(now in s) + ceil(ttl in s)"},
		{30*day + time.Second, "absolute"},
		{45*day + time.Second, "45 days + 1 s: absolute"},
		{365 * day, "one year: absolute"},
	}
	var cases []exptimeCase
	for _, c := range ttls {
		cases = append(cases, exptimeCase{TTLMs: c.d.Milliseconds(), Exptime: replica.Expiration(c.d, now), Note: c.note})
	}
	sess := []struct {
		idle     time.Duration
		deadline time.Time
		note     string
	}{
		{30 * time.Minute, time.Time{}, "no deadline: idle + 1 s"},
		{30 * time.Minute, now.Add(day), "deadline far away: idle + 1 s"},
		{30 * time.Minute, now.Add(10 * time.Minute), "deadline in 10 min: 600 s + 1 s"},
		{30 * time.Minute, now.Add(1500 * time.Millisecond), "deadline in 1.5 s: ceil(2.5 s)"},
		{30 * time.Minute, now, "deadline now: expired, nothing is written"},
		{45 * day, time.Time{}, "idle timeout of 45 days: absolute"},
	}
	var scases []sessionCase
	for _, c := range sess {
		exp, ok := store.SessionExptime(c.idle, c.deadline, now)
		scases = append(scases, sessionCase{IdleTimeoutMs: c.idle.Milliseconds(), DeadlineUnixMs: unixMs(c.deadline),
			Expired: !ok, Exptime: exp, Note: c.note})
	}
	var lcases []lockCase
	for _, d := range []time.Duration{time.Second, 10 * time.Second, 90 * time.Second} {
		lcases = append(lcases, lockCase{LockTTLMs: d.Milliseconds(), Exptime: replica.Expiration(d+time.Second, now)})
	}
	return marshalFile(t, exptimeVectors{
		Description: "memcached exptime (the T flag) for a time to live, at the fixed time now_unix_ms " +
			"(replica.Expiration): TTL rounded up to whole seconds; over 30 days (2592000 s) an absolute Unix " +
			"time floor(now) + seconds; zero or negative gives -1, never 0.",
		NowUnixMs: exptimeNowMs,
		Cases:     cases,
		Session: sessionRule{
			Rule: "exptime of a session's items = Expiration(min(idle_timeout, deadline - now) + 1 s, now); " +
				"no write once deadline <= now; deadline 0 = no deadline",
			Cases: scases,
		},
		Lock: lockRule{
			Rule:  "exptime of a lock item = Expiration(lock TTL + 1 s, now)",
			Cases: lcases,
		},
	})
}

// formatFiles returns every file of testdata/format as the definitions
// produce it, by file name.
func formatFiles(t testing.TB) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"ids.json":     buildIDs(t),
		"exptime.json": buildExptime(t),
	}
	files["sealed.json"], files["sealed.bin"] = buildSealed(t)
	for _, d := range vectorDefs() {
		desc, bin := buildVector(t, d)
		files[d.name+".json"] = desc
		files[d.name+".bin"] = bin
	}
	return files
}

// TestFormatFilesAreCurrent checks that testdata/format holds exactly the
// files the definitions produce (or, with -update-format, writes them).
func TestFormatFilesAreCurrent(t *testing.T) {
	want := formatFiles(t)
	if *updateFormat {
		require.NoError(t, os.MkdirAll(formatDir, 0o755))
		entries, err := os.ReadDir(formatDir)
		require.NoError(t, err)
		for _, e := range entries {
			if _, ok := want[e.Name()]; !ok {
				require.NoError(t, os.Remove(filepath.Join(formatDir, e.Name())))
			}
		}
		for name, b := range want {
			require.NoError(t, os.WriteFile(filepath.Join(formatDir, name), b, 0o644))
		}
		t.Logf("wrote %d files to %s", len(want), formatDir)
		return
	}
	entries, err := os.ReadDir(formatDir)
	require.NoError(t, err, "run: go test ./store -run Format -update-format")
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	var names []string
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	require.Equal(t, names, got, "files in %s", formatDir)
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(formatDir, name))
		require.NoError(t, err)
		if strings.HasSuffix(name, ".bin") {
			require.Equal(t, hex.EncodeToString(want[name]), hex.EncodeToString(b),
				"%s differs from what the definitions produce (after a deliberate change: -update-format)", name)
		} else {
			require.Equal(t, string(want[name]), string(b),
				"%s differs from what the definitions produce (after a deliberate change: -update-format)", name)
		}
	}
}

// loadVectors reads every vector description of testdata/format with its
// bytes.
func loadVectors(t *testing.T) ([]formatVector, [][]byte) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(formatDir, "*.json"))
	require.NoError(t, err)
	var vecs []formatVector
	var bins [][]byte
	for _, p := range paths {
		if base := filepath.Base(p); base == "ids.json" || base == "exptime.json" || base == "sealed.json" {
			continue
		}
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		var v formatVector
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&v), p)
		bin, err := os.ReadFile(filepath.Join(formatDir, v.Bin))
		require.NoError(t, err, p)
		vecs = append(vecs, v)
		bins = append(bins, bin)
	}
	require.Len(t, vecs, len(vectorDefs()), "vectors in %s", formatDir)
	return vecs, bins
}

// TestFormatVectors checks each golden vector in both directions, from the
// files alone: decoding the .bin gives the described session, and
// encoding the described session gives the .bin.
func TestFormatVectors(t *testing.T) {
	vecs, bins := loadVectors(t)
	for i, v := range vecs {
		bin := bins[i]
		t.Run(v.Name, func(t *testing.T) {
			c := codecByName(t, v.Codec)
			require.Equal(t, uint64(codec.FormatVersion), v.FormatVersion)
			require.Equal(t, v.Name+".bin", v.Bin)
			require.Equal(t, rfc3339Ms(v.CreatedUnixMs), v.Created, "created is created_unix_ms as RFC 3339")
			require.Equal(t, rfc3339Ms(v.DeadlineUnixMs), v.Deadline, "deadline is deadline_unix_ms as RFC 3339")
			// The envelope starts with a 7-item array head (8 with a user)
			// and the format version.
			head := byte(0x87)
			if v.User != "" {
				head = 0x88
			}
			require.Equal(t, []byte{head, byte(v.FormatVersion)}, bin[:2])

			// Each attribute: the value encodes to the bytes, and the bytes
			// decode to the value (or to what a generic decode gives).
			attrs := map[string][]byte{}
			prev := -1
			for _, a := range v.Attributes {
				raw, err := hex.DecodeString(a.EncodedHex)
				require.NoError(t, err, a.Name)
				require.NotContains(t, attrs, a.Name, "attribute listed twice")
				attrs[a.Name] = raw
				if c.Name() == "json" {
					require.Equal(t, string(raw), a.EncodedText, "%s: encoded_text", a.Name)
				} else {
					require.Empty(t, a.EncodedText, "%s: encoded_text is for the json codec", a.Name)
				}

				goVal, err := a.Value.toGo()
				require.NoError(t, err, a.Name)
				enc, err := c.Marshal(goVal)
				require.NoError(t, err, a.Name)
				require.Equal(t, a.EncodedHex, hex.EncodeToString(enc), "%s: encoding of the value", a.Name)

				var back any
				require.NoError(t, c.Unmarshal(raw, &back), a.Name)
				got, err := fromGo(back, c.Name())
				require.NoError(t, err, a.Name)
				want := a.Value
				if a.Decoded != nil {
					want = *a.Decoded
					nv, err := a.Value.normalized()
					require.NoError(t, err)
					nd, err := want.normalized()
					require.NoError(t, err)
					require.NotEqual(t, nv, nd, "%s: decoded is given only when it differs from value", a.Name)
				}
				wantN, err := want.normalized()
				require.NoError(t, err, a.Name)
				require.Equal(t, wantN, got, "%s: decoding of the bytes", a.Name)

				// Listed in envelope order.
				off := pairOffset(t, bin, a)
				require.Greater(t, off, prev, "%s: attributes are listed in the envelope's order", a.Name)
				prev = off
			}

			// Decoding direction: the bytes give exactly the described record.
			rec, err := codec.DecodeRecord(c, bin)
			require.NoError(t, err)
			require.Equal(t, fromUnixMs(v.CreatedUnixMs), rec.Created)
			require.Equal(t, fromUnixMs(v.DeadlineUnixMs), rec.Deadline)
			require.Equal(t, time.Duration(v.IdleTimeoutMs)*time.Millisecond, rec.IdleTimeout)
			require.Equal(t, v.Version, rec.Version)
			require.Equal(t, hexAttrs(attrs), hexAttrs(rec.Attrs))
			require.Equal(t, v.User, rec.User)

			// Encoding direction: the described record gives exactly the bytes.
			enc, err := codec.EncodeRecord(c, &codec.Record{
				Created: fromUnixMs(v.CreatedUnixMs), Deadline: fromUnixMs(v.DeadlineUnixMs),
				IdleTimeout: time.Duration(v.IdleTimeoutMs) * time.Millisecond, Version: v.Version, Attrs: attrs,
				User: v.User,
			})
			require.NoError(t, err)
			require.Equal(t, hex.EncodeToString(bin), hex.EncodeToString(enc))

			// The codec name is recorded and checked.
			_, err = codec.DecodeRecord(otherCodec(c), bin)
			require.ErrorIs(t, err, codec.ErrCodecMismatch)

			// Keys and client flags.
			m := v.Memcached
			st := formatStore(t, m.KeyPrefix)
			require.True(t, st.ValidID(m.ID), m.ID)
			primary, _, ok := st.Placement(m.ID)
			require.True(t, ok)
			require.Equal(t, m.Node, primary)
			session, backup, lockKey := st.MemcachedKeys(m.ID)
			require.Equal(t, m.PrimaryKey, session)
			require.Equal(t, m.BackupKey, backup)
			require.Equal(t, m.LockKey, lockKey)
			require.Equal(t, m.KeyPrefix+m.ID, m.PrimaryKey)
			require.Equal(t, m.KeyPrefix+"bak:"+m.ID, m.BackupKey)
			require.Equal(t, m.KeyPrefix+"lock:"+m.ID, m.LockKey)
			require.Equal(t, uint32(v.Version), m.ClientFlags, "client flags are the low 32 bits of the version")
			if v.User == "" {
				require.Empty(t, m.UserIndexKey)
				require.Empty(t, m.UserIndexNodes)
			} else {
				key, primary, secondary := st.UserIndexKey(v.User)
				require.Equal(t, m.UserIndexKey, key)
				require.Equal(t, m.UserIndexNodes, []string{primary, secondary})
				sum := sha256.Sum256([]byte(v.User))
				require.Equal(t, m.KeyPrefix+"user:"+hex.EncodeToString(sum[:]), key)
				require.Equal(t, rendezvousTop2(hex.EncodeToString(sum[:]), formatNodes), m.UserIndexNodes)
			}
		})
	}
}

// rendezvousTop2 restates docs/FORMAT.md's placement of a user index:
// the two nodes with the highest first 8 bytes (big-endian) of
// SHA-256(hash + ":" + node id), ties to the node listed first.
func rendezvousTop2(hash string, nodes []string) []string {
	type scored struct {
		id    string
		score uint64
	}
	var all []scored
	for _, n := range nodes {
		sum := sha256.Sum256([]byte(hash + ":" + n))
		all = append(all, scored{n, binary.BigEndian.Uint64(sum[:8])})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].score > all[j].score })
	return []string{all[0].id, all[1].id}
}

// hexAttrs shows attribute bytes as hex, for readable failures.
func hexAttrs(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = hex.EncodeToString(v)
	}
	return out
}

// TestFormatRejections checks what a reader must refuse, on variants of a
// golden vector.
func TestFormatRejections(t *testing.T) {
	bin, err := os.ReadFile(filepath.Join(formatDir, "key-prefix.bin"))
	require.NoError(t, err)
	c := codec.NewCBOR()
	_, err = codec.DecodeRecord(c, bin)
	require.NoError(t, err)
	with := func(i int, b byte) []byte {
		out := bytes.Clone(bin)
		out[i] = b
		return out
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"format version 2", with(1, 0x02), codec.ErrFormat},
		{"format version 0", with(1, 0x00), codec.ErrFormat},
		{"8-item array whose 8th item is not text", append(with(0, 0x88), 0x00), codec.ErrCorrupt},
		{"9-item array", append(with(0, 0x89), 0x60, 0x00), codec.ErrCorrupt},
		{"truncated", bin[:len(bin)-1], codec.ErrCorrupt},
		{"trailing byte", append(bytes.Clone(bin), 0x00), codec.ErrCorrupt},
		{"tagged", append([]byte{0xc0}, bin...), codec.ErrCorrupt},
		{"empty", nil, codec.ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := codec.DecodeRecord(c, tc.data)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// TestFormatIDs checks ids.json against Store.ValidID and Placement.
func TestFormatIDs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(formatDir, "ids.json"))
	require.NoError(t, err)
	var v idVectors
	require.NoError(t, json.Unmarshal(b, &v))
	require.Equal(t, formatNodes, v.ConfiguredNodes)
	require.NotEmpty(t, v.IDs)
	st := formatStore(t, "")
	valid := 0
	for _, c := range v.IDs {
		require.Equal(t, c.Valid, st.ValidID(c.ID), "%q: %s", c.ID, c.Reason)
		primary, _, ok := st.Placement(c.ID)
		require.Equal(t, c.Valid, ok, "%q", c.ID)
		if c.Valid {
			valid++
			require.Equal(t, c.Node, primary, "%q", c.ID)
		} else {
			require.Empty(t, c.Node, "%q", c.ID)
		}
	}
	require.Positive(t, valid)
	require.Less(t, valid, len(v.IDs))
}

// TestFormatExptime checks exptime.json against replica.Expiration (and
// the store's own session rule, and the lock rule as this file restates it).
func TestFormatExptime(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(formatDir, "exptime.json"))
	require.NoError(t, err)
	var v exptimeVectors
	require.NoError(t, json.Unmarshal(b, &v))
	require.NotEmpty(t, v.Cases)
	now := time.UnixMilli(v.NowUnixMs)
	for _, c := range v.Cases {
		ttl := time.Duration(c.TTLMs) * time.Millisecond
		require.Equal(t, c.Exptime, replica.Expiration(ttl, now), "ttl %v: %s", ttl, c.Note)
		require.NotZero(t, c.Exptime)
	}
	for _, c := range v.Session.Cases {
		exp, ok := store.SessionExptime(time.Duration(c.IdleTimeoutMs)*time.Millisecond, fromUnixMs(c.DeadlineUnixMs), now)
		require.Equal(t, c.Expired, !ok, c.Note)
		require.Equal(t, c.Exptime, exp, c.Note)
	}
	for _, c := range v.Lock.Cases {
		require.Equal(t, c.Exptime, replica.Expiration(time.Duration(c.LockTTLMs)*time.Millisecond+time.Second, now))
	}
}

// lockToken is the form of the owner token in a lock item.
var lockToken = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestFormatOnMemcached plays a foreign writer against real memcached:
// the golden bytes written under the documented keys and client flags are
// loaded by the store as described; the store's next save writes the
// next version to both documented keys with the documented flags and TTL;
// the lock item and a destroy look as documented. Vectors with an absolute
// deadline (in the past by now) or a short idle timeout are left out.
func TestFormatOnMemcached(t *testing.T) {
	vecs, bins := loadVectors(t)
	c := mcproc.NewCluster(t, 3)
	ctx := context.Background()
	used := 0
	for i, v := range vecs {
		bin := bins[i]
		m := v.Memcached
		if v.DeadlineUnixMs != 0 || v.IdleTimeoutMs < uint64(time.Minute.Milliseconds()) || c.Node(m.Node) == nil {
			continue
		}
		used++
		t.Run(v.Name, func(t *testing.T) {
			st := newStore(t, c, func(cfg *store.Config) {
				cfg.KeyPrefix = m.KeyPrefix
				cfg.Codec = codecByName(t, v.Codec)
			})
			primary, backup, ok := st.Placement(m.ID)
			require.True(t, ok)
			require.Equal(t, m.Node, primary)
			require.NotEmpty(t, backup)
			// Write both copies as a foreign writer would.
			for _, w := range []struct{ node, key string }{{primary, m.PrimaryKey}, {backup, m.BackupKey}} {
				require.NoError(t, c.Node(w.node).Client().Set(&memcache.Item{Key: w.key, Value: bin, Flags: m.ClientFlags, Expiration: 600}))
			}

			s, err := st.Load(ctx, m.ID)
			require.NoError(t, err)
			require.Equal(t, m.ID, s.ID())
			require.Equal(t, fromUnixMs(v.CreatedUnixMs), s.Created())
			require.True(t, s.Deadline().IsZero())
			require.Equal(t, time.Duration(v.IdleTimeoutMs)*time.Millisecond, s.IdleTimeout())
			require.Equal(t, v.Version, s.Version())
			var names []string
			for _, a := range v.Attributes {
				names = append(names, a.Name)
				var got any
				ok, err := s.Get(a.Name, &got)
				require.NoError(t, err)
				require.True(t, ok, a.Name)
				f, err := fromGo(got, v.Codec)
				require.NoError(t, err)
				want := a.Value
				if a.Decoded != nil {
					want = *a.Decoded
				}
				wantN, err := want.normalized()
				require.NoError(t, err)
				require.Equal(t, wantN, f, a.Name)
			}
			slices.Sort(names)
			require.Equal(t, names, s.Keys())

			// A save writes version+1 to both keys, flags included.
			require.NoError(t, s.Set("probe", 1))
			s.Remove("probe")
			require.True(t, s.Modified())
			require.NoError(t, st.Save(ctx, s))
			want, err := codec.DecodeRecord(codecByName(t, v.Codec), bin)
			require.NoError(t, err)
			want.Version++
			wantBin, err := codec.EncodeRecord(codecByName(t, v.Codec), want)
			require.NoError(t, err)
			for _, w := range []struct{ node, key string }{{primary, m.PrimaryKey}, {backup, m.BackupKey}} {
				it, err := get(t, c, w.node, w.key)
				require.NoError(t, err, w.key)
				require.Equal(t, hex.EncodeToString(wantBin), hex.EncodeToString(it.Value), w.key)
				require.Equal(t, uint32(v.Version+1), it.Flags, w.key)
				// TTL: idle timeout + 1 s (memcached reports what is left).
				idleS := int(v.IdleTimeoutMs / 1000)
				ttl := metaTTL(t, c.Node(w.node).Addr(), w.key)
				require.True(t, ttl >= idleS-5 && ttl <= idleS+1, "%s: TTL %d, idle %d s", w.key, ttl, idleS)
			}

			// The lock item: an owner token, no flags, lock TTL + 1 s.
			locked, err := st.LoadLocked(ctx, m.ID)
			require.NoError(t, err)
			it, err := get(t, c, primary, m.LockKey)
			require.NoError(t, err)
			require.Regexp(t, lockToken, string(it.Value))
			require.Zero(t, it.Flags)
			ttl := metaTTL(t, c.Node(primary).Addr(), m.LockKey)
			lockTTL := int(st.Locker().Config().TTL / time.Second)
			require.True(t, ttl >= lockTTL-2 && ttl <= lockTTL+1, "lock TTL %d", ttl)
			require.NoError(t, st.Release(ctx, locked))
			_, err = get(t, c, primary, m.LockKey)
			require.ErrorIs(t, err, memcache.ErrCacheMiss, "released")

			// Destroy removes both copies.
			require.NoError(t, st.DestroyID(ctx, m.ID))
			for _, w := range []struct{ node, key string }{{primary, m.PrimaryKey}, {backup, m.BackupKey}} {
				_, err := get(t, c, w.node, w.key)
				require.True(t, errors.Is(err, memcache.ErrCacheMiss), "%s: %v", w.key, err)
			}
		})
	}
	require.GreaterOrEqual(t, used, 2, "vectors usable against memcached")
}
