// Package chaos runs mcsession's example app (examples/app) under faults and
// checks that no acknowledged update is lost: the fault matrix (command
// faults, `make faults`) and the chaos soak (command soak, `make soak`).
//
// An Env is three real memcached processes (integration/mcproc), an
// in-process toxiproxy (github.com/Shopify/toxiproxy/v2) with one proxy in
// front of each node, and two app processes (examples/internal/appproc)
// whose -nodes name the proxies, so that toxics hit the traffic between the
// app servers and the nodes. Every process and every proxy listens on
// 127.0.0.1 only; the proxies' addresses are checked.
//
// A Load is a set of users, each with a cookie jar, sending POST
// /api/counter to the app servers in turn; a quarter of them share a few
// sessions (one cookie jar per shared session), so that their increments
// race. Every answer is classified (see Outcome):
//
//   - acknowledged: 200; the increment is in the session.
//   - refused: 409 (the save was refused), 503 "session busy" (the lock was
//     not acquired, the handler did not run) or another 4xx; the increment
//     is known not to be in the session.
//   - unknown: a transport error (the client's timeout included) or any
//     other 5xx; the increment may or may not have been stored.
//
// At the end, after the faults are removed and the load has stopped, each
// session's count is read back (GET /api/session through every app server,
// with the session's own cookie jar; 409 and 503 answers are retried for a
// bounded time) and compared: with A acknowledged increments, U unknown
// outcomes and S the stored count, the rule is A <= S <= A+U. S < A is a
// LOST acknowledged update, S > A+U an EXCESS (an increment stored that was
// refused or never sent); both fail the run. S == A whenever U == 0: "must
// be equal" holds wherever every outcome is known, and the unknown outcomes
// are reported separately (with how many of them landed, S-A).
package chaos
