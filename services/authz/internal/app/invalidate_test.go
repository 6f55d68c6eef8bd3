package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
)

// TestRandomInvalidationsKeepCaching: callers sending InvalidateToken with random
// tokens neither turn caching off for other tokens nor flood the log. (With one
// global invalidation epoch, 4 such callers turned 1 introspection into 50 for 50
// calls of one good token, and each call logged a line.)
func TestRandomInvalidationsKeepCaching(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	// Slow enough that every introspection overlaps invalidations.
	as.SetFault(faults.OK, 20*time.Millisecond)
	rd := testenv.StartRedis(t)
	var own testenv.LogBuffer
	logger := slog.New(slog.NewJSONHandler(io.MultiWriter(&logs, &own), &slog.HandlerOptions{Level: slog.LevelDebug})).With("instance", "random-invalidations")
	inst := startWithLogger(t, "random-invalidations", env(as, rd.URL(), nil), logger)
	waitSubscribed(t, inst)
	good := mint(as)

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var calls [4]int
	for i := range calls {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				if _, err := inst.client.InvalidateToken(ctx, &authzv1.InvalidateTokenRequest{Token: fmt.Sprintf("random-%d-%d", i, n)}); err != nil && ctx.Err() == nil {
					t.Errorf("InvalidateToken: %v", err)
					return
				}
				calls[i]++
			}
		})
	}
	for range 50 {
		mustAllow(t, inst, good)
	}
	stop()
	wg.Wait()
	total := calls[0] + calls[1] + calls[2] + calls[3]
	if n := as.IntrospectionsOf(good); n != 1 {
		t.Errorf("50 calls of one token during %d invalidations of others cost %d introspections, want 1", total, n)
	}
	if lines := strings.Count(own.String(), `"msg":"token invalidated"`); lines > 2 {
		t.Errorf("%d invalidations logged %d lines, want at most one per 5 s", total, lines)
	}
	if total < 20 {
		t.Errorf("only %d invalidations ran alongside: the test proves little", total)
	}
}

// TestInvalidateCallers: with mutual TLS, AUTHZ_INVALIDATE_CALLERS restricts
// InvalidateToken to the identities listed; other callers get PERMISSION_DENIED
// and may still call Authorize and WatchInvalidations.
func TestInvalidateCallers(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	ca := testenv.NewCA(t, "authz-test-ca")
	srvCert, srvKey := ca.Issue(t, testenv.CertOptions{CommonName: "authz", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	inst := start(t, "invalidate-callers", env(as, "", map[string]string{
		"AUTHZ_TLS_CERT":           srvCert,
		"AUTHZ_TLS_KEY":            srvKey,
		"AUTHZ_TLS_CLIENT_CA":      ca.CertFile,
		"AUTHZ_INVALIDATE_CALLERS": "spiffe://mcpauthz/revoker",
	}))
	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := func(uri string) authzv1.AuthzServiceClient {
		c, k := ca.Issue(t, testenv.CertOptions{CommonName: "svc", URIs: []string{uri}, Client: true})
		pair, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(inst.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13,
		})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return authzv1.NewAuthzServiceClient(conn)
	}
	revoker, gateway := client("spiffe://mcpauthz/revoker"), client("spiffe://mcpauthz/mcp-gateway")
	tok := mint(as)

	if _, err := gateway.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("InvalidateToken by a caller not listed = %v, want PermissionDenied", err)
	}
	if _, err := revoker.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tok}); err != nil {
		t.Errorf("InvalidateToken by a listed caller = %v", err)
	}
	if resp, err := gateway.Authorize(t.Context(), authorizeReq(tok, "read:user_data")); err != nil || !resp.GetAllowed() {
		t.Errorf("Authorize by a caller not listed = %v, %v; want allowed", resp, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	w, err := gateway.WatchInvalidations(ctx, &authzv1.WatchInvalidationsRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Errorf("WatchInvalidations by a caller not listed = %v; want its first message", err)
	}
}
