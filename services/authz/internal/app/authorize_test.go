package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
)

func TestAuthorizeAllowedPrincipal(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	inst := start(t, "principal", env(as, "", nil))
	now := time.Now().Unix()
	claims := map[string]any{
		"active": true, "sub": "user-1", "client_id": "cursor", "scope": "read:user_data read:org_data",
		"aud": resourceURL, "iss": as.Issuer(), "exp": now + 3600, "iat": now - 5, "token_type": "Bearer",
	}
	tok := "tok-principal-" + strings.Repeat("x", 20)
	as.SetClaims(tok, claims)
	before := time.Now()
	got, err := inst.client.Authorize(t.Context(), authorizeReq(tok, "read:user_data"))
	if err != nil {
		t.Fatal(err)
	}
	// Reusable until the cached introspection ends: CACHE_TTL (default 60s)
	// after it was made; a hit says the same.
	until := got.GetReusableUntil().AsTime()
	if got.GetReusableUntil() == nil || until.Before(before.Add(time.Minute)) || until.After(time.Now().Add(time.Minute)) {
		t.Errorf("reusable_until = %v, want CACHE_TTL (60s) after the call (%v)", got.GetReusableUntil(), before)
	}
	got.ReusableUntil = nil
	wantClaims, _ := structpb.NewStruct(map[string]any{
		"active": true, "sub": "user-1", "client_id": "cursor", "scope": "read:user_data read:org_data",
		"aud": resourceURL, "iss": as.Issuer(), "exp": float64(now + 3600), "iat": float64(now - 5), "token_type": "Bearer",
	})
	want := &authzv1.AuthorizeResponse{
		Allowed:  true,
		TokenRef: hexKey(inst, tok),
		Principal: &authzv1.Principal{
			Subject:   "user-1",
			ClientId:  "cursor",
			Scopes:    []string{"read:user_data", "read:org_data"},
			ExpiresAt: &timestamppb.Timestamp{Seconds: now + 3600},
			IssuedAt:  &timestamppb.Timestamp{Seconds: now - 5},
			Audience:  []string{resourceURL},
			Issuer:    as.Issuer(),
			Claims:    wantClaims,
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Authorize mismatch (-want +got):\n%s", diff)
	}
	// A hit returns the same principal.
	again, err := inst.client.Authorize(t.Context(), authorizeReq(tok, "read:user_data"))
	if err != nil {
		t.Fatal(err)
	}
	if !again.GetReusableUntil().AsTime().Equal(until) {
		t.Errorf("cached Authorize: reusable_until = %v, want the first answer's %v", again.GetReusableUntil().AsTime(), until)
	}
	again.ReusableUntil = nil
	if diff := cmp.Diff(want, again, protocmp.Transform()); diff != "" {
		t.Errorf("cached Authorize mismatch (-want +got):\n%s", diff)
	}
	if n := as.IntrospectionsOf(tok); n != 1 {
		t.Errorf("introspections = %d, want 1 (second call from L1)", n)
	}

	// The other claims formats carry the same principal, the claims as JSON or
	// not at all.
	for _, tt := range []struct {
		format   authzv1.ClaimsFormat
		wantJSON bool
	}{
		{authzv1.ClaimsFormat_CLAIMS_FORMAT_STRUCT, false},
		{authzv1.ClaimsFormat_CLAIMS_FORMAT_JSON, true},
		{authzv1.ClaimsFormat_CLAIMS_FORMAT_NONE, false},
	} {
		req := authorizeReq(tok, "read:user_data")
		req.ClaimsFormat = tt.format
		got, err := inst.client.Authorize(t.Context(), req)
		if err != nil {
			t.Fatalf("%v: %v", tt.format, err)
		}
		got.ReusableUntil = nil
		w := proto.Clone(want).(*authzv1.AuthorizeResponse)
		if tt.format != authzv1.ClaimsFormat_CLAIMS_FORMAT_STRUCT {
			w.Principal.Claims = nil
		}
		if tt.wantJSON {
			var m map[string]any
			if err := json.Unmarshal(got.GetPrincipal().GetClaimsJson(), &m); err != nil {
				t.Fatalf("claims_json %q: %v", got.GetPrincipal().GetClaimsJson(), err)
			}
			if diff := cmp.Diff(wantClaims.AsMap(), m); diff != "" {
				t.Errorf("claims_json mismatch (-want +got):\n%s", diff)
			}
			got.Principal.ClaimsJson = nil
		}
		if diff := cmp.Diff(w, got, protocmp.Transform()); diff != "" {
			t.Errorf("%v: Authorize mismatch (-want +got):\n%s", tt.format, diff)
		}
	}
}

// TestAuthorizeDecisionTable runs every decision rule and every kind of malformed
// introspection reply through real gRPC and a real HTTP introspection endpoint.
func TestAuthorizeDecisionTable(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	inst := start(t, "decisions", env(as, "", nil))
	now := time.Now().Unix()
	active := func(extra map[string]any) map[string]any {
		c := map[string]any{"active": true, "sub": "user-1", "client_id": "c", "scope": "read:user_data",
			"aud": resourceURL, "iss": as.Issuer(), "exp": now + 3600, "iat": now}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	tests := []struct {
		name     string
		claims   map[string]any // registered as the token's introspection reply
		raw      string         // or a verbatim 200 reply
		status   int            // with raw: the HTTP status (default 200)
		resource string
		scopes   []string
		// Exactly one of these describes the expectation.
		wantAllowed bool
		wantReason  authzv1.DenialReason
		wantMissing []string
		wantCode    codes.Code
		// notCached: allowed, but too close to exp for authz to cache, so
		// not reusable either.
		notCached bool
	}{
		{name: "active", claims: active(nil), scopes: []string{"read:user_data"}, wantAllowed: true},
		{name: "unknown token is inactive", wantReason: authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE},
		{name: "inactive", claims: map[string]any{"active": false}, wantReason: authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE},
		{name: "expired", claims: active(map[string]any{"exp": now - 120}), wantReason: authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED},
		{name: "expired within clock skew", claims: active(map[string]any{"exp": now - 5}), wantAllowed: true, notCached: true},
		{name: "not yet valid", claims: active(map[string]any{"nbf": now + 600}), wantReason: authzv1.DenialReason_DENIAL_REASON_TOKEN_NOT_YET_VALID},
		{name: "wrong audience", claims: active(map[string]any{"aud": "https://other.example.com/mcp"}), wantReason: authzv1.DenialReason_DENIAL_REASON_AUDIENCE_MISMATCH},
		{name: "no audience", claims: active(map[string]any{"aud": nil}), wantReason: authzv1.DenialReason_DENIAL_REASON_AUDIENCE_MISMATCH},
		{name: "audience differs by trailing slash and case", claims: active(map[string]any{"aud": "HTTP://127.0.0.1:8000/mcp/"}), wantAllowed: true},
		{name: "resource differs by trailing slash and default port", claims: active(map[string]any{"aud": "http://localhost/mcp"}), resource: "http://LOCALHOST:80/mcp/", wantAllowed: true},
		{name: "audience list", claims: active(map[string]any{"aud": []any{"https://a.example", resourceURL}}), wantAllowed: true},
		{name: "resource member instead of aud", claims: active(map[string]any{"aud": nil, "resource": resourceURL}), wantAllowed: true},
		{name: "missing scope", claims: active(nil), scopes: []string{"read:user_data", "write:user_data", "read:org_data"},
			wantReason: authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE, wantMissing: []string{"write:user_data", "read:org_data"}},
		{name: "hierarchy", claims: active(map[string]any{"scope": "admin"}), scopes: []string{"read:org_data", "read:profile"}, wantAllowed: true},
		{name: "scope as list", claims: active(map[string]any{"scope": []any{"read:user_data"}}), scopes: []string{"read:user_data"}, wantAllowed: true},
		{name: "issuer mismatch", claims: active(map[string]any{"iss": "https://evil.example.com/oauth/2.1"}), wantReason: authzv1.DenialReason_DENIAL_REASON_ISSUER_MISMATCH},
		{name: "issuer absent", claims: active(map[string]any{"iss": nil}), wantAllowed: true},
		{name: "exp missing is accepted", claims: active(map[string]any{"exp": nil}), wantAllowed: true},
		{name: "exp as float", claims: active(map[string]any{"exp": float64(now) + 3600.5}), wantAllowed: true},
		{name: "active as string", raw: `{"active":"true","aud":"` + resourceURL + `"}`, wantCode: codes.Unavailable},
		{name: "active missing", raw: `{"sub":"x"}`, wantCode: codes.Unavailable},
		{name: "exp as numeric string", raw: `{"active":true,"exp":"9999999999"}`, wantCode: codes.Unavailable},
		{name: "non-JSON", raw: `<html>502 Bad Gateway</html>`, wantCode: codes.Unavailable},
		{name: "JSON array", raw: `[true]`, wantCode: codes.Unavailable},
		{name: "empty body", raw: ``, wantCode: codes.Unavailable},
		{name: "huge body", raw: `{"active":true,"pad":"` + strings.Repeat("p", 2<<20) + `"}`, wantCode: codes.Unavailable},
		{name: "HTTP 500", raw: `{"error":"server_error"}`, status: 500, wantCode: codes.Unavailable},
		{name: "HTTP 401 (bad client credentials)", raw: `{"error":"invalid_client"}`, status: 401, wantCode: codes.Unavailable},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := fmt.Sprintf("tok-decision-%d-%d", i, time.Now().UnixNano())
			switch {
			case tt.claims != nil:
				as.SetClaims(tok, tt.claims)
			case tt.raw != "" || tt.status != 0 || tt.wantCode != codes.OK:
				st := tt.status
				if st == 0 {
					st = 200
				}
				as.SetRawReply(tok, st, []byte(tt.raw))
			}
			req := authorizeReq(tok, tt.scopes...)
			if tt.resource != "" {
				req.Resource = tt.resource
			}
			resp, err := inst.client.Authorize(t.Context(), req)
			if tt.wantCode != codes.OK {
				if status.Code(err) != tt.wantCode {
					t.Fatalf("Authorize = %v, %v; want code %v", resp, err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if resp.GetAllowed() != tt.wantAllowed {
				t.Fatalf("allowed = %v, want %v (denial %v)", resp.GetAllowed(), tt.wantAllowed, resp.GetDenial())
			}
			// Allowed or denied, the answer names the token for WatchInvalidations.
			if got, want := resp.GetTokenRef(), hexKey(inst, tok); got != want {
				t.Errorf("token_ref = %q, want %q", got, want)
			}
			// Only an allowed answer that authz cached says how long it may
			// be reused.
			if (resp.GetReusableUntil() != nil) != (tt.wantAllowed && !tt.notCached) {
				t.Errorf("reusable_until = %v on an answer with allowed = %v", resp.GetReusableUntil(), resp.GetAllowed())
			}
			if tt.wantAllowed {
				if resp.GetDenial() != nil || resp.GetPrincipal().GetSubject() != "user-1" {
					t.Errorf("allowed response: denial %v, principal %v", resp.GetDenial(), resp.GetPrincipal())
				}
				return
			}
			d := resp.GetDenial()
			if d.GetReason() != tt.wantReason || d.GetDescription() == "" {
				t.Errorf("denial = %v, want reason %v with a description", d, tt.wantReason)
			}
			if diff := cmp.Diff(tt.wantMissing, d.GetMissingScopes()); diff != "" {
				t.Errorf("missing scopes (-want +got):\n%s", diff)
			}
			if wantPrincipal := tt.wantReason == authzv1.DenialReason_DENIAL_REASON_INSUFFICIENT_SCOPE; (resp.GetPrincipal() != nil) != wantPrincipal {
				t.Errorf("principal = %v; want one only on insufficient_scope", resp.GetPrincipal())
			}
			if strings.Contains(d.GetDescription(), tok) {
				t.Errorf("description contains the token")
			}
		})
	}
}

// TestMalformedInput checks every RPC rejects bad input with INVALID_ARGUMENT before
// any call to the authorization server, and names the field at fault in a
// google.rpc.BadRequest detail (the gateway answers 401 only for token).
func TestMalformedInput(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	inst := start(t, "malformed", env(as, "", nil))
	ok := as.MintToken(propelauthfake.TokenOptions{Subject: "u", Audience: []string{resourceURL}})
	tooManyScopes := make([]string, 65)
	for i := range tooManyScopes {
		tooManyScopes[i] = fmt.Sprintf("s%d", i)
	}
	authorize := []struct {
		name  string
		req   *authzv1.AuthorizeRequest
		field string
	}{
		{"empty token", &authzv1.AuthorizeRequest{Resource: resourceURL}, "token"},
		{"oversized token", &authzv1.AuthorizeRequest{Token: strings.Repeat("a", 8193), Resource: resourceURL}, "token"},
		{"token with space", &authzv1.AuthorizeRequest{Token: "Bearer abc", Resource: resourceURL}, "token"},
		{"token with NUL", &authzv1.AuthorizeRequest{Token: "abc\x00", Resource: resourceURL}, "token"},
		{"token with newline", &authzv1.AuthorizeRequest{Token: "abc\ndef", Resource: resourceURL}, "token"},
		{"token with DEL", &authzv1.AuthorizeRequest{Token: "abc\x7f", Resource: resourceURL}, "token"},
		{"non-ASCII token", &authzv1.AuthorizeRequest{Token: "tökén", Resource: resourceURL}, "token"},
		{"bad token and bad resource", &authzv1.AuthorizeRequest{Token: "a b", Resource: "/mcp"}, "token"},
		{"empty resource", &authzv1.AuthorizeRequest{Token: ok}, "resource"},
		{"relative resource", &authzv1.AuthorizeRequest{Token: ok, Resource: "/mcp"}, "resource"},
		{"resource without scheme", &authzv1.AuthorizeRequest{Token: ok, Resource: "127.0.0.1:8000/mcp"}, "resource"},
		{"resource with fragment", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL + "#x"}, "resource"},
		{"resource with userinfo", &authzv1.AuthorizeRequest{Token: ok, Resource: "http://u:p@127.0.0.1:8000/mcp"}, "resource"},
		{"oversized resource", &authzv1.AuthorizeRequest{Token: ok, Resource: "https://a/" + strings.Repeat("a", 3000)}, "resource"},
		{"empty scope", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL, RequiredScopes: []string{""}}, "required_scopes"},
		{"scope with space", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL, RequiredScopes: []string{"read user"}}, "required_scopes"},
		{"scope with quote", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL, RequiredScopes: []string{`a"b`}}, "required_scopes"},
		{"too many scopes", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL, RequiredScopes: tooManyScopes}, "required_scopes"},
		{"unknown claims format", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL, ClaimsFormat: 99}, "claims_format"},
		{"negative claims format", &authzv1.AuthorizeRequest{Token: ok, Resource: resourceURL, ClaimsFormat: -1}, "claims_format"},
	}
	for _, tt := range authorize {
		t.Run("Authorize/"+tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := inst.client.Authorize(t.Context(), tt.req)
			if got := badRequestField(t, err); got != tt.field {
				t.Errorf("field = %q, want %q", got, tt.field)
			}
		})
	}
	getUser := []struct{ name, id string }{
		{"empty", ""},
		{"dot dot", ".."},
		{"dot", "."},
		{"slash", "a/b"},
		{"query", "a?b"},
		{"percent", "a%2fb"},
		{"space", "a b"},
		{"oversized", strings.Repeat("u", 257)},
	}
	for _, tt := range getUser {
		t.Run("GetUser/"+tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: tt.id})
			if got := badRequestField(t, err); got != "user_id" {
				t.Errorf("field = %q, want user_id", got)
			}
		})
	}
	invalidate := []struct{ name, tok string }{
		{"empty", ""},
		{"oversized", strings.Repeat("a", 8193)},
		{"control byte", "abc\x01"},
		{"space", "a b"},
	}
	for _, tt := range invalidate {
		t.Run("InvalidateToken/"+tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := inst.client.InvalidateToken(t.Context(), &authzv1.InvalidateTokenRequest{Token: tt.tok})
			if got := badRequestField(t, err); got != "token" {
				t.Errorf("field = %q, want token", got)
			}
		})
	}
	t.Cleanup(func() {
		if n := as.Introspections() + as.UserFetches(); n != 0 {
			t.Errorf("malformed input reached the authorization server %d times", n)
		}
	})
}

