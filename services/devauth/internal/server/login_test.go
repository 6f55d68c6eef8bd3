package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpauthz/mcpauthz/internal/seedusers"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/oauth"
	"github.com/mcpauthz/mcpauthz/services/devauth/internal/server"
)

// TestLoginThrottle: after too many failed sign-ins for an account, or from
// one address, further attempts are refused with 429, a message saying why
// and Retry-After, even with the right password, until the window ends.
func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	e := newEnv(t, withOptions(func(o *server.Options) { o.Now = clock }))
	const redirect = "http://localhost:5555/cb"
	clientID := e.register(t, `{"redirect_uris":["`+redirect+`"]}`)["client_id"].(string)
	_, challenge := pkce()
	b := newBrowser(t, e)
	loginPage := b.get(authorizeURL(e, clientID, redirect, challenge, "s", nil))
	attempt := func(email, password string) page {
		t.Helper()
		return b.submit(loginPage, url.Values{"email": {email}, "password": {password}})
	}
	limits := oauth.DefaultLoginLimits

	// The account: alice's password guessed wrong limits.Account times.
	for i := range limits.Account {
		if p := attempt(aliceEmail, fmt.Sprint("wrong-", i)); p.status != http.StatusOK || !strings.Contains(p.body, "Invalid email or password.") {
			t.Fatalf("failed attempt %d: %d\n%s", i, p.status, p.body)
		}
	}
	p := attempt(aliceEmail, seedusers.AlicePassword)
	if p.status != http.StatusTooManyRequests || !strings.Contains(p.body, "Too many failed sign-in attempts for this account. Try again in 10 minutes.") {
		t.Fatalf("right password after %d failures: %d, want 429 saying why\n%s", limits.Account, p.status, p.body)
	}
	if ra := p.header.Get("Retry-After"); ra != "600" {
		t.Errorf("Retry-After %q, want 600", ra)
	}
	if strings.Contains(p.body, "Approve") {
		t.Error("a throttled attempt signed in")
	}
	// Another account from the same address is not blocked by alice's.
	if p := attempt(seedusers.BobEmail, seedusers.BobPassword); !strings.Contains(p.body, "Approve") {
		t.Fatalf("bob could not sign in: %d\n%s", p.status, p.body)
	}

	// The window ends; alice signs in again.
	advance(limits.Window)
	b = newBrowser(t, e)
	loginPage = b.get(authorizeURL(e, clientID, redirect, challenge, "s", nil))
	if p := attempt(aliceEmail, seedusers.AlicePassword); !strings.Contains(p.body, "Approve") {
		t.Fatalf("alice after the window: %d\n%s", p.status, p.body)
	}

	// The address: failures spread over unknown accounts count against it.
	b = newBrowser(t, e)
	loginPage = b.get(authorizeURL(e, clientID, redirect, challenge, "s", nil))
	for i := range limits.Address {
		attempt(fmt.Sprintf("nobody%d@example.com", i), "x")
	}
	p = attempt(seedusers.BobEmail, seedusers.BobPassword)
	if p.status != http.StatusTooManyRequests || !strings.Contains(p.body, "Too many failed sign-in attempts from your network address.") {
		t.Fatalf("bob after %d failures from his address: %d, want 429\n%s", limits.Address, p.status, p.body)
	}
}
