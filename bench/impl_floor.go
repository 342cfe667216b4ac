package main

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// floor is the same application with no session library: a random id in
// a cookie and exactly the memcached operations each request needs, on
// one node, with raw gomemcache.
//
//	floor:        read = get; write = get + set; new = set
//	floor-locked: read = add lock + get + delete lock;
//	              write = add lock + get + set + delete lock; new = set
//
// The value is a tiny hand-made record "user|csrf|counter|last". The lock
// of floor-locked is released with a plain delete (no owner check) and
// waits with the same backoff as mcsession's defaults.
type floor struct {
	mc     *memcache.Client
	locked bool
}

const (
	floorCookie  = "sid"
	floorPrefix  = "fl:"
	floorLockTTL = 10 // seconds
	floorWait    = 2 * time.Second
)

func newFloor(addr string, maxIdle int, locked bool) *impl {
	f := &floor{mc: mcClient(addr, maxIdle), locked: locked}
	name, desc := "floor", "raw gomemcache, no library: get / get+set / set on n1"
	if locked {
		name, desc = "floor-locked", "raw gomemcache with an add lock: add+get(+set)+delete on n1"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /new", f.new)
	mux.HandleFunc("GET /read", f.read)
	mux.HandleFunc("POST /write", f.write)
	mux.HandleFunc("POST /incr", f.incr)
	mux.HandleFunc("GET /count", f.count)
	return &impl{name: name, desc: desc, handler: mux, close: func() { _ = f.mc.Close() }}
}

type floorRec struct {
	user, csrf    []byte
	counter, last int
}

func (r *floorRec) encode() []byte {
	b := make([]byte, 0, len(r.user)+len(r.csrf)+24)
	b = append(b, r.user...)
	b = append(b, '|')
	b = append(b, r.csrf...)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(r.counter), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(r.last), 10)
	return b
}

func decodeFloor(b []byte) (floorRec, bool) {
	var r floorRec
	var parts [4][]byte
	for i := 0; i < 3; i++ {
		j := bytes.IndexByte(b, '|')
		if j < 0 {
			return r, false
		}
		parts[i], b = b[:j], b[j+1:]
	}
	parts[3] = b
	c, err1 := strconv.Atoi(string(parts[2]))
	l, err2 := strconv.Atoi(string(parts[3]))
	if err1 != nil || err2 != nil {
		return r, false
	}
	return floorRec{user: parts[0], csrf: parts[1], counter: c, last: l}, true
}

func (f *floor) id(r *http.Request) (string, bool) {
	c, err := r.Cookie(floorCookie)
	if err != nil || len(c.Value) != 32 {
		return "", false
	}
	return c.Value, true
}

func (f *floor) new(w http.ResponseWriter, r *http.Request) {
	id := randomID()
	user, csrf := newUser()
	rec := floorRec{user: []byte(user), csrf: []byte(csrf)}
	err := f.mc.Set(&memcache.Item{Key: floorPrefix + id, Value: rec.encode(), Expiration: int32(sessionTTL / time.Second)})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: floorCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	_, _ = w.Write(okBody)
}

// lock takes the add lock of id when the floor is the locked one; the
// returned function releases it.
func (f *floor) lock(r *http.Request, id string) (func(), bool) {
	if !f.locked {
		return func() {}, true
	}
	key := floorPrefix + "lock:" + id
	deadline := time.Now().Add(floorWait)
	backoff := 2 * time.Millisecond
	for {
		err := f.mc.Add(&memcache.Item{Key: key, Value: []byte("1"), Expiration: floorLockTTL})
		if err == nil {
			return func() { _ = f.mc.Delete(key) }, true
		}
		if !errors.Is(err, memcache.ErrNotStored) || time.Now().After(deadline) || r.Context().Err() != nil {
			return nil, false
		}
		time.Sleep(backoff/2 + rand.N(backoff/2+1))
		backoff = min(backoff*2, 50*time.Millisecond)
	}
}

// load gets the record of the request's session; it answers the request
// itself (404 or 500) when it returns false.
func (f *floor) load(w http.ResponseWriter, r *http.Request) (string, floorRec, func(), bool) {
	id, ok := f.id(r)
	if !ok {
		http.Error(w, "no session", http.StatusNotFound)
		return "", floorRec{}, nil, false
	}
	unlock, ok := f.lock(r, id)
	if !ok {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "session locked", http.StatusServiceUnavailable)
		return "", floorRec{}, nil, false
	}
	it, err := f.mc.Get(floorPrefix + id)
	if err != nil {
		unlock()
		code := http.StatusInternalServerError
		if errors.Is(err, memcache.ErrCacheMiss) {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return "", floorRec{}, nil, false
	}
	rec, ok := decodeFloor(it.Value)
	if !ok {
		unlock()
		http.Error(w, "corrupt", http.StatusInternalServerError)
		return "", floorRec{}, nil, false
	}
	return id, rec, unlock, true
}

func (f *floor) store(w http.ResponseWriter, id string, rec *floorRec) bool {
	err := f.mc.Set(&memcache.Item{Key: floorPrefix + id, Value: rec.encode(), Expiration: int32(sessionTTL / time.Second)})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return false
	}
	return true
}

func (f *floor) read(w http.ResponseWriter, r *http.Request) {
	_, rec, unlock, ok := f.load(w, r)
	if !ok {
		return
	}
	unlock()
	writeRead(w, string(rec.user), rec.counter)
}

func (f *floor) write(w http.ResponseWriter, r *http.Request) {
	v, err := parseV(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id, rec, unlock, ok := f.load(w, r)
	if !ok {
		return
	}
	rec.last = v
	ok = f.store(w, id, &rec)
	unlock()
	if ok {
		_, _ = w.Write(okBody)
	}
}

func (f *floor) incr(w http.ResponseWriter, r *http.Request) {
	id, rec, unlock, ok := f.load(w, r)
	if !ok {
		return
	}
	rec.counter++
	ok = f.store(w, id, &rec)
	unlock()
	if ok {
		writeInt(w, rec.counter)
	}
}

func (f *floor) count(w http.ResponseWriter, r *http.Request) {
	_, rec, unlock, ok := f.load(w, r)
	if !ok {
		return
	}
	unlock()
	writeInt(w, rec.counter)
}
