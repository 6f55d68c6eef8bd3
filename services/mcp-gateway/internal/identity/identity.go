// Package identity tells upstream MCP servers who the caller is: for each
// routed request the gateway sends a short-lived JWT it signs itself (an
// identity assertion), never the client's own token.
//
// # The assertion
//
// A compact JWS with the protected header {"alg": "ES256" or "RS256", "kid":
// the key's RFC 7638 thumbprint, "typ": "JWT"} and exactly these claims
// ([Claims]):
//
//	iss        the gateway's MCP_SERVER_URL ([Options.Issuer])
//	sub        the token's subject (the user)
//	aud        the upstream: its url, or mcpauthz:upstream:<name> for stdio ([StdioAudience])
//	client_id  the OAuth client the token was issued to
//	scope      the token's scopes, space-separated ("" when it has none)
//	iat, exp   issue and expiry time, exp = iat + TTL (at most [MaxTTL])
//	jti        16 random bytes, base64url
//
// No email or other personal data. HTTP upstreams get it in the
// [HeaderName] header, stdio upstreams in params._meta under [MetaKey].
//
// # Keys
//
// The signing key is a PEM file ([Options.KeyFile]) that every replica shares:
// EC P-256 (ES256) in PKCS #8 or SEC 1, or RSA of at least 2048 bits (RS256) in
// PKCS #8 or PKCS #1. Without one, [New] generates a P-256 key that lives as
// long as the process, which suits one replica only: an upstream that fetched
// the JWKS from one replica does not know another replica's key. Previous keys
// ([Options.PreviousKeyFiles], private or public PEM) are not used to sign, only
// published, so that assertions signed before a rotation stay verifiable.
//
// # JWKS
//
// [Signer.JWKSHandler] serves the public keys (current first, then previous)
// as an RFC 7517 JWK Set, each with kid, alg and use "sig", cacheable for
// [JWKSMaxAge]. The gateway routes it at {MCP_SERVER_URL}[JWKSPath].
//
// # Caching
//
// Signing costs tens of microseconds (ES256) to a millisecond or more (RS256),
// so [Signer.Assertion] keeps what it signed per (subject, client_id, scopes,
// audience) and hands the same assertion out while more than half of its
// lifetime remains; the upstream therefore always receives an assertion valid
// for at least TTL/2. At most [Options.MaxEntries] are kept, in the services'
// one in-process cache (internal/clockcache: an assertion expires from it at
// half its lifetime, and a full cache evicts one not used lately), and
// concurrent requests that miss for one key wait for a single signing
// (golang.org/x/sync/singleflight).
package identity

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"

	"github.com/mcpauthz/mcpauthz/internal/clockcache"
	"github.com/mcpauthz/mcpauthz/internal/scopes"
)

// HeaderName is the request header an HTTP upstream receives the assertion in.
const HeaderName = "X-Mcpauthz-Identity"

// MetaKey is the key of params._meta a stdio upstream receives the assertion in.
const MetaKey = "io.mcpauthz/identity"

// JWKSPath is where the gateway serves [Signer.JWKSHandler], under MCP_SERVER_URL.
const JWKSPath = "/.well-known/jwks.json"

// Lifetime bounds of an assertion, and the default.
const (
	DefaultTTL = 5 * time.Minute
	MaxTTL     = 10 * time.Minute
	// MinTTL keeps assertions usable across ordinary clock skew between the
	// gateway and an upstream, and the cache useful.
	MinTTL = 10 * time.Second
)

// DefaultMaxEntries bounds the assertions kept when [Options.MaxEntries] is 0.
// One entry is about 1 KiB (an ES256 assertion is ~500 bytes, RS256 ~700).
const DefaultMaxEntries = 10_000

// maxFieldBytes bounds the subject, client ID and audience of one assertion:
// they come from the authorization server and the gateway's configuration,
// and they are kept in the cache.
const maxFieldBytes = 1024

// ErrInvalidPrincipal is wrapped by the errors [Signer.Assertion] returns for a
// principal or audience it will not sign for.
var ErrInvalidPrincipal = errors.New("identity: invalid principal")

// Principal is the caller an assertion names.
type Principal struct {
	Subject  string
	ClientID string
	// Scopes are the token's scopes, in the token's order.
	Scopes []string
}

