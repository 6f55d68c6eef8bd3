package store

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestStore(limits Limits) (*Store, *clock) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	return New(c.now, limits), c
}

var grant = Grant{Subject: "u1", ClientID: "c1", Scopes: []string{"a", "b"}, Resource: "https://r.example/mcp"}

func ok(Code) error { return nil }

func TestNewSecret(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		s := NewSecret()
		if len(s) != 43 || seen[s] {
			t.Fatalf("secret %q: wrong length or repeated", s)
		}
		seen[s] = true
	}
	if f := Fingerprint("x"); len(f) != 12 || f == Fingerprint("y") {
		t.Errorf("Fingerprint = %q", f)
	}
}

func TestAccessTokenExpiry(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{})
	tok, at, err := s.IssueAccessToken(grant, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.LookupAccessToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(at, got); diff != "" {
		t.Errorf("lookup (-issued +got):\n%s", diff)
	}
	if got.ExpiresAt.Sub(got.IssuedAt) != time.Minute {
		t.Errorf("lifetime %v", got.ExpiresAt.Sub(got.IssuedAt))
	}
	c.advance(time.Minute)
	if _, err := s.LookupAccessToken(tok); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired token lookup err = %v, want ErrNotFound", err)
	}
	if n := s.Sweep(); n != 1 || s.Counts().AccessTokens != 0 {
		t.Errorf("Sweep removed %d, counts %+v", n, s.Counts())
	}
	expired, _, _ := s.IssueAccessToken(grant, -time.Second)
	if _, err := s.LookupAccessToken(expired); !errors.Is(err, ErrNotFound) {
		t.Errorf("negative ttl token is live")
	}
}

func TestIssuedGrantIsACopy(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(Limits{})
	g := grant
	g.Scopes = []string{"a"}
	tok, _, _ := s.IssueAccessToken(g, time.Minute)
	g.Scopes[0] = "changed"
	got, _ := s.LookupAccessToken(tok)
	if got.Scopes[0] != "a" {
		t.Error("store shares the caller's scope slice")
	}
}

