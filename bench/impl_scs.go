package main

import (
	"errors"
	"net/http"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/bradfitz/gomemcache/memcache"
)

// scsStore is a gomemcache-backed scs.Store: scs v2 ships no memcached
// store. Find = get, Commit = set with the expiry scs asks for, Delete =
// delete. Misses are "not found", as scs's Store contract asks.
type scsStore struct {
	mc     *memcache.Client
	prefix string
}

func (s *scsStore) Find(token string) ([]byte, bool, error) {
	it, err := s.mc.Get(s.prefix + token)
	if errors.Is(err, memcache.ErrCacheMiss) || errors.Is(err, memcache.ErrMalformedKey) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return it.Value, true, nil
}

func (s *scsStore) Commit(token string, b []byte, expiry time.Time) error {
	return s.mc.Set(&memcache.Item{Key: s.prefix + token, Value: b, Expiration: memcacheExptime(expiry)})
}

func (s *scsStore) Delete(token string) error {
	err := s.mc.Delete(s.prefix + token)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	return err
}

// memcacheExptime converts an absolute expiry to memcached's exptime:
// seconds from now up to 30 days, an absolute Unix time beyond, and -1
// (expire at once) for a time in the past.
func memcacheExptime(expiry time.Time) int32 {
	d := time.Until(expiry)
	if d <= 0 {
		return -1
	}
	secs := int64((d + time.Second - 1) / time.Second)
	if secs > 30*24*3600 {
		return int32(expiry.Unix())
	}
	return int32(secs)
}

// newSCS builds the scs implementation: scs.New() defaults (gob codec,
// 24 h lifetime, no idle timeout, so an unchanged session is not rewritten)
// with the store above on one node. With idle set (the opt-in "scs-idle")
// it has the same 30 min idle timeout as mcsession, which scs implements by
// rewriting the session on every request, read-only ones included.
func newSCS(addr string, maxIdle int, idle bool) *impl {
	mc := mcClient(addr, maxIdle)
	sm := scs.New()
	name, desc := "scs", "alexedwards/scs/v2 v2.9.0 defaults (no idle timeout) + a gomemcache Store (get/set/delete) on n1"
	if idle {
		sm.IdleTimeout = sessionTTL
		name, desc = "scs-idle", "scs as above with IdleTimeout 30 min: every request rewrites the session (get+set) on n1"
	}
	sm.Store = &scsStore{mc: mc, prefix: name + ":"}
	sm.ErrorFunc = func(w http.ResponseWriter, r *http.Request, err error) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /new", func(w http.ResponseWriter, r *http.Request) {
		user, csrf := newUser()
		ctx := r.Context()
		sm.Put(ctx, "user", user)
		sm.Put(ctx, "csrf", csrf)
		sm.Put(ctx, "counter", 0)
		sm.Put(ctx, "last", 0)
		_, _ = w.Write(okBody)
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		user := sm.GetString(ctx, "user")
		if user == "" {
			http.Error(w, "no session", http.StatusNotFound)
			return
		}
		writeRead(w, user, sm.GetInt(ctx, "counter"))
	})
	mux.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		v, err := parseV(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx := r.Context()
		if !sm.Exists(ctx, "user") {
			http.Error(w, "no session", http.StatusNotFound)
			return
		}
		sm.Put(ctx, "last", v)
		_, _ = w.Write(okBody)
	})
	mux.HandleFunc("POST /incr", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if !sm.Exists(ctx, "user") {
			http.Error(w, "no session", http.StatusNotFound)
			return
		}
		n := sm.GetInt(ctx, "counter") + 1
		sm.Put(ctx, "counter", n)
		writeInt(w, n)
	})
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if !sm.Exists(ctx, "user") {
			http.Error(w, "no session", http.StatusNotFound)
			return
		}
		writeInt(w, sm.GetInt(ctx, "counter"))
	})
	return &impl{
		name: name, desc: desc,
		handler: sm.LoadAndSave(mux), close: func() { _ = mc.Close() },
	}
}
