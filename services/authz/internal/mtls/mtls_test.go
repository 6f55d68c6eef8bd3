package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/metrics"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/mtls"
)

// stub answers every call; what it said about the caller is what the test reads.
type stub struct {
	authzv1.UnimplementedAuthzServiceServer
}

func (stub) Authorize(ctx context.Context, _ *authzv1.AuthorizeRequest) (*authzv1.AuthorizeResponse, error) {
	id, _ := mtls.Identity(ctx)
	return &authzv1.AuthorizeResponse{Allowed: true, Principal: &authzv1.Principal{Subject: id}}, nil
}

func (stub) GetUser(ctx context.Context, req *authzv1.GetUserRequest) (*authzv1.GetUserResponse, error) {
	return &authzv1.GetUserResponse{User: &authzv1.User{UserId: req.GetUserId()}}, nil
}

// WatchInvalidations sends the caller's identity as the one token_ref.
func (stub) WatchInvalidations(_ *authzv1.WatchInvalidationsRequest, stream grpc.ServerStreamingServer[authzv1.WatchInvalidationsResponse]) error {
	id, _ := mtls.Identity(stream.Context())
	return stream.Send(&authzv1.WatchInvalidationsResponse{TokenRef: id})
}

func pool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p, err := mtls.CertPool(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMutualTLS runs a real gRPC server over loopback with ServerConfig and the
// interceptor, restricting GetUser to two callers (one by URI SAN, one by CN).
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "authz-ca")
	otherCA := testenv.NewCA(t, "rogue-ca")
	srvCert, srvKey := ca.Issue(t, testenv.CertOptions{CommonName: "authz", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	var logs testenv.LogBuffer
	unary, stream := mtls.Interceptors(mtls.Options{
		Restricted: map[string][]string{authzv1.AuthzService_GetUser_FullMethodName: {"spiffe://mcpauthz/gateway", "reporting"}},
		Logger:     slog.New(slog.NewJSONHandler(&logs, nil)),
		Metrics:    m,
	})
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(mtls.ServerConfig(pair, pool(t, ca.CertFile)))),
		grpc.ChainUnaryInterceptor(unary),
		grpc.ChainStreamInterceptor(stream),
	)
	authzv1.RegisterAuthzServiceServer(srv, stub{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	// client dials with a certificate from ca (issued for the given names), one
	// from otherCA (rogue), none, or plaintext.
	client := func(t *testing.T, creds credentials.TransportCredentials) authzv1.AuthzServiceClient {
		t.Helper()
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return authzv1.NewAuthzServiceClient(conn)
	}
	withCert := func(t *testing.T, issuer *testenv.CA, o testenv.CertOptions) credentials.TransportCredentials {
		t.Helper()
		o.Client = true
		c, k := issuer.Issue(t, o)
		kp, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return credentials.NewTLS(&tls.Config{RootCAs: pool(t, ca.CertFile), Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS13})
	}
	noCert := credentials.NewTLS(&tls.Config{RootCAs: pool(t, ca.CertFile), MinVersion: tls.VersionTLS13})

	tests := []struct {
		name        string
		creds       func(t *testing.T) credentials.TransportCredentials
		wantID      string     // Authorize answers with the caller's identity
		authorize   codes.Code // code of Authorize
		getUser     codes.Code // code of GetUser
		metricLabel string
	}{
		{"listed by URI SAN", func(t *testing.T) credentials.TransportCredentials {
			return withCert(t, ca, testenv.CertOptions{CommonName: "mcp-gateway", URIs: []string{"spiffe://mcpauthz/gateway"}})
		}, "spiffe://mcpauthz/gateway", codes.OK, codes.OK, "spiffe://mcpauthz/gateway"},
		{"listed by CN", func(t *testing.T) credentials.TransportCredentials {
			return withCert(t, ca, testenv.CertOptions{CommonName: "reporting"})
		}, "reporting", codes.OK, codes.OK, "reporting"},
		{"valid certificate not listed", func(t *testing.T) credentials.TransportCredentials {
			return withCert(t, ca, testenv.CertOptions{CommonName: "billing", URIs: []string{"spiffe://mcpauthz/billing"}})
		}, "spiffe://mcpauthz/billing", codes.OK, codes.PermissionDenied, "spiffe://mcpauthz/billing"},
		{"certificate from another CA", func(t *testing.T) credentials.TransportCredentials {
			return withCert(t, otherCA, testenv.CertOptions{CommonName: "mcp-gateway", URIs: []string{"spiffe://mcpauthz/gateway"}})
		}, "", codes.Unavailable, codes.Unavailable, ""},
		{"no client certificate", func(*testing.T) credentials.TransportCredentials { return noCert }, "", codes.Unavailable, codes.Unavailable, ""},
		{"plaintext", func(*testing.T) credentials.TransportCredentials { return insecure.NewCredentials() }, "", codes.Unavailable, codes.Unavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := client(t, tt.creds(t))
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res, err := c.Authorize(ctx, &authzv1.AuthorizeRequest{Token: "t"})
			if status.Code(err) != tt.authorize {
				t.Fatalf("Authorize: %v, want %v", err, tt.authorize)
			}
			if err == nil && res.GetPrincipal().GetSubject() != tt.wantID {
				t.Errorf("server saw caller %q, want %q", res.GetPrincipal().GetSubject(), tt.wantID)
			}
			_, err = c.GetUser(ctx, &authzv1.GetUserRequest{UserId: "u1"})
			if status.Code(err) != tt.getUser {
				t.Errorf("GetUser: %v, want %v", err, tt.getUser)
			}
			// WatchInvalidations exposes only hashes: open to every caller that
			// may call Authorize, and seen through the same identity.
			var watched *authzv1.WatchInvalidationsResponse
			ws, err := c.WatchInvalidations(ctx, &authzv1.WatchInvalidationsRequest{})
			if err == nil {
				watched, err = ws.Recv()
			}
			if status.Code(err) != tt.authorize {
				t.Errorf("WatchInvalidations: %v, want %v", err, tt.authorize)
			}
			if err == nil && watched.GetTokenRef() != tt.wantID {
				t.Errorf("stream saw caller %q, want %q", watched.GetTokenRef(), tt.wantID)
			}
			if tt.metricLabel != "" {
				for method, want := range map[string]float64{
					authzv1.AuthzService_Authorize_FullMethodName:          1,
					authzv1.AuthzService_GetUser_FullMethodName:            1,
					authzv1.AuthzService_WatchInvalidations_FullMethodName: 1,
				} {
					if got := testutil.ToFloat64(m.CallerRequests.WithLabelValues(tt.metricLabel, method)); got != want {
						t.Errorf("caller_requests{caller=%q,method=%s} = %v, want %v", tt.metricLabel, method, got, want)
					}
				}
			}
		})
	}
	t.Cleanup(func() {
		out := logs.String()
		for _, want := range []string{`"msg":"new gRPC caller","caller":"reporting"`, `"msg":"caller not allowed to call method","caller":"spiffe://mcpauthz/billing","method":"` + authzv1.AuthzService_GetUser_FullMethodName} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %s:\n%s", want, out)
			}
		}
		// The unary and stream interceptors share what they have seen.
		if n := strings.Count(out, `"msg":"new gRPC caller","caller":"reporting"`); n != 1 {
			t.Errorf("caller reporting logged as new %d times, want once:\n%s", n, out)
		}
	})
}

