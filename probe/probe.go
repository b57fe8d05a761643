// Package probe checks a mail server from the client side, the way a user's
// mail program sees it: it connects, negotiates TLS, judges the certificate,
// logs in, submits a message and reads it back over POP3, recording every
// step with its timing and, when a step fails, a reason an operator can act
// on (refused connection, TLS alert, certificate name, the server's reply).
//
// It knows nothing about mailpost's configuration or storage, so the same
// checks can run against a remote host.
package probe

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Step is one checked action.
type Step struct {
	Name     string // e.g. "connect submission 127.0.0.1:587", "STARTTLS", "AUTH PLAIN"
	OK       bool   // false: the step failed; what depended on it was not run
	Warning  bool   // OK, but with a concern (an untrusted certificate)
	Detail   string // what was seen, or why it failed
	Duration time.Duration
}

// Endpoint is one service to test.
type Endpoint struct {
	Addr       string // host:port to dial
	Method     string // MethodSSL or MethodTLS
	ServerName string // the name the certificate must carry (also sent as SNI)
}

// Encryption methods, spelled as in the configuration's connection settings.
const (
	MethodSSL = "ssl" // implicit TLS (RFC 8314 §3.3)
	MethodTLS = "tls" // STARTTLS (RFC 3207) or STLS (RFC 2595 §4)
)

// Options configure a run. Zero values get the documented defaults.
type Options struct {
	Submission     Endpoint
	POP3           Endpoint
	User, Password string
	// RootCAs verify certificate chains; nil means the system roots.
	RootCAs *x509.CertPool
	// Dial opens TCP connections; nil means a net.Dialer. Tests and the
	// remote checks inject their own so no name goes to the system resolver.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolver looks up the host names of the remote checks (CheckPOP3,
	// CheckSubmission, RemoteRoundtrip); nil means net.DefaultResolver.
	// Roundtrip itself never resolves: it hands Addr to Dial as it is.
	Resolver Resolver
	// Domain, when set, is the mail domain whose MX and RFC 6186 SRV
	// records the remote checks compare with the endpoint's host.
	Domain string
	// Timeout bounds each step (each POP3 poll too); default 10s.
	Timeout time.Duration
	// Wait is how long POP3 is polled for the message; default 15s.
	Wait time.Duration
	// Now is the clock certificates are judged by and the Date header
	// carries; default time.Now. Step timings always use the real clock.
	Now func() time.Time
}

// Defaults for Options.
const (
	DefaultTimeout = 10 * time.Second
	DefaultWait    = 15 * time.Second
	// pollInterval is the pause between POP3 logins while waiting.
	pollInterval = 250 * time.Millisecond
)

func (o *Options) setDefaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Dial == nil {
		d := &net.Dialer{}
		o.Dial = d.DialContext
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
}

// Report is the outcome of a run: the steps in order, OK when none failed.
type Report struct {
	Steps []Step
	OK    bool
	Total time.Duration
}

// Warnings reports whether some step passed with a warning (what -strict
// turns into a failure).
func (r Report) Warnings() bool {
	for _, s := range r.Steps {
		if s.Warning {
			return true
		}
	}
	return false
}

// Failed returns the first failed step, or nil.
func (r Report) Failed() *Step {
	for i := range r.Steps {
		if !r.Steps[i].OK {
			return &r.Steps[i]
		}
	}
	return nil
}

// Write prints one aligned line per step and a verdict line:
//
//	ok      12.3ms  STARTTLS     TLS 1.3, TLS_AES_128_GCM_SHA256
//	FAIL     104ms  AUTH PLAIN   rejected: 535 5.7.8 authentication failed
func (r Report) Write(w io.Writer) {
	width := 0
	for _, s := range r.Steps {
		width = max(width, len(s.Name))
	}
	for _, s := range r.Steps {
		status := "ok"
		switch {
		case !s.OK:
			status = "FAIL"
		case s.Warning:
			status = "WARN"
		}
		fmt.Fprintf(w, "  %-4s  %7s  %-*s  %s\n", status, formatDuration(s.Duration), width, s.Name, s.Detail)
	}
	failed := 0
	for _, s := range r.Steps {
		if !s.OK {
			failed++
		}
	}
	switch f := r.Failed(); {
	case f != nil && failed > 1:
		// The remote checks go on past a failure (the next address).
		fmt.Fprintf(w, "FAILED at %q and %d more step(s) after %s\n", f.Name, failed-1, formatDuration(r.Total))
	case f != nil:
		fmt.Fprintf(w, "FAILED at %q after %s\n", f.Name, formatDuration(r.Total))
	case r.Warnings():
		fmt.Fprintf(w, "OK with warnings in %s\n", formatDuration(r.Total))
	default:
		fmt.Fprintf(w, "OK in %s\n", formatDuration(r.Total))
	}
}

// formatDuration keeps three significant figures from 0.1ms to minutes.
func formatDuration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

// run collects the steps of one Roundtrip.
type run struct {
	ctx   context.Context
	o     Options
	steps []Step
	// domainChecked: domains whose MX was already reported in this run.
	domainChecked map[string]bool
}

// step times fn as the step name. fn may fill in s.Detail and s.Warning;
// an error fails the step, its text becoming the reason. It reports whether
// the step passed.
func (r *run) step(name string, fn func(s *Step) error) bool {
	s := Step{Name: name}
	start := time.Now()
	err := fn(&s)
	s.Duration = time.Since(start)
	s.OK = err == nil
	if err != nil {
		s.Warning = false
		s.Detail = r.reason(err)
	}
	r.steps = append(r.steps, s)
	return s.OK
}

// reason explains err, saying so when the run was cancelled (a cancelled
// run closes its connections, which would otherwise read as a network
// error).
func (r *run) reason(err error) string {
	if r.ctx.Err() != nil {
		return fmt.Sprintf("cancelled (%v) during: %v", context.Cause(r.ctx), err)
	}
	return err.Error()
}

// Roundtrip submits a message from User to User through o.Submission,
// finds it over o.POP3, reads it back and deletes it. It never returns an
// error: every problem is a failed step in the report.
func Roundtrip(ctx context.Context, o Options) Report {
	o.setDefaults()
	start := time.Now()
	r := &run{ctx: ctx, o: o}
	msg := newMessage(o.User, o.Now())
	if r.submit(msg) {
		r.fetch(msg)
	}
	return r.report(start)
}

// report is the outcome so far, timed from start.
func (r *run) report(start time.Time) Report {
	rep := Report{Steps: r.steps, OK: true, Total: time.Since(start)}
	for _, s := range r.steps {
		if !s.OK {
			rep.OK = false
		}
	}
	return rep
}

// checkMethod refuses anything but the two TLS methods: the probe sends a
// password, and never in the clear.
func checkMethod(ep Endpoint) error {
	switch ep.Method {
	case MethodSSL, MethodTLS:
		return nil
	}
	return fmt.Errorf("encryption method %q: want %q (implicit TLS) or %q (STARTTLS); the probe never sends a password unencrypted", ep.Method, MethodSSL, MethodTLS)
}

// domainOf is the part of addr after the last @, or a reserved name.
func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 && i < len(addr)-1 {
		return addr[i+1:]
	}
	return "mailpost.invalid" // RFC 2606 §2
}
