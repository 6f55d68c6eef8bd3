package oauth

import (
	"container/list"
	"crypto/sha256"
	"crypto/subtle"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// SessionCookie names the browser session cookie of the login and consent pages.
const SessionCookie = "devauth_session"

const (
	maxPendingPerSession = 10
	pendingTTL           = 10 * time.Minute
)

// SessionLimits bound the server-side session table. Anonymous sessions
// (started by /authorize before anyone signs in, so anyone can create them)
// and signed-in sessions are bounded separately: a flood of anonymous
// requests can only push out other anonymous sessions, never a signed-in
// user's. When a bound is reached the oldest entry of the same kind goes.
type SessionLimits struct {
	// Anonymous and SignedIn cap the number of sessions of each kind.
	Anonymous, SignedIn int
	// AnonymousPending and SignedInPending cap the authorization requests
	// waiting for sign-in or consent, over all sessions of each kind. An
	// authorization request can carry about 6 KB (state, resource and
	// redirect URI), so these, not the session counts, bound the memory.
	AnonymousPending, SignedInPending int
}

// DefaultSessionLimits hold, when full, about 30 MB per kind with pending
// requests of the largest size accepted (BenchmarkMemoryAnonymousAuthorizations).
var DefaultSessionLimits = SessionLimits{
	Anonymous: 10_000, SignedIn: 10_000,
	AnonymousPending: 2_000, SignedInPending: 2_000,
}

func (l SessionLimits) withDefaults() SessionLimits {
	d := DefaultSessionLimits
	for _, f := range []struct{ v, def *int }{
		{&l.Anonymous, &d.Anonymous}, {&l.SignedIn, &d.SignedIn},
		{&l.AnonymousPending, &d.AnonymousPending}, {&l.SignedInPending, &d.SignedInPending},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return l
}

// authRequest is a validated authorization request waiting for the user.
type authRequest struct {
	client      store.Client
	redirectURI string
	state       string
	challenge   string
	resource    string
	scopes      []string
	expires     time.Time
}

// sessionKind separates the bounds of anonymous and signed-in sessions.
type sessionKind int

const (
	anonymous sessionKind = iota
	signedIn
)

type session struct {
	key     [32]byte
	kind    sessionKind
	csrf    string
	userID  string
	expires time.Time
	elem    *list.Element // in sessions.byAge[kind]
	pending map[string]*pendingEntry
}

type pendingEntry struct {
	id   string
	sess *session
	req  *authRequest
	elem *list.Element // in sessions.pendingByAge[sess.kind]
}

// sessionView is a copy of what handlers need, so they never touch a
// session without the lock.
type sessionView struct {
	id     string
	csrf   string
	userID string
}

// sessions is the server-side session table, keyed by the SHA-256 of the
// cookie value, with its bounds ([SessionLimits]). Sessions and pending
// requests of each kind are also kept in lists, oldest first, so that making
// room is constant time; expired entries are dropped when they are found or
// when their kind needs room.
type sessions struct {
	now    func() time.Time
	limits SessionLimits
	secure bool

	mu           sync.Mutex
	m            map[[32]byte]*session
	byAge        [2]*list.List // of *session
	pendingByAge [2]*list.List // of *pendingEntry
}

func newSessions(now func() time.Time, limits SessionLimits, secure bool) *sessions {
	ss := &sessions{now: now, limits: limits.withDefaults(), secure: secure, m: map[[32]byte]*session{}}
	for k := range ss.byAge {
		ss.byAge[k] = list.New()
		ss.pendingByAge[k] = list.New()
	}
	return ss
}

func (ss *sessions) maxSessions(k sessionKind) int {
	if k == anonymous {
		return ss.limits.Anonymous
	}
	return ss.limits.SignedIn
}

func (ss *sessions) maxPending(k sessionKind) int {
	if k == anonymous {
		return ss.limits.AnonymousPending
	}
	return ss.limits.SignedInPending
}

func (ss *sessions) cookie(id string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: SessionCookie, Value: id, Path: PathPrefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: ss.secure,
	}
}

func (ss *sessions) lookupLocked(r *http.Request) (string, *session) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return "", nil
	}
	s := ss.m[sha256.Sum256([]byte(c.Value))]
	if s == nil {
		return "", nil
	}
	if !ss.now().Before(s.expires) {
		ss.removeSessionLocked(s)
		return "", nil
	}
	return c.Value, s
}

// lookup returns the request's live session.
func (ss *sessions) lookup(r *http.Request) (sessionView, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	id, s := ss.lookupLocked(r)
	if s == nil {
		return sessionView{}, false
	}
	return sessionView{id: id, csrf: s.csrf, userID: s.userID}, true
}

func (ss *sessions) removeSessionLocked(s *session) {
	for _, p := range s.pending {
		ss.pendingByAge[s.kind].Remove(p.elem)
	}
	ss.byAge[s.kind].Remove(s.elem)
	delete(ss.m, s.key)
}

func (ss *sessions) removePendingLocked(p *pendingEntry) {
	ss.pendingByAge[p.sess.kind].Remove(p.elem)
	delete(p.sess.pending, p.id)
}

// createLocked starts a session of kind k, first removing the oldest
// session of that kind if k is at its bound, and returns it with its id.
func (ss *sessions) createLocked(w http.ResponseWriter, k sessionKind, userID string) (string, *session) {
	for ss.byAge[k].Len() >= ss.maxSessions(k) {
		ss.removeSessionLocked(ss.byAge[k].Front().Value.(*session))
	}
	id := store.NewSecret()
	s := &session{
		key: sha256.Sum256([]byte(id)), kind: k, csrf: store.NewSecret(), userID: userID,
		expires: ss.now().Add(SessionTTL), pending: map[string]*pendingEntry{},
	}
	s.elem = ss.byAge[k].PushBack(s)
	ss.m[s.key] = s
	http.SetCookie(w, ss.cookie(id, int(SessionTTL/time.Second)))
	return id, s
}

func view(id string, s *session) sessionView {
	return sessionView{id: id, csrf: s.csrf, userID: s.userID}
}

// getOrCreate returns the request's session, starting an anonymous one (and
// setting its cookie) when there is none.
func (ss *sessions) getOrCreate(w http.ResponseWriter, r *http.Request) sessionView {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if id, s := ss.lookupLocked(r); s != nil {
		return view(id, s)
	}
	return view(ss.createLocked(w, anonymous, ""))
}

// login replaces the session with a new signed-in one for userID, carrying
// over the pending requests. A fresh id and CSRF token defeat session
// fixation.
func (ss *sessions) login(w http.ResponseWriter, old sessionView, userID string) sessionView {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var carried []*pendingEntry
	if s := ss.m[sha256.Sum256([]byte(old.id))]; s != nil {
		carried = slices.SortedFunc(maps.Values(s.pending), func(a, b *pendingEntry) int {
			return a.req.expires.Compare(b.req.expires)
		})
		ss.removeSessionLocked(s)
	}
	id, s := ss.createLocked(w, signedIn, userID)
	for _, p := range carried {
		ss.addPendingLocked(s, p.id, p.req)
	}
	return view(id, s)
}

// checkCSRF compares a submitted token with the session's, in constant time.
func (v sessionView) checkCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(v.csrf)) == 1
}

// addPending parks req in the session and returns its id ("" if the session
// is gone). Room is made by dropping the session's own oldest request, then
// the oldest request of any session of the same kind.
func (ss *sessions) addPending(v sessionView, req *authRequest) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[sha256.Sum256([]byte(v.id))]
	if s == nil {
		return ""
	}
	req.expires = ss.now().Add(pendingTTL)
	id := store.NewSecret()[:22]
	ss.addPendingLocked(s, id, req)
	return id
}

func (ss *sessions) addPendingLocked(s *session, id string, req *authRequest) {
	if len(s.pending) >= maxPendingPerSession {
		var oldest *pendingEntry
		for _, p := range s.pending {
			if oldest == nil || p.req.expires.Before(oldest.req.expires) {
				oldest = p
			}
		}
		ss.removePendingLocked(oldest)
	}
	l := ss.pendingByAge[s.kind]
	for l.Len() >= ss.maxPending(s.kind) {
		ss.removePendingLocked(l.Front().Value.(*pendingEntry))
	}
	p := &pendingEntry{id: id, sess: s, req: req}
	p.elem = l.PushBack(p)
	s.pending[id] = p
}

// pendingRequest returns a parked request; take removes it, so a consent
// decision is used once.
func (ss *sessions) pendingRequest(v sessionView, id string, take bool) (*authRequest, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[sha256.Sum256([]byte(v.id))]
	if s == nil {
		return nil, false
	}
	p := s.pending[id]
	if p == nil {
		return nil, false
	}
	if !ss.now().Before(p.req.expires) {
		ss.removePendingLocked(p)
		return nil, false
	}
	if take {
		ss.removePendingLocked(p)
	}
	return p.req, true
}

// counts reports the sessions and pending requests of each kind (tests).
func (ss *sessions) counts() (sessions, pending [2]int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k := range ss.byAge {
		sessions[k], pending[k] = ss.byAge[k].Len(), ss.pendingByAge[k].Len()
	}
	return sessions, pending
}
