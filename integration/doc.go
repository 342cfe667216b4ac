// Package integration holds end-to-end tests of the whole stack
// (httpsession over store, lock, replica and codec) against real memcached
// processes, and, in mcproc, the harness that starts them.
package integration
