// Package ops gives mcsession's own packages (lock, store) the memcached
// operations and placement helpers of a replica.Cluster that users of the
// public API have no need for: pipelined meta-protocol batches through a
// node's breaker, and the bookkeeping of failover.
//
// replica.Cluster embeds a Handle; Of returns the View behind it.
package ops

import (
	"context"
	"errors"
	"time"

	"github.com/mcsession/mcsession/internal/meta"
)

// View is what lock and store use of a cluster.
type View interface {
	// Exec sends reqs as one batch to node through its breaker and fills
	// out with the answers. Errors of the node wrap replica.ErrNodeDown
	// (replica.ErrNodeBusy when every connection stayed busy, the
	// context's error when ctx ended), with meta.ErrNotSent or
	// meta.ErrUnknownOutcome; answers such as a miss or a CAS mismatch
	// are in out, never errors.
	Exec(ctx context.Context, node string, reqs []meta.Request, out []meta.Response) error
	// ExecMany is Exec for batches to several nodes at once: every batch
	// is sent before any answer is read, so they share one round trip.
	// Each batch's error is set in its Err.
	ExecMany(ctx context.Context, batches []Batch)
	// Has reports whether id names a configured node.
	Has(id string) bool
	// Healthy reports whether the node's breaker lets calls through.
	Healthy(id string) bool
	// PickNew chooses the primary node of a new session.
	PickNew() (string, error)
	// BackupOf returns the next node after primary whose breaker is not
	// open, skipping exclude; "" when there is none.
	BackupOf(primary string, exclude ...string) string
	// BackupCandidates returns every node after primary in list order.
	BackupCandidates(primary string) []string
	// MarkOutage records that sessions were moved off the node.
	MarkOutage(id string)
	// OutageWithin reports whether the node had an outage within d.
	OutageWithin(id string, d time.Duration) bool
	// ConnRefused reports whether the node's last failure was a refused connection.
	ConnRefused(id string) bool
	// Draining reports whether id names a node being drained: removed
	// from the node list (or given a new address) and still read until
	// its drain ends, so that its sessions move on their next request.
	Draining(id string) bool
	// DrainTarget returns the node that a session with random part base
	// moves to off a draining node ("" when no node of the list is
	// healthy); every app server picks the same.
	DrainTarget(base string) string
	// OldAddress returns the node name that reaches the old, draining
	// address of node id when id is in the list with a new address.
	OldAddress(id string) (string, bool)
	// ActiveNodes returns the ids of the node list in order, draining
	// nodes excluded. The slice is shared and must not be modified; it is
	// the same slice until the list changes.
	ActiveNodes() []string
}

// Batch is one node's batch for View.ExecMany.
type Batch struct {
	// Node is the node id.
	Node string
	// Reqs are the requests; Out receives the answers (as long as Reqs).
	Reqs []meta.Request
	Out  []meta.Response
	// Err is the batch's error after ExecMany (see View.Exec).
	Err error
}

// Handle is embedded in replica.Cluster; it carries the cluster's View to
// the packages of this module. It has no use outside it.
type Handle struct{ v View }

// NewHandle returns a Handle for v.
func NewHandle(v View) Handle { return Handle{v: v} }

func (h Handle) opsView() View { return h.v }

// Of returns the View of a replica.Cluster.
func Of(c interface{ opsView() View }) View { return c.opsView() }

// Answers that are not failures of a node.
var (
	// ErrMiss is a missing item.
	ErrMiss = errors.New("memcached: miss")
	// ErrNotStored is an add whose key exists, or a replace of a missing key.
	ErrNotStored = errors.New("memcached: not stored")
	// ErrCASConflict is a CAS mismatch.
	ErrCASConflict = errors.New("memcached: CAS conflict")
)

// Item is a stored item as read or written.
type Item struct {
	// Key is the item's key.
	Key string
	// Value is the item's data.
	Value []byte
	// Flags are the client flags.
	Flags uint32
	// CAS is the item's CAS id (read, or returned by a store).
	CAS uint64
	// TTL is the remaining lifetime in seconds as read (-1: none).
	TTL int32
}

