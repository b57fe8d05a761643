package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"mailpost/certs"
	"mailpost/config"
	site "mailpost/web" // "web" is taken by the listeners' servers (acme.go)
)

// webBackend is what the web front reads from the running server: the
// current config, the login policy shared with POP3 and SMTP, the
// certificate pool and mailbox usage.
type webBackend struct{ s *Server }

var _ site.Backend = webBackend{}

func (b webBackend) Config() *config.Config { return b.s.cur.Load().cfg }

// Login is checkPassword, with its delays and throttling: the settings
// page is no cheaper a password oracle than POP3.
func (b webBackend) Login(ctx context.Context, remote netip.Addr, username, password string) (*config.Mailbox, error) {
	cred, err := b.s.checkPassword(ctx, remote, protoWeb, username, password)
	if errors.Is(err, errBadCredentials) {
		return nil, site.ErrBadCredentials
	}
	if errors.Is(err, errThrottled) {
		return nil, throttledAs(err, site.ErrThrottled, site.ErrThrottled)
	}
	return cred.mb, err
}

func (b webBackend) Fingerprint(host string) string {
	c := b.s.cur.Load().pool.ForName(host)
	if c == nil || len(c.Certificate) == 0 {
		return ""
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return ""
		}
	}
	return certs.Fingerprint(leaf)
}

func (b webBackend) Usage(mailbox string) (int, int64, error) {
	return b.s.store.Usage(mailbox)
}

// webHandler is what the http and https listeners serve: ACME http-01
// answers under /.well-known/acme-challenge/, the web front for the rest.
// It is built once per server, so settings-page sessions outlive reloads.
func (s *Server) webHandler() http.Handler {
	challenges := s.acme.HTTPHandler()
	front := site.New(webBackend{s}, s.log.With("component", "web"))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			challenges.ServeHTTP(w, r)
			return
		}
		front.ServeHTTP(w, r)
	})
}