func TestCodeExchange(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{})
	code, err := s.SaveCode(Code{Grant: grant, RedirectURI: "r", CodeChallenge: "ch", ExpiresAt: c.now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	checkErr := errors.New("bad verifier")
	if _, err := s.ExchangeCode(code, func(Code) error { return checkErr }, time.Hour, time.Hour); !errors.Is(err, checkErr) {
		t.Fatalf("failing check err = %v", err)
	}
	var seen Code
	pair, err := s.ExchangeCode(code, func(c Code) error { seen = c; return nil }, time.Hour, 2*time.Hour)
	if err != nil {
		t.Fatalf("exchange after failed check: %v", err)
	}
	if seen.RedirectURI != "r" || seen.CodeChallenge != "ch" {
		t.Errorf("check saw %+v", seen)
	}
	if _, err := s.LookupAccessToken(pair.AccessToken); err != nil {
		t.Errorf("issued access token unknown: %v", err)
	}
	if _, err := s.ExchangeCode(code, ok, time.Hour, time.Hour); !errors.Is(err, ErrReused) {
		t.Errorf("second exchange err = %v, want ErrReused", err)
	}
	if _, err := s.LookupAccessToken(pair.AccessToken); !errors.Is(err, ErrNotFound) {
		t.Error("code reuse did not revoke the issued access token")
	}
	if _, err := s.Refresh(pair.RefreshToken, func(Grant) ([]string, error) { return nil, nil }, time.Hour, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("code reuse did not revoke the refresh token: %v", err)
	}

	expiring, _ := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Second)})
	c.advance(time.Second)
	if _, err := s.ExchangeCode(expiring, ok, time.Hour, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired code err = %v", err)
	}
	if _, err := s.ExchangeCode("unknown", ok, time.Hour, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown code err = %v", err)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{})
	code, _ := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Minute)})
	p1, _ := s.ExchangeCode(code, ok, time.Hour, 24*time.Hour)
	keep := func(Grant) ([]string, error) { return nil, nil }

	p2, err := s.Refresh(p1.RefreshToken, func(g Grant) ([]string, error) { return []string{"a"}, nil }, time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a"}, p2.Access.Scopes); diff != "" {
		t.Errorf("down-scoped access token scopes (-want +got):\n%s", diff)
	}
	// The rotated refresh token keeps the original grant's scopes.
	p3, err := s.Refresh(p2.RefreshToken, keep, time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, p3.Access.Scopes); diff != "" {
		t.Errorf("scopes after second refresh (-want +got):\n%s", diff)
	}
	checkErr := errors.New("wrong client")
	if _, err := s.Refresh(p3.RefreshToken, func(Grant) ([]string, error) { return nil, checkErr }, time.Hour, time.Hour); !errors.Is(err, checkErr) {
		t.Fatalf("check error = %v", err)
	}
	if _, err := s.Refresh(p1.RefreshToken, keep, time.Hour, time.Hour); !errors.Is(err, ErrReused) {
		t.Fatalf("reuse err = %v, want ErrReused", err)
	}
	for _, tok := range []string{p1.AccessToken, p2.AccessToken, p3.AccessToken} {
		if _, err := s.LookupAccessToken(tok); !errors.Is(err, ErrNotFound) {
			t.Error("family access token survived refresh-token reuse")
		}
	}
	if _, err := s.Refresh(p3.RefreshToken, keep, time.Hour, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("latest refresh token after reuse: %v, want ErrNotFound", err)
	}
	if got := s.Counts(); got.AccessTokens != 0 || got.RefreshTokens != 0 || got.Families != 0 {
		t.Errorf("counts after family revocation %+v", got)
	}

	code2, _ := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Minute)})
	p, _ := s.ExchangeCode(code2, ok, time.Hour, time.Minute)
	c.advance(time.Minute)
	if _, err := s.Refresh(p.RefreshToken, keep, time.Hour, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired refresh token: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{})
	newPair := func() TokenPair {
		code, _ := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Minute)})
		p, _ := s.ExchangeCode(code, ok, time.Hour, time.Hour)
		return p
	}
	live := func(tok string) bool { _, err := s.LookupAccessToken(tok); return err == nil }

	p := newPair()
	if s.Revoke(p.AccessToken, "other-client") || !live(p.AccessToken) {
		t.Error("another client revoked the token")
	}
	if !s.Revoke(p.AccessToken, "c1") || live(p.AccessToken) {
		t.Error("owner could not revoke its access token")
	}
	if _, err := s.Refresh(p.RefreshToken, func(Grant) ([]string, error) { return nil, nil }, time.Hour, time.Hour); err != nil {
		t.Errorf("revoking the access token killed the refresh token: %v", err)
	}

	p = newPair()
	if !s.Revoke(p.RefreshToken, "") || live(p.AccessToken) {
		t.Error("revoking the refresh token left its access token live")
	}
	if s.Revoke("unknown", "") {
		t.Error("unknown token reported revoked")
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{Clients: 2, Codes: 2, Tokens: 3})
	for i := range 3 {
		if err := s.AddClient(Client{ID: string(rune('a' + i))}); (err != nil) != (i == 2) {
			t.Errorf("client %d: err %v", i, err)
		}
	}
	for i := range 3 {
		if _, err := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Minute)}); (err != nil) != (i == 2) {
			t.Errorf("code %d: err %v", i, err)
		}
	}
	for i := range 4 {
		if _, _, err := s.IssueAccessToken(grant, time.Minute); (err != nil) != (i == 3) {
			t.Errorf("token %d: err %v", i, err)
		}
	}
	// Expired entries make room again.
	c.advance(time.Minute)
	if _, _, err := s.IssueAccessToken(grant, time.Minute); err != nil {
		t.Errorf("after expiry: %v", err)
	}
	if _, err := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Minute)}); err != nil {
		t.Errorf("code after expiry: %v", err)
	}
}

