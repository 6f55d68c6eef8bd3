package introspect_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpauthz/mcpauthz/internal/faults"
	"github.com/mcpauthz/mcpauthz/internal/propelauthfake"
	"github.com/mcpauthz/mcpauthz/services/authz/internal/introspect"
)

func newClient(t *testing.T, as *propelauthfake.Server, method introspect.AuthMethod, timeout time.Duration) *introspect.Client {
	t.Helper()
	c, err := introspect.NewClient(introspect.Config{
		Endpoint:     as.IntrospectionURL(),
		ClientID:     as.ClientID,
		ClientSecret: as.ClientSecret,
		AuthMethod:   method,
		Timeout:      timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIntrospectAuthMethods(t *testing.T) {
	t.Parallel()
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	tok := as.MintToken(propelauthfake.TokenOptions{Subject: "u1", Scopes: []string{"a"}, Audience: []string{"https://r/mcp"}})
	for _, method := range []introspect.AuthMethod{"", introspect.ClientSecretBasic, introspect.ClientSecretPost} {
		t.Run(string(method), func(t *testing.T) {
			c := newClient(t, as, method, time.Second)
			_, res, err := c.Introspect(t.Context(), tok)
			if err != nil {
				t.Fatalf("Introspect: %v", err)
			}
			if !res.Active || res.Subject != "u1" {
				t.Errorf("got %+v, want active token of u1", res)
			}
			form, auth := as.LastIntrospection()
			if got := form.Get("token_type_hint"); got != "access_token" {
				t.Errorf("token_type_hint = %q", got)
			}
			if method == introspect.ClientSecretPost {
				if auth != "" || form.Get("client_secret") != as.ClientSecret {
					t.Errorf("post: Authorization %q, form secret %q", auth, form.Get("client_secret"))
				}
			} else {
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(as.ClientID+":"+as.ClientSecret))
				if auth != want || form.Has("client_secret") {
					t.Errorf("basic: Authorization %q, want %q; form has secret: %v", auth, want, form.Has("client_secret"))
				}
			}
		})
	}
}

func TestIntrospectInactive(t *testing.T) {
	t.Parallel()
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	c := newClient(t, as, "", time.Second)
	raw, res, err := c.Introspect(t.Context(), "unknown-token")
	if err != nil {
		t.Fatal(err)
	}
	if res.Active {
		t.Errorf("unknown token is active")
	}
	if got := strings.TrimSpace(string(raw)); got != `{"active":false}` {
		t.Errorf("raw = %q", got)
	}
}

func TestIntrospectFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(as *propelauthfake.Server, tok string)
		secret   string
		timeout  time.Duration // 5s when zero: on a loaded machine under the race detector, answers can be slow
		wantKind introspect.ErrorKind
	}{
		{name: "wrong client secret", secret: "nope", wantKind: introspect.KindAuth},
		{name: "500", setup: func(as *propelauthfake.Server, _ string) { as.SetFault(faults.Error500, 0) }, wantKind: introspect.KindStatus5xx},
		{name: "garbage", setup: func(as *propelauthfake.Server, _ string) { as.SetFault(faults.Garbage, 0) }, wantKind: introspect.KindMalformed},
		{name: "hang", setup: func(as *propelauthfake.Server, _ string) { as.SetFault(faults.Hang, 0) }, timeout: 300 * time.Millisecond, wantKind: introspect.KindTimeout},
		{name: "connection closed", setup: func(as *propelauthfake.Server, _ string) { as.SetFault(faults.Down, 0) }, wantKind: introspect.KindNetwork},
		{name: "server gone", setup: func(as *propelauthfake.Server, _ string) { as.Close() }, wantKind: introspect.KindNetwork},
		{name: "429", setup: func(as *propelauthfake.Server, tok string) { as.SetRawReply(tok, 429, []byte(`{}`)) }, wantKind: introspect.KindRateLimited},
		{name: "400", setup: func(as *propelauthfake.Server, tok string) {
			as.SetRawReply(tok, 400, []byte(`{"error":"invalid_request"}`))
		}, wantKind: introspect.KindStatus4xx},
		{name: "active as string", setup: func(as *propelauthfake.Server, tok string) { as.SetRawReply(tok, 200, []byte(`{"active":"true"}`)) }, wantKind: introspect.KindMalformed},
		{name: "huge body", setup: func(as *propelauthfake.Server, tok string) {
			as.SetRawReply(tok, 200, []byte(`{"active":true,"x":"`+strings.Repeat("a", 2<<20)+`"}`))
		}, wantKind: introspect.KindTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			as := propelauthfake.NewServer()
			t.Cleanup(as.Close)
			tok := as.MintToken(propelauthfake.TokenOptions{Subject: "u1"})
			if tt.setup != nil {
				tt.setup(as, tok)
			}
			secret := as.ClientSecret
			if tt.secret != "" {
				secret = tt.secret
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			c, err := introspect.NewClient(introspect.Config{Endpoint: as.IntrospectionURL(), ClientID: as.ClientID, ClientSecret: secret, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			_, res, err := c.Introspect(t.Context(), tok)
			var ie *introspect.Error
			if !errors.As(err, &ie) || !errors.Is(err, introspect.ErrUnavailable) {
				t.Fatalf("Introspect = %+v, %v; want an *Error unwrapping to ErrUnavailable", res, err)
			}
			if diff := cmp.Diff(tt.wantKind, ie.Kind); diff != "" {
				t.Errorf("kind (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), secret) {
				t.Errorf("error message leaks a secret: %v", err)
			}
		})
	}
}

func TestIntrospectCallerCanceled(t *testing.T) {
	t.Parallel()
	as := propelauthfake.NewServer()
	t.Cleanup(as.Close)
	as.SetFault(faults.Hang, 0)
	c := newClient(t, as, "", 5*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, _, err := c.Introspect(ctx, "tok")
	if !errors.Is(err, context.Canceled) || errors.Is(err, introspect.ErrUnavailable) {
		t.Fatalf("err = %v; want context.Canceled and not ErrUnavailable", err)
	}
}

func TestNewClientRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []introspect.Config{
		{Endpoint: "not a url"},
		{Endpoint: "/relative"},
		{Endpoint: "ftp://x/introspect"},
		{Endpoint: "https://x/introspect", AuthMethod: "private_key_jwt"},
	} {
		if _, err := introspect.NewClient(cfg); err == nil {
			t.Errorf("NewClient(%+v) succeeded", cfg)
		}
	}
}

// TestIntrospectSlowAnswers: a reply slower than usual but within the timeout
// is used; one whose headers arrive on time but whose body trickles past the
// timeout is a timeout (ErrUnavailable), not a parse of half a body.
func TestIntrospectSlowAnswers(t *testing.T) {
	t.Parallel()
	t.Run("within the timeout", func(t *testing.T) {
		t.Parallel()
		as := propelauthfake.NewServer()
		t.Cleanup(as.Close)
		tok := as.MintToken(propelauthfake.TokenOptions{Subject: "u1"})
		as.SetFault(faults.OK, 150*time.Millisecond)
		c := newClient(t, as, "", time.Second)
		if _, res, err := c.Introspect(t.Context(), tok); err != nil || !res.Active {
			t.Fatalf("Introspect = %+v, %v; want the active token", res, err)
		}
	})
	t.Run("body trickles past the timeout", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"active":`))
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			_, _ = w.Write([]byte(`true,"sub":"u1"}`))
		}))
		t.Cleanup(srv.Close)
		c, err := introspect.NewClient(introspect.Config{Endpoint: srv.URL, ClientID: "c", ClientSecret: "s", Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, res, err := c.Introspect(t.Context(), "tok")
		var ie *introspect.Error
		if !errors.As(err, &ie) || ie.Kind != introspect.KindTimeout || !errors.Is(err, introspect.ErrUnavailable) {
			t.Fatalf("Introspect = %+v, %v; want a timeout unwrapping to ErrUnavailable", res, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("gave up after %v; want about the 300ms timeout", d)
		}
	})
}
