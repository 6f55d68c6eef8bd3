// Package ashttp is the HTTP transport authz reaches the authorization server
// with. Token introspection ([introspect]) and the user API ([users]) share one
// pool of connections, so neither client package depends on the other for it.
//
// [introspect]: github.com/mcpauthz/mcpauthz/services/authz/internal/introspect
// [users]: github.com/mcpauthz/mcpauthz/services/authz/internal/users
package ashttp

import (
	"net"
	"net/http"
	"time"
)

// DefaultMaxConns is the default of NewTransport's maxConns
// (INTROSPECTION_MAX_CONNS): over HTTP/1.1, one connection for each of the
// default INTROSPECTION_MAX_IN_FLIGHT (64) introspections and as many user
// lookups, which share the transport.
const DefaultMaxConns = 128

// NewTransport returns the pooled transport used for calls to the authorization
// server: bounded dial, TLS and header waits, and at most maxConns connections per
// host (DefaultMaxConns if maxConns <= 0), all of which may stay open idle, so a
// burst of misses reuses connections instead of opening one each, and a flood
// cannot open thousands. A request beyond the bound waits for a connection within
// its deadline. Over HTTP/2 (https) requests share connections anyway.
func NewTransport(timeout time.Duration, maxConns int) *http.Transport {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: min(timeout, 3*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   min(timeout, 3*time.Second),
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		MaxConnsPerHost:       maxConns,
		MaxIdleConnsPerHost:   maxConns,
		// The introspection endpoint and the user API may be two hosts.
		MaxIdleConns:      2 * maxConns,
		IdleConnTimeout:   90 * time.Second,
		ForceAttemptHTTP2: true,
	}
}
