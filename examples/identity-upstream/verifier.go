package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// HeaderName is the request header the gateway sends the assertion in.
const HeaderName = "X-Mcpauthz-Identity"

const (
	// leeway is the clock skew tolerated between the gateway and this server
	// when checking exp and iat.
	leeway = 30 * time.Second
	// maxLifetime refuses assertions that live longer than the gateway ever
	// signs them for (its ttl is at most 10m).
	maxLifetime = 10 * time.Minute
	// jwksMaxAge is how long a fetched JWKS is used before it is fetched
	// again: the gateway serves it with max-age=300.
	jwksMaxAge = 5 * time.Minute
	// refetchFloor is the least time between two fetches of the JWKS, so that
	// assertions with made-up kids cannot make this server hammer the gateway.
	refetchFloor = 10 * time.Second
	// Bounds on what is read from the network.
	maxAssertionBytes = 8 << 10
	maxJWKSBytes      = 1 << 20
)

// The only algorithms the gateway signs with. Anything else, "none" and
// HS256 included, is refused before any key is looked at.
var allowedAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.RS256}

// Identity is the caller the gateway vouches for.
type Identity struct {
	Subject   string
	ClientID  string
	Scopes    []string
	ExpiresAt time.Time
}

// Verifier checks identity assertions against the gateway's JWKS, which it
// fetches when it first needs it, again after jwksMaxAge, and at once when an
// assertion names a key it does not know (the gateway rotated its key), but
// never more often than every refetchFloor.
type Verifier struct {
	jwksURL  string
	issuer   string // the gateway's MCP_SERVER_URL
	audience string // this server's URL, as the gateway's upstreams file names it
	client   *http.Client
	now      func() time.Time

	// mu is held while the JWKS is fetched: requests that need it wait for
	// that one fetch instead of starting their own.
	mu        sync.Mutex
	keys      map[string]jose.JSONWebKey // by kid
	fetchedAt time.Time                  // of the keys
	triedAt   time.Time                  // of the last fetch, failed or not
}

// NewVerifier returns a Verifier of assertions that iss issued for aud, with
// keys from jwksURL.
func NewVerifier(jwksURL, iss, aud string) *Verifier {
	return &Verifier{
		jwksURL:  jwksURL,
		issuer:   iss,
		audience: aud,
		client:   &http.Client{Timeout: 5 * time.Second},
		now:      time.Now,
	}
}

// Verify checks the assertion and returns the identity it carries. The
// error says what is wrong: missing, malformed, a disallowed algorithm, an
// unknown key, a bad signature, or claims that are not for this server now.
func (v *Verifier) Verify(ctx context.Context, assertion string) (*Identity, error) {
	if assertion == "" {
		return nil, errors.New("no " + HeaderName + " header")
	}
	if len(assertion) > maxAssertionBytes {
		return nil, errors.New("assertion too large")
	}
	tok, err := jwt.ParseSigned(assertion, allowedAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed assertion: %w", err)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "JWT" {
		return nil, fmt.Errorf("header typ %q, want JWT", typ)
	}
	key, err := v.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	if key.Algorithm != h.Algorithm {
		return nil, fmt.Errorf("key %s is for %s, not %s", h.KeyID, key.Algorithm, h.Algorithm)
	}
	var std jwt.Claims
	var ours struct {
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
	}
	if err := tok.Claims(key.Key, &std, &ours); err != nil {
		return nil, fmt.Errorf("bad signature or claims: %w", err)
	}
	if std.Subject == "" || std.Expiry == nil || std.IssuedAt == nil {
		return nil, errors.New("sub, exp or iat missing")
	}
	if std.Expiry.Time().Sub(std.IssuedAt.Time()) > maxLifetime {
		return nil, errors.New("assertion lives longer than 10m")
	}
	err = std.ValidateWithLeeway(jwt.Expected{
		Issuer:      v.issuer,
		AnyAudience: jwt.Audience{v.audience},
		Time:        v.now(),
	}, leeway)
	if err != nil {
		return nil, err // says which: issuer, audience, expired, issued in the future
	}
	return &Identity{
		Subject:   std.Subject,
		ClientID:  ours.ClientID,
		Scopes:    strings.Fields(ours.Scope), // never nil
		ExpiresAt: std.Expiry.Time(),
	}, nil
}

// key returns the gateway's public key kid, fetching the JWKS if needed.
func (v *Verifier) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	k, known := v.keys[kid]
	stale := now.Sub(v.fetchedAt) >= jwksMaxAge
	if (!known || stale) && (v.triedAt.IsZero() || now.Sub(v.triedAt) >= refetchFloor) {
		v.triedAt = now
		keys, err := v.fetch(ctx)
		if err != nil && !known {
			return jose.JSONWebKey{}, fmt.Errorf("key %q unknown and the JWKS unavailable: %w", kid, err)
		}
		if err == nil {
			v.keys, v.fetchedAt = keys, now
			k, known = keys[kid]
		}
		// On a failed refresh a known key stays usable until the next try.
	}
	if !known {
		return jose.JSONWebKey{}, fmt.Errorf("no key %q in the gateway's JWKS", kid)
	}
	return k, nil
}

// fetch GETs the JWKS and returns its public signing keys by kid.
func (v *Verifier) fetch(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	// Not the request's own context: one client hanging up must not fail the
	// fetch other requests are waiting for.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.client.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.jwksURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", v.jwksURL, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJWKSBytes)).Decode(&set); err != nil {
		return nil, fmt.Errorf("decoding the JWKS: %w", err)
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.KeyID != "" && k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			keys[k.KeyID] = k
		}
	}
	return keys, nil
}

type identityKey struct{}

// RequireIdentity refuses with 401 every request without a valid assertion,
// logging why (never the assertion), and passes the others on with the
// caller's [Identity] in their context.
func (v *Verifier) RequireIdentity(next http.Handler, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := v.Verify(r.Context(), r.Header.Get(HeaderName))
		if err != nil {
			logger.Info("refused", "remote", r.RemoteAddr, "reason", err.Error())
			w.Header().Set("WWW-Authenticate", `Mcpauthz-Identity error="invalid_token"`)
			http.Error(w, "identity assertion refused: "+err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

// IdentityFrom returns the caller that [Verifier.RequireIdentity] verified.
func IdentityFrom(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}
