// Package faults is the fault-injection suite of docs/reliability.md: it starts
// the real binaries (devauth, one or two authz replicas, one or two gateways,
// optionally a private redis-server) on loopback, drives them with the load
// tool's closed-loop load (packages load, target and tokens) and breaks one
// thing at a time: Redis killed and restarted, the authorization server down,
// erroring, talking garbage or hanging, an authz replica or a gateway killed,
// tokens revoked, tokens expiring, clocks disagreeing.
//
// Everything is in the tests; this file only documents the package. Each test
// asserts the rule docs/reliability.md states and logs the figures it
// measured (lines starting "figure:"), so `go test -v -run . ./internal/faults`
// prints them; dated records of them are under bench/results/.
//
// The suite runs in `make test`. It is bounded: a few seconds of load at
// modest concurrency per fault, tens of seconds in all on a 2-core machine;
// `go test -short` skips it.
package faults
