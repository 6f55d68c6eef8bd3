package app_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/faults"
)

// TestOutageAnswersAskNotToRetry: an UNAVAILABLE caused by the authorization
// server carries gRPC server pushback (grpc-retry-pushback-ms: -1), so the
// gateway's retry policy does not send the same request to every replica,
// each of which would ask the same dead server again. Answers that are not
// outages carry no pushback.
func TestOutageAnswersAskNotToRetry(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	addAlice(as)
	inst := start(t, "pushback", env(as, "", nil))
	pushback := func(md metadata.MD) []string { return md.Get("grpc-retry-pushback-ms") }

	var md metadata.MD
	if _, err := inst.client.Authorize(t.Context(), authorizeReq(mint(as)), grpc.Trailer(&md)); err != nil {
		t.Fatal(err)
	}
	if got := pushback(md); got != nil {
		t.Errorf("allowed Authorize carries pushback %q", got)
	}
	md = nil
	if _, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: "unknown-user"}, grpc.Trailer(&md)); status.Code(err) != codes.NotFound {
		t.Fatalf("GetUser of an unknown user = %v, want NotFound", err)
	}
	if got := pushback(md); got != nil {
		t.Errorf("NotFound carries pushback %q", got)
	}

	as.SetFault(faults.Error500, 0)
	md = nil
	_, err := inst.client.Authorize(t.Context(), authorizeReq(mint(as)), grpc.Trailer(&md))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Authorize during the outage = %v, want Unavailable", err)
	}
	if diff := cmp.Diff([]string{"-1"}, pushback(md)); diff != "" {
		t.Errorf("Authorize pushback (-want +got):\n%s", diff)
	}
	md = nil
	_, err = inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: aliceID}, grpc.Trailer(&md))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("GetUser during the outage = %v, want Unavailable", err)
	}
	if diff := cmp.Diff([]string{"-1"}, pushback(md)); diff != "" {
		t.Errorf("GetUser pushback (-want +got):\n%s", diff)
	}
}
