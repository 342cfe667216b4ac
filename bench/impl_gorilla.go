package main

import (
	"bytes"
	"encoding/base32"
	"encoding/gob"
	"errors"
	"net/http"
	"strings"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
)

// gorillaStore is a gorilla/sessions Store on gomemcache that behaves as
// github.com/bradleypeabody/gorilla-sessions-memcache (gsm) does with
// StoreMethodGob: the cookie holds the session id signed with securecookie
// (HMAC-SHA256, no encryption key); memcached holds session.Values encoded
// with gob, under prefix+id, written with set and MaxAge as TTL; an id is
// base32 of 32 random bytes. It is written here because gsm is not
// available from the Go module proxy this bench builds with (see README).
type gorillaStore struct {
	codecs  []securecookie.Codec
	options sessions.Options
	mc      *memcache.Client
	prefix  string
}

func newGorillaStore(mc *memcache.Client, prefix string, keyPairs ...[]byte) *gorillaStore {
	return &gorillaStore{
		codecs:  securecookie.CodecsFromPairs(keyPairs...),
		options: sessions.Options{Path: "/", MaxAge: 86400 * 30},
		mc:      mc,
		prefix:  prefix,
	}
}

// Get returns the request's session, cached in the request's registry.
func (s *gorillaStore) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(s, name)
}

// New loads the session named by the request's cookie, or returns a new
// one (IsNew) when there is none or it cannot be loaded.
func (s *gorillaStore) New(r *http.Request, name string) (*sessions.Session, error) {
	sess := sessions.NewSession(s, name)
	opts := s.options
	sess.Options = &opts
	sess.IsNew = true
	c, err := r.Cookie(name)
	if err != nil {
		return sess, nil
	}
	if err := securecookie.DecodeMulti(name, c.Value, &sess.ID, s.codecs...); err != nil {
		return sess, err
	}
	it, err := s.mc.Get(s.prefix + sess.ID)
	if err != nil {
		return sess, err
	}
	if err := gob.NewDecoder(bytes.NewReader(it.Value)).Decode(&sess.Values); err != nil {
		return sess, err
	}
	sess.IsNew = false
	return sess, nil
}

// Save writes the session to memcached and its signed id to the cookie.
func (s *gorillaStore) Save(r *http.Request, w http.ResponseWriter, sess *sessions.Session) error {
	if sess.ID == "" {
		sess.ID = strings.TrimRight(base32.StdEncoding.EncodeToString(securecookie.GenerateRandomKey(32)), "=")
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(sess.Values); err != nil {
		return err
	}
	err := s.mc.Set(&memcache.Item{Key: s.prefix + sess.ID, Value: buf.Bytes(), Expiration: int32(sess.Options.MaxAge)})
	if err != nil {
		return err
	}
	encoded, err := securecookie.EncodeMulti(sess.Name(), sess.ID, s.codecs...)
	if err != nil {
		return err
	}
	http.SetCookie(w, sessions.NewCookie(sess.Name(), encoded, sess.Options))
	return nil
}

const gorillaName = "session"

func newGorilla(addr string, maxIdle int) *impl {
	mc := mcClient(addr, maxIdle)
	st := newGorillaStore(mc, "gor:", securecookie.GenerateRandomKey(32))
	// load returns the request's existing session, answering 404 itself
	// when there is none.
	load := func(w http.ResponseWriter, r *http.Request) (*sessions.Session, bool) {
		sess, err := st.Get(r, gorillaName)
		if err != nil || sess.IsNew {
			code := http.StatusNotFound
			if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
				code = http.StatusInternalServerError
			}
			http.Error(w, "no session", code)
			return nil, false
		}
		return sess, true
	}
	save := func(w http.ResponseWriter, r *http.Request, sess *sessions.Session) bool {
		if err := sess.Save(r, w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return false
		}
		return true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /new", func(w http.ResponseWriter, r *http.Request) {
		sess, _ := st.Get(r, gorillaName)
		user, csrf := newUser()
		sess.Values["user"] = user
		sess.Values["csrf"] = csrf
		sess.Values["counter"] = 0
		sess.Values["last"] = 0
		if save(w, r, sess) {
			_, _ = w.Write(okBody)
		}
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		sess, ok := load(w, r)
		if !ok {
			return
		}
		user, _ := sess.Values["user"].(string)
		n, _ := sess.Values["counter"].(int)
		writeRead(w, user, n)
	})
	mux.HandleFunc("POST /write", func(w http.ResponseWriter, r *http.Request) {
		v, err := parseV(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sess, ok := load(w, r)
		if !ok {
			return
		}
		sess.Values["last"] = v
		if save(w, r, sess) {
			_, _ = w.Write(okBody)
		}
	})
	mux.HandleFunc("POST /incr", func(w http.ResponseWriter, r *http.Request) {
		sess, ok := load(w, r)
		if !ok {
			return
		}
		n, _ := sess.Values["counter"].(int)
		n++
		sess.Values["counter"] = n
		if save(w, r, sess) {
			writeInt(w, n)
		}
	})
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		sess, ok := load(w, r)
		if !ok {
			return
		}
		n, _ := sess.Values["counter"].(int)
		writeInt(w, n)
	})
	return &impl{
		name: "gorilla", desc: "gorilla/sessions v1.4.0 + a gsm-style gomemcache store (signed id cookie, gob values) on n1",
		handler: mux, close: func() { _ = mc.Close() },
	}
}
