package decision

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/resource"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/tokeninfo"
)

const (
	res    = "https://mcp.example.com/mcp"
	issuer = "https://auth.example.com/oauth/2.1"
)

var now = time.Unix(1_800_000_000, 0)

func parse(t *testing.T, body string) *tokeninfo.Result {
	t.Helper()
	r, err := introspect.Parse([]byte(body))
	if err != nil {
		t.Fatalf("Parse(%s): %v", body, err)
	}
	return r
}

func TestDecide(t *testing.T) {
	t.Parallel()
	h, err := ParseHierarchy("admin=read:user_data,read:org_data;read:user_data=read:profile")
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{Issuer: issuer, Skew: 30 * time.Second, Hierarchy: h}
	exp := now.Unix() + 3600
	tok := func(extra string) string {
		return fmt.Sprintf(`{"active":true,"sub":"u1","aud":%q,"iss":%q,"exp":%d,"iat":%d,"scope":"read:user_data"%s}`, res, issuer, exp, now.Unix()-10, extra)
	}
	tests := []struct {
		name     string
		body     string
		resource string
		required []string
		want     Outcome
	}{
		{name: "allowed", body: tok(""), required: []string{"read:user_data"}, want: Outcome{}},
		{name: "no scopes required", body: tok(""), want: Outcome{}},
		{name: "inactive", body: `{"active":false}`, want: Outcome{Reason: DenialInactive}},
		{name: "expired", body: fmt.Sprintf(`{"active":true,"aud":%q,"exp":%d}`, res, now.Unix()-31), want: Outcome{Reason: DenialExpired}},
		{name: "expired at skew edge", body: fmt.Sprintf(`{"active":true,"aud":%q,"exp":%d}`, res, now.Unix()-30), want: Outcome{Reason: DenialExpired}},
		{name: "expired within skew", body: fmt.Sprintf(`{"active":true,"aud":%q,"exp":%d}`, res, now.Unix()-29), want: Outcome{}},
		{name: "exp missing is accepted", body: fmt.Sprintf(`{"active":true,"aud":%q}`, res), want: Outcome{}},
		{name: "nbf in future", body: fmt.Sprintf(`{"active":true,"aud":%q,"nbf":%d}`, res, now.Unix()+31), want: Outcome{Reason: DenialNotYetValid}},
		{name: "nbf within skew", body: fmt.Sprintf(`{"active":true,"aud":%q,"nbf":%d}`, res, now.Unix()+30), want: Outcome{}},
		{name: "iat in future", body: fmt.Sprintf(`{"active":true,"aud":%q,"iat":%d}`, res, now.Unix()+3600), want: Outcome{Reason: DenialNotYetValid}},
		{name: "wrong audience", body: tok(""), resource: "https://other.example.com/mcp", want: Outcome{Reason: DenialAudienceMismatch}},
		{name: "no audience", body: `{"active":true}`, want: Outcome{Reason: DenialAudienceMismatch}},
		{name: "audience with trailing slash and case", body: `{"active":true,"aud":"HTTPS://MCP.example.com:443/mcp/"}`, want: Outcome{}},
		{name: "audience list", body: fmt.Sprintf(`{"active":true,"aud":["https://x",%q]}`, res), want: Outcome{}},
		{name: "audience is a prefix only", body: `{"active":true,"aud":"https://mcp.example.com"}`, want: Outcome{Reason: DenialAudienceMismatch}},
		{name: "missing scope", body: tok(""), required: []string{"read:user_data", "write:x", "read:org_data"},
			want: Outcome{Reason: DenialInsufficientScope, Missing: []string{"write:x", "read:org_data"}}},
		{name: "hierarchy direct", body: fmt.Sprintf(`{"active":true,"aud":%q,"scope":"admin"}`, res), required: []string{"read:org_data"}, want: Outcome{}},
		{name: "hierarchy transitive", body: fmt.Sprintf(`{"active":true,"aud":%q,"scope":"admin"}`, res), required: []string{"read:profile", "read:user_data"}, want: Outcome{}},
		{name: "hierarchy is one way", body: fmt.Sprintf(`{"active":true,"aud":%q,"scope":"read:profile"}`, res), required: []string{"read:user_data"},
			want: Outcome{Reason: DenialInsufficientScope, Missing: []string{"read:user_data"}}},
		{name: "issuer mismatch", body: fmt.Sprintf(`{"active":true,"aud":%q,"iss":"https://evil"}`, res), want: Outcome{Reason: DenialIssuerMismatch}},
		{name: "issuer trailing slash differs", body: fmt.Sprintf(`{"active":true,"aud":%q,"iss":%q}`, res, issuer+"/"), want: Outcome{Reason: DenialIssuerMismatch}},
		{name: "issuer absent", body: fmt.Sprintf(`{"active":true,"aud":%q}`, res), want: Outcome{}},
		{name: "inactive beats everything", body: `{"active":false,"iss":"https://evil"}`, want: Outcome{Reason: DenialInactive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := tt.resource
			if r == "" {
				r = res
			}
			canon, err := resource.Canonicalize(r)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Decide(parse(t, tt.body), canon, tt.required, now)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Outcome{}, "Description")); diff != "" {
				t.Errorf("Decide mismatch (-want +got):\n%s", diff)
			}
			if got.Allowed() != (got.Reason == Allowed) || (!got.Allowed() && got.Description == "") {
				t.Errorf("denial without description: %+v", got)
			}
		})
	}
}

func TestDecideAllowedDoesNotAllocate(t *testing.T) {
	h, _ := ParseHierarchy("admin=read:user_data")
	p := &Policy{Issuer: issuer, Skew: time.Second, Hierarchy: h}
	r := parse(t, fmt.Sprintf(`{"active":true,"aud":%q,"iss":%q,"scope":"admin","exp":%d}`, res, issuer, now.Unix()+60))
	req := []string{"read:user_data"}
	allocs := testing.AllocsPerRun(100, func() {
		if o := p.Decide(r, res, req, now); !o.Allowed() {
			t.Fatalf("denied: %+v", o)
		}
	})
	if allocs != 0 {
		t.Errorf("allowed decision allocates %v times", allocs)
	}
}

func TestParseHierarchy(t *testing.T) {
	t.Parallel()
	h, err := ParseHierarchy(" admin = read:user_data , read:org_data ; read:user_data=read:profile;a=b;b=a;;")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, s := range []string{"admin", "read:user_data", "read:profile", "a", "b"} {
		got[s] = h.Implied(s)
	}
	want := map[string][]string{
		"admin":          {"read:org_data", "read:profile", "read:user_data"},
		"read:user_data": {"read:profile"},
		"read:profile":   nil,
		"a":              {"b"},
		"b":              {"a"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hierarchy (-want +got):\n%s", diff)
	}
	if s := h.String(); s != "a=b;admin=read:org_data,read:profile,read:user_data;b=a;read:user_data=read:profile" {
		t.Errorf("String() = %q", s)
	}
}

func TestParseHierarchyRejects(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"admin", "=x", "admin=", "a=b=c", "admin=a,,b", "ad min=x", `a="b"`, "a=b\\c"} {
		if _, err := ParseHierarchy(spec); !errors.Is(err, ErrBadHierarchy) {
			t.Errorf("ParseHierarchy(%q) error = %v, want ErrBadHierarchy", spec, err)
		}
	}
	if h, err := ParseHierarchy(""); err != nil || h.Grants([]string{"a"}, "b") {
		t.Errorf("empty hierarchy: %v", err)
	}
}
