// Package store keeps devauth's OAuth state in memory: registered clients,
// authorization codes, and access and refresh tokens.
//
// Tokens and codes are opaque random strings (see [NewSecret]); the store only
// ever keeps their SHA-256, so a heap dump or a log line never holds a usable
// credential. Every map is capped ([Limits]) and expired entries are swept, so
// a load test or a misbehaving client cannot grow the process without bound.
// Registered clients expire too: one unused for [Limits.ClientTTL] that holds
// no live code or token is removed, so junk registrations free their room
// while a client in use is never evicted to make room for another.
//
// Tokens issued from one authorization belong to a family. Refresh tokens
// rotate: redeeming one invalidates it, and presenting an already-redeemed
// refresh token (or authorization code) revokes the whole family, as OAuth 2.1
// section 4.3.1 and RFC 9700 section 4.14.2 recommend for detecting theft.
package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// Errors returned by the store. Handlers map them to OAuth error codes.
var (
	// ErrNotFound means the token or code is unknown, expired or revoked.
	ErrNotFound = errors.New("not found")
	// ErrReused means an authorization code or refresh token was presented a
	// second time; its token family has been revoked.
	ErrReused = errors.New("credential reused; token family revoked")
	// ErrFull means a capacity limit was reached even after sweeping.
	ErrFull = errors.New("store is full")
)

// NewSecret returns 32 random bytes from crypto/rand, base64url-encoded
// without padding (43 characters).
func NewSecret() string {
	var b [32]byte
	// crypto/rand.Read never returns an error since Go 1.24; it crashes the
	// program instead of handing out a predictable secret.
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Fingerprint returns a short SHA-256 prefix of a secret, safe to log.
func Fingerprint(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:6])
}

type key [sha256.Size]byte

func hash(secret string) key { return sha256.Sum256([]byte(secret)) }

// Grant is what a user approved: who, for which client, which scopes, and the
// resource (RFC 8707) the tokens are bound to.
type Grant struct {
	Subject  string
	ClientID string
	Scopes   []string
	// Resource is the token audience; empty only for test-API tokens minted
	// without one.
	Resource string
}

