package replica_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/mcsession/mcsession/replica"
)

// ParseNodes reads a node list from configuration: "id=host:port" entries
// separated by commas. The order matters: the backup copy of a session
// goes to the next node after its primary. A bad list is an error wrapping
// ErrBadNodeList.
func ExampleParseNodes() {
	nodes, err := replica.ParseNodes("n1=10.0.0.1:11211, n2=10.0.0.2:11211, n3=mc3.internal:11211")
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range nodes {
		fmt.Println(n.ID, n.Addr)
	}

	for _, bad := range []string{
		"",
		"10.0.0.1:11211",
		"n-1=10.0.0.1:11211",
		"n1=10.0.0.1",
		"n1=10.0.0.1:11211,n1=10.0.0.2:11211",
	} {
		_, err := replica.ParseNodes(bad)
		fmt.Println(errors.Is(err, replica.ErrBadNodeList), err)
	}
	// Output:
	// n1 10.0.0.1:11211
	// n2 10.0.0.2:11211
	// n3 mc3.internal:11211
	// true replica: bad node list: empty
	// true replica: bad node list: entry "10.0.0.1:11211" is not id=host:port
	// true replica: bad node list: node id "n-1" must be 1-16 letters, digits or '_'
	// true replica: bad node list: node n1: address "10.0.0.1" is not host:port
	// true replica: bad node list: node id "n1" given twice
}

// New builds a Cluster without contacting the nodes; Ping checks that a
// node answers, Status and Healthy tell the state of each node's circuit
// breaker (for a readiness probe or a dashboard).
func ExampleNew() {
	nodes, err := replica.ParseNodes(nodeList) // e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211,n3=10.0.0.3:11211"
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := replica.New(replica.Config{
		Nodes:   nodes,
		Timeout: 200 * time.Millisecond, // per round trip; default 500ms
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	ctx := context.Background()
	for _, id := range cluster.NodeIDs() {
		fmt.Println(id, cluster.Ping(ctx, id), cluster.Healthy(id))
	}
	for _, st := range cluster.Status() {
		fmt.Println(st.ID, st.State, st.ConsecutiveFailures)
	}
	fmt.Println(errors.Is(cluster.Ping(ctx, "n9"), replica.ErrUnknownNode))
	// Output:
	// n1 <nil> true
	// n2 <nil> true
	// n3 <nil> true
	// n1 closed 0
	// n2 closed 0
	// n3 closed 0
	// true
}

// BackupOf tells where the backup copy of a session goes: the next node
// after its primary in list order (wrapping around), skipping the nodes
// whose breaker is open and the ones excluded.
func ExampleCluster_BackupOf() {
	nodes, err := replica.ParseNodes("n1=10.0.0.1:11211,n2=10.0.0.2:11211,n3=10.0.0.3:11211")
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := replica.New(replica.Config{Nodes: nodes}) // no connection yet
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	fmt.Println(cluster.BackupOf("n1"))
	fmt.Println(cluster.BackupOf("n3"))
	fmt.Println(cluster.BackupOf("n1", "n2"))
	fmt.Printf("%q\n", cluster.BackupOf("n9"))
	// Output:
	// n2
	// n1
	// n3
	// ""
}

// A node that does not answer: each failed call returns an error wrapping
// ErrNodeDown, and after Config.FailureThreshold consecutive failures
// (default 3) its breaker opens. Calls then fail at once without touching
// the network, the node is no longer healthy and backups skip it, until
// Config.OpenTimeout (default 2s) has passed and a probe call gets
// through.
func ExampleCluster_Ping_nodeDown() {
	live, err := replica.ParseNodes(nodeList)
	if err != nil {
		log.Fatal(err)
	}
	// An address where nothing listens (port 1 is reserved and unused
	// here, so the connection is refused).
	deadAddr := "127.0.0.1:1"

	cluster, err := replica.New(replica.Config{Nodes: []replica.Node{
		{ID: "a", Addr: live[0].Addr},
		{ID: "b", Addr: deadAddr},
		{ID: "c", Addr: live[1].Addr},
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()

	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		err := cluster.Ping(ctx, "b")
		fmt.Println(i, errors.Is(err, replica.ErrNodeDown), cluster.Healthy("b"))
	}
	for _, st := range cluster.Status() {
		fmt.Println(st.ID, st.State)
	}
	fmt.Println("backup of a:", cluster.BackupOf("a"))
	fmt.Println(cluster.Ping(ctx, "a"))
	// Output:
	// 1 true true
	// 2 true true
	// 3 true false
	// 4 true false
	// a closed
	// b open
	// c closed
	// backup of a: c
	// <nil>
}

// Expiration turns a time to live into memcached's exptime: whole seconds
// (rounded up) up to 30 days, an absolute Unix time beyond (memcached would
// read a larger number of seconds as a date in 1970 and expire the item at
// once), and -1 (expire now) instead of 0, which means "never expires".
func ExampleExpiration() {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	fmt.Println(replica.Expiration(30*time.Minute, now))
	fmt.Println(replica.Expiration(1500*time.Millisecond, now))
	fmt.Println(replica.Expiration(replica.MaxRelativeExpiration, now))
	fmt.Println(replica.Expiration(31*24*time.Hour, now), now.Add(31*24*time.Hour).Unix())
	fmt.Println(replica.Expiration(0, now))
	// Output:
	// 1800
	// 2
	// 2592000
	// 1751457600 1751457600
	// -1
}
