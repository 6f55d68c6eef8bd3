package oauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"sync"
	"time"

	"github.com/mcpauthz/mcpauthz/services/devauth/internal/store"
)

// SessionCookie names the browser session cookie of the login and consent pages.
const SessionCookie = "devauth_session"

const (
	maxPendingPerSession = 20
	pendingTTL           = 10 * time.Minute
)

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

type session struct {
	csrf    string
	userID  string
	expires time.Time
	pending map[string]*authRequest
	order   []string // pending ids, oldest first
}

// sessionView is a copy of what handlers need, so they never touch a
// session without the lock.
type sessionView struct {
	id     string
	csrf   string
	userID string
}

// sessions is the server-side session table, keyed by the SHA-256 of the
// cookie value. Bounded: when full, expired sessions are swept and, failing
// that, an arbitrary one is dropped (its user just logs in again).
type sessions struct {
	now    func() time.Time
	max    int
	secure bool

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(now func() time.Time, max int, secure bool) *sessions {
	return &sessions{now: now, max: max, secure: secure, m: map[[32]byte]*session{}}
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
	if s == nil || !ss.now().Before(s.expires) {
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

func (ss *sessions) createLocked(w http.ResponseWriter, userID string, pending map[string]*authRequest, order []string) sessionView {
	now := ss.now()
	if len(ss.m) >= ss.max {
		for k, s := range ss.m {
			if !now.Before(s.expires) {
				delete(ss.m, k)
			}
		}
		for k := range ss.m {
			if len(ss.m) < ss.max {
				break
			}
			delete(ss.m, k)
		}
	}
	if pending == nil {
		pending = map[string]*authRequest{}
	}
	id := store.NewSecret()
	s := &session{csrf: store.NewSecret(), userID: userID, expires: now.Add(SessionTTL), pending: pending, order: order}
	ss.m[sha256.Sum256([]byte(id))] = s
	http.SetCookie(w, ss.cookie(id, int(SessionTTL/time.Second)))
	return sessionView{id: id, csrf: s.csrf, userID: userID}
}

// getOrCreate returns the request's session, starting an anonymous one (and
// setting its cookie) when there is none.
func (ss *sessions) getOrCreate(w http.ResponseWriter, r *http.Request) sessionView {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if id, s := ss.lookupLocked(r); s != nil {
		return sessionView{id: id, csrf: s.csrf, userID: s.userID}
	}
	return ss.createLocked(w, "", nil, nil)
}

// login replaces the session with a new one for userID, carrying over the
// pending requests. A fresh id and CSRF token defeat session fixation.
func (ss *sessions) login(w http.ResponseWriter, old sessionView, userID string) sessionView {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var pending map[string]*authRequest
	var order []string
	k := sha256.Sum256([]byte(old.id))
	if s := ss.m[k]; s != nil {
		pending, order = s.pending, s.order
		delete(ss.m, k)
	}
	return ss.createLocked(w, userID, pending, order)
}

// checkCSRF compares a submitted token with the session's, in constant time.
func (v sessionView) checkCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(v.csrf)) == 1
}

// addPending parks req in the session and returns its id.
func (ss *sessions) addPending(v sessionView, req *authRequest) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[sha256.Sum256([]byte(v.id))]
	if s == nil {
		return ""
	}
	for len(s.order) >= maxPendingPerSession {
		delete(s.pending, s.order[0])
		s.order = s.order[1:]
	}
	id := store.NewSecret()[:22]
	req.expires = ss.now().Add(pendingTTL)
	s.pending[id] = req
	s.order = append(s.order, id)
	return id
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
	req := s.pending[id]
	if req == nil || !ss.now().Before(req.expires) {
		return nil, false
	}
	if take {
		delete(s.pending, id)
		for i, o := range s.order {
			if o == id {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
	}
	return req, true
}