// TestInterceptorWithoutCertificate: a restricted method is refused to a call
// that carries no verified certificate at all (a server not requiring one), and
// open methods still run.
func TestInterceptorWithoutCertificate(t *testing.T) {
	t.Parallel()
	ic := mtls.UnaryInterceptor(mtls.Options{Restricted: map[string][]string{authzv1.AuthzService_GetUser_FullMethodName: {"x"}}, Metrics: metrics.New()})
	ran := false
	h := func(context.Context, any) (any, error) { ran = true; return "ok", nil }
	_, err := ic(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: authzv1.AuthzService_GetUser_FullMethodName}, h)
	if status.Code(err) != codes.PermissionDenied || ran {
		t.Errorf("GetUser without certificate: %v (handler ran: %v), want PermissionDenied", err, ran)
	}
	if _, err := ic(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: authzv1.AuthzService_Authorize_FullMethodName}, h); err != nil || !ran {
		t.Errorf("Authorize without certificate: %v (handler ran: %v), want it to run", err, ran)
	}
}

// TestStreamInterceptorRestricts: a restricted streaming method is refused to a
// caller without a listed certificate before its handler runs.
func TestStreamInterceptorRestricts(t *testing.T) {
	t.Parallel()
	_, ic := mtls.Interceptors(mtls.Options{Restricted: map[string][]string{authzv1.AuthzService_WatchInvalidations_FullMethodName: {"x"}}, Metrics: metrics.New()})
	ran := false
	h := func(any, grpc.ServerStream) error { ran = true; return nil }
	ss := ctxStream{ctx: t.Context()}
	err := ic(nil, ss, &grpc.StreamServerInfo{FullMethod: authzv1.AuthzService_WatchInvalidations_FullMethodName}, h)
	if status.Code(err) != codes.PermissionDenied || ran {
		t.Errorf("restricted stream without certificate: %v (handler ran: %v), want PermissionDenied", err, ran)
	}
	if err := ic(nil, ss, &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"}, h); err != nil || !ran {
		t.Errorf("open stream without certificate: %v (handler ran: %v), want it to run", err, ran)
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }
