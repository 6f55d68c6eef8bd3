package oauth

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestSessionBounds: anonymous and signed-in sessions, and their pending
// requests, have separate bounds; reaching one drops the oldest entry of the
// same kind only.
func TestSessionBounds(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	ss := newSessions(func() time.Time { return now }, SessionLimits{Anonymous: 3, SignedIn: 2, AnonymousPending: 4, SignedInPending: 3}, false)
	newAnon := func() sessionView {
		return ss.getOrCreate(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}
	alive := func(v sessionView) bool {
		r := httptest.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: v.id})
		_, ok := ss.lookup(r)
		return ok
	}
	type counts struct{ Sessions, Pending [2]int }
	check := func(step string, want counts) {
		t.Helper()
		var got counts
		got.Sessions, got.Pending = ss.counts()
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s: [anonymous signed-in] counts (-want +got):\n%s", step, d)
		}
	}

	alice := ss.login(httptest.NewRecorder(), newAnon(), "alice")
	bob := ss.login(httptest.NewRecorder(), newAnon(), "bob")
	aliceReq := ss.addPending(alice, &authRequest{state: "alice-1"})
	check("two signed in", counts{Sessions: [2]int{0, 2}, Pending: [2]int{0, 1}})

	var anons []sessionView
	for range 10 {
		v := newAnon()
		anons = append(anons, v)
		ss.addPending(v, &authRequest{})
	}
	check("ten anonymous", counts{Sessions: [2]int{3, 2}, Pending: [2]int{3, 1}})
	if !alive(alice) || !alive(bob) {
		t.Error("anonymous sessions pushed out a signed-in one")
	}
	if alive(anons[6]) || !alive(anons[7]) {
		t.Error("anonymous sessions: want the three newest kept")
	}
	if _, ok := ss.pendingRequest(alice, aliceReq, false); !ok {
		t.Error("alice's pending request was dropped by anonymous traffic")
	}

	// One session may park at most maxPendingPerSession requests, and all
	// anonymous sessions together AnonymousPending.
	last := anons[9]
	for range maxPendingPerSession + 5 {
		ss.addPending(last, &authRequest{})
	}
	check("many pending", counts{Sessions: [2]int{3, 2}, Pending: [2]int{4, 1}})

	// Signed-in pending requests are bounded among themselves.
	for range 5 {
		ss.addPending(bob, &authRequest{})
	}
	check("bob's pending", counts{Sessions: [2]int{3, 2}, Pending: [2]int{4, 3}})
	if _, ok := ss.pendingRequest(alice, aliceReq, false); ok {
		t.Error("alice's request, the oldest signed-in one, survived past SignedInPending")
	}

	// A third sign-in replaces the oldest signed-in session, not an anonymous one.
	carol := ss.login(httptest.NewRecorder(), anons[8], "carol")
	check("carol signed in", counts{Sessions: [2]int{2, 2}, Pending: [2]int{4, 3}})
	if alive(alice) || !alive(bob) || !alive(carol) || alive(anons[8]) {
		t.Error("want alice (oldest signed in) and carol's anonymous session gone, bob and carol alive")
	}
}

// TestLoginCarriesPendingRequests: signing in moves the anonymous session's
// pending requests to the new session, oldest first.
func TestLoginCarriesPendingRequests(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	ss := newSessions(func() time.Time { return now }, SessionLimits{}, false)
	anon := ss.getOrCreate(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	var ids []string
	for i := range 3 {
		now = now.Add(time.Second)
		ids = append(ids, ss.addPending(anon, &authRequest{state: string(rune('a' + i))}))
	}
	v := ss.login(httptest.NewRecorder(), anon, "alice")
	if v.id == anon.id || v.csrf == anon.csrf || v.userID != "alice" {
		t.Errorf("login kept the session id or CSRF token: %+v", v)
	}
	for i, id := range ids {
		req, ok := ss.pendingRequest(v, id, true)
		if !ok || req.state != string(rune('a'+i)) {
			t.Errorf("pending request %d not carried over: %v %v", i, req, ok)
		}
	}
	now = now.Add(SessionTTL)
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: v.id})
	if _, ok := ss.lookup(r); ok {
		t.Error("session alive after SessionTTL")
	}
	if s, _ := ss.counts(); s != [2]int{} {
		t.Errorf("expired session still counted: %v", s)
	}
}