// Answer turns the response to a Set, Delete or Get into an error: nil for
// success, ErrMiss, ErrNotStored, ErrCASConflict, or the server's error.
func Answer(r *meta.Response) error {
	switch r.Status {
	case meta.StatusOK, meta.StatusNoOp:
		return nil
	case meta.StatusMiss, meta.StatusNotFound:
		return ErrMiss
	case meta.StatusNotStored:
		return ErrNotStored
	case meta.StatusExists:
		return ErrCASConflict
	case meta.StatusServerError:
		return r.Err
	}
	return errors.New("memcached: unexpected answer " + r.Status.String())
}

// GetRequest reads key's value, CAS, TTL and client flags.
func GetRequest(key string) meta.Request {
	return meta.Request{Command: meta.Get, Key: key, ReturnValue: true, ReturnCAS: true, ReturnTTL: true, ReturnFlags: true}
}

// VersionRequest reads key's CAS and client flags (the envelope version)
// without its value: the cheap "which copy is there" read.
func VersionRequest(key string) meta.Request {
	return meta.Request{Command: meta.Get, Key: key, ReturnCAS: true, ReturnFlags: true}
}

// ItemOf returns the item a GetRequest answered, or ErrMiss.
func ItemOf(key string, r *meta.Response) (Item, error) {
	if err := Answer(r); err != nil {
		return Item{}, err
	}
	return Item{Key: key, Value: r.Value, Flags: r.Flags, CAS: r.CAS, TTL: r.TTL}, nil
}

// Do sends one request to node and returns its answer. The error is a
// failure of the node, or the answer as an error (see Answer).
func Do(ctx context.Context, v View, node string, req meta.Request) (meta.Response, error) {
	reqs := [1]meta.Request{req}
	var out [1]meta.Response
	if err := v.Exec(ctx, node, reqs[:], out[:]); err != nil {
		return meta.Response{}, err
	}
	return out[0], Answer(&out[0])
}

// Write is Do for a request whose answer only matters as an error (a
// store, a touch, a delete).
func Write(ctx context.Context, v View, node string, req meta.Request) error {
	_, err := Do(ctx, v, node, req)
	return err
}

// Get reads one item from node; ErrMiss when absent.
func Get(ctx context.Context, v View, node, key string) (Item, error) {
	r, err := Do(ctx, v, node, GetRequest(key))
	if err != nil {
		return Item{}, err
	}
	return Item{Key: key, Value: r.Value, Flags: r.Flags, CAS: r.CAS, TTL: r.TTL}, nil
}

// GetMulti reads several keys from node in one batch; the map holds those
// found.
func GetMulti(ctx context.Context, v View, node string, keys []string) (map[string]*Item, error) {
	reqs := make([]meta.Request, len(keys))
	for i, k := range keys {
		reqs[i] = GetRequest(k)
	}
	out := make([]meta.Response, len(keys))
	if err := v.Exec(ctx, node, reqs, out); err != nil {
		return nil, err
	}
	items := make(map[string]*Item, len(keys))
	for i, k := range keys {
		it, err := ItemOf(k, &out[i])
		if errors.Is(err, ErrMiss) {
			continue
		}
		if err != nil {
			return nil, err
		}
		items[k] = &it
	}
	return items, nil
}

// Store writes it on node in mode (with it.CAS as compare-and-set when
// non-zero) with exptime exp, and returns the new CAS id.
func Store(ctx context.Context, v View, node string, mode meta.SetMode, it *Item, exp int32) (uint64, error) {
	r, err := Do(ctx, v, node, meta.Request{Command: meta.Set, Key: it.Key, Value: it.Value, Mode: mode,
		CAS: it.CAS, TTL: exp, Flags: it.Flags, ReturnCAS: true})
	if err != nil {
		return 0, err
	}
	return r.CAS, nil
}

// Touch sets key's exptime without rewriting it; ErrMiss when absent.
func Touch(ctx context.Context, v View, node, key string, exp int32) error {
	return Write(ctx, v, node, meta.Request{Command: meta.Get, Key: key, Touch: true, TTL: exp})
}

// Delete removes key (only when its CAS id is cas, when cas is non-zero);
// ErrMiss when absent, ErrCASConflict when the CAS id differs.
func Delete(ctx context.Context, v View, node, key string, cas uint64) error {
	return Write(ctx, v, node, meta.Request{Command: meta.Delete, Key: key, CAS: cas})
}
