// Package authzclient is the gateway's one long-lived connection to the authz
// service (authz.v1.AuthzService).
//
// The connection is built for replicas behind one name: with a dns:/// target
// every address is resolved and calls are balanced round-robin; subchannels are
// health-checked (grpc.health.v1, overall server status) so a replica that
// reports NOT_SERVING gets no calls; a call that fails with UNAVAILABLE is
// retried (at most 3 attempts in all) and round-robin sends the retry to the
// next replica, except when authz asks not to (gRPC server pushback, which it
// sends when the authorization server itself is down: every replica would ask
// it again); keepalive pings detect a dead peer on an idle connection.
// Every call carries its own deadline (AUTHZ_TIMEOUT). With [Options.TLS] the
// connection is TLS, and mutual TLS when that configuration holds a client
// certificate (authz then knows the gateway by it).
package authzclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // registers client-side health checking
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// ServiceConfig is the gRPC service config of the connection: round-robin over
// every resolved address, health checking of each, and a retry of UNAVAILABLE.
// The whole retry budget stays inside the caller's per-call deadline.
const ServiceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""},
  "methodConfig": [{
    "name": [{"service": "authz.v1.AuthzService"}, {"service": "grpc.health.v1.Health"}],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.01s",
      "maxBackoff": "0.1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Keepalive is what the client sends. A connection silent for Time is pinged and
// closed if the ping is not answered within Timeout, so a replica that hangs
// without closing its connections (frozen, partitioned) leaves the round-robin
// set within about 12s (10s is the smallest Time grpc-go accepts) instead of
// failing every call routed to it by deadline for 40s with the usual 30s+10s.
// Pings are only sent on connections that have not read anything for Time. authz must allow them: its server
// keepalive.EnforcementPolicy needs MinTime below Time and PermitWithoutStream,
// or it answers pings with GOAWAY (too_many_pings).
var Keepalive = keepalive.ClientParameters{
	Time:                10 * time.Second,
	Timeout:             2 * time.Second,
	PermitWithoutStream: true,
}

// Observer receives the outcome of every call (after retries), for metrics.
type Observer func(method string, code codes.Code, d time.Duration)

// Options configures [New].
type Options struct {
	// Timeout is the deadline of each call; 2s when zero.
	Timeout time.Duration
	// Observe, if set, is called after every call.
	Observe Observer
	// TLS, if set, secures the connection (config.Config.AuthzTLS: the CA
	// trusted for authz's certificate and, for mutual TLS, the gateway's client
	// certificate); nil dials in plaintext.
	TLS *tls.Config
	// DialOptions are added last, e.g. grpc.WithResolvers in tests.
	DialOptions []grpc.DialOption
}

// Client calls authz. It is safe for concurrent use; create one per process.
type Client struct {
	conn    *grpc.ClientConn
	api     authzv1.AuthzServiceClient
	health  healthpb.HealthClient
	timeout time.Duration
}

// New creates the connection to target (e.g. "localhost:50051" or
// "dns:///authz:50051") and starts connecting in the background. It returns an
// error only for an unusable target or option; an unreachable authz shows up as
// UNAVAILABLE on calls.
func New(target string, opts Options) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(ServiceConfig),
		grpc.WithKeepaliveParams(Keepalive),
	}
	if opts.Observe != nil {
		observe := opts.Observe
		dial = append(dial, grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, callOpts...)
			observe(method, status.Code(err), time.Since(start))
			return err
		}))
	}
	dial = append(dial, opts.DialOptions...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("creating gRPC client for %q: %w", target, err)
	}
	conn.Connect()
	return &Client{
		conn:    conn,
		api:     authzv1.NewAuthzServiceClient(conn),
		health:  healthpb.NewHealthClient(conn),
		timeout: opts.Timeout,
	}, nil
}

// Authorize asks authz for a decision. A denial is a normal response. Errors are
// gRPC status errors: UNAVAILABLE or DEADLINE_EXCEEDED when authz or the
// authorization server cannot answer, INVALID_ARGUMENT for a malformed token or
// resource.
func (c *Client) Authorize(ctx context.Context, req *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.api.Authorize(ctx, req)
}

// GetUser fetches the user with userID. Errors are gRPC status errors, notably
// NOT_FOUND for an unknown user and UNAVAILABLE when authz or the authorization
// server cannot answer.
func (c *Client) GetUser(ctx context.Context, userID string, includeOrgs bool) (*authzv1.User, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := c.api.GetUser(ctx, &authzv1.GetUserRequest{UserId: userID, IncludeOrgs: includeOrgs})
	if err != nil {
		return nil, err
	}
	return res.GetUser(), nil
}

// WatchInvalidations opens authz's stream of token invalidations (one
// replica's; every replica relays every invalidation). Unlike the other calls
// it has no deadline: it lives until ctx is done or the stream breaks. Errors
// are gRPC status errors, e.g. UNAVAILABLE when no replica can be reached and
// UNIMPLEMENTED from an authz that predates the RPC.
func (c *Client) WatchInvalidations(ctx context.Context) (grpc.ServerStreamingClient[authzv1.WatchInvalidationsResponse], error) {
	return c.api.WatchInvalidations(ctx, &authzv1.WatchInvalidationsRequest{})
}

// Ready checks that some authz replica reports SERVING. It returns an error
// saying why not otherwise.
func (c *Client) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("checking authz health: %w", err)
	}
	if s := res.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("authz reports %s", s)
	}
	return nil
}

// Close closes the connection; calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }
