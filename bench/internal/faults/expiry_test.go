package faults

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
)

// TestExpiryAtBoundary mints tokens that expire 3s later and asks authz about
// them every 25ms across the expiry, with the default CACHE_TTL (60s, much
// longer than the token) and CLOCK_SKEW (30s). Rule: a cached result never
// outlives the token's exp, so the token is accepted until exp and refused
// soon after (once the authorization server, which shares authz's clock here,
// calls it inactive); the gateway answers the refusal with 401 invalid_token.
func TestExpiryAtBoundary(t *testing.T) {
	t.Parallel()
	c := startCluster(t, options{replicas: 1, gateways: 1, decisionCache: true})
	r, g := c.authz[0], c.gateways[0]
	const lifetime = 3 * time.Second
	const rounds = 2
	// Relative to exp: when the token was last accepted (worst: earliest) and
	// first refused (worst: latest).
	lastOK, firstNo := time.Duration(1<<62), time.Duration(-1<<62)
	for range rounds {
		minted := time.Now()
		tok := c.mint(t, ptr(int64(lifetime/time.Second)))
		var exp time.Time
		var lastAllowed, firstRefused time.Time
		var reason authzv1.DenialReason
		for firstRefused.IsZero() {
			if time.Since(minted) > lifetime+15*time.Second {
				t.Fatalf("token still accepted %v after minting (lifetime %v)", time.Since(minted), lifetime)
			}
			res, err := c.authorize(t.Context(), r, tok)
			now := time.Now()
			switch {
			case err != nil:
				t.Fatalf("Authorize: %v", err)
			case res.GetAllowed():
				lastAllowed = now
				exp = res.GetPrincipal().GetExpiresAt().AsTime()
			default:
				firstRefused, reason = now, res.GetDenial().GetReason()
			}
			time.Sleep(25 * time.Millisecond)
		}
		if exp.IsZero() {
			t.Fatal("the token was never accepted")
		}
		if reason != authzv1.DenialReason_DENIAL_REASON_TOKEN_INACTIVE && reason != authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED {
			t.Errorf("refused with %v; want TOKEN_INACTIVE or TOKEN_EXPIRED", reason)
		}
		// exp has whole seconds; devauth's own expiry is up to 1s later.
		accepted, refused := lastAllowed.Sub(exp), firstRefused.Sub(exp)
		lastOK, firstNo = min(lastOK, accepted), max(firstNo, refused)
		if accepted < -500*time.Millisecond {
			t.Errorf("last accepted %v before exp; want the token accepted until at most 0.5s before", -accepted)
		}
		if refused > 1500*time.Millisecond {
			t.Errorf("first refused %v after exp (last accepted %v after exp); want refused within 1.5s of exp", refused, accepted)
		}
		if rep := call(t.Context(), g, tok); rep.status != http.StatusUnauthorized || !strings.Contains(rep.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("expired token through the gateway: %s; want 401 invalid_token", rep.outcome)
		}
	}
	t.Logf("figure: expiry: last accepted at exp%+v, first refused at exp%+v (worst of %d, CACHE_TTL 60s, CLOCK_SKEW 30s)",
		lastOK.Round(time.Millisecond), firstNo.Round(time.Millisecond), rounds)
}

// skewProxy sits between authz and devauth's introspection endpoint and
// shifts the times in its answers (exp, iat, nbf) by an offset per token: an
// authorization server whose clock is that far ahead of authz's (negative:
// behind). Everything else passes through unchanged.
type skewProxy struct {
	upstream string
	mu       sync.Mutex
	offset   map[string]int64
}

func (p *skewProxy) set(tok string, offset time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offset[tok] = int64(offset / time.Second)
}

func (p *skewProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, p.upstream, bytes.NewReader(body))
	req.Header = r.Header.Clone()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	p.mu.Lock()
	off := p.offset[form.Get("token")]
	p.mu.Unlock()
	var m map[string]any
	if res.StatusCode == http.StatusOK && json.Unmarshal(out, &m) == nil {
		for _, k := range []string{"exp", "iat", "nbf"} {
			if v, ok := m[k].(float64); ok {
				m[k] = int64(v) + off
			}
		}
		out, _ = json.Marshal(m)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(out)
}

// TestClockSkew plays an authorization server whose clock is 20s off authz's
// in either direction, against one replica with CLOCK_SKEW 30s and one with
// 5s. Rule (authz's decision package): exp may be up to CLOCK_SKEW in the past
// and iat/nbf up to CLOCK_SKEW in the future; beyond that the token is refused
// as expired or not yet valid.
func TestClockSkew(t *testing.T) {
	t.Parallel()
	c := startCluster(t, options{})
	proxy := &skewProxy{upstream: c.devauthURL + "/oauth/2.1/introspect", offset: map[string]int64{}}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	env := func(skew string) []string {
		return []string{"INTROSPECTION_URL=" + srv.URL + "/oauth/2.1/introspect", "CLOCK_SKEW=" + skew}
	}
	tolerant := c.startReplica("authz-skew30s", env("30s")...)
	strict := c.startReplica("authz-skew5s", env("5s")...)

	const (
		allowed     = authzv1.DenialReason_DENIAL_REASON_UNSPECIFIED
		expired     = authzv1.DenialReason_DENIAL_REASON_TOKEN_EXPIRED
		notYetValid = authzv1.DenialReason_DENIAL_REASON_TOKEN_NOT_YET_VALID
		sec         = time.Second
		hour        = int64(3600)
		tenSeconds  = int64(10)
	)
	tests := []struct {
		name      string
		offset    time.Duration // the AS clock minus authz's
		expiresIn int64
		r         *replica
		want      authzv1.DenialReason
	}{
		{"AS 20s behind: exp 10s ago, CLOCK_SKEW 30s", -20 * sec, tenSeconds, tolerant, allowed},
		{"AS 20s behind: exp 10s ago, CLOCK_SKEW 5s", -20 * sec, tenSeconds, strict, expired},
		{"AS 13s behind: exp 3s ago, CLOCK_SKEW 5s", -13 * sec, tenSeconds, strict, allowed},
		{"AS 17s behind: exp 7s ago, CLOCK_SKEW 5s", -17 * sec, tenSeconds, strict, expired},
		{"AS 20s ahead: iat 20s ahead, CLOCK_SKEW 30s", 20 * sec, hour, tolerant, allowed},
		{"AS 20s ahead: iat 20s ahead, CLOCK_SKEW 5s", 20 * sec, hour, strict, notYetValid},
		{"AS 3s ahead: iat 3s ahead, CLOCK_SKEW 5s", 3 * sec, hour, strict, allowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := c.mint(t, ptr(tt.expiresIn))
			proxy.set(tok, tt.offset)
			res, err := c.authorize(t.Context(), tt.r, tok)
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if got := res.GetDenial().GetReason(); got != tt.want || res.GetAllowed() != (tt.want == allowed) {
				t.Errorf("allowed %v, denial %v; want %v", res.GetAllowed(), got, tt.want)
			}
		})
	}
}
