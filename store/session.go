package store

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/mcsession/mcsession/codec"
	"github.com/mcsession/mcsession/lock"
)

// Session is one user's session: an id and a set of named attributes whose
// values are kept in their encoded form. A Session is safe for concurrent
// use by the goroutines of one request; it is not shared across requests.
type Session struct {
	mu        sync.Mutex
	codec     codec.Codec
	sealer    codec.Sealer // Config.Encryption; nil: written in clear
	id        string
	oldID     string // the id the session was loaded under, when it changed
	created   time.Time
	deadline  time.Time
	idle      time.Duration
	version   uint64
	attrs     map[string][]byte
	casID     uint64          // CAS id of the primary copy as loaded; 0 when unknown
	isNew     bool            // never saved
	destroyed bool            // deleted by Store.Destroy
	changes   uint64          // incremented by every modification
	saved     uint64          // value of changes at the last save or load
	lock      *lock.Lock      // the session lock, while held
	local     *lock.LocalLock // the in-process session lock of sticky mode, while held
	// user is the user the session is linked to (stored with it, "" for
	// none); linkedUser and linkedID are what that user's index is known
	// to list for it (see users.go): a save brings the index up to date
	// when they differ from user and id.
	user, linkedUser, linkedID string
}

// ID returns the session id, the value of the session cookie. It changes
// when the session is relocated after a node failure or renewed.
func (s *Session) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// PreviousID returns the id the session was loaded under when its id has
// changed since (relocation or RenewID), and "" otherwise.
func (s *Session) PreviousID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.oldID
}

// IsNew reports whether the session has never been saved.
func (s *Session) IsNew() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isNew
}

// Created returns the time the session was created.
func (s *Session) Created() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// Deadline returns the absolute time after which the session is gone,
// whatever its activity.
func (s *Session) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadline
}

// IdleTimeout returns how long the session lives without requests.
func (s *Session) IdleTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idle
}

// Version returns the save counter: 0 for a new session, incremented by
// every save.
func (s *Session) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// Get decodes the attribute key into dst, which must be a non-nil pointer
// (an *int for an int attribute, a *T for a struct T). It reports false
// and leaves dst alone when the attribute is absent.
func (s *Session) Get(key string, dst any) (bool, error) {
	s.mu.Lock()
	raw, ok := s.attrs[key]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	if err := s.codec.Unmarshal(raw, dst); err != nil {
		return true, fmt.Errorf("store: get %q: %w", key, err)
	}
	return true, nil
}

// Get returns the attribute key of s decoded as a T, and false when it is
// absent.
func Get[T any](s *Session, key string) (T, bool, error) {
	var v T
	ok, err := s.Get(key, &v)
	return v, ok, err
}

// Set encodes v and stores it as the attribute key. Setting a value whose
// encoding equals the stored one does not mark the session modified, so an
// unchanged session is never rewritten.
func (s *Session) Set(key string, v any) error {
	raw, err := s.codec.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: set %q: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.attrs[key]; ok && bytes.Equal(old, raw) {
		return nil
	}
	if s.attrs == nil {
		s.attrs = make(map[string][]byte)
	}
	s.attrs[key] = raw
	s.changes++
	return nil
}

// Remove removes the attribute key; removing an absent key changes nothing.
func (s *Session) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.attrs[key]; ok {
		delete(s.attrs, key)
		s.changes++
	}
}

// Clear removes every attribute.
func (s *Session) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.attrs) > 0 {
		clear(s.attrs)
		s.changes++
	}
}

// Has reports whether the attribute key is present.
func (s *Session) Has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.attrs[key]
	return ok
}

// Keys returns the attribute names in sorted order.
func (s *Session) Keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.attrs))
}

// Len returns the number of attributes.
func (s *Session) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.attrs)
}

// Modified reports whether the attributes changed since the session was
// loaded or last saved.
func (s *Session) Modified() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes != s.saved
}

// encode encodes the session with version s.version+bump and returns the
// bytes, that version and the change counter they reflect. With
// Config.Encryption the bytes are the envelope sealed for the random part
// of the session's id.
func (s *Session) encode(bump uint64) ([]byte, uint64, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := codec.Record{
		Created:     s.created,
		Deadline:    s.deadline,
		IdleTimeout: s.idle,
		Version:     s.version + bump,
		Attrs:       s.attrs,
		User:        s.user,
	}
	b, err := codec.EncodeRecord(s.codec, &rec)
	if err == nil && s.sealer != nil {
		b, err = sealSession(s.sealer, s.id, b)
	}
	return b, rec.Version, s.changes, err
}

// exptime returns the memcached exptime for the session now; ok is false
// once its absolute deadline has passed.
func (s *Session) exptime() (int32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ttl(s.idle, s.deadline, time.Now())
}

// expiresAt returns when the items of s written now would expire (false
// for a session past its absolute deadline).
func (s *Session) expiresAt() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	d := s.idle
	if !s.deadline.IsZero() {
		left := s.deadline.Sub(now)
		if left <= 0 {
			return time.Time{}, false
		}
		d = min(d, left)
	}
	return now.Add(d + time.Second), true
}

// setID gives s a new id. With previous set, the id it had is remembered
// as PreviousID (the first one only: the id the client sent).
func (s *Session) setID(id string, previous bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if previous && s.oldID == "" {
		s.oldID = s.id
	}
	s.id = id
}

// setCAS records the CAS id of the primary copy (0 = unknown).
func (s *Session) setCAS(cas uint64) {
	s.mu.Lock()
	s.casID = cas
	s.mu.Unlock()
}

// adopt replaces the stored state of s with that of cur, a newer copy read
// from memcached; the id and unsaved-change bookkeeping are kept.
func (s *Session) adopt(cur *Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version, s.attrs, s.casID = cur.version, cur.attrs, cur.casID
	s.created, s.deadline, s.idle = cur.created, cur.deadline, cur.idle
	s.user, s.linkedUser, s.linkedID = cur.user, cur.linkedUser, cur.linkedID
}

// SetIdleTimeout changes how long this session lives without requests
// (stored with it, so every app server honours it). It marks the session
// modified. A value of zero or less is ignored.
func (s *Session) SetIdleTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle != d {
		s.idle = d
		s.changes++
	}
}

// SetLifetime sets the absolute deadline of this session to its creation
// time plus d. It marks the session modified. A value of zero or less is
// ignored.
func (s *Session) SetLifetime(d time.Duration) {
	if d <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if dl := s.created.Add(d); !dl.Equal(s.deadline) {
		s.deadline = dl
		s.changes++
	}
}

// cas returns the CAS id of the primary copy (0 = unknown).
func (s *Session) cas() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.casID
}
