// Package mtls secures authz's gRPC port: it builds the server's TLS
// configuration (mutual TLS when a client CA is configured), names each caller by
// its verified client certificate, and keeps methods that expose personal data
// (GetUser) to the callers an operator listed.
//
// # Caller identity
//
// A caller's identity is the first URI SAN of its verified client certificate
// (e.g. a SPIFFE ID such as spiffe://example.org/mcp-gateway) or, when it has
// none, its subject common name. An allow-list entry matches a caller when it
// equals any URI SAN of the certificate or its common name.
//
// With client certificates required, a peer without a certificate signed by the
// client CA never completes the handshake, so no handler runs for it at all; the
// allow-list narrows what authenticated peers may call.
package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mcpauthz/mcpauthz/internal/ratelog"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
)

// ServerConfig returns the TLS configuration of the gRPC server presenting cert.
// With a non-nil clientCAs every client must present a certificate that chains
// to it (tls.RequireAndVerifyClientCert); with nil, TLS is one-way and callers
// stay anonymous. TLS 1.3 only: both ends are ours.
func ServerConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
	}
	if clientCAs != nil {
		c.ClientCAs = clientCAs
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// ErrNoCertificates is returned by [CertPool] for PEM data holding no certificate.
var ErrNoCertificates = errors.New("no PEM certificate found")

// CertPool parses PEM-encoded CA certificates. It returns [ErrNoCertificates]
// when the data holds none.
func CertPool(pemData []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemData) {
		return nil, ErrNoCertificates
	}
	return p, nil
}

// leaf returns the verified client certificate of the call in ctx, or nil when
// the connection has none (plaintext, one-way TLS).
func leaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// Identity returns the identity of the caller in ctx (see the package
// documentation) and whether it presented a verified client certificate.
func Identity(ctx context.Context) (string, bool) {
	c := leaf(ctx)
	if c == nil {
		return "", false
	}
	return identity(c), true
}

func identity(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.CommonName
}

// matches reports whether any name of c is in allowed.
func matches(c *x509.Certificate, allowed []string) bool {
	if c.Subject.CommonName != "" && slices.Contains(allowed, c.Subject.CommonName) {
		return true
	}
	for _, u := range c.URIs {
		if slices.Contains(allowed, u.String()) {
			return true
		}
	}
	return false
}

// Options configures [UnaryInterceptor] and [Interceptors].
type Options struct {
	// Restricted maps full method names (the generated *_FullMethodName
	// constants) to the caller identities allowed to call them. Methods not in
	// the map are open to every caller that completed the handshake.
	Restricted map[string][]string
	// Logger receives one line per newly seen caller, and one per refused call
	// at most every few seconds (with the number suppressed since the last).
	Logger *slog.Logger
	// Metrics counts calls by caller (authz_grpc_caller_requests_total).
	Metrics *metrics.Metrics
}

// maxCallers bounds the caller label: identities come from certificates the
// operator's CA signed, but a CA issuing per-pod names could still grow it.
const maxCallers = 100

// Unidentified is the caller label and log value of a call without a verified
// client certificate (possible only when the server does not require one).
const Unidentified = "none"

// UnaryInterceptor counts every call by caller identity, logs each caller the
// first time it is seen, and refuses a restricted method to a caller not listed
// for it with PERMISSION_DENIED (a constant message; the caller's identity goes to
// the log). Install it inside the metrics interceptor so refusals are counted.
// A server with streaming methods uses [Interceptors] instead.
func UnaryInterceptor(o Options) grpc.UnaryServerInterceptor {
	u, _ := Interceptors(o)
	return u
}

// Interceptors returns [UnaryInterceptor] and its streaming counterpart (for
// WatchInvalidations, health Watch, reflection), which count callers and restrict
// methods alike and share what they have seen, so each caller is logged once.
// Install each inside its metrics interceptor.
func Interceptors(o Options) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	check := newGuard(o)
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
	return unary, stream
}

// newGuard returns the check both interceptors make before a handler runs: count
// the call by caller, then refuse it if the method is restricted and the caller
// not listed.
func newGuard(o Options) func(ctx context.Context, method string) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// counters holds each (caller, method) counter once resolved, so the hot
	// path does no label hashing; callers holds the identities seen so far.
	var mu sync.RWMutex
	// A caller refused on every call (a flood of InvalidateToken from a service
	// not listed) must not flood the log too.
	refusals := &ratelog.Limiter{Every: 5 * time.Second}
	counters := map[[2]string]prometheus.Counter{}
	callers := map[string]bool{}
	count := func(ctx context.Context, id, method string) {
		k := [2]string{id, method}
		mu.RLock()
		c := counters[k]
		mu.RUnlock()
		if c != nil {
			c.Inc()
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if c = counters[k]; c == nil {
			lbl := id
			if !callers[id] {
				if len(callers) < maxCallers {
					callers[id] = true
					o.Logger.InfoContext(ctx, "new gRPC caller", "caller", id, "method", method)
				} else {
					lbl = "other"
				}
			}
			c = o.Metrics.CallerRequests.WithLabelValues(lbl, method)
			if lbl == id {
				counters[k] = c
			}
		}
		c.Inc()
	}
	return func(ctx context.Context, method string) error {
		cert := leaf(ctx)
		id := Unidentified
		if cert != nil {
			id = identity(cert)
		}
		if o.Metrics != nil {
			count(ctx, id, method)
		}
		if allowed, ok := o.Restricted[method]; ok && (cert == nil || !matches(cert, allowed)) {
			if ok, suppressed := refusals.Allow(); ok {
				o.Logger.WarnContext(ctx, "caller not allowed to call method", "caller", id, "method", method, "suppressed_since_last", suppressed)
			}
			return status.Error(codes.PermissionDenied, "this caller may not call "+method)
		}
		return nil
	}
}
