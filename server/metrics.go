package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"mailpost/auth"
	"mailpost/smtpauth"
)

// promMetrics is the Prometheus side of the server: a registry whose collector
// reads the protocol servers' and the runner's Stats at scrape time (so
// nothing on the mail path knows about Prometheus), and the http.Server the
// "admin" listeners feed. The server is started by the first admin
// connection, so a config without an admin block runs no goroutine for it.
type promMetrics struct {
	reg *prometheus.Registry

	// Deliveries per recipient, counted by the SMTP backend: local
	// mailboxes written, outside recipients queued, and recipients of
	// messages refused after DATA (quota, size, relay).
	stored, queued, refused atomic.Uint64
	// expired counts messages removed by retention (RFC 2449 §6.7) at
	// login or by the sweep; EXPIRE 0's removal at QUIT is a deletion.
	expired atomic.Uint64

	q       *connQueue
	once    sync.Once
	mu      sync.Mutex // guards srv
	srv     *http.Server
	srvDone chan struct{}
}

func newMetrics(s *Server) *promMetrics {
	m := &promMetrics{reg: prometheus.NewRegistry(), q: newConnQueue()}
	m.reg.MustRegister(
		serverCollector{s},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "mailpost"}),
	)
	return m
}

// delivered records one accepted message's recipients.
func (m *promMetrics) delivered(local, remote int) {
	m.stored.Add(uint64(local))
	m.queued.Add(uint64(remote))
}

// refusedIf counts n recipients as refused when err is a policy refusal
// (at RCPT or after DATA); a storage failure (4xx, retried by the client)
// is not one.
func (m *promMetrics) refusedIf(err error, n int) {
	if errors.Is(err, smtpauth.ErrQuotaExceeded) || errors.Is(err, smtpauth.ErrTooLarge) ||
		errors.Is(err, smtpauth.ErrRelayDenied) || errors.Is(err, smtpauth.ErrUnknownRecipient) {
		m.refused.Add(uint64(n))
	}
}

// Handler serves the registry in the Prometheus text (or negotiated)
// format.
func (m *promMetrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A failing collector should show as a gap, not take down the scrape.
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       10 * time.Second,
	})
}

// serveConn hands a connection from an admin listener to the HTTP server,
// starting it on first use.
func (m *promMetrics) serveConn(c net.Conn, s *Server) {
	m.once.Do(func() {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.Handler())
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("mailpost admin: metrics at /metrics\n"))
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		done := make(chan struct{})
		m.mu.Lock()
		m.srv, m.srvDone = srv, done
		m.mu.Unlock()
		go func() {
			defer close(done)
			if err := srv.Serve(m.q); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin http server failed", "err", err)
			}
		}()
	})
	m.q.push(c)
}

// shutdown stops the admin HTTP server, if it ever started; connections
// pushed afterwards are closed by the queue.
func (m *promMetrics) shutdown(ctx context.Context) error {
	m.q.Close()
	m.mu.Lock()
	srv, done := m.srv, m.srvDone
	m.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	<-done
	return err
}

// MetricsHandler is /metrics, for embedding elsewhere (tests, a future
// combined web front).
func (s *Server) MetricsHandler() http.Handler { return s.prom.Handler() }

// serverCollector turns the server's Stats into metrics at scrape time.
type serverCollector struct{ s *Server }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("mailpost_"+name, help, labels, nil)
}

var (
	descSessions       = desc("sessions", "Sessions open now.", "protocol")
	descSessionsTotal  = desc("sessions_total", "Sessions accepted since start.", "protocol")
	descRefusedConns   = desc("connections_refused_total", "Connections refused by a connection cap.", "protocol")
	descLogins         = desc("logins_total", "Login attempts by result: success, failed (bad credentials), refused (right password, but in use or disabled), throttled (refused by login_limits before the password was checked), error.", "protocol", "result")
	descLoginLimited   = desc("login_limited", "Networks and accounts over a login_limits tier that have not cooled down yet.", "tier")
	descCommands       = desc("commands_total", "Commands handled (SMTP: the ones that reach the session: AUTH, MAIL, RCPT, DATA/BDAT).", "protocol")
	descBytesIn        = desc("received_bytes_total", "Octets read from clients on the wire, TLS included.", "protocol")
	descBytesOut       = desc("sent_bytes_total", "Octets written to clients on the wire, TLS included.", "protocol")
	descPOP3Retrieved  = desc("pop3_retrieved_total", "Messages sent in full by RETR.")
	descPOP3Deleted    = desc("pop3_deleted_total", "Messages removed by QUIT.")
	descExpired        = desc("expired_messages_total", "Retrieved messages removed by their mailbox's retention, at login or by the background sweep.")
	descDeliveries     = desc("deliveries_total", "Recipients of messages received over SMTP, by result: stored (local mailbox), queued (outbound), refused.", "result")
	descQueueLength    = desc("outbound_queue_length", "Messages waiting in the outbound queue.")
	descQueueInFlight  = desc("outbound_in_flight", "Outbound queue entries being delivered now.")
	descOutbound       = desc("outbound_deliveries_total", "Outbound recipients by result: delivered, failed (for good, bounced), deferred (retry scheduled).", "result")
	descReloads        = desc("reloads_total", "Config reloads by result: ok, failed, noop (file unchanged).", "result")
	descConfigRevision = desc("config_revision", "Sequence number of the config revision running now.")
	descCertExpiry     = desc("certificate_expiry_seconds", "Seconds until the certificate expires; negative once expired.", "name", "source")
	descCertPending    = desc("certificate_pending", "1 while an ACME certificate is not issued yet and a stand-in is served.", "name")
	descStoreSize      = desc("store_size_bytes", "Size of the database file.")
	descMailboxes      = desc("mailboxes", "Mailboxes configured.")
	descStart          = desc("start_time_seconds", "When the server started, in Unix seconds.")
)

