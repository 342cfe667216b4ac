package main

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"time"
)

// floorMeta is the same application doing the physical minimum with raw,
// pipelined memcached meta commands on node n1 and no library at all (its
// client is metaconn.go, ~250 lines, nothing imported from mcsession).
// Cookie and record are floor's (cookie sid, "user|csrf|counter|last").
// Every step is one round trip:
//
//	new:        ms <key> <len> T<ttl>
//	read:       [ms <lock> 32 ME T10 c + mg <key> v]
//	            [md <lock> C<lockcas> q + mn]
//	write/incr: [ms <lock> 32 ME T10 c + mg <key> v c]
//	            [ms <key> <len> C<cas> T<ttl> + md <lock> C<lockcas> q + mn]
//	count:      mg <key> v (unlocked)
//
// Reads are LOCKED, 2 round trips, like floor-locked's (and mcsession-all's)
// reads, because floor-meta is the physical limit of those two rows; the
// unlocked read of floor (one mg) is the limit of mcsession-none's. The lock
// is an add-mode ms with a 32-character random token and a 10 s TTL; when it
// answers NS the read pipelined with it is discarded and the step is
// retried with floor-locked's backoff (2 ms doubling with jitter up to
// 50 ms, 503 after 2 s). The lock is released with a CAS-guarded md sent
// after the save on the same connection, so the save is ordered before the
// release; a save answered EX (the record changed under the lock) is 409.
type floorMeta struct {
	pool    *metaPool
	timeout time.Duration
}

const floorMetaPrefix = "fm:"

func newFloorMeta(addr string, maxIdle int) *impl {
	const timeout = 500 * time.Millisecond // gomemcache's timeout in mcClient
	f := &floorMeta{pool: newMetaPool(addr, maxIdle, timeout), timeout: timeout}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /new", f.new)
	mux.HandleFunc("GET /read", f.read)
	mux.HandleFunc("POST /write", f.write)
	mux.HandleFunc("POST /incr", f.incr)
	mux.HandleFunc("GET /count", f.count)
	return &impl{
		name:    "floor-meta",
		desc:    "raw pipelined meta commands, own tiny client, no library: locked read/write in 2 round trips, new in 1, on n1",
		handler: mux,
		close:   f.pool.close,
	}
}

// errMetaStatus is a well-formed answer that the step did not expect
// (e.g. NS to a plain set).
var errMetaStatus = errors.New("memcached meta: unexpected status")

// send sends the batch appended to c in one write.
func (f *floorMeta) send(c *metaConn) error { return c.flush(f.timeout) }

// done ends a round trip: the connection goes back to the pool when every
// answer was read and expected, and is closed otherwise.
func (f *floorMeta) done(c *metaConn, err error) error {
	if err != nil {
		c.discard()
		return err
	}
	f.pool.put(c)
	return nil
}

// drainQuiet reads what a quiet md and the closing mn answer: nothing on
// success, NF or EX when the lock expired (and was maybe taken by someone
// else) before the release, then MN.
func drainQuiet(c *metaConn) error {
	for {
		rep, err := c.read()
		if err != nil {
			return err
		}
		switch rep.code {
		case mcMN:
			return nil
		case mcNF, mcEX:
			// The lock had expired: nothing to release.
		default:
			return errMetaStatus
		}
	}
}

// metaID returns the session id of floor's cookie.
func metaID(r *http.Request) (string, bool) {
	c, err := r.Cookie(floorCookie)
	if err != nil || len(c.Value) != 32 {
		return "", false
	}
	return c.Value, true
}

func (f *floorMeta) new(w http.ResponseWriter, r *http.Request) {
	id := randomID()
	user, csrf := newUser()
	rec := floorRec{user: []byte(user), csrf: []byte(csrf)}
	err := f.setNew(floorMetaPrefix+id, rec.encode())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: floorCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	_, _ = w.Write(okBody)
}

// setNew is new's one round trip: ms <key> <len> T<ttl>.
func (f *floorMeta) setNew(key string, data []byte) error {
	c, err := f.pool.get()
	if err != nil {
		return err
	}
	c.ms(key, data, 0, 0, int(sessionTTL/time.Second), false)
	if err = f.send(c); err == nil {
		var rep metaReply
		if rep, err = c.read(); err == nil && rep.code != mcHD {
			err = errMetaStatus
		}
	}
	return f.done(c, err)
}

// lockAndGet is round trip 1 of a locked request: the add-mode lock and
// the read of the session, pipelined.
func (f *floorMeta) lockAndGet(key, lockKey string, token []byte, withCAS bool) (lock, val metaReply, err error) {
	c, err := f.pool.get()
	if err != nil {
		return lock, val, err
	}
	c.ms(lockKey, token, 'E', 0, floorLockTTL, true)
	c.mg(key, withCAS)
	if err = f.send(c); err == nil {
		if lock, err = c.read(); err == nil {
			val, err = c.read()
		}
		if err == nil && ((lock.code != mcHD && lock.code != mcNS) || (val.code != mcVA && val.code != mcEN)) {
			err = errMetaStatus
		}
	}
	return lock, val, f.done(c, err)
}

