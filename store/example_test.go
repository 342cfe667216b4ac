package store_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// A Store over three memcached nodes: create a session, save it (primary
// and backup copy), load it on another request and change it under the
// session lock.
func Example() {
	nodes, err := replica.ParseNodes(nodeList) // e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211,n3=10.0.0.3:11211"
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := replica.New(replica.Config{Nodes: nodes})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	st, err := store.New(store.Config{Cluster: cluster})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	s, err := st.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Set("user", "ada"); err != nil {
		log.Fatal(err)
	}
	if err := st.Save(ctx, s); err != nil {
		log.Fatal(err)
	}
	id := s.ID() // the cookie value: 32 random hex digits, "-" and the node id
	fmt.Println(len(id), st.ValidID(id))

	// A later request, on any app server: lock, load, modify, save, unlock.
	s, err = st.LoadLocked(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return // expired, forged or unknown: start a fresh session
	}
	if err != nil {
		log.Fatal(err)
	}
	n, _, err := store.Get[int](s, "visits")
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Set("visits", n+1); err != nil {
		log.Fatal(err)
	}
	if err := st.SaveAndRelease(ctx, s); err != nil {
		log.Fatal(err)
	}
	user, _, _ := store.Get[string](s, "user")
	fmt.Println(user, n+1, s.Version())
	// Output:
	// 35 true
	// ada 1 2
}

// openStore builds a Store over the nodes of nodeList with cfg, as Example
// shows step by step. Close its cluster when done.
func openStore(cfg store.Config) *store.Store {
	nodes, err := replica.ParseNodes(nodeList)
	if err != nil {
		log.Fatal(err)
	}
	cfg.Cluster, err = replica.New(replica.Config{Nodes: nodes})
	if err != nil {
		log.Fatal(err)
	}
	st, err := store.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	return st
}

// savedSession creates and saves a session with the given attributes and
// returns its id (what the session cookie holds).
func savedSession(st *store.Store, attrs map[string]any) string {
	ctx := context.Background()
	s, err := st.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for k, v := range attrs {
		if err := s.Set(k, v); err != nil {
			log.Fatal(err)
		}
	}
	if err := st.Save(ctx, s); err != nil {
		log.Fatal(err)
	}
	return s.ID()
}

// Typed attributes: any value the codec can encode (strings, numbers,
// structs, slices, times) is stored with Set and read back with Get as the
// type it was stored as.
func ExampleGet() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()

	type Cart struct {
		Items []string
		Total int // cents
	}
	s, err := st.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_ = s.Set("user", "ada")
	_ = s.Set("visits", 3)
	_ = s.Set("cart", Cart{Items: []string{"book", "pen"}, Total: 1250})
	_ = s.Set("since", time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	if err := st.Save(ctx, s); err != nil {
		log.Fatal(err)
	}

	// Another request loads the session and reads the values back typed.
	s, err = st.Load(ctx, s.ID())
	if err != nil {
		log.Fatal(err)
	}
	user, _, _ := store.Get[string](s, "user")
	visits, _, _ := store.Get[int](s, "visits")
	cart, _, _ := store.Get[Cart](s, "cart")
	since, _, _ := store.Get[time.Time](s, "since")
	fmt.Println(user, visits, cart.Items, cart.Total, since.Format(time.DateOnly))

	_, found, err := store.Get[string](s, "theme")
	fmt.Println("theme:", found, err) // absent: the zero value, false, no error
	_, _, err = store.Get[int](s, "user")
	fmt.Println("user as int fails:", err != nil)
	fmt.Println(s.Keys())
	// Output:
	// ada 3 [book pen] 1250 2025-06-01
	// theme: false <nil>
	// user as int fails: true
	// [cart since user visits]
}

// A locked read-modify-write: LoadLocked takes the session's lock and
// loads it in one round trip, SaveAndRelease saves and unlocks. Another
// request for the same session waits for the lock meanwhile, here for at
// most 50ms (lock.WithWaitTimeout), then gives up with lock.ErrLockTimeout.
func ExampleStore_LoadLocked() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"visits": 0})

	s, err := st.LoadLocked(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("locked:", s.Locked())

	_, err = st.LoadLocked(lock.WithWaitTimeout(ctx, 50*time.Millisecond), id)
	fmt.Println("second request:", errors.Is(err, lock.ErrLockTimeout))

	n, _, _ := store.Get[int](s, "visits")
	_ = s.Set("visits", n+1)
	if err := st.SaveAndRelease(ctx, s); err != nil {
		log.Fatal(err)
	}
	fmt.Println("locked:", s.Locked())

	// The lock is free again: the next request gets it at once.
	s, err = st.LoadLocked(lock.WithWaitTimeout(ctx, 50*time.Millisecond), id)
	if err != nil {
		log.Fatal(err)
	}
	n, _, _ = store.Get[int](s, "visits")
	fmt.Println("visits:", n)
	if err := st.Release(ctx, s); err != nil { // nothing changed: unlock only
		log.Fatal(err)
	}
	// Output:
	// locked: true
	// second request: true
	// locked: false
	// visits: 1
}

