package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"mailpost/acme"
	"mailpost/certs"
	"mailpost/config"
)

// web is mailpost's small web front: plain HTTP (the "http" listeners,
// which answer ACME http-01) and HTTPS (the "https" listeners, which
// answer tls-alpn-01 and otherwise serve the same pages over TLS). Both
// are one http.Server each, fed by every socket of their kind through a
// queue, so bindings come and go with reloads like any other listener.
type web struct {
	http, https     *http.Server
	httpQ, httpsQ   *connQueue
	httpDone, tDone chan struct{}
}

func (s *Server) startWeb() *web {
	h := s.webHandler()
	w := &web{
		httpQ: newConnQueue(), httpsQ: newConnQueue(),
		httpDone: make(chan struct{}), tDone: make(chan struct{}),
	}
	w.http = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	tlsCfg := s.tlsConfig("http")
	// RFC 8737 §3: the validator offers only acme-tls/1 and needs it
	// negotiated; browsers get http/1.1.
	tlsCfg.NextProtos = []string{"http/1.1", acme.ALPNProto}
	get := tlsCfg.GetCertificate
	tlsCfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if acme.IsChallengeHello(hello) {
			return s.acme.ChallengeCertificate(hello)
		}
		return get(hello)
	}
	w.https = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		TLSConfig: tlsCfg,
		// A validation connection ends after the handshake; a non-nil
		// map also keeps HTTP/2 off, which these pages do not need.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			acme.ALPNProto: func(*http.Server, *tls.Conn, http.Handler) {},
		}}
	go func() {
		defer close(w.httpDone)
		if err := w.http.Serve(w.httpQ); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server failed", "err", err)
		}
	}()
	go func() {
		defer close(w.tDone)
		if err := w.https.Serve(tls.NewListener(w.httpsQ, tlsCfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("https server failed", "err", err)
		}
	}()
	return w
}

func (w *web) shutdown(ctx context.Context) error {
	err := errors.Join(w.http.Shutdown(ctx), w.https.Shutdown(ctx))
	<-w.httpDone
	<-w.tDone
	return err
}

// connQueue is a net.Listener whose connections are handed to it by our
// accept loops.
type connQueue struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{} }

// configureACME hands the running config's ACME names to the service,
// which starts obtaining new ones in the background and stops renewing
// removed ones. A failure here (it can only be a ca_file that stopped
// parsing) is logged and changes nothing; the stand-ins keep being served.
func (s *Server) configureACME(cfg *config.Config) {
	if err := s.acme.Configure(cfg.Certificates); err != nil {
		s.log.Error("acme configuration failed", "err", err)
	}
}

// CertStatus is one certificate of the running pool, for `mailpost status`.
type CertStatus struct {
	Name          string    `json:"name"`
	Source        string    `json:"source"` // static, self-signed or acme
	Names         []string  `json:"names"`
	Issuer        string    `json:"issuer"`
	NotAfter      time.Time `json:"not_after"`
	ExpirySeconds int64     `json:"expiry_seconds"` // until NotAfter; negative once expired
	SHA256        string    `json:"sha256,omitempty"`
	Pending       string    `json:"pending,omitempty"` // ACME: no certificate issued yet, a stand-in is served
	NextRenewal   time.Time `json:"next_renewal,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
}

func certStatuses(pool *certs.Pool, now time.Time) []CertStatus {
	var out []CertStatus
	for _, in := range pool.Infos() {
		out = append(out, CertStatus{Name: in.Name, Source: in.Source, Names: in.Names, Issuer: in.Issuer,
			NotAfter: in.NotAfter, ExpirySeconds: int64(in.NotAfter.Sub(now) / time.Second), SHA256: in.SHA256,
			Pending: in.Pending, NextRenewal: in.NextRenewal, LastError: in.LastError})
	}
	return out
}

// stopWeb ends the web servers after a failed Start.
func (s *Server) stopWeb() {
	s.mu.Lock()
	w := s.web
	s.web = nil
	s.mu.Unlock()
	if w != nil {
		w.shutdown(context.Background())
	}
}

// WriteCertStatus prints the certificates part of `mailpost status`: one
// line per certificate, and for ACME ones why they are pending, when they
// renew and the CA's last error.
func WriteCertStatus(w io.Writer, cs []CertStatus) {
	fmt.Fprintln(w, "certificates:")
	for _, c := range cs {
		state := "ok"
		if c.Pending != "" {
			state = "PENDING (self-signed stand-in served): " + c.Pending
		}
		fmt.Fprintf(w, "  %-12s %-11s %s  expires %s (%s)  %s\n", c.Name, c.Source, strings.Join(c.Names, ","),
			c.NotAfter.UTC().Format(time.RFC3339), expiresIn(time.Duration(c.ExpirySeconds)*time.Second), state)
		if !c.NextRenewal.IsZero() {
			fmt.Fprintf(w, "  %-12s next renewal %s\n", "", c.NextRenewal.UTC().Format(time.RFC3339))
		}
		if c.LastError != "" {
			fmt.Fprintf(w, "  %-12s last error: %s\n", "", c.LastError)
		}
	}
}

// expiresIn words the time left on a certificate the way an operator
// reads it: days when there are some, hours and minutes in the last two
// days, and plainly when it has passed.
func expiresIn(d time.Duration) string {
	switch {
	case d <= 0:
		return "EXPIRED " + (-d).Truncate(time.Minute).String() + " ago"
	case d >= 48*time.Hour:
		return fmt.Sprintf("in %d days", int(d/(24*time.Hour)))
	}
	return "in " + d.Truncate(time.Minute).String()
}
