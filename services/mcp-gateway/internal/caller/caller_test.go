package caller

import (
	"context"
	"errors"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestHas(t *testing.T) {
	t.Parallel()
	p := &authzv1.Principal{Subject: "u", Scopes: []string{"a"}}
	var asked [][]string
	check := func(ctx context.Context, scopes []string) (bool, error) {
		asked = append(asked, scopes)
		if scopes[0] == "broken" {
			return false, errors.New("authz down")
		}
		return scopes[0] == "implied", nil
	}
	c := New(p, []string{"b"}, check)
	tests := []struct {
		scopes  []string
		want    bool
		wantErr bool
		asks    bool
	}{
		{nil, true, false, false},
		{[]string{"a"}, true, false, false},
		{[]string{"a", "b"}, true, false, false},
		{[]string{"implied"}, true, false, true},
		{[]string{"other"}, false, false, true},
		{[]string{"broken"}, false, true, true},
	}
	for _, tt := range tests {
		asked = nil
		got, err := c.Has(t.Context(), tt.scopes)
		if got != tt.want || (err != nil) != tt.wantErr || (len(asked) > 0) != tt.asks {
			t.Errorf("Has(%v) = %v, %v (asked authz: %v); want %v, err %v, asked %v", tt.scopes, got, err, asked, tt.want, tt.wantErr, tt.asks)
		}
	}
	if ok, err := New(p, nil, nil).Has(t.Context(), []string{"x"}); ok || err != nil {
		t.Errorf("Has without a check func = %v, %v; want false, nil", ok, err)
	}
}

func TestTokenInfoRoundTrip(t *testing.T) {
	t.Parallel()
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(&authzv1.Principal{Subject: "u", Scopes: []string{"a"}, ExpiresAt: timestamppb.New(exp)}, nil, nil)
	ti := c.TokenInfo()
	if ti.UserID != "u" || !ti.Expiration.Equal(exp) || len(ti.Scopes) != 1 {
		t.Errorf("TokenInfo() = %+v", ti)
	}
	if got := FromTokenInfo(ti); got != c {
		t.Errorf("FromTokenInfo(TokenInfo()) = %p, want %p", got, c)
	}
	if FromTokenInfo(nil) != nil || FromTokenInfo(&auth.TokenInfo{}) != nil {
		t.Error("FromTokenInfo of an empty TokenInfo is not nil")
	}
	if got := FromContext(NewContext(t.Context(), c)); got != c {
		t.Errorf("FromContext = %p, want %p", got, c)
	}
	if FromContext(t.Context()) != nil {
		t.Error("FromContext of a bare context is not nil")
	}
}
