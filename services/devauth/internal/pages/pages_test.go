package pages

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	t.Parallel()
	const evil = `<script>alert("x")</script>`
	tests := []struct {
		name   string
		render func(w http.ResponseWriter)
		status int
		want   []string
	}{
		{"login", func(w http.ResponseWriter) {
			RenderLogin(w, http.StatusOK, Login{Action: "/oauth/2.1/authorize", ClientName: evil, Resource: "https://r.example/mcp",
				RequestID: "rid", CSRF: "tok", Email: "a@b.example", Error: "Invalid email or password.", Hint: "alice"})
		}, 200, []string{`name="csrf_token" value="tok"`, `name="request_id" value="rid"`, `value="a@b.example"`, "Invalid email or password.", "Seeded users: alice"}},
		{"consent", func(w http.ResponseWriter) {
			RenderConsent(w, Consent{Action: "/oauth/2.1/authorize", ClientName: evil, ClientID: "cid", RedirectURI: "cursor://x/cb",
				Resource: "https://r.example/mcp", Scopes: []Scope{{"read:user_data", "see your profile"}, {"custom", ""}},
				UserEmail: "a@b.example", RequestID: "rid", CSRF: "tok"})
		}, 200, []string{"read:user_data</code>: see your profile", "<code>custom</code></li>", `value="approve"`, `value="deny"`, "cursor://x/cb", "a@b.example"}},
		{"error", func(w http.ResponseWriter) {
			RenderError(w, http.StatusBadRequest, Error{Title: "Authorization failed", Message: evil})
		}, 400, []string{"Authorization failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			tt.render(rec)
			body := rec.Body.String()
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if strings.Contains(body, evil) || !strings.Contains(body, "&lt;script&gt;") {
				t.Errorf("untrusted text not escaped:\n%s", body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("page lacks %q:\n%s", w, body)
				}
			}
			for h, want := range map[string]string{
				"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "X-Frame-Options": "DENY",
			} {
				if got := rec.Header().Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}