// Login: RenewID gives the session a new id (against session fixation)
// and keeps its data; the old id no longer loads.
func ExampleStore_RenewID() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()
	anonymous := savedSession(st, map[string]any{"cart": []string{"book"}})

	// The login request.
	s, err := st.LoadLocked(ctx, anonymous)
	if err != nil {
		log.Fatal(err)
	}
	if err := st.RenewID(ctx, s); err != nil {
		log.Fatal(err)
	}
	_ = s.Set("user", "ada")
	if err := st.SaveAndRelease(ctx, s); err != nil {
		log.Fatal(err)
	}
	fmt.Println("new id:", s.ID() != anonymous, s.PreviousID() == anonymous)

	_, err = st.Load(ctx, anonymous)
	fmt.Println("old id:", errors.Is(err, store.ErrNotFound))

	s, err = st.Load(ctx, s.ID()) // the id of the new cookie
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Keys())
	// Output:
	// new id: true true
	// old id: true
	// [cart user]
}

// Logout: Destroy deletes every copy of the session and its lock; the id
// no longer loads and the Session value can no longer be saved.
func ExampleStore_Destroy() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"user": "ada"})

	s, err := st.LoadLocked(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	if err := st.Destroy(ctx, s); err != nil { // also releases the lock
		log.Fatal(err)
	}
	_, err = st.Load(ctx, id)
	fmt.Println(errors.Is(err, store.ErrNotFound))
	_ = s.Set("user", "eve")
	fmt.Println(errors.Is(st.Save(ctx, s), store.ErrDestroyed))
	// Output:
	// true
	// true
}

// DestroyID logs a session out by its id alone, e.g. from an admin page
// or when a user logs out of all their devices: every copy on every node
// is deleted. An id that does not parse is ignored.
func ExampleStore_DestroyID() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"user": "ada"})

	if err := st.DestroyID(ctx, id); err != nil {
		log.Fatal(err)
	}
	_, err := st.Load(ctx, id)
	fmt.Println(errors.Is(err, store.ErrNotFound))
	fmt.Println(st.DestroyID(ctx, "not-a-session-id"))
	// Output:
	// true
	// <nil>
}

// A per-session idle timeout: the store's default (Config.IdleTimeout)
// applies to new sessions, SetIdleTimeout changes it for one session (here
// an administrator's, after 5 minutes without requests). It is stored with
// the session, so every app server honours it whatever its own default.
func ExampleSession_SetIdleTimeout() {
	st := openStore(store.Config{IdleTimeout: 20 * time.Minute})
	defer st.Cluster().Close()
	ctx := context.Background()

	s, err := st.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.IdleTimeout())
	_ = s.Set("role", "admin")
	s.SetIdleTimeout(5 * time.Minute)
	if err := st.Save(ctx, s); err != nil {
		log.Fatal(err)
	}

	// Another app server, configured with the 30-minute default.
	other := openStore(store.Config{})
	defer other.Cluster().Close()
	loaded, err := other.Load(ctx, s.ID())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(loaded.IdleTimeout())

	// A read-only request refreshes the idle timeout without rewriting
	// the session; TouchIfDue skips it when the session was written or
	// touched lately (Config.TouchAfter, default a tenth of the timeout).
	touched, err := st.TouchIfDue(ctx, s)
	fmt.Println(touched, err)
	fmt.Println(st.Touch(ctx, s))
	// Output:
	// 20m0s
	// 5m0s
	// false <nil>
	// <nil>
}

// Two requests that save the same session without its lock: the second
// save finds that the session changed since it was loaded (memcached CAS)
// and returns ErrConflict instead of overwriting the first one's change.
// It reloads and applies its change again.
func ExampleStore_Save() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"user": "ada"})

	a, err := st.Load(ctx, id) // request A
	if err != nil {
		log.Fatal(err)
	}
	b, err := st.Load(ctx, id) // request B, at the same time
	if err != nil {
		log.Fatal(err)
	}
	_ = a.Set("theme", "dark")
	fmt.Println("a:", st.Save(ctx, a))
	_ = b.Set("lang", "fr")
	err = st.Save(ctx, b)
	fmt.Println("b:", errors.Is(err, store.ErrConflict))

	b, err = st.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	_ = b.Set("lang", "fr")
	fmt.Println("b again:", st.Save(ctx, b))
	fmt.Println(b.Keys(), b.Version())
	// Output:
	// a: <nil>
	// b: true
	// b again: <nil>
	// [lang theme user] 3
}

// An id that is malformed, names an unknown node or is unknown to
// memcached (forged, expired, logged out) loads as ErrNotFound: the caller
// starts a fresh session and never adopts the id it was sent. Malformed
// ids never reach memcached.
func ExampleStore_Load() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()

	for _, id := range []string{
		"",
		"forged",
		"../../etc/passwd",
		strings.Repeat("0", 32) + "-n9", // well formed, unknown node
		strings.Repeat("0", 32) + "-n1", // well formed, unknown to memcached
	} {
		_, err := st.Load(ctx, id)
		fmt.Printf("%-37q valid=%-5t not found=%t\n", id, st.ValidID(id), errors.Is(err, store.ErrNotFound))
	}
	// Output:
	// ""                                    valid=false not found=true
	// "forged"                              valid=false not found=true
	// "../../etc/passwd"                    valid=false not found=true
	// "00000000000000000000000000000000-n9" valid=false not found=true
	// "00000000000000000000000000000000-n1" valid=true  not found=true
}