// AccessToken is the stored view of an issued access token.
type AccessToken struct {
	Grant
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Client is a registered OAuth client: pre-registered in the configuration,
// or registered through DCR.
type Client struct {
	ID string
	// SecretHash is the SHA-256 of the client secret; zero for public clients.
	SecretHash              [sha256.Size]byte
	Name                    string
	RedirectURIs            []string
	TokenEndpointAuthMethod string
	GrantTypes              []string
	ResponseTypes           []string
	Scope                   string
	ClientURI               string
	LogoURI                 string
	IssuedAt                time.Time
	// LastUsed is when the client was last looked up (an authorization,
	// token or revocation request); [Store.Client] updates it.
	LastUsed time.Time
	// Preregistered marks a client from the configuration (not from DCR):
	// it is never removed, however long it goes unused.
	Preregistered bool
}

// CheckSecret reports whether secret is the client's secret, in constant time.
func (c Client) CheckSecret(secret string) bool {
	h := hash(secret)
	var diff byte
	for i := range h {
		diff |= h[i] ^ c.SecretHash[i]
	}
	return diff == 0 && c.SecretHash != key{}
}

// HashSecret returns the value to store in [Client.SecretHash].
func HashSecret(secret string) [sha256.Size]byte { return hash(secret) }

// Code is a pending authorization code.
type Code struct {
	Grant
	RedirectURI   string
	CodeChallenge string
	ExpiresAt     time.Time

	used   bool
	family string
}

// TokenPair is the result of a successful code exchange or refresh.
type TokenPair struct {
	AccessToken  string
	RefreshToken string
	Access       AccessToken
}

// Limits caps the number of live entries of each kind.
type Limits struct {
	Clients int
	Codes   int
	// Tokens caps access plus refresh tokens.
	Tokens int
	// ClientTTL is how long a registered client may go unused before it is
	// removed, once it holds no live authorization code or token.
	ClientTTL time.Duration
}

// DefaultLimits fit comfortably in a few hundred MB even when full.
var DefaultLimits = Limits{Clients: 10_000, Codes: 10_000, Tokens: 500_000, ClientTTL: 24 * time.Hour}

type refreshToken struct {
	Grant
	ExpiresAt time.Time
	used      bool
	family    string
}

type family struct {
	access  map[key]struct{}
	refresh map[key]struct{}
}

// Store is safe for concurrent use. The zero value is not usable; call [New].
type Store struct {
	now    func() time.Time
	limits Limits

	mu      sync.Mutex
	clients map[string]*Client
	// preregistered counts the clients of clients that are
	// Preregistered, which [Limits.Clients] does not count.
	preregistered int
	codes         map[key]*Code
	access        map[key]*AccessToken
	accessOf      map[key]string // access token -> family ("" for single tokens)
	refresh       map[key]*refreshToken
	families      map[string]*family
}

// New returns an empty store. now may be nil (time.Now); limits with zero
// fields take [DefaultLimits].
func New(now func() time.Time, limits Limits) *Store {
	if now == nil {
		now = time.Now
	}
	if limits.Clients <= 0 {
		limits.Clients = DefaultLimits.Clients
	}
	if limits.Codes <= 0 {
		limits.Codes = DefaultLimits.Codes
	}
	if limits.Tokens <= 0 {
		limits.Tokens = DefaultLimits.Tokens
	}
	if limits.ClientTTL <= 0 {
		limits.ClientTTL = DefaultLimits.ClientTTL
	}
	return &Store{
		now:      now,
		limits:   limits,
		clients:  map[string]*Client{},
		codes:    map[key]*Code{},
		access:   map[key]*AccessToken{},
		accessOf: map[key]string{},
		refresh:  map[key]*refreshToken{},
		families: map[string]*family{},
	}
}

// Now returns the store's clock reading, so handlers and the store agree on time.
func (s *Store) Now() time.Time { return s.now() }

// Run sweeps expired entries every interval until ctx is done.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Sweep removes expired codes and tokens and expired clients (see
// [Limits.ClientTTL]) and returns how many entries it removed.
func (s *Store) Sweep() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked()
}

func (s *Store) sweepLocked() int {
	now := s.now()
	n := 0
	for k, c := range s.codes {
		if !now.Before(c.ExpiresAt) {
			delete(s.codes, k)
			n++
		}
	}
	for k, t := range s.access {
		if !now.Before(t.ExpiresAt) {
			s.dropAccessLocked(k)
			n++
		}
	}
	for k, t := range s.refresh {
		if !now.Before(t.ExpiresAt) {
			s.dropRefreshLocked(k)
			n++
		}
	}
	return n + s.sweepClientsLocked(now)
}

// sweepClientsLocked removes clients unused for ClientTTL that hold no live
// code or token. Tokens are only scanned when some client is idle, so a
// store without idle clients pays one pass over its clients.
func (s *Store) sweepClientsLocked(now time.Time) int {
	idle := map[string]bool{}
	for id, c := range s.clients {
		if !c.Preregistered && !now.Before(c.LastUsed.Add(s.limits.ClientTTL)) {
			idle[id] = true
		}
	}
	if len(idle) == 0 {
		return 0
	}
	// Expired entries were swept just before, so whatever remains is live.
	for _, c := range s.codes {
		delete(idle, c.ClientID)
	}
	for _, t := range s.access {
		delete(idle, t.ClientID)
	}
	for _, t := range s.refresh {
		delete(idle, t.ClientID)
	}
	for id := range idle {
		delete(s.clients, id)
	}
	return len(idle)
}

func (s *Store) dropAccessLocked(k key) {
	delete(s.access, k)
	if fam := s.accessOf[k]; fam != "" {
		if f := s.families[fam]; f != nil {
			delete(f.access, k)
			s.gcFamilyLocked(fam, f)
		}
	}
	delete(s.accessOf, k)
}

func (s *Store) dropRefreshLocked(k key) {
	t := s.refresh[k]
	delete(s.refresh, k)
	if t == nil || t.family == "" {
		return
	}
	if f := s.families[t.family]; f != nil {
		delete(f.refresh, k)
		s.gcFamilyLocked(t.family, f)
	}
}