// Claims is the claim set of an assertion, as it appears on the wire.
type Claims struct {
	Issuer   string `json:"iss"`
	Subject  string `json:"sub"`
	Audience string `json:"aud"`
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	IssuedAt int64  `json:"iat"`
	Expiry   int64  `json:"exp"`
	ID       string `json:"jti"`
}

// StdioAudience is the aud claim of assertions for the stdio upstream name.
func StdioAudience(name string) string { return "mcpauthz:upstream:" + name }

// Options configures [New].
type Options struct {
	// Issuer is the iss claim: the gateway's MCP_SERVER_URL. Required.
	Issuer string
	// TTL is the lifetime of an assertion: a whole number of seconds from
	// [MinTTL] to [MaxTTL]. 0 means [DefaultTTL].
	TTL time.Duration
	// KeyFile is the PEM signing key. Empty: a P-256 key is generated (New
	// logs a warning: fine for one replica only).
	KeyFile string
	// PreviousKeyFiles are keys used before a rotation, published in the JWKS
	// and never used to sign.
	PreviousKeyFiles []string
	// MaxEntries bounds the assertions kept; 0 means [DefaultMaxEntries].
	MaxEntries int
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
	// Logger receives the key summary and the ephemeral-key warning at start;
	// nil discards them.
	Logger *slog.Logger
}

// Signer signs identity assertions with one key and serves the JWKS. It is
// safe for concurrent use.
type Signer struct {
	issuer    string
	ttl       time.Duration
	now       func() time.Time
	key       *key
	signer    jose.Signer
	ephemeral bool
	jwks      []byte
	// cache holds each assertion until half its lifetime has passed.
	cache  *clockcache.Cache[cacheKey, string]
	flight singleflight.Group

	// signHook, when set by a test, runs before every signing.
	signHook func()
}

// cacheKey is what an assertion depends on besides the time: the claims
// other than iat, exp and jti.
type cacheKey struct {
	subject, clientID, scope, audience string
}

// flightKey is k as a singleflight key: each field prefixed with its length,
// so that no two keys collide whatever bytes the fields hold.
func (k cacheKey) flightKey() string {
	b := make([]byte, 0, len(k.subject)+len(k.clientID)+len(k.scope)+len(k.audience)+4*5)
	for _, f := range [...]string{k.subject, k.clientID, k.scope, k.audience} {
		b = strconv.AppendInt(b, int64(len(f)), 10)
		b = append(b, ':')
		b = append(b, f...)
	}
	return string(b)
}

