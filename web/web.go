// Package web serves what mail clients and users fetch over HTTP: the
// published client settings (Thunderbird autoconfig, Outlook autodiscover,
// an Apple .mobileconfig profile) and a small settings page, the
// counterpart of Outlook on the web's "Settings > Options > Mail >
// Accounts > POP and IMAP".
//
// Everything is generated from the running config's connection settings
// (config.ConnSetting), read at each request through a Backend, so a
// reload changes what clients are told from the next request on. The
// package knows nothing about listeners or the store: the server package
// implements Backend and mounts Handler on its http/https listeners.
package web

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"mailpost/config"
)

// Backend is what the web front needs from the running server.
type Backend interface {
	// Config is the current configuration snapshot.
	Config() *config.Config
	// Login checks a password the way POP3 and SMTP do (same throttling
	// and delays) and returns the mailbox, or an error wrapping
	// ErrBadCredentials.
	Login(ctx context.Context, remote netip.Addr, username, password string) (*config.Mailbox, error)
	// Fingerprint is the SHA-256 fingerprint ("AB:CD:…") of the
	// certificate served for host, or "" when none is known.
	Fingerprint(host string) string
	// Usage is a mailbox's message count and size in bytes.
	Usage(mailbox string) (messages int, bytes int64, err error)
}

// ErrBadCredentials means an unknown user or a wrong password; the page
// says only that, so it does not tell which addresses exist.
var ErrBadCredentials = errors.New("web: bad credentials")

// ErrThrottled means the client's network or the account had too many
// failed logins and the password was not even checked; the page answers
// 429 with Retry-After when the error chain has a RetryAfter()
// time.Duration method.
var ErrThrottled = errors.New("web: too many failed logins")

// Handler serves the published settings and the settings page.
type Handler struct {
	b        Backend
	log      *slog.Logger
	sessions *sessions
	// guard refuses cross-origin state-changing requests (login, logout)
	// on top of SameSite=Strict: the Fetch metadata / Origin check of
	// net/http.
	guard *http.CrossOriginProtection
	// now is time.Now, replaceable so session expiry can be tested
	// without sleeping.
	now func() time.Time
}

// New returns a Handler reading the current config through b. Sessions
// live in the Handler, so keep one for the life of the server (reloads do
// not log users out).
func New(b Backend, log *slog.Logger) *Handler {
	h := &Handler{b: b, log: log, now: time.Now, guard: http.NewCrossOriginProtection()}
	h.sessions = newSessions(func() time.Time { return h.now() })
	return h
}

// Paths clients and users fetch.
const (
	// Thunderbird looks at autoconfig.<domain>/mail/config-v1.1.xml and
	// <domain>/.well-known/autoconfig/mail/config-v1.1.xml.
	AutoconfigPath          = "/mail/config-v1.1.xml"
	WellKnownAutoconfigPath = "/.well-known/autoconfig/mail/config-v1.1.xml"
	// Outlook POSTs here (spelling varies: matched case-insensitively).
	AutodiscoverPath = "/autodiscover/autodiscover.xml"
	// MobileConfigPath serves the Apple profile: ?email= or the logged-in user.
	MobileConfigPath = "/mail.mobileconfig"
	SettingsPath     = "/settings"
	LoginPath        = "/settings/login"
	LogoutPath       = "/settings/logout"
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == AutoconfigPath || p == WellKnownAutoconfigPath:
		h.autoconfig(w, r)
	case strings.EqualFold(p, AutodiscoverPath):
		h.autodiscover(w, r)
	case p == MobileConfigPath:
		h.mobileConfig(w, r)
	case p == SettingsPath:
		h.settingsPage(w, r)
	case p == LoginPath:
		h.guard.Handler(http.HandlerFunc(h.login)).ServeHTTP(w, r)
	case p == LogoutPath:
		h.guard.Handler(http.HandlerFunc(h.logout)).ServeHTTP(w, r)
	default:
		http.Error(w, "404 not found", http.StatusNotFound)
	}
}

// remoteAddr is the client's address as the socket saw it. Forwarding
// headers are ignored on purpose: mailpost is meant to face clients
// directly, and a header is trivially forged.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		a, _ := netip.ParseAddr(host)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// isInternal reports whether a client is on the LAN: a loopback, private
// (RFC 1918, RFC 4193) or link-local address. Such clients are given the
// internal_connection_settings, when there are any.
func isInternal(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast()
}

// Endpoints are the servers a client is told to use, best first.
type Endpoints struct {
	Internal bool // the internal settings were chosen
	POP3     []config.ConnSetting
	SMTP     []config.ConnSetting
}

// EndpointsFor picks the connection settings for a client at remote:
// internal_connection_settings for clients on the LAN (isInternal) when the
// service has any, external_connection_settings otherwise. Within a
// service the order of the file is kept, except that implicit TLS comes
// before STARTTLS and both before plain text (RFC 8314 §3: implicit TLS is
// preferred); a plain-text method appears only when the file has one.
func EndpointsFor(cfg *config.Config, remote netip.Addr) Endpoints {
	internal := isInternal(remote)
	var e Endpoints
	pick := func(ext, in []config.ConnSetting) []config.ConnSetting {
		if internal && len(in) > 0 {
			e.Internal = true
			return ordered(in)
		}
		return ordered(ext)
	}
	if p := cfg.POP3; p != nil {
		e.POP3 = pick(p.ExternalConnectionSettings, p.InternalConnectionSettings)
	}
	if s := cfg.Submission; s != nil {
		e.SMTP = pick(s.ExternalConnectionSettings, s.InternalConnectionSettings)
	}
	return e
}

func ordered(cs []config.ConnSetting) []config.ConnSetting {
	out := slices.Clone(cs)
	rank := func(m config.Method) int {
		switch m {
		case config.MethodSSL:
			return 0
		case config.MethodTLS:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(out, func(a, b config.ConnSetting) int { return rank(a.Method) - rank(b.Method) })
	return out
}

// emailDomain returns the lower-cased domain of a plausible address, or "".
func emailDomain(addr string) string {
	local, dom, ok := strings.Cut(strings.TrimSpace(addr), "@")
	if !ok || local == "" || dom == "" || strings.ContainsAny(addr, " \t\r\n<>\"") || strings.Contains(dom, "@") {
		return ""
	}
	return strings.ToLower(dom)
}

// validAddress accepts an address in one of the configured domains. Any
// local part is fine: the answer is the same for every user of a domain,
// so it does not reveal which mailboxes exist.
func validAddress(cfg *config.Config, addr string) bool {
	d := emailDomain(addr)
	return d != "" && cfg.IsLocalDomain(d)
}

// noStore marks a response as personal: never cached, never sniffed.
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}
