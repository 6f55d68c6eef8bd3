package main

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/internal/testenv"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/config"
)

func baseEnv(as *propelauthfake.Server) []string {
	return []string{
		"PROPELAUTH_AUTH_URL=" + as.AuthURL(),
		"REQUEST_VALIDATION_CLIENT_ID=" + as.ClientID,
		"REQUEST_VALIDATION_CLIENT_SECRET=" + as.ClientSecret,
		"PROPELAUTH_API_KEY=" + as.APIKey,
	}
}

// TestBinary runs the real binary: start-up, health, reflection, one Authorize,
// SIGTERM, and a log free of secrets.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "authz")
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	rd := testenv.StartRedis(t)
	p := testenv.StartProcess(t, "authz", bin, testenv.ProcessOptions{
		Env: append(baseEnv(as),
			"AUTHZ_LISTEN=127.0.0.1:0",
			"AUTHZ_METRICS_LISTEN=127.0.0.1:0",
			"REDIS_URL="+rd.URL(),
			"LOG_LEVEL=debug",
		),
		ReadyListener: "AUTHZ_METRICS_LISTEN", ReadyPath: "/readyz",
	})
	grpcAddr, err := p.Listening(t.Context(), "AUTHZ_LISTEN")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: authzv1.AuthzService_ServiceDesc.ServiceName})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hr, err)
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !slices.Contains(services, "authz.v1.AuthzService") || !slices.Contains(services, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v", services)
	}
	_ = stream.CloseSend()

	tok := as.MintToken(propelauthfake.TokenOptions{Subject: "u1", Scopes: []string{"read:user_data"}, Audience: []string{"http://127.0.0.1:8000/mcp"}})
	resp, err := authzv1.NewAuthzServiceClient(conn).Authorize(ctx, &authzv1.AuthorizeRequest{
		Token: tok, Resource: "http://127.0.0.1:8000/mcp", RequiredScopes: []string{"read:user_data"},
	})
	if err != nil || !resp.GetAllowed() {
		t.Fatalf("Authorize = %v, %v", resp, err)
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("authz did not exit after SIGTERM")
	}
	out := p.Output()
	for _, want := range []string{`"msg":"starting authz"`, `"REQUEST_VALIDATION_CLIENT_SECRET":"<set>"`, `"msg":"authz serving"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}
	for _, secret := range append(as.Secrets(), tok) {
		if strings.Contains(out, secret) {
			t.Errorf("output contains a secret or token (%.8s...)", secret)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// TestBinaryBadConfig: each bad variable fails the start with exit status 1 and
// exactly one line naming it.
func TestBinaryBadConfig(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "authz")
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no auth URL", []string{"REQUEST_VALIDATION_CLIENT_ID=x", "REQUEST_VALIDATION_CLIENT_SECRET=y"}, "PROPELAUTH_AUTH_URL"},
		{"bad CACHE_TTL", append(baseEnv(as), "CACHE_TTL=soon"), "CACHE_TTL"},
		{"negative L1", append(baseEnv(as), "L1_MAX_ENTRIES=-1"), "L1_MAX_ENTRIES"},
		{"bad auth method", append(baseEnv(as), "INTROSPECTION_AUTH_METHOD=private_key_jwt"), "INTROSPECTION_AUTH_METHOD"},
		{"bad redis URL", append(baseEnv(as), "REDIS_URL=http://nope"), "REDIS_URL"},
		{"bad listen", append(baseEnv(as), "AUTHZ_LISTEN=nope"), "AUTHZ_LISTEN"},
		{"bad hierarchy", append(baseEnv(as), "SCOPE_HIERARCHY=admin"), "SCOPE_HIERARCHY"},
		{"bad log level", append(baseEnv(as), "LOG_LEVEL=loud"), "LOG_LEVEL"},
		{"missing secret", []string{"PROPELAUTH_AUTH_URL=" + as.AuthURL(), "REQUEST_VALIDATION_CLIENT_ID=x"}, "REQUEST_VALIDATION_CLIENT_SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testenv.StartProcess(t, "authz", bin, testenv.ProcessOptions{Env: tt.env})
			err := p.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit = %v, want status 1", err)
			}
			lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("output %q: want one line naming %s", p.Output(), tt.want)
			}
			if strings.Contains(p.Output(), as.ClientSecret) {
				t.Errorf("output contains the client secret")
			}
		})
	}
}

func TestBinaryListEnv(t *testing.T) {
	t.Parallel()
	bin := testenv.Binary(t, "authz")
	p := testenv.StartProcess(t, "authz", bin, testenv.ProcessOptions{Args: []string{"-list-env"}})
	if err := p.Wait(); err != nil {
		t.Fatalf("-list-env: %v", err)
	}
	got := strings.Split(strings.TrimSpace(p.Output()), "\n")
	if diff := cmp.Diff(config.EnvVars(), got); diff != "" {
		t.Errorf("-list-env (-want +got):\n%s", diff)
	}
	if !slices.IsSorted(got) {
		t.Errorf("-list-env output not sorted")
	}
}