// New loads the keys opts names (or generates one) and returns a Signer. The
// error names the option or file at fault: an invalid Issuer or TTL, or a key
// file that cannot be read or holds no usable key.
func New(opts Options) (*Signer, error) {
	if opts.Issuer == "" {
		return nil, errors.New("identity: the issuer (MCP_SERVER_URL) is empty")
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < MinTTL || ttl > MaxTTL || ttl%time.Second != 0 {
		return nil, fmt.Errorf("identity: ttl %v must be a whole number of seconds from %v to %v", opts.TTL, MinTTL, MaxTTL)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Signer{issuer: opts.Issuer, ttl: ttl, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}

	var err error
	if opts.KeyFile == "" {
		s.key, err = generateKey()
		s.ephemeral = true
	} else {
		s.key, err = loadSigningKey(opts.KeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	published := []*key{s.key}
	for _, p := range opts.PreviousKeyFiles {
		k, err := loadPreviousKey(p)
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		if !containsKID(published, k.kid) {
			published = append(published, k)
		}
	}
	if s.jwks, err = jwksDocument(published); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	s.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: s.key.alg, Key: s.key.signer},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.key.kid),
	)
	if err != nil {
		return nil, fmt.Errorf("identity: making a %s signer: %w", s.key.alg, err)
	}

	maxEntries := opts.MaxEntries
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	// No Sweep runs: an expired assertion stays until a full cache needs
	// its slot (the clock hand takes an expired entry before one in use),
	// so MaxEntries bounds the memory and a Signer needs no goroutine or
	// Close.
	s.cache = clockcache.New(clockcache.Options[cacheKey, string]{MaxEntries: maxEntries, Now: s.now})

	prev := make([]string, 0, len(published)-1)
	for _, k := range published[1:] {
		prev = append(prev, k.kid)
	}
	if s.ephemeral {
		logger.Warn("identity: no signing key file is configured (identity.signing_key_file): using a key generated for this process only; upstreams can verify the assertions of one replica only, and not after a restart",
			"kid", s.key.kid, "alg", string(s.key.alg))
	} else {
		logger.Info("identity: signing key loaded", "file", opts.KeyFile, "kid", s.key.kid, "alg", string(s.key.alg), "previous_kids", prev)
	}
	return s, nil
}

func containsKID(ks []*key, kid string) bool {
	for _, k := range ks {
		if k.kid == kid {
			return true
		}
	}
	return false
}

// KeyID returns the kid of the signing key.
func (s *Signer) KeyID() string { return s.key.kid }

// Algorithm returns the signing algorithm: "ES256" or "RS256".
func (s *Signer) Algorithm() string { return string(s.key.alg) }

// Ephemeral reports whether the signing key was generated at start rather
// than loaded from a file.
func (s *Signer) Ephemeral() bool { return s.ephemeral }

// TTL returns the lifetime of the assertions s signs.
func (s *Signer) TTL() time.Duration { return s.ttl }

// Assertion returns a signed identity assertion naming p, for audience (the
// upstream's url, or [StdioAudience] of its name). It returns the assertion
// it signed earlier for the same principal and audience while more than half
// of that one's lifetime remains. The error wraps [ErrInvalidPrincipal] when p
// has no subject, a scope that is not an RFC 6749 scope-token, or a field
// longer than 1 KiB, or when audience is empty; signing itself does not fail
// with a loaded key.
func (s *Signer) Assertion(p Principal, audience string) (string, error) {
	k := cacheKey{subject: p.Subject, clientID: p.ClientID, audience: audience}
	switch len(p.Scopes) {
	case 0:
	case 1:
		k.scope = p.Scopes[0]
	default:
		k.scope = strings.Join(p.Scopes, " ")
	}
	if jws, ok := s.cache.Get(k); ok {
		return jws, nil
	}
	// Only valid keys are stored, so checking on a miss is enough; checking
	// before Do bounds the flight key built from the fields.
	if err := checkKey(k); err != nil {
		return "", err
	}
	v, err, _ := s.flight.Do(k.flightKey(), func() (any, error) {
		// A flight for k that ended between the Get above and Do stored
		// its assertion: use it rather than sign again.
		if jws, ok := s.cache.Get(k); ok {
			return jws, nil
		}
		jws, reuseUntil, err := s.sign(k)
		if err != nil {
			return "", err
		}
		s.cache.Set(k, jws, reuseUntil)
		return jws, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// sign signs the assertion for k, which [checkKey] accepted, and returns it
// with the time until which it may be handed out again: when half its
// lifetime has passed.
func (s *Signer) sign(k cacheKey) (jws string, reuseUntil time.Time, err error) {
	if s.signHook != nil {
		s.signHook()
	}
	iat := s.now().Truncate(time.Second)
	var id [16]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	payload, err := json.Marshal(Claims{
		Issuer:   s.issuer,
		Subject:  k.subject,
		Audience: k.audience,
		ClientID: k.clientID,
		Scope:    k.scope,
		IssuedAt: iat.Unix(),
		Expiry:   iat.Add(s.ttl).Unix(),
		ID:       base64.RawURLEncoding.EncodeToString(id[:]),
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("identity: encoding claims: %w", err)
	}
	sig, err := s.signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("identity: signing: %w", err)
	}
	if jws, err = sig.CompactSerialize(); err != nil {
		return "", time.Time{}, fmt.Errorf("identity: serializing: %w", err)
	}
	return jws, iat.Add(s.ttl / 2), nil
}

func checkKey(k cacheKey) error {
	switch {
	case k.subject == "":
		return fmt.Errorf("%w: no subject", ErrInvalidPrincipal)
	case k.audience == "":
		return fmt.Errorf("%w: no audience", ErrInvalidPrincipal)
	case len(k.subject) > maxFieldBytes, len(k.clientID) > maxFieldBytes, len(k.audience) > maxFieldBytes:
		return fmt.Errorf("%w: subject, client ID or audience longer than %d bytes", ErrInvalidPrincipal, maxFieldBytes)
	}
	if k.scope == "" {
		return nil
	}
	n := 0
	for sc := range strings.SplitSeq(k.scope, " ") {
		if n++; n > scopes.MaxCount || !scopes.Valid(sc) {
			return fmt.Errorf("%w: scopes must be at most %d RFC 6749 scope-tokens of at most %d bytes", ErrInvalidPrincipal, scopes.MaxCount, scopes.MaxLength)
		}
	}
	return nil
}