func (s *Store) gcFamilyLocked(name string, f *family) {
	if len(f.access) == 0 && len(f.refresh) == 0 {
		delete(s.families, name)
	}
}

func (s *Store) revokeFamilyLocked(name string) {
	f := s.families[name]
	if f == nil {
		return
	}
	for k := range f.access {
		delete(s.access, k)
		delete(s.accessOf, k)
	}
	for k := range f.refresh {
		delete(s.refresh, k)
	}
	delete(s.families, name)
}

func (s *Store) tokenCountLocked() int { return len(s.access) + len(s.refresh) }

// roomLocked makes room for n more tokens, sweeping once if needed.
func (s *Store) roomLocked(n int) error {
	if s.tokenCountLocked()+n <= s.limits.Tokens {
		return nil
	}
	s.sweepLocked()
	if s.tokenCountLocked()+n <= s.limits.Tokens {
		return nil
	}
	return ErrFull
}

// IssueAccessToken mints a single access token for g that expires after ttl
// (ttl <= 0 mints an already-expired token, useful in tests). It returns
// [ErrFull] when the token cap is reached.
func (s *Store) IssueAccessToken(g Grant, ttl time.Duration) (string, AccessToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.roomLocked(1); err != nil {
		return "", AccessToken{}, err
	}
	tok, at := s.addAccessLocked(g, ttl, "")
	return tok, at, nil
}

func (s *Store) addAccessLocked(g Grant, ttl time.Duration, fam string) (string, AccessToken) {
	now := s.now()
	tok := NewSecret()
	k := hash(tok)
	at := &AccessToken{Grant: cloneGrant(g), IssuedAt: now, ExpiresAt: now.Add(ttl)}
	s.access[k] = at
	if fam != "" {
		s.accessOf[k] = fam
		s.families[fam].access[k] = struct{}{}
	}
	return tok, *at
}

func (s *Store) addPairLocked(g, refreshGrant Grant, accessTTL, refreshTTL time.Duration, fam string) TokenPair {
	if s.families[fam] == nil {
		s.families[fam] = &family{access: map[key]struct{}{}, refresh: map[key]struct{}{}}
	}
	at, access := s.addAccessLocked(g, accessTTL, fam)
	rt := NewSecret()
	rk := hash(rt)
	s.refresh[rk] = &refreshToken{Grant: cloneGrant(refreshGrant), ExpiresAt: s.now().Add(refreshTTL), family: fam}
	s.families[fam].refresh[rk] = struct{}{}
	return TokenPair{AccessToken: at, RefreshToken: rt, Access: access}
}

func cloneGrant(g Grant) Grant {
	g.Scopes = append([]string(nil), g.Scopes...)
	return g
}

// LookupAccessToken returns the access token's record, or [ErrNotFound] if it
// is unknown, revoked or expired.
func (s *Store) LookupAccessToken(tok string) (AccessToken, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.access[hash(tok)]
	if at == nil || !s.now().Before(at.ExpiresAt) {
		return AccessToken{}, ErrNotFound
	}
	return *at, nil
}

// SaveCode stores an authorization code valid until c.ExpiresAt and returns
// it. It returns [ErrFull] when the code cap is reached.
func (s *Store) SaveCode(c Code) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.codes) >= s.limits.Codes {
		s.sweepLocked()
		if len(s.codes) >= s.limits.Codes {
			return "", ErrFull
		}
	}
	code := NewSecret()
	c.Grant = cloneGrant(c.Grant)
	c.used = false
	c.family = NewSecret()
	s.codes[hash(code)] = &c
	return code, nil
}