func TestClientSecret(t *testing.T) {
	t.Parallel()
	c := Client{SecretHash: HashSecret("s3cret")}
	if !c.CheckSecret("s3cret") || c.CheckSecret("other") || c.CheckSecret("") {
		t.Error("CheckSecret wrong")
	}
	if (Client{}).CheckSecret("") {
		t.Error("public client matched an empty secret")
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				code, _ := s.SaveCode(Code{Grant: grant, ExpiresAt: c.now().Add(time.Minute)})
				p, err := s.ExchangeCode(code, ok, time.Hour, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Refresh(p.RefreshToken, func(Grant) ([]string, error) { return nil, nil }, time.Hour, time.Hour); err != nil {
					t.Error(err)
					return
				}
				s.Sweep()
			}
		})
	}
	wg.Wait()
}

// TestClientExpiry: a registration unused for ClientTTL is removed unless it
// still holds a live code or token; a full client table refuses new
// registrations rather than evicting one in use, and expiry makes room again.
func TestClientExpiry(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{Clients: 4, ClientTTL: time.Hour})
	for _, id := range []string{"unused", "used", "with-token", "with-code"} {
		if err := s.AddClient(Client{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddClient(Client{ID: "fifth"}); !errors.Is(err, ErrFull) {
		t.Fatalf("fifth client: err %v, want ErrFull", err)
	}
	if _, _, err := s.IssueAccessToken(Grant{Subject: "u", ClientID: "with-token"}, 4*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveCode(Code{Grant: Grant{ClientID: "with-code"}, ExpiresAt: c.now().Add(4 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c.advance(50 * time.Minute)
	if _, err := s.Client("used"); err != nil {
		t.Fatal(err)
	}
	c.advance(10 * time.Minute) // "unused" is an hour old, "used" 10 minutes
	if err := s.AddClient(Client{ID: "fifth"}); err != nil {
		t.Fatalf("fifth client after the unused one expired: %v", err)
	}
	live := func() []string {
		var ids []string
		for _, id := range []string{"unused", "used", "with-token", "with-code", "fifth"} {
			if _, err := s.Client(id); err == nil {
				ids = append(ids, id)
			}
		}
		return ids
	}
	if diff := cmp.Diff([]string{"used", "with-token", "with-code", "fifth"}, live()); diff != "" {
		t.Errorf("clients after the first expiry (-want +got):\n%s", diff)
	}
	// Lookups above counted as use; two idle hours later only the clients
	// holding a live token or code remain.
	c.advance(2 * time.Hour)
	if n := s.Sweep(); n != 2 {
		t.Errorf("Sweep removed %d entries, want 2 (clients used and fifth)", n)
	}
	if diff := cmp.Diff([]string{"with-token", "with-code"}, live()); diff != "" {
		t.Errorf("clients after two idle hours (-want +got):\n%s", diff)
	}
	// Once the token and the code expire, so do their clients.
	c.advance(2 * time.Hour)
	s.Sweep()
	if got := s.Counts(); got.Clients != 0 {
		t.Errorf("counts %+v, want no clients", got)
	}
}

// TestPreregisteredClients: clients from the configuration neither expire
// nor take the room the client cap keeps for DCR registrations.
func TestPreregisteredClients(t *testing.T) {
	t.Parallel()
	s, c := newTestStore(Limits{Clients: 1, ClientTTL: time.Hour})
	for _, id := range []string{"configured-1", "configured-2"} {
		if err := s.AddClient(Client{ID: id, Preregistered: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddClient(Client{ID: "dcr_1"}); err != nil {
		t.Fatalf("a registration with the table holding only configured clients: %v", err)
	}
	if err := s.AddClient(Client{ID: "dcr_2"}); !errors.Is(err, ErrFull) {
		t.Fatalf("a second registration: err %v, want ErrFull", err)
	}
	c.advance(48 * time.Hour)
	if n := s.Sweep(); n != 1 {
		t.Errorf("Sweep removed %d clients, want 1 (the idle registration)", n)
	}
	for _, id := range []string{"configured-1", "configured-2"} {
		if _, err := s.Client(id); err != nil {
			t.Errorf("configured client %s after two idle days: %v", id, err)
		}
	}
	if err := s.AddClient(Client{ID: "dcr_2"}); err != nil {
		t.Errorf("a registration after the idle one expired: %v", err)
	}
}
