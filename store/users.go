package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mcsession/mcsession/internal/meta"
	"github.com/mcsession/mcsession/internal/ops"
	"github.com/mcsession/mcsession/replica"
)

// This file links sessions to users ("log out everywhere"): each user has
// an index item in memcached listing the ids of the user's sessions. See
// the section "Users" of docs/FORMAT.md for the bytes, and the doc of
// DestroyUser for what happens when a login races a log-out-everywhere.

// Defaults and limits of the per-user session index.
const (
	// DefaultMaxUserSessions bounds the sessions one user's index lists
	// (Config.MaxUserSessions). When a login finds the index full, the
	// entries of sessions that no longer exist are dropped first; if it
	// is still full, the oldest logins are dropped and their sessions
	// destroyed, so that no session escapes DestroyUser.
	DefaultMaxUserSessions = 100
	// MaxUserLen is the longest user id Session.SetUser accepts, in bytes.
	MaxUserLen = 256
	// userIndexFormat is the format number in every index value.
	userIndexFormat = 1
	// maxIndexAttempts bounds the read-modify-CAS rounds of one index
	// update when concurrent logins keep changing the index.
	maxIndexAttempts = 100
	// verifyWorkers bounds the sessions looked up or destroyed at once.
	verifyWorkers = 8
	// indexClaimTTL is how long the empty index item DestroyUser writes
	// to claim a node that had no copy lives, should it stop before
	// deleting it.
	indexClaimTTL = time.Minute
)

// ErrInvalidUser is returned for a user id that is empty (where one is
// required), longer than MaxUserLen bytes or not valid UTF-8.
var ErrInvalidUser = errors.New("store: invalid user id")

// errIndexChanged reports a CAS conflict on a user index: read it again.
var errIndexChanged = errors.New("user index changed concurrently")

// UserSession describes one session of a user (Store.UserSessions).
type UserSession struct {
	// ID is the session id (the value of its cookie).
	ID string
	// Created is when the session was created.
	Created time.Time
	// LastSeen is when the session was last saved or had its idle timeout
	// refreshed, which a request does at least every Config.TouchAfter
	// (a tenth of the idle timeout by default), to about a second; never
	// before the session was linked to the user. For a session that could
	// only be found on its backup node, or whose nodes did not answer, it
	// is when the session was linked to the user.
	LastSeen time.Time
}

// SetUser links the session to the user id user (at login), or unlinks it
// when user is "". The user is stored with the session, and the next
// Store.Save lists the session in the user's index, from which
// Store.UserSessions and Store.DestroyUser find it on any app server. It
// marks the session modified when the user changes. It returns
// ErrInvalidUser for a user id over MaxUserLen bytes or not valid UTF-8.
func (s *Session) SetUser(user string) error {
	if err := checkUser(user, true); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.user != user {
		s.user = user
		s.changes++
	}
	return nil
}

// User returns the user id the session is linked to, "" for none.
func (s *Session) User() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

// linkPending reports whether the user index does not list s as it is
// now: its user or its id changed since it was listed.
func (s *Session) linkPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user != s.linkedUser || s.user != "" && s.id != s.linkedID
}

// linkedAs is the id under which a session of user, read under id, is
// taken to be listed in the user's index: id when it has a user.
func linkedAs(user, id string) string {
	if user == "" {
		return ""
	}
	return id
}

func checkUser(user string, emptyOK bool) error {
	if user == "" && !emptyOK || len(user) > MaxUserLen || !utf8.ValidString(user) {
		return fmt.Errorf("%w: %q (1-%d bytes of UTF-8)", ErrInvalidUser, user, MaxUserLen)
	}
	return nil
}

// UserIndexKey returns the memcached key of user's session index and the
// nodes that hold it: primary (written first, with CAS) and secondary ("" in
// a cluster of one node). The key is the key prefix, "user:" and the
// SHA-256 of the user id in lowercase hex; the nodes are the two highest of
// the configured node ids by rendezvous hashing (see docs/FORMAT.md), so
// that every app server finds the index without asking anyone.
func (st *Store) UserIndexKey(user string) (key, primary, secondary string) {
	ix := st.indexOf(user)
	primary = ix.nodes[0]
	if len(ix.nodes) > 1 {
		secondary = ix.nodes[1]
	}
	return ix.key, primary, secondary
}

// userIndex is where one user's index lives.
type userIndex struct {
	user  string
	key   string
	aad   string   // "user:" and the hash: the associated data of a sealed value (Config.Encryption)
	nodes []string // primary first; one or two nodes
}

func (st *Store) indexOf(user string) userIndex {
	sum := sha256.Sum256([]byte(user))
	h := hex.EncodeToString(sum[:])
	return userIndex{user: user, key: st.prefix + "user:" + h, aad: "user:" + h, nodes: rendezvous(h, st.cluster.NodeIDs(), 2)}
}