// Failure handling: the node holding a session's primary copy crashes.
// Load reads the backup copy from the next node and relocates the session
// there: it gets a new id (send it as the new cookie), with the same data,
// written as the primary copy on its new node with a new backup.
func ExampleStore_Load_failover() {
	st := openStore(store.Config{})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"user": "ada"})
	primary, backup, _ := st.Placement(id)

	restart := crashNode(primary) // kill -9 of that node's memcached
	defer restart()

	s, err := st.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	newPrimary, _, _ := st.Placement(s.ID())
	user, _, _ := store.Get[string](s, "user")
	fmt.Println(user)
	fmt.Println("new id:", s.ID() != id, s.PreviousID() == id)
	fmt.Println("on the old backup node:", newPrimary == backup)
	fmt.Println("relocations:", st.Stats().Relocations)

	// The next request sends the new id.
	s, err = st.Load(ctx, s.ID())
	fmt.Println(err, s.Has("user"))
	// Output:
	// ada
	// new id: true true
	// on the old backup node: true
	// relocations: 1
	// <nil> true
}

// A session whose encoding exceeds Config.MaxSize (default just under
// memcached's 1 MiB item limit, here 4 KiB) is not saved: Save returns
// ErrTooLarge and the stored copy stays as it was.
func ExampleStore_Save_tooLarge() {
	st := openStore(store.Config{MaxSize: 4 << 10})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"user": "ada"})

	s, err := st.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	_ = s.Set("report", strings.Repeat("x", 5000))
	err = st.Save(ctx, s)
	fmt.Println(errors.Is(err, store.ErrTooLarge))

	s, err = st.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Keys(), s.Version())
	// Output:
	// true
	// [user] 1
}

// A custom codec: Config.Codec encodes the attribute values, here as JSON
// (readable by other languages) instead of the default CBOR. Every app
// server sharing the sessions must use the same codec: a session written
// with another one loads as ErrNotFound.
func ExampleConfig_codec() {
	st := openStore(store.Config{Codec: codec.NewJSON()})
	defer st.Cluster().Close()
	ctx := context.Background()

	type Prefs struct {
		Theme string `json:"theme"`
		Size  int    `json:"size"`
	}
	id := savedSession(st, map[string]any{"prefs": Prefs{Theme: "dark", Size: 14}})

	s, err := st.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	prefs, _, _ := store.Get[Prefs](s, "prefs")
	fmt.Printf("%+v\n", prefs)
	// Untyped, JSON numbers decode as float64.
	raw, _, _ := store.Get[any](s, "prefs")
	fmt.Printf("%T %v\n", raw.(map[string]any)["size"], raw)

	cborStore := openStore(store.Config{}) // codec.NewCBOR(), the default
	defer cborStore.Cluster().Close()
	_, err = cborStore.Load(ctx, id)
	fmt.Println(errors.Is(err, store.ErrNotFound), errors.Is(err, codec.ErrCodecMismatch))
	// Output:
	// {Theme:dark Size:14}
	// float64 map[size:14 theme:dark]
	// true true
}

// Encryption at rest: every copy of the session in memcached is sealed
// with AES-256-GCM. To rotate keys, put a new key first and keep the old
// one second until the sessions it sealed have expired: no one is logged
// out. A store without the old key finds those sessions no more.
func ExampleConfig_encryption() {
	// In production: keys from a secret store, e.g. "openssl rand -hex 32".
	oldKey := strings.Repeat("a1", 32)
	newKey := strings.Repeat("b2", 32)
	ring, err := codec.ParseKeyRing(oldKey)
	if err != nil {
		log.Fatal(err)
	}
	st := openStore(store.Config{Encryption: ring})
	defer st.Cluster().Close()
	ctx := context.Background()
	id := savedSession(st, map[string]any{"card": "4111-1111-1111-1111"})

	// Rotation, step 2: the new key seals, the old one still opens.
	rotated, err := codec.ParseKeyRing(newKey + "," + oldKey)
	if err != nil {
		log.Fatal(err)
	}
	st2 := openStore(store.Config{Encryption: rotated})
	defer st2.Cluster().Close()
	s, err := st2.Load(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	card, _, _ := store.Get[string](s, "card")
	fmt.Println(card)

	// The old key removed too early: that session is not found (counted).
	onlyNew, err := codec.ParseKeyRing(newKey)
	if err != nil {
		log.Fatal(err)
	}
	st3 := openStore(store.Config{Encryption: onlyNew})
	defer st3.Cluster().Close()
	_, err = st3.Load(ctx, id)
	fmt.Println(errors.Is(err, store.ErrNotFound), errors.Is(err, codec.ErrUnknownKey), st3.Stats().Undecryptable)
	// Output:
	// 4111-1111-1111-1111
	// true true 1
}
