package httpsession

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/mcsession/mcsession/replica"
	"github.com/mcsession/mcsession/store"
)

// Open returns a ready Manager for the memcached nodes in nodes, a list
// such as "n1=10.0.0.1:11211,n2=10.0.0.2:11211" (see replica.ParseNodes):
// it builds the cluster (opts.Cluster), the store (opts.Store) and the
// Manager (the other fields of opts), each with the defaults its package
// documents. Every app server must be given the same node ids for the same
// addresses, since session ids name their node. Call Close at shutdown.
//
// Open does not contact memcached: a node that is down is found by the
// first requests that need it, and its sessions fail over to their backup
// node. To check the nodes at start-up, ping them through
// Manager.Store().Cluster().Ping.
//
// Open fails for a bad node list, for opts.Store.Cluster or
// opts.Cluster.Nodes set (Open makes them), and for whatever replica.New,
// store.New or New refuse.
func Open(nodes string, opts Options) (*Manager, error) {
	list, err := replica.ParseNodes(nodes)
	if err != nil {
		return nil, fmt.Errorf("httpsession: open: %w", err)
	}
	if opts.Store.Cluster != nil {
		return nil, errors.New("httpsession: open: Options.Store.Cluster must be nil: Open builds the cluster")
	}
	if len(opts.Cluster.Nodes) != 0 {
		return nil, errors.New("httpsession: open: Options.Cluster.Nodes must be empty: Open parses the node list")
	}
	ccfg := opts.Cluster
	ccfg.Nodes = list
	if ccfg.Logger == nil {
		ccfg.Logger = opts.Logger
	}
	cluster, err := replica.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("httpsession: open: %w", err)
	}
	scfg := opts.Store
	scfg.Cluster = cluster
	if scfg.Logger == nil {
		scfg.Logger = opts.Logger
	}
	st, err := store.New(scfg)
	if err != nil {
		_ = cluster.Close()
		return nil, fmt.Errorf("httpsession: open: %w", err)
	}
	given := opts
	opts.Store, opts.Cluster = store.Config{}, replica.Config{}
	m, err := New(st, opts)
	if err != nil {
		_ = cluster.Close()
		return nil, fmt.Errorf("httpsession: open: %w", err)
	}
	m.opts.Store, m.opts.Cluster = given.Store, given.Cluster
	m.owned = cluster
	return m, nil
}

// Shutdown shuts the Manager down; call it after http.Server.Shutdown
// returned. It waits for the background idle-timeout refreshes (see Wait)
// and starts no more, writes the session writes still queued
// (store.Config.AsyncWrites), and then, for a Manager made by Open, closes
// the connections of the cluster Open built: requests still running (a
// Shutdown that timed out) or served after that fail with 503. A Manager
// made by New flushes its store's queue (store.Flush) but leaves the store
// and cluster open for their owner to shut down and close. ctx bounds the
// wait for the queued writes; the error then says how many were not
// written. Calls after the first return nil.
func (m *Manager) Shutdown(ctx context.Context) error {
	var err error
	m.closeOnce.Do(func() {
		m.bg.close()
		if m.owned == nil {
			err = m.st.Flush(ctx)
			return
		}
		err = errors.Join(m.st.Shutdown(ctx), m.owned.Close())
	})
	return err
}

// Close is Shutdown without a deadline for the queued writes: with many
// writes queued for a node that hangs it can take long (each write is
// bounded by store.DefaultAsyncWriteTimeout, store.DefaultAsyncWorkers run
// at once), so prefer Shutdown with a deadline when AsyncWrites is on.
func (m *Manager) Close() error { return m.Shutdown(context.Background()) }

// checkOpenOnly refuses the Options fields only Open reads, so that a
// Manager made by New does not silently ignore them.
func checkOpenOnly(opts *Options) error {
	if !reflect.ValueOf(opts.Store).IsZero() {
		return errors.New("httpsession: Options.Store is read by Open only; configure the store given to New instead")
	}
	if !reflect.ValueOf(opts.Cluster).IsZero() {
		return errors.New("httpsession: Options.Cluster is read by Open only; configure the cluster of the store given to New instead")
	}
	return nil
}
