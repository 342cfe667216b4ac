package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/mcsession/mcsession/lock"
	"github.com/mcsession/mcsession/replica"
)

// A Locker serialises the requests of one session: Acquire takes the lock
// (a memcached add on the session's primary node), a second Acquire waits
// while it is held and gives up with ErrLockTimeout after its wait timeout
// (Config.WaitTimeout, default 2s, or lock.WithWaitTimeout for one call),
// and Release frees it for the next one. Stats counts what happened.
func ExampleLocker() {
	nodes, err := replica.ParseNodes(nodeList) // e.g. "n1=10.0.0.1:11211,n2=10.0.0.2:11211"
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := replica.New(replica.Config{Nodes: nodes})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	locker, err := lock.New(cluster, lock.Config{}) // TTL 10s, wait up to 2s
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	const key = "lock:example-session"

	lk, err := locker.Acquire(ctx, "n1", key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("held:", lk.Node(), lk.Key())

	// A concurrent request for the same session, waiting at most 50ms.
	_, err = locker.Acquire(lock.WithWaitTimeout(ctx, 50*time.Millisecond), "n1", key)
	fmt.Println("second request:", errors.Is(err, lock.ErrLockTimeout))

	fmt.Println("release:", lk.Release(ctx))
	fmt.Println("release again:", lk.Release(ctx)) // a no-op

	lk, err = locker.Acquire(ctx, "n1", key) // free again: taken at once
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("release:", lk.Release(ctx))

	s := locker.Stats()
	fmt.Printf("acquired=%d waited=%d timeouts=%d released=%d lost=%d\n",
		s.Acquired, s.Waited, s.Timeouts, s.Released, s.Lost)
	// Output:
	// held: n1 lock:example-session
	// second request: true
	// release: <nil>
	// release again: <nil>
	// release: <nil>
	// acquired=2 waited=1 timeouts=1 released=2 lost=0
}

// Renew extends a held lock to a full TTL from now, only while it is still
// ours (a compare-and-set against the lock item's CAS id). A Locker renews
// held locks by itself every Config.RenewEvery (default TTL/3), so that a
// long request keeps its lock; here automatic renewal is off and the lock
// is renewed by hand.
func ExampleLock_Renew() {
	nodes, err := replica.ParseNodes(nodeList)
	if err != nil {
		log.Fatal(err)
	}
	cluster, err := replica.New(replica.Config{Nodes: nodes})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	locker, err := lock.New(cluster, lock.Config{TTL: 5 * time.Second, RenewEvery: -1})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	lk, err := locker.Acquire(ctx, "n2", "lock:long-report")
	if err != nil {
		log.Fatal(err)
	}
	before := lk.CAS()
	fmt.Println(lk.Renew(ctx))
	fmt.Println("new CAS id:", lk.CAS() != before, "lost:", lk.Lost())
	fmt.Println(lk.Release(ctx))
	fmt.Println("renewals:", locker.Stats().Renewals)
	// Output:
	// <nil>
	// new CAS id: true lost: false
	// <nil>
	// renewals: 1
}
