package mcproc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Cluster is a set of memcached nodes named "n1" to "nN", in that order in
// Nodes.
type Cluster struct {
	// Nodes are the cluster's nodes, "n1" first.
	Nodes []*Node
}

// Node is one named node of a Cluster.
type Node struct {
	// ID is the node's name, "n1" to "nN".
	ID string
	*Process
}

// StartCluster starts n memcached nodes with opts, each on its own free
// port, named "n1" to "nN". opts.Port must be 0. If a node fails to start,
// the nodes already started are killed and the error is returned.
func StartCluster(ctx context.Context, n int, opts Options) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("mcproc: start cluster: need at least 1 node, got %d", n)
	}
	if opts.Port != 0 {
		return nil, fmt.Errorf("mcproc: start cluster: Options.Port must be 0, got %d", opts.Port)
	}
	c := &Cluster{Nodes: make([]*Node, 0, n)}
	for i := 1; i <= n; i++ {
		id := "n" + strconv.Itoa(i)
		p, err := Start(ctx, opts)
		if err != nil {
			err = fmt.Errorf("mcproc: start cluster node %s: %w", id, err)
			return nil, errors.Join(err, c.Close())
		}
		c.Nodes = append(c.Nodes, &Node{ID: id, Process: p})
	}
	return c, nil
}

// Spec returns the cluster as "n1=127.0.0.1:PORT1,n2=127.0.0.1:PORT2,...",
// in node order.
func (c *Cluster) Spec() string {
	parts := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		parts[i] = n.ID + "=" + n.Addr()
	}
	return strings.Join(parts, ",")
}

// Node returns the node with the given id, or nil if there is none.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Close kills every node of the cluster with SIGKILL and waits for them. It
// returns the errors of all nodes that could not be killed; closing a closed
// cluster is not an error.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		if err := n.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
