package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Sessions of the settings page: a random id in a cookie, everything else
// in a map here. Nothing survives a restart, which only means logging in
// again.
const (
	// The __Host- prefix makes browsers insist on Secure, Path=/ and no
	// Domain attribute (RFC 6265bis §4.1.3.2), so no sibling host can
	// plant or widen the cookie.
	cookieName = "__Host-mailpost-session"
	// idleTimeout ends a session nobody used for this long; maxLifetime
	// ends any session, used or not.
	idleTimeout = 30 * time.Minute
	maxLifetime = 12 * time.Hour
	// maxSessions bounds the map; a full map evicts the session closest
	// to expiry, so logins can never exhaust memory.
	maxSessions = 10000
)

type session struct {
	id, csrf string
	address  string
	// hash is the password hash the login was checked against: a changed
	// password (a reload) ends the session.
	hash     string
	created  time.Time
	lastUsed time.Time
}

func (s *session) expiry() time.Time {
	idle, hard := s.lastUsed.Add(idleTimeout), s.created.Add(maxLifetime)
	if idle.Before(hard) {
		return idle
	}
	return hard
}

type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, now: now}
}

// randomToken is 256 bits from crypto/rand, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) create(address, hash string) *session {
	now := ss.now()
	s := &session{id: randomToken(), csrf: randomToken(), address: address, hash: hash, created: now, lastUsed: now}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.m) >= maxSessions {
		ss.purgeLocked(now)
	}
	if len(ss.m) >= maxSessions {
		var victim *session
		for _, x := range ss.m {
			if victim == nil || x.expiry().Before(victim.expiry()) {
				victim = x
			}
		}
		delete(ss.m, victim.id)
	}
	ss.m[s.id] = s
	return s
}

func (ss *sessions) purgeLocked(now time.Time) {
	for id, s := range ss.m {
		if !now.Before(s.expiry()) {
			delete(ss.m, id)
		}
	}
}

// get returns a live session and marks it used, or nil.
func (ss *sessions) get(id string) *session {
	now := ss.now()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[id]
	if s == nil {
		return nil
	}
	if !now.Before(s.expiry()) {
		delete(ss.m, id)
		return nil
	}
	s.lastUsed = now
	cp := *s
	return &cp
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

func (ss *sessions) len() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// session is the request's live session. Only TLS requests have one: the
// cookie is Secure, and a plain request must never be trusted with it.
func (h *Handler) session(r *http.Request) *session {
	if r.TLS == nil {
		return nil
	}
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	return h.sessions.get(c.Value)
}

func setSessionCookie(w http.ResponseWriter, s *session) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: s.id, Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