// rendezvous returns the n nodes with the highest scores for the user hash
// h, highest first: score = the first 8 bytes (big-endian) of
// SHA-256(h + ":" + node id); ties go to the node listed first.
func rendezvous(h string, nodes []string, n int) []string {
	type scored struct {
		id    string
		score uint64
		i     int
	}
	all := make([]scored, len(nodes))
	for i, id := range nodes {
		sum := sha256.Sum256([]byte(h + ":" + id))
		all[i] = scored{id: id, score: binary.BigEndian.Uint64(sum[:8]), i: i}
	}
	slices.SortFunc(all, func(a, b scored) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	out := make([]string, 0, n)
	for _, s := range all[:min(n, len(all))] {
		out = append(out, s.id)
	}
	return out
}

// indexValue is the JSON value of a user's index item.
type indexValue struct {
	Format   int          `json:"format"`
	User     string       `json:"user"`
	Sessions []indexEntry `json:"sessions"`
}

// indexEntry is one session in a user's index.
type indexEntry struct {
	// ID is the session id.
	ID string `json:"id"`
	// Created is the session's creation time, Linked when it was listed
	// under this id, Deadline its absolute deadline (0: none); Unix ms.
	Created  int64 `json:"created"`
	Linked   int64 `json:"linked"`
	Deadline int64 `json:"deadline"`
	// Seq orders the logins: the bound drops the lowest first.
	Seq uint64 `json:"seq"`
}

// indexState is a user's index as read from its nodes.
type indexState struct {
	entries []indexEntry // both copies merged
	auth    string       // the node written first, with CAS
	cas     uint64       // CAS id of auth's copy; 0 when it has none
	other   string       // the other node that answered, "" for none
	otherAt uint64       // CAS id of other's copy; 0 when it has none
	copies  int          // copies found
	unknown bool         // a node that may hold a copy did not answer
}

// readIndex reads both copies of a user's index in one round trip and
// merges them: the union of their entries (the first node's entry wins
// for an id both list). Over-listing is harmless: every listing checks
// the sessions. The first node that answered is the one to write with CAS.
func (st *Store) readIndex(ctx context.Context, ix userIndex) (indexState, error) {
	batches := make([]ops.Batch, len(ix.nodes))
	for i, n := range ix.nodes {
		batches[i] = ops.Batch{Node: n, Reqs: []meta.Request{ops.GetRequest(ix.key)}, Out: make([]meta.Response, 1)}
	}
	st.view.ExecMany(ctx, batches)
	var state indexState
	seen := map[string]bool{}
	var lastErr error
	for _, b := range batches {
		it, err := ops.ItemOf(ix.key, &b.Out[0])
		if b.Err != nil {
			err = b.Err
		}
		if err != nil && !errors.Is(err, ops.ErrMiss) {
			lastErr = err
			state.unknown = state.unknown || !st.view.ConnRefused(b.Node)
			continue
		}
		found := err == nil
		var cas uint64
		if found {
			cas = it.CAS
			state.copies++
			for _, e := range st.decodeIndex(ix, it.Value) {
				if !seen[e.ID] {
					seen[e.ID] = true
					state.entries = append(state.entries, e)
				}
			}
		}
		if state.auth == "" {
			state.auth, state.cas = b.Node, cas
		} else {
			state.other, state.otherAt = b.Node, cas
		}
	}
	if state.auth == "" {
		if lastErr == nil {
			lastErr = replica.ErrNoHealthyNode
		}
		return state, fmt.Errorf("%w: user index %s: %w", ErrUnavailable, ix.key, lastErr)
	}
	return state, nil
}

// decodeIndex returns the entries of an index value; a value that does
// not open (Config.Encryption, counted), does not decode, or belongs to
// another user (a hash collision, or another program), counts as empty and
// is overwritten by the next write.
func (st *Store) decodeIndex(ix userIndex, stored []byte) []indexEntry {
	raw, err := st.open(ix.aad, stored)
	if err != nil {
		st.stats.undecryptable.Add(1)
		st.log.Error("user index in memcached does not open: treated as empty", "key", ix.key, "err", err)
		return nil
	}
	var v indexValue
	if err := json.Unmarshal(raw, &v); err != nil || v.Format != userIndexFormat || v.User != ix.user {
		st.log.Error("unreadable user index in memcached: treated as empty", "key", ix.key, "err", err)
		return nil
	}
	return v.Sessions
}

// encodeIndex returns the value of ix listing entries: JSON, sealed with
// Config.Encryption.
func (st *Store) encodeIndex(ix userIndex, entries []indexEntry) ([]byte, error) {
	raw, err := json.Marshal(indexValue{Format: userIndexFormat, User: ix.user, Sessions: entries})
	if err != nil || st.sealer == nil {
		return raw, err
	}
	return st.sealer.Seal([]byte(ix.aad), raw)
}

// indexChange is one rewrite of a user's index.
type indexChange struct {
	next    []indexEntry // the new list
	removed []string     // ids dropped (also from the other copy)
	evicted []indexEntry // dropped for the bound: destroyed once written
}

// rewrite applies plan to a user's index: read both copies, plan the new
// list, write it to the first node with CAS (add when it has none), then
// to the other node. On a CAS conflict it starts again, with a short
// random backoff, up to maxIndexAttempts times or until ctx ends. A read
// or write that failed on its nodes is tried again, twice at most; a
// failed write is not sent again as it was: the index is read again (its
// outcome shows there), and the other node is written first when the
// first one does not answer.
func (st *Store) rewrite(ctx context.Context, ix userIndex, plan func(ctx context.Context, cur []indexEntry) (indexChange, bool)) (indexChange, error) {
	faults := 0
	for attempt := 0; attempt < maxIndexAttempts; attempt++ {
		state, err := st.readIndex(ctx, ix)
		if err != nil && faults < 2 && ctx.Err() == nil {
			faults++
			continue
		}
		if err != nil {
			return indexChange{}, err
		}
		ch, changed := plan(ctx, state.entries)
		if !changed {
			return ch, nil
		}
		err = st.writeIndex(ctx, ix, &state, &ch)
		if errors.Is(err, ErrUnavailable) && faults < 2 && ctx.Err() == nil {
			faults++
			continue
		}
		if !errors.Is(err, errIndexChanged) {
			return ch, err
		}
		if err := backoff(ctx, attempt); err != nil {
			return indexChange{}, fmt.Errorf("store: user index %s: %w", ix.key, err)
		}
	}
	return indexChange{}, fmt.Errorf("%w: user index %s kept changing", ErrConflict, ix.key)
}

// backoff waits before the next CAS round: a random time up to 1 ms
// doubling to 32 ms.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(time.Millisecond<<min(attempt, 5)))) + 100*time.Microsecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// writeIndex writes ch.next to the first node of state with CAS (or add,
// or a CAS delete for an empty list); errIndexChanged when someone wrote
// it since it was read. Then the other node gets the same list merged
// with what it holds (minus ch.removed), also with CAS, so that a login
// written there by a concurrent request is kept; its failures are logged.
func (st *Store) writeIndex(ctx context.Context, ix userIndex, state *indexState, ch *indexChange) error {
	if err := st.putIndex(ctx, ix, state.auth, state.cas, ch.next); err != nil {
		return err
	}
	if state.other == "" {
		return nil
	}
	next, cas := ch.next, state.otherAt
	for attempt := 0; attempt < 5; attempt++ {
		err := st.putIndex(ctx, ix, state.other, cas, next)
		if !errors.Is(err, errIndexChanged) {
			if err != nil {
				st.log.Warn("user index: second copy not written", "key", ix.key, "node", state.other, "err", err)
			}
			return nil
		}
		it, err := ops.Get(ctx, st.view, state.other, ix.key)
		cas = it.CAS
		if err != nil && !errors.Is(err, ops.ErrMiss) {
			st.log.Warn("user index: second copy not written", "key", ix.key, "node", state.other, "err", err)
			return nil
		}
		next = ch.next
		if err == nil {
			next = unionEntries(ch.next, st.decodeIndex(ix, it.Value), ch.removed)
		}
	}
	st.log.Warn("user index: second copy kept changing, not written", "key", ix.key, "node", state.other)
	return nil
}

// unionEntries returns a with the entries of b whose ids are neither in a
// nor in removed.
func unionEntries(a, b []indexEntry, removed []string) []indexEntry {
	out := slices.Clone(a)
	for _, e := range b {
		if !slices.ContainsFunc(out, func(x indexEntry) bool { return x.ID == e.ID }) && !slices.Contains(removed, e.ID) {
			out = append(out, e)
		}
	}
	return out
}

// putIndex writes entries as the index on node: compare-and-set against
// cas, or add when cas is 0; an empty list deletes the item (with CAS).
// errIndexChanged when the item changed (or appeared, or went) since cas.
func (st *Store) putIndex(ctx context.Context, ix userIndex, node string, cas uint64, entries []indexEntry) error {
	var req meta.Request
	now := time.Now()
	if len(entries) == 0 {
		if cas == 0 {
			return nil
		}
		req = meta.Request{Command: meta.Delete, Key: ix.key, CAS: cas}
	} else {
		raw, err := st.encodeIndex(ix, entries)
		if err != nil {
			return fmt.Errorf("store: user index %s: %w", ix.key, err)
		}
		req = meta.Request{Command: meta.Set, Key: ix.key, Value: raw, CAS: cas, TTL: st.indexExptime(entries, now)}
		if cas == 0 {
			req.Mode = meta.ModeAdd
		}
	}
	err := ops.Write(ctx, st.view, node, req)
	if errors.Is(err, ops.ErrCASConflict) || errors.Is(err, ops.ErrMiss) || errors.Is(err, ops.ErrNotStored) {
		return errIndexChanged
	}
	if err != nil {
		return fmt.Errorf("%w: user index %s on %s: %w", ErrUnavailable, ix.key, node, err)
	}
	return nil
}

// indexExptime is the exptime of an index listing entries: it lives as
// long as the latest deadline among them (replica.Expiration of the time
// left, plus a second as for sessions). A session without a deadline
// counts as ending Config.Lifetime from now.
func (st *Store) indexExptime(entries []indexEntry, now time.Time) int32 {
	var latest time.Time
	for _, e := range entries {
		end := now.Add(st.life)
		if e.Deadline != 0 {
			end = time.UnixMilli(e.Deadline)
		}
		if end.After(latest) {
			latest = end
		}
	}
	return replica.Expiration(latest.Sub(now)+time.Second, now)
}

// expired reports whether the entry's session is past its deadline.
func (e *indexEntry) expired(now time.Time) bool {
	return e.Deadline != 0 && now.UnixMilli() >= e.Deadline
}

// link lists the session e in user's index, replacing the ids in replace
// (the ids it had before: renewal, relocation). A full index is pruned of
// dead sessions first; then its oldest logins are dropped, and their
// sessions destroyed.
func (st *Store) link(ctx context.Context, user string, e indexEntry, replace []string) error {
	ix := st.indexOf(user)
	checks := map[string]check{}
	ch, err := st.rewrite(ctx, ix, func(ctx context.Context, cur []indexEntry) (indexChange, bool) {
		now := time.Now()
		var ch indexChange
		entry := e
		present, seq, maxSeq := false, uint64(0), uint64(0)
		for _, c := range cur {
			maxSeq = max(maxSeq, c.Seq)
			switch {
			case c.ID == e.ID || slices.Contains(replace, c.ID):
				if seq == 0 || c.Seq < seq {
					seq = c.Seq // the same session: it keeps its place
				}
				if c.ID == e.ID {
					present = true
					entry.Linked = c.Linked
				} else {
					ch.removed = append(ch.removed, c.ID)
				}
			case c.expired(now):
				ch.removed = append(ch.removed, c.ID)
			default:
				ch.next = append(ch.next, c)
			}
		}
		if seq == 0 {
			seq = maxSeq + 1
		}
		entry.Seq = seq
		if len(ch.next)+1 > st.maxUser {
			ch.next = st.prune(ctx, user, ch.next, checks, &ch.removed)
		}
		if over := len(ch.next) + 1 - st.maxUser; over > 0 {
			slices.SortFunc(ch.next, func(a, b indexEntry) int { return cmp.Compare(a.Seq, b.Seq) })
			ch.evicted = slices.Clone(ch.next[:over])
			ch.next = slices.Clone(ch.next[over:])
			for _, x := range ch.evicted {
				ch.removed = append(ch.removed, x.ID)
			}
		}
		ch.next = append(ch.next, entry)
		return ch, !present || len(ch.removed) > 0
	})
	if err != nil {
		return err
	}
	if len(ch.evicted) > 0 {
		st.log.Info("user index full: destroying the oldest sessions of the user", "count", len(ch.evicted), "bound", st.maxUser)
		if err := st.destroyEntries(ctx, ch.evicted); err != nil {
			st.log.Warn("user index full: an evicted session was not fully destroyed", "err", err)
		}
	}
	return nil
}

// unlink drops ids from user's index.
func (st *Store) unlink(ctx context.Context, user string, ids ...string) error {
	_, err := st.rewrite(ctx, st.indexOf(user), func(_ context.Context, cur []indexEntry) (indexChange, bool) {
		var ch indexChange
		for _, c := range cur {
			if slices.Contains(ids, c.ID) {
				ch.removed = append(ch.removed, c.ID)
			} else {
				ch.next = append(ch.next, c)
			}
		}
		return ch, len(ch.removed) > 0
	})
	return err
}

// prune returns entries without the sessions that are gone or belong to
// another user now (their ids are added to removed); checks caches the
// lookups across CAS rounds.
func (st *Store) prune(ctx context.Context, user string, entries []indexEntry, checks map[string]check, removed *[]string) []indexEntry {
	st.verify(ctx, user, entries, checks)
	var out []indexEntry
	for _, e := range entries {
		if c := checks[e.ID]; c.state == sessionGone || c.state == sessionOther {
			*removed = append(*removed, e.ID)
			continue
		}
		out = append(out, e)
	}
	return out
}

// linkUser brings the user index up to date with s after a save wrote it:
// it lists s under its id in its user's index (replacing the id the index
// had for it) and drops it from the index of a user it no longer has.
//
// A session that got a user, or a new random id (RenewID), and could not
// be listed is destroyed, and linkUser returns an error wrapping
// ErrUnavailable: a session of a user is never left where DestroyUser
// cannot find it. A relocated session (same random part) that could not
// be listed again only logs: DestroyUser and UserSessions find it through
// its old id.
func (st *Store) linkUser(ctx context.Context, s *Session) error {
	s.mu.Lock()
	user, id, lu, lid := s.user, s.id, s.linkedUser, s.linkedID
	e := indexEntry{ID: id, Created: msOf(s.created), Linked: time.Now().UnixMilli(), Deadline: msOf(s.deadline)}
	s.mu.Unlock()
	if user == lu && (user == "" || id == lid) {
		return nil
	}
	if lu != "" && lu != user {
		if err := st.unlink(ctx, lu, lid); err != nil {
			st.log.Warn("session not dropped from the index of its former user", "id", id, "err", err)
		}
	}
	if user != "" {
		var replace []string
		if lu == user && lid != "" && lid != id {
			replace = []string{lid}
		}
		if err := st.link(ctx, user, e, replace); err != nil {
			if lu == user && sameBase(lid, id) {
				st.log.Warn("relocated session not listed under its new id in its user's index", "id", id, "old", lid, "err", err)
				return nil
			}
			derr := st.destroyEverywhere(context.WithoutCancel(ctx), id)
			s.mu.Lock()
			s.destroyed = true
			s.changes++ // not saved: the request fails
			s.mu.Unlock()
			return fmt.Errorf("%w: %s was saved but could not be listed in its user's index, so it was destroyed: %w",
				ErrUnavailable, id, errors.Join(err, derr))
		}
	}
	s.mu.Lock()
	if s.id == id && s.user == user {
		s.linkedUser, s.linkedID = user, linkedAs(user, id)
	}
	s.mu.Unlock()
	return nil
}

// msOf returns t in Unix milliseconds, 0 for the zero time.
func msOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// sameBase reports whether two session ids have the same random part.
func sameBase(a, b string) bool {
	ba, _, ok1 := splitID(a)
	bb, _, ok2 := splitID(b)
	return ok1 && ok2 && ba == bb
}

// followUser lists a session that a load found under another id than
// requested (relocated, or moved by another request or app server) under
// that new id in its user's index. Failures are logged only.
func (st *Store) followUser(ctx context.Context, s *Session, requested string) {
	s.mu.Lock()
	if s.user == "" || s.id == requested || s.linkedUser != s.user {
		s.mu.Unlock()
		return
	}
	if s.linkedID == s.id {
		s.linkedID = requested // read under its new id: make sure the index says so
	}
	s.mu.Unlock()
	_ = st.linkUser(ctx, s)
}

// unlinkDestroyed drops a destroyed session from its user's index; the
// index is pruned of it later when this fails.
func (st *Store) unlinkDestroyed(ctx context.Context, s *Session) {
	s.mu.Lock()
	user, id := s.linkedUser, s.linkedID
	s.mu.Unlock()
	if user == "" || id == "" {
		return
	}
	if err := st.unlink(ctx, user, id); err != nil {
		st.log.Debug("destroyed session not dropped from its user's index", "id", id, "err", err)
	}
}

// saveLinking is Save in sticky mode with AsyncWrites for a session whose
// user or id changed: written before Save returns (the index must never
// list a session memcached does not have yet), after the session's
// queued write and against the CAS it left.
func (st *Store) saveLinking(ctx context.Context, s *Session) error {
	if to := st.cache.resolve(s.ID()); to != s.ID() {
		s.setID(to, true)
	}
	id := s.ID()
	if err := st.async.waitFor(ctx, id); err != nil {
		return fmt.Errorf("%w: save %s: %w", ErrUnavailable, id, err)
	}
	if _, cas, written, _, ok := st.cache.forWrite(id); ok && written && !s.IsNew() {
		s.setCAS(cas)
	}
	err := st.save(ctx, s)
	st.cache.remove(id)
	if err == nil {
		st.cache.put(s, s.cas(), time.Now())
	}
	return err
}

// sessionState is what a lookup found of a listed session.
type sessionState uint8

const (
	sessionUnknown sessionState = iota // its nodes did not answer
	sessionAlive                       // there, linked to the user
	sessionGone                        // on no node any more
	sessionOther                       // there, but linked to another user (or none)
)

// check is the lookup of one listed session.
type check struct {
	state    sessionState
	id       string // where it was found (another id when it moved)
	created  time.Time
	lastSeen time.Time
}

// verify looks up the sessions of entries not in checks yet and records
// what it found: the primary copies in one round trip (one batch per
// node), then, for those missing or on a node that did not answer, the
// backup and moved copies as Load would (without restoring or moving
// anything).
func (st *Store) verify(ctx context.Context, user string, entries []indexEntry, checks map[string]check) {
	now := time.Now()
	var batches []ops.Batch
	at := map[string]int{} // node -> batch
	type slowEntry struct {
		e      indexEntry
		missed bool // the primary node answered that it has no copy
	}
	var slow []slowEntry
	for _, e := range entries {
		if _, ok := checks[e.ID]; ok {
			continue
		}
		_, node, ok := splitID(e.ID)
		switch {
		case !ok || e.expired(now):
			checks[e.ID] = check{state: sessionGone}
			continue
		case !st.view.Has(node) || !st.view.Healthy(node):
			slow = append(slow, slowEntry{e: e})
			continue
		}
		i, ok := at[node]
		if !ok {
			i = len(batches)
			at[node] = i
			batches = append(batches, ops.Batch{Node: node})
		}
		batches[i].Reqs = append(batches[i].Reqs, ops.GetRequest(st.key(e.ID)))
		checks[e.ID] = check{} // placeholder, filled below
	}
	for i := range batches {
		batches[i].Out = make([]meta.Response, len(batches[i].Reqs))
	}
	st.view.ExecMany(ctx, batches)
	byKey := map[string]indexEntry{}
	for _, e := range entries {
		byKey[st.key(e.ID)] = e
	}
	for _, b := range batches {
		for j, req := range b.Reqs {
			e := byKey[req.Key]
			if b.Err != nil {
				delete(checks, e.ID)
				slow = append(slow, slowEntry{e: e})
				continue
			}
			it, err := ops.ItemOf(req.Key, &b.Out[j])
			if err != nil {
				delete(checks, e.ID)
				// Missing here (a backup copy may be left), or an error answer.
				slow = append(slow, slowEntry{e: e, missed: errors.Is(err, ops.ErrMiss)})
				continue
			}
			checks[e.ID] = st.checkOf(user, e, &it, now)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, verifyWorkers)
	for _, x := range slow {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c := st.lookupElsewhere(ctx, user, x.e, x.missed)
			mu.Lock()
			checks[x.e.ID] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
}

// checkOf judges a primary copy read of entry e.
func (st *Store) checkOf(user string, e indexEntry, it *ops.Item, now time.Time) check {
	s, err := st.decode(e.ID, it)
	if err != nil {
		return check{state: sessionGone} // expired or unreadable: Load would not find it either
	}
	if s.user != user {
		return check{state: sessionOther}
	}
	c := check{state: sessionAlive, id: e.ID, created: s.created, lastSeen: time.UnixMilli(e.Linked)}
	if it.TTL > 0 && s.idle > 0 {
		// Every save and touch sets the TTL to the idle timeout + 1 s
		// (capped by the deadline, which makes this an earlier time).
		refreshed := now.Add(time.Duration(it.TTL)*time.Second - s.idle - time.Second)
		if refreshed.After(now) {
			refreshed = now
		}
		if refreshed.After(c.lastSeen) {
			c.lastSeen = refreshed
		}
	}
	return c
}

// lookupElsewhere looks for a session whose primary copy was missing
// (missed) or could not be read: its backup copy and copies moved to other
// nodes (under the same random part), as Load does, without changing
// anything.
func (st *Store) lookupElsewhere(ctx context.Context, user string, e indexEntry, missed bool) check {
	base, node, _ := splitID(e.ID)
	var s *Session
	var err error
	if st.view.Has(node) {
		s, _, _, err = st.findBackup(ctx, e.ID, base, node, st.bkey(e.ID))
		if errors.Is(err, ErrNotFound) && !missed && !st.view.ConnRefused(node) {
			err = ErrUnavailable // the primary did not answer: it may still have it
		}
	} else {
		s, err = st.findMoved(ctx, e.ID, base)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return check{state: sessionGone}
	case err != nil:
		return check{state: sessionUnknown, id: e.ID, created: time.UnixMilli(e.Created), lastSeen: time.UnixMilli(e.Linked)}
	case s.user != user:
		return check{state: sessionOther}
	}
	return check{state: sessionAlive, id: s.ID(), created: s.created, lastSeen: time.UnixMilli(e.Linked)}
}

// findMoved looks for a session whose id names a node that is no longer
// configured under its random part on every configured node.
func (st *Store) findMoved(ctx context.Context, id, base string) (*Session, error) {
	nodes := st.everyNode()
	batches := make([]ops.Batch, len(nodes))
	for i, n := range nodes {
		batches[i] = ops.Batch{Node: n, Reqs: []meta.Request{ops.GetRequest(st.key(makeID(base, nodeIDOf(n))))}, Out: make([]meta.Response, 1)}
	}
	st.view.ExecMany(ctx, batches)
	unknown := false
	for _, b := range batches {
		if b.Err != nil {
			unknown = unknown || !st.view.ConnRefused(b.Node)
			continue
		}
		if it, err := ops.ItemOf(b.Reqs[0].Key, &b.Out[0]); err == nil {
			if s, err := st.decode(makeID(base, nodeIDOf(b.Node)), &it); err == nil {
				return s, nil
			}
		}
	}
	if unknown {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, id)
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// UserSessions returns the sessions linked to user (see Session.SetUser),
// oldest first, read from the user's index on any app server. Every listed
// session is looked up: sessions that no longer exist (logged out,
// expired, destroyed) or are linked to another user now are left out and
// dropped from the index; a session whose nodes did not answer is listed
// (it may exist). A user without sessions gets an empty list. It returns
// ErrInvalidUser for an empty or invalid user id and an error wrapping
// ErrUnavailable when neither node of the index answered.
func (st *Store) UserSessions(ctx context.Context, user string) ([]UserSession, error) {
	if err := checkUser(user, false); err != nil {
		return nil, err
	}
	ix := st.indexOf(user)
	state, err := st.readIndex(ctx, ix)
	if err != nil {
		return nil, err
	}
	checks := map[string]check{}
	st.verify(ctx, user, state.entries, checks)
	out := []UserSession{}
	stale := false
	for _, e := range state.entries {
		c := checks[e.ID]
		switch c.state {
		case sessionGone, sessionOther:
			stale = true
			continue
		}
		if c.id != e.ID {
			stale = true // moved: listed again under its new id
		}
		out = append(out, UserSession{ID: c.id, Created: c.created.UTC(), LastSeen: c.lastSeen.UTC()})
	}
	if stale {
		// Drop what is gone (and follow moves) for the next reader; a
		// concurrent change makes this try again with what it brought.
		_, err := st.rewrite(ctx, ix, func(ctx context.Context, cur []indexEntry) (indexChange, bool) {
			st.verify(ctx, user, cur, checks)
			var ch indexChange
			for _, e := range cur {
				c := checks[e.ID]
				switch {
				case c.state == sessionGone || c.state == sessionOther:
					ch.removed = append(ch.removed, e.ID)
				case c.state == sessionAlive && c.id != e.ID:
					ch.removed = append(ch.removed, e.ID)
					if !slices.ContainsFunc(cur, func(x indexEntry) bool { return x.ID == c.id }) {
						e.ID = c.id
						ch.next = append(ch.next, e)
					}
				default:
					ch.next = append(ch.next, e)
				}
			}
			return ch, len(ch.removed) > 0
		})
		if err != nil {
			st.log.Debug("user index not pruned", "key", ix.key, "err", err)
		}
	}
	slices.SortFunc(out, func(a, b UserSession) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// DestroyUser destroys every session linked to user (see Session.SetUser),
// on every node, from any app server ("log out everywhere"), and deletes
// the user's index. It returns how many sessions it destroyed. Every copy
// of each listed session goes: primary, backup and lock, under its id and
// under the ids a relocation gives it (the same random part on every other
// node). It is idempotent: a second call finds nothing and returns 0.
//
// A login racing DestroyUser: the index is deleted with a compare-and-
// delete against the version DestroyUser read and destroyed. A login
// listed before that delete makes it fail, and DestroyUser reads the
// index again and destroys that session too; a login listed after it
// starts a new index and survives, as a login after the log-out. (A
// session is listed only once it is stored, so no login slips between.)
//
// It returns ErrInvalidUser for an empty or invalid user id, and an error
// wrapping ErrUnavailable when a node that may hold a copy of a listed
// session (or the index) did not answer; the index is then kept, so a
// retry finds the sessions again. A node that refuses connections has
// lost its data and is no obstacle.
func (st *Store) DestroyUser(ctx context.Context, user string) (int, error) {
	if err := checkUser(user, false); err != nil {
		return 0, err
	}
	ix := st.indexOf(user)
	checks := map[string]check{}
	done := map[string]bool{}
	count := 0
	for attempt := 0; attempt < maxIndexAttempts; attempt++ {
		state, err := st.readIndex(ctx, ix)
		if err != nil {
			return count, err
		}
		if state.copies == 0 && state.unknown {
			return count, fmt.Errorf("%w: user index %s: a node did not answer", ErrUnavailable, ix.key)
		}
		var todo []indexEntry
		for _, e := range state.entries {
			if !done[e.ID] {
				todo = append(todo, e)
			}
		}
		st.verify(ctx, user, todo, checks)
		var doomed []indexEntry
		for _, e := range todo {
			if c := checks[e.ID]; c.state == sessionAlive || c.state == sessionUnknown {
				doomed = append(doomed, e)
			}
		}
		if err := st.destroyEntries(ctx, doomed); err != nil {
			return count, fmt.Errorf("store: destroy sessions of a user: %w", err)
		}
		count += len(doomed)
		for _, e := range todo {
			done[e.ID] = true
		}
		if state.copies == 0 {
			return count, nil
		}
		if state.cas == 0 {
			// The first node has no copy (it restarted): claim it with an
			// empty index, so that a login adding one there conflicts with
			// the delete below instead of passing unseen.
			if err := st.claimIndex(ctx, ix, state.auth); err != nil && !errors.Is(err, errIndexChanged) {
				return count, err
			}
			continue
		}
		err = st.putIndex(ctx, ix, state.auth, state.cas, nil) // compare-and-delete
		if errors.Is(err, errIndexChanged) {
			if err := backoff(ctx, attempt); err != nil {
				return count, fmt.Errorf("store: user index %s: %w", ix.key, err)
			}
			continue
		}
		if err != nil {
			return count, err
		}
		if state.other != "" {
			if err := ops.Delete(ctx, st.view, state.other, ix.key, 0); err != nil && !errors.Is(err, ops.ErrMiss) {
				st.log.Warn("user index: second copy not deleted", "key", ix.key, "node", state.other, "err", err)
			}
		}
		return count, nil
	}
	return count, fmt.Errorf("%w: user index %s kept changing", ErrConflict, ix.key)
}

// claimIndex adds an empty index on node (errIndexChanged when one is
// there).
func (st *Store) claimIndex(ctx context.Context, ix userIndex, node string) error {
	raw, err := st.encodeIndex(ix, []indexEntry{})
	if err != nil {
		return err
	}
	err = ops.Write(ctx, st.view, node, meta.Request{Command: meta.Set, Mode: meta.ModeAdd, Key: ix.key, Value: raw,
		TTL: replica.Expiration(indexClaimTTL, time.Now())})
	if errors.Is(err, ops.ErrNotStored) {
		return errIndexChanged
	}
	if err != nil {
		return fmt.Errorf("%w: user index %s on %s: %w", ErrUnavailable, ix.key, node, err)
	}
	return nil
}

// destroyEntries destroys the sessions of entries everywhere, a few at a
// time.
func (st *Store) destroyEntries(ctx context.Context, entries []indexEntry) error {
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	sem := make(chan struct{}, verifyWorkers)
	for i, e := range entries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = st.destroyEverywhere(ctx, e.ID)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// destroyEverywhere deletes every item of session id under its id and
// under the same random part with every other node's suffix (where a
// relocation would have put it): backup copies on every node first, then
// each node's primary copy and lock, then the backup copies again, as
// DestroyID does (three round trips, each a batch per node in parallel).
// It reports the nodes that did not answer, except those that refuse
// connections (they have lost their data).
func (st *Store) destroyEverywhere(ctx context.Context, id string) error {
	base, _, ok := splitID(id)
	if !ok {
		return nil
	}
	nodes := st.everyNode()
	var backups []meta.Request
	for _, n := range nodes {
		if nodeIDOf(n) != n {
			continue // the old address of a node: its keys are the node's
		}
		v := makeID(base, n)
		st.refreshed.forget(v)
		if st.cache != nil {
			st.cache.remove(v)
		}
		if st.async != nil {
			st.async.cancel(v) // a queued write must not bring it back
			if err := st.async.waitFor(ctx, v); err != nil {
				return fmt.Errorf("store: destroy %s: %w", v, err)
			}
		}
		backups = append(backups, meta.Request{Command: meta.Delete, Key: st.bkey(v)})
	}
	pass := func(reqs func(node string) []meta.Request) error {
		batches := make([]ops.Batch, len(nodes))
		for i, n := range nodes {
			r := reqs(n)
			batches[i] = ops.Batch{Node: n, Reqs: r, Out: make([]meta.Response, len(r))}
		}
		st.view.ExecMany(ctx, batches)
		var errs []error
		for _, b := range batches {
			if b.Err != nil {
				if !st.view.ConnRefused(b.Node) {
					errs = append(errs, b.Err)
				}
				continue
			}
			for j := range b.Out {
				if err := ops.Answer(&b.Out[j]); err != nil && !errors.Is(err, ops.ErrMiss) {
					errs = append(errs, fmt.Errorf("%s on %s: %w", b.Reqs[j].Key, b.Node, err))
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%w: destroy %s: %w", ErrUnavailable, id, err)
		}
		return nil
	}
	allBackups := func(string) []meta.Request { return backups }
	primaries := func(n string) []meta.Request {
		v := makeID(base, nodeIDOf(n))
		return []meta.Request{{Command: meta.Delete, Key: st.key(v)}, {Command: meta.Delete, Key: st.lkey(v)}}
	}
	return errors.Join(pass(allBackups), pass(primaries), pass(allBackups))
}

// everyNode returns every node a copy of a session may be on: the nodes
// of the list, the draining ones, and, for a node whose address changed
// while its old address drains, that old address as "~" + id (see
// nodeIDOf).
func (st *Store) everyNode() []string {
	ids := st.cluster.NodeIDs()
	for _, d := range st.cluster.Draining() {
		if slices.Contains(ids, d.ID) {
			if old, ok := st.view.OldAddress(d.ID); ok {
				ids = append(ids, old)
			}
			continue
		}
		ids = append(ids, d.ID)
	}
	return ids
}

// nodeIDOf returns the node id of a node name of everyNode: the id itself,
// or the id of an old address.
func nodeIDOf(name string) string { return strings.TrimPrefix(name, "~") }
