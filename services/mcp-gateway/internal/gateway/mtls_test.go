package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/stacktest"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/tools"
)

// gatewayID is the gateway's identity in the tests' certificates (a SPIFFE ID).
const gatewayID = "spiffe://mcpauthz.test/mcp-gateway"

// TestMutualTLS runs the real authz binary with mutual TLS and GetUser
// restricted to the gateway, and checks who gets in: the gateway with its client
// certificate serves who_am_i end to end; a gateway without one, or verifying the
// wrong server name, answers 503; raw gRPC clients without a certificate, with one
// from another CA, or in plaintext never get an answer; a valid certificate not on
// AUTHZ_GETUSER_CALLERS may Authorize but gets PERMISSION_DENIED on GetUser.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ca := testenv.NewCA(t, "mcpauthz-test-ca")
	rogue := testenv.NewCA(t, "rogue-ca")
	srvCert, srvKey := ca.Issue(t, testenv.CertOptions{CommonName: "authz", DNSNames: []string{"authz.internal"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	gwCert, gwKey := ca.Issue(t, testenv.CertOptions{CommonName: "mcp-gateway", URIs: []string{gatewayID}, Client: true})
	otherCert, otherKey := ca.Issue(t, testenv.CertOptions{CommonName: "billing", URIs: []string{"spiffe://mcpauthz.test/billing"}, Client: true})
	rogueCert, rogueKey := rogue.Issue(t, testenv.CertOptions{CommonName: "mcp-gateway", URIs: []string{gatewayID}, Client: true})

	az := stacktest.NewAuthz(t, stack.Devauth, "",
		"AUTHZ_TLS_CERT="+srvCert, "AUTHZ_TLS_KEY="+srvKey, "AUTHZ_TLS_CLIENT_CA="+ca.CertFile,
		"AUTHZ_GETUSER_CALLERS="+gatewayID)
	gwEnv := map[string]string{"AUTHZ_TLS_CA": ca.CertFile, "AUTHZ_TLS_CERT": gwCert, "AUTHZ_TLS_KEY": gwKey, "AUTHZ_TIMEOUT": "1s"}
	g := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, gwEnv)

	t.Run("gateway with its client certificate", func(t *testing.T) {
		token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
		var who tools.WhoAmI
		if tr := callTool(t, g.MCP(), token, "who_am_i", &who); tr.IsError {
			t.Fatalf("who_am_i over mTLS: %+v", tr.Content)
		}
		if who.Subject != stacktest.AliceID || who.User == nil || who.User.Email != stacktest.AliceEmail {
			t.Errorf("who_am_i over mTLS = %+v", who)
		}
		if res, b := get(t, g.MetricsURL+"/readyz"); res.StatusCode != http.StatusOK {
			t.Errorf("/readyz over mTLS: %d %s", res.StatusCode, b)
		}
	})

	t.Run("decision cache stream over mTLS", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"DECISION_CACHE_TTL": "30s"}
		for k, v := range gwEnv {
			env[k] = v
		}
		cached := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, env)
		waitStream(t, cached, true)
		token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: cached.MCP()})
		for range 2 {
			callTool(t, cached.MCP(), token, "who_am_i", nil)
		}
		if n := counterValue(t, cached.Metrics, "mcp_gateway_decision_cache_lookups_total", map[string]string{"result": "hit"}); n != 1 {
			t.Errorf("decision cache hits over mTLS = %v, want 1", n)
		}
	})

	for name, env := range map[string]map[string]string{
		"gateway without a client certificate":  {"AUTHZ_TLS_CA": ca.CertFile, "AUTHZ_TIMEOUT": "1s"},
		"gateway expecting another server name": {"AUTHZ_TLS_CA": ca.CertFile, "AUTHZ_TLS_CERT": gwCert, "AUTHZ_TLS_KEY": gwKey, "AUTHZ_TLS_SERVER_NAME": "other.internal", "AUTHZ_TIMEOUT": "1s"},
		"gateway in plaintext":                  {"AUTHZ_TIMEOUT": "1s"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bad := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, env)
			token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: bad.MCP()})
			checkUnavailable(t, post(t, bad.MCP(), token, callBody("who_am_i")))
		})
	}

	t.Run("server name override", func(t *testing.T) {
		t.Parallel()
		// authz's certificate names authz.internal as well as 127.0.0.1.
		env := map[string]string{"AUTHZ_TLS_SERVER_NAME": "authz.internal"}
		for k, v := range gwEnv {
			env[k] = v
		}
		ok := stacktest.NewGateway(t, az.Addr, stack.Devauth.URL, env)
		token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: ok.MCP()})
		if r := readRPC(t, post(t, ok.MCP(), token, listBody())); r.Error != nil {
			t.Errorf("tools/list with AUTHZ_TLS_SERVER_NAME: %+v", r.Error)
		}
	})

	roots := x509.NewCertPool()
	if b, err := os.ReadFile(ca.CertFile); err != nil || !roots.AppendCertsFromPEM(b) {
		t.Fatalf("reading the CA: %v", err)
	}
	withCert := func(cert, key string) credentials.TransportCredentials {
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if cert != "" {
			kp, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		return credentials.NewTLS(tc)
	}
	token := stack.Devauth.Mint(t, stacktest.MintRequest{Email: stacktest.AliceEmail, Scopes: []string{scopeUser}, Resource: g.MCP()})
	tests := []struct {
		name      string
		creds     credentials.TransportCredentials
		authorize codes.Code
		getUser   codes.Code
	}{
		{"gateway certificate", withCert(gwCert, gwKey), codes.OK, codes.OK},
		{"valid certificate not allowed to GetUser", withCert(otherCert, otherKey), codes.OK, codes.PermissionDenied},
		{"no client certificate", withCert("", ""), codes.Unavailable, codes.Unavailable},
		{"certificate from another CA", withCert(rogueCert, rogueKey), codes.Unavailable, codes.Unavailable},
		{"plaintext", insecure.NewCredentials(), codes.Unavailable, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run("grpc "+tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := grpc.NewClient(az.Addr, grpc.WithTransportCredentials(tt.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := authzv1.NewAuthzServiceClient(conn)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			res, err := c.Authorize(ctx, &authzv1.AuthorizeRequest{Token: token, Resource: g.MCP(), RequiredScopes: []string{scopeUser}})
			if status.Code(err) != tt.authorize {
				t.Errorf("Authorize: %v, want %v", err, tt.authorize)
			} else if err == nil && !res.GetAllowed() {
				t.Errorf("Authorize = %v, want allowed", res)
			}
			u, err := c.GetUser(ctx, &authzv1.GetUserRequest{UserId: stacktest.AliceID})
			if status.Code(err) != tt.getUser {
				t.Errorf("GetUser: %v, want %v", err, tt.getUser)
			}
			if err != nil && u != nil {
				t.Errorf("GetUser returned a user with an error: %v", u)
			}
		})
	}

	t.Cleanup(func() {
		// The callers authz saw, by certificate identity, in its metrics and log.
		res, err := http.Get(az.MetricsURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		metrics := string(b)
		for _, want := range []string{
			`authz_grpc_caller_requests_total{caller="` + gatewayID + `",method="/authz.v1.AuthzService/GetUser"} `,
			`authz_grpc_caller_requests_total{caller="spiffe://mcpauthz.test/billing",method="/authz.v1.AuthzService/GetUser"} 1`,
			`authz_grpc_requests_total{code="PermissionDenied",method="/authz.v1.AuthzService/GetUser"} 1`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("authz /metrics lacks %s", want)
			}
		}
		out := az.Proc.Output()
		for _, want := range []string{`"grpc_security":"mtls, GetUser restricted to AUTHZ_GETUSER_CALLERS"`, `"msg":"new gRPC caller","caller":"` + gatewayID + `"`, `"msg":"caller not allowed to call method","caller":"spiffe://mcpauthz.test/billing"`} {
			if !strings.Contains(out, want) {
				t.Errorf("authz log lacks %s", want)
			}
		}
	})
}