// ExchangeCode redeems an authorization code: check vets the code's binding
// (client, redirect URI, PKCE, resource) and, if it returns nil, the code is
// consumed and a token pair is issued. If check fails its error is returned
// and the code stays unused. An unknown or expired code gives [ErrNotFound];
// a code redeemed before gives [ErrReused] and revokes the tokens issued from
// it.
func (s *Store) ExchangeCode(code string, check func(Code) error, accessTTL, refreshTTL time.Duration) (TokenPair, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.codes[hash(code)]
	if c == nil || !s.now().Before(c.ExpiresAt) {
		return TokenPair{}, ErrNotFound
	}
	if c.used {
		s.revokeFamilyLocked(c.family)
		return TokenPair{}, ErrReused
	}
	if err := check(*c); err != nil {
		return TokenPair{}, err
	}
	if err := s.roomLocked(2); err != nil {
		return TokenPair{}, err
	}
	c.used = true
	return s.addPairLocked(c.Grant, c.Grant, accessTTL, refreshTTL, c.family), nil
}

// Refresh redeems a refresh token and rotates it. check vets the token's
// grant (client binding) and may return the scopes the new access token gets
// (nil keeps the grant's scopes); if check fails its error is returned and the
// token stays valid. An unknown or expired token gives [ErrNotFound]; a token
// redeemed before gives [ErrReused] and revokes its whole family.
func (s *Store) Refresh(tok string, check func(Grant) ([]string, error), accessTTL, refreshTTL time.Duration) (TokenPair, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := hash(tok)
	rt := s.refresh[k]
	if rt == nil || !s.now().Before(rt.ExpiresAt) {
		return TokenPair{}, ErrNotFound
	}
	if rt.used {
		s.revokeFamilyLocked(rt.family)
		return TokenPair{}, ErrReused
	}
	scopes, err := check(rt.Grant)
	if err != nil {
		return TokenPair{}, err
	}
	if err := s.roomLocked(2); err != nil {
		return TokenPair{}, err
	}
	// The redeemed token stays in the map, marked used, until it expires so
	// that a replay is recognised and revokes the family.
	rt.used = true
	g := rt.Grant
	if scopes != nil {
		g.Scopes = scopes
	}
	return s.addPairLocked(g, rt.Grant, accessTTL, refreshTTL, rt.family), nil
}

// Revoke revokes tok if it is an access or refresh token that owner may
// revoke (owner "" may revoke any token). Revoking a refresh token revokes its
// whole family, including access tokens issued from it (RFC 7009 section 2.1).
// It reports whether anything was revoked; unknown tokens are not an error.
func (s *Store) Revoke(tok, owner string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := hash(tok)
	if at := s.access[k]; at != nil {
		if owner != "" && at.ClientID != owner {
			return false
		}
		s.dropAccessLocked(k)
		return true
	}
	if rt := s.refresh[k]; rt != nil {
		if owner != "" && rt.ClientID != owner {
			return false
		}
		s.revokeFamilyLocked(rt.family)
		return true
	}
	return false
}

// AddClient registers c, counting it as used now. When the client cap is
// reached it sweeps expired entries first; if that frees no room it returns
// [ErrFull]. It never evicts a client that has not expired. Pre-registered
// clients come from the configuration, so the cap, which bounds what DCR can
// fill, does not apply to them.
func (s *Store) AddClient(c Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Preregistered {
		if _, dup := s.clients[c.ID]; !dup {
			s.preregistered++
		}
	} else if len(s.clients)-s.preregistered >= s.limits.Clients {
		s.sweepLocked()
		if len(s.clients)-s.preregistered >= s.limits.Clients {
			return ErrFull
		}
	}
	c.RedirectURIs = append([]string(nil), c.RedirectURIs...)
	c.LastUsed = s.now()
	s.clients[c.ID] = &c
	return nil
}

// Client returns the registered client with that id and marks it used, or
// returns [ErrNotFound].
func (s *Store) Client(id string) (Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[id]
	if c == nil {
		return Client{}, ErrNotFound
	}
	c.LastUsed = s.now()
	return *c, nil
}

// ClientTTL returns how long an unused client is kept (see [Limits.ClientTTL]).
func (s *Store) ClientTTL() time.Duration { return s.limits.ClientTTL }

// Counts reports the number of live entries, for tests and diagnostics.
type Counts struct{ Clients, Codes, AccessTokens, RefreshTokens, Families int }

// Counts returns the current entry counts.
func (s *Store) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Counts{len(s.clients), len(s.codes), len(s.access), len(s.refresh), len(s.families)}
}
