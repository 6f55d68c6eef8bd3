package httperror

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mcpauthz/mcpauthz/services/mcp-gateway/internal/challenge"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	bearer := &challenge.Bearer{Error: challenge.ErrInvalidToken, Description: `token "x" expired`, ResourceMetadata: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp", Scopes: []string{"a"}}
	tests := []struct {
		name       string
		r          Response
		wantHeader http.Header
		wantBody   Body
	}{
		{
			name:       "challenge",
			r:          Response{Status: 401, Error: challenge.ErrInvalidToken, Description: `token "x" expired`, Challenge: bearer},
			wantHeader: http.Header{"Www-Authenticate": {bearer.String()}},
			wantBody:   Body{Error: "invalid_token", ErrorDescription: `token "x" expired`},
		},
		{
			name:       "default code and Retry-After rounded up",
			r:          Response{Status: 503, Description: "authorization service unavailable", RetryAfter: 1500 * time.Millisecond},
			wantHeader: http.Header{"Retry-After": {"2"}},
			wantBody:   Body{Error: "temporarily_unavailable", ErrorDescription: "authorization service unavailable"},
		},
		{
			name:       "Retry-After at least one second",
			r:          Response{Status: 429, Error: "rate_limited", RetryAfter: time.Millisecond},
			wantHeader: http.Header{"Retry-After": {"1"}},
			wantBody:   Body{Error: "rate_limited"},
		},
		{name: "401", r: Response{Status: 401}, wantBody: Body{Error: "unauthorized"}},
		{name: "403", r: Response{Status: 403}, wantBody: Body{Error: "forbidden"}},
		{name: "404", r: Response{Status: 404}, wantBody: Body{Error: "not_found"}},
		{name: "405", r: Response{Status: 405}, wantBody: Body{Error: "method_not_allowed"}},
		{name: "408", r: Response{Status: 408}, wantBody: Body{Error: "request_timeout"}},
		{name: "413", r: Response{Status: 413}, wantBody: Body{Error: "request_too_large"}},
		{name: "415", r: Response{Status: 415}, wantBody: Body{Error: "unsupported_media_type"}},
		{name: "400", r: Response{Status: 400}, wantBody: Body{Error: "invalid_request"}},
		{name: "500", r: Response{Status: 500}, wantBody: Body{Error: "server_error"}},
		{name: "502", r: Response{Status: 502}, wantBody: Body{Error: "bad_gateway"}},
		{name: "504", r: Response{Status: 504}, wantBody: Body{Error: "server_error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			tt.r.Write(rec)
			res := rec.Result()
			if res.StatusCode != tt.r.Status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.r.Status)
			}
			want := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}, "X-Content-Type-Options": {"nosniff"}}
			for k, v := range tt.wantHeader {
				want[k] = v
			}
			if diff := cmp.Diff(want, res.Header); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			var body Body
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantBody, body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}