func (c serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descSessionsTotal, descRefusedConns, descLogins, descCommands,
		descBytesIn, descBytesOut, descPOP3Retrieved, descPOP3Deleted, descExpired, descDeliveries, descQueueLength,
		descQueueInFlight, descOutbound, descReloads, descConfigRevision, descCertExpiry, descCertPending,
		descStoreSize, descMailboxes, descStart, descLoginLimited} {
		ch <- d
	}
}

func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	p := s.pop3.Stats()
	gauge(descSessions, float64(p.Sessions), "pop3")
	counter(descSessionsTotal, p.Accepted, "pop3")
	counter(descRefusedConns, p.Rejected, "pop3")
	counter(descCommands, p.Commands, "pop3")
	counter(descBytesIn, p.BytesIn, "pop3")
	counter(descBytesOut, p.BytesOut, "pop3")
	counter(descLogins, p.LoginSuccess, "pop3", "success")
	counter(descLogins, p.LoginFailed, "pop3", "failed")
	counter(descLogins, p.LoginRefused, "pop3", "refused")
	counter(descLogins, p.LoginError, "pop3", "error")
	counter(descLogins, s.throttledPOP3.Load(), "pop3", "throttled")
	counter(descPOP3Retrieved, p.Retrieved)
	counter(descPOP3Deleted, p.Deleted)
	counter(descExpired, s.prom.expired.Load())

	for _, sv := range []struct {
		proto string
		srv   *smtpauth.Server
	}{{"submission", s.subm}, {"smtp", s.inbound}} {
		proto, st := sv.proto, sv.srv.Stats()
		gauge(descSessions, float64(st.Sessions), proto)
		counter(descSessionsTotal, st.Accepted, proto)
		counter(descRefusedConns, st.Rejected, proto)
		counter(descCommands, st.Commands, proto)
		counter(descBytesIn, st.BytesIn, proto)
		counter(descBytesOut, st.BytesOut, proto)
		if proto == "submission" { // no AUTH on port 25
			counter(descLogins, st.LoginSuccess, proto, "success")
			counter(descLogins, st.LoginFailed, proto, "failed")
			counter(descLogins, st.LoginRefused, proto, "refused")
			counter(descLogins, st.LoginError, proto, "error")
			counter(descLogins, s.throttledSubmission.Load(), proto, "throttled")
		}
	}

	counter(descDeliveries, s.prom.stored.Load(), "stored")
	counter(descDeliveries, s.prom.queued.Load(), "queued")
	counter(descDeliveries, s.prom.refused.Load(), "refused")

	if q, err := s.store.Queue(); err == nil {
		gauge(descQueueLength, float64(len(q)))
	} else {
		ch <- prometheus.NewInvalidMetric(descQueueLength, err)
	}
	o := s.outbound.Stats()
	gauge(descQueueInFlight, float64(o.InFlight))
	counter(descOutbound, o.Delivered, "delivered")
	counter(descOutbound, o.Failed, "failed")
	counter(descOutbound, o.Deferred, "deferred")

	_, rc := s.LastReload()
	counter(descReloads, rc.OK, "ok")
	counter(descReloads, rc.Failed, "failed")
	counter(descReloads, rc.NoOp, "noop")

	rt := s.cur.Load()
	gauge(descConfigRevision, float64(rt.rev.Seq))
	now := time.Now()
	for _, in := range rt.pool.Infos() {
		gauge(descCertExpiry, in.NotAfter.Sub(now).Seconds(), in.Name, in.Source)
		pending := 0.0
		if in.Pending != "" {
			pending = 1
		}
		gauge(descCertPending, pending, in.Name)
	}
	if fi, err := os.Stat(s.store.Path()); err == nil {
		gauge(descStoreSize, float64(fi.Size()))
	} else {
		ch <- prometheus.NewInvalidMetric(descStoreSize, err)
	}
	gauge(descMailboxes, float64(len(rt.cfg.Mailboxes)))
	// The settings page has no other login counts; its refusals still show.
	counter(descLogins, s.throttledWeb.Load(), "web", "throttled")
	gs := s.guard.Stats()
	for t := range auth.TierAccount + 1 {
		gauge(descLoginLimited, float64(gs.Limited[t]), t.String())
	}
	gauge(descStart, float64(s.started.UnixNano())/1e9)
}