// TestUserIDRefusedUpstream: a user ID that passes authz's checks but that the
// user API refuses as malformed (400) is INVALID_ARGUMENT naming user_id, and is
// not cached.
func TestUserIDRefusedUpstream(t *testing.T) {
	t.Parallel()
	as := newAS(t)
	as.SetUserReply("legacy|odd", http.StatusBadRequest, []byte(`{"user_id":"invalid"}`))
	inst := start(t, "user-id-refused", env(as, "", nil))
	for range 2 {
		_, err := inst.client.GetUser(t.Context(), &authzv1.GetUserRequest{UserId: "legacy|odd"})
		if got := badRequestField(t, err); got != "user_id" {
			t.Errorf("field = %q, want user_id", got)
		}
	}
	if n := as.UserFetches(); n != 2 {
		t.Errorf("user API calls = %d, want 2 (a 400 is not cached)", n)
	}
}

// badRequestField returns the field that err's google.rpc.BadRequest detail
// names. It fails the test unless err is INVALID_ARGUMENT with exactly that one
// detail holding exactly one field violation.
func badRequestField(t *testing.T, err error) string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument", err)
	}
	details := st.Details()
	if len(details) != 1 {
		t.Fatalf("InvalidArgument has %d details %v, want one google.rpc.BadRequest", len(details), details)
	}
	br, ok := details[0].(*errdetails.BadRequest)
	if !ok || len(br.GetFieldViolations()) != 1 {
		t.Fatalf("detail = %v, want a google.rpc.BadRequest with one field violation", details[0])
	}
	v := br.GetFieldViolations()[0]
	if v.GetDescription() != st.Message() {
		t.Errorf("violation description %q, want the status message %q", v.GetDescription(), st.Message())
	}
	return v.GetField()
}

// unavailableInfo checks that err is UNAVAILABLE with exactly one
// google.rpc.ErrorInfo detail in the mcpauthz domain whose reason is reason and
// whose only metadata is token_ref; it returns that token_ref.
func unavailableInfo(t *testing.T, err error, reason string) string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("error = %v, want Unavailable", err)
	}
	details := st.Details()
	if len(details) != 1 {
		t.Fatalf("Unavailable has %d details %v, want one google.rpc.ErrorInfo", len(details), details)
	}
	info, ok := details[0].(*errdetails.ErrorInfo)
	if !ok {
		t.Fatalf("detail = %v, want a google.rpc.ErrorInfo", details[0])
	}
	ref := info.GetMetadata()["token_ref"]
	want := &errdetails.ErrorInfo{Reason: reason, Domain: "mcpauthz", Metadata: map[string]string{"token_ref": ref}}
	if diff := cmp.Diff(want, info, protocmp.Transform()); diff != "" {
		t.Errorf("ErrorInfo (-want +got):\n%s", diff)
	}
	return ref
}