// lockedLoad takes the lock and reads the session (round trip 1), retried
// with floor-locked's backoff while the lock is taken. It answers the
// request itself (404, 500, 503) when it returns false; otherwise the
// caller must release the lock (lockCAS) in its round trip 2.
func (f *floorMeta) lockedLoad(w http.ResponseWriter, r *http.Request, withCAS bool) (key, lockKey string, rec floorRec, cas, lockCAS uint64, ok bool) {
	id, found := metaID(r)
	if !found {
		http.Error(w, "no session", http.StatusNotFound)
		return
	}
	key, lockKey = floorMetaPrefix+id, floorMetaPrefix+"lock:"+id
	token := []byte(randomID())
	deadline := time.Now().Add(floorWait)
	backoff := 2 * time.Millisecond
	for {
		lock, val, err := f.lockAndGet(key, lockKey, token, withCAS)
		if err != nil {
			// If the lock was taken, it expires after its TTL.
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if lock.code == mcHD {
			lockCAS = lock.cas
			if val.code == mcEN {
				_ = f.release(lockKey, lockCAS)
				http.Error(w, "no session", http.StatusNotFound)
				return
			}
			var good bool
			if rec, good = decodeFloor(val.data); !good {
				_ = f.release(lockKey, lockCAS)
				http.Error(w, "corrupt", http.StatusInternalServerError)
				return
			}
			return key, lockKey, rec, val.cas, lockCAS, true
		}
		// NS: the lock is taken; the read is discarded.
		if time.Now().After(deadline) || r.Context().Err() != nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "session locked", http.StatusServiceUnavailable)
			return
		}
		time.Sleep(backoff/2 + rand.N(backoff/2+1))
		backoff = min(backoff*2, 50*time.Millisecond)
	}
}

// release is round trip 2 of a request that saves nothing:
// md <lock> C<lockcas> q + mn.
func (f *floorMeta) release(lockKey string, lockCAS uint64) error {
	c, err := f.pool.get()
	if err != nil {
		return err
	}
	c.mdq(lockKey, lockCAS)
	c.mn()
	if err = f.send(c); err == nil {
		err = drainQuiet(c)
	}
	return f.done(c, err)
}

// saveRelease is round trip 2 of a modifying request: the CAS-guarded save
// and the release, in this order on one connection. It answers the request
// itself (404, 409, 500) when it returns false.
func (f *floorMeta) saveRelease(w http.ResponseWriter, key, lockKey string, rec *floorRec, cas, lockCAS uint64) bool {
	var save metaReply
	c, err := f.pool.get()
	if err == nil {
		c.ms(key, rec.encode(), 0, cas, int(sessionTTL/time.Second), false)
		c.mdq(lockKey, lockCAS)
		c.mn()
		if err = f.send(c); err == nil {
			if save, err = c.read(); err == nil {
				if save.code != mcHD && save.code != mcEX && save.code != mcNF {
					err = errMetaStatus
				} else {
					err = drainQuiet(c)
				}
			}
		}
		err = f.done(c, err)
	}
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return false
	case save.code == mcEX:
		http.Error(w, "session changed concurrently", http.StatusConflict)
		return false
	case save.code == mcNF:
		http.Error(w, "no session", http.StatusNotFound)
		return false
	}
	return true
}

func (f *floorMeta) read(w http.ResponseWriter, r *http.Request) {
	_, lockKey, rec, _, lockCAS, ok := f.lockedLoad(w, r, false)
	if !ok {
		return
	}
	if err := f.release(lockKey, lockCAS); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRead(w, string(rec.user), rec.counter)
}

func (f *floorMeta) write(w http.ResponseWriter, r *http.Request) {
	v, err := parseV(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key, lockKey, rec, cas, lockCAS, ok := f.lockedLoad(w, r, true)
	if !ok {
		return
	}
	rec.last = v
	if f.saveRelease(w, key, lockKey, &rec, cas, lockCAS) {
		_, _ = w.Write(okBody)
	}
}

func (f *floorMeta) incr(w http.ResponseWriter, r *http.Request) {
	key, lockKey, rec, cas, lockCAS, ok := f.lockedLoad(w, r, true)
	if !ok {
		return
	}
	rec.counter++
	if f.saveRelease(w, key, lockKey, &rec, cas, lockCAS) {
		writeInt(w, rec.counter)
	}
}

// count is one unlocked round trip: mg <key> v.
func (f *floorMeta) count(w http.ResponseWriter, r *http.Request) {
	id, found := metaID(r)
	if !found {
		http.Error(w, "no session", http.StatusNotFound)
		return
	}
	var val metaReply
	c, err := f.pool.get()
	if err == nil {
		c.mg(floorMetaPrefix+id, false)
		if err = f.send(c); err == nil {
			if val, err = c.read(); err == nil && val.code != mcVA && val.code != mcEN {
				err = errMetaStatus
			}
		}
		err = f.done(c, err)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if val.code == mcEN {
		http.Error(w, "no session", http.StatusNotFound)
		return
	}
	rec, good := decodeFloor(val.data)
	if !good {
		http.Error(w, "corrupt", http.StatusInternalServerError)
		return
	}
	writeInt(w, rec.counter)
}
