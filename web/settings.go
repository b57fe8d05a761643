package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"mailpost/config"
)

// The settings page is served over TLS only: on the https listeners
// (http { tls_bindings }). A plain-HTTP request for it is redirected to
// the first TLS binding, or refused when there is none, and a login POST
// over plain HTTP is refused before its body is read, even from loopback:
// a reverse proxy on the same machine would make every client look local.

type endpointRow struct {
	Host, Encryption, Username, Fingerprint string
	Port                                    int
}

type pageData struct {
	Title string
	// Login form.
	Email, Error string
	// Settings (Address != "" once logged in).
	Address, CSRF                string
	Internal                     bool
	POP3, SMTP                   []endpointRow
	POP3Enabled, SubmissionOn    bool
	Messages                     int
	Used, Quota                  string
	UsedBytes, QuotaBytes        int64
	Percent                      int
	UsageUnknown                 bool
	ProfilePath, Hostname, Notes string
}

func encryptionLabel(m config.Method) string {
	switch m {
	case config.MethodSSL:
		return "SSL/TLS"
	case config.MethodTLS:
		return "STARTTLS"
	}
	return "None"
}

// securityHeaders: no scripts at all, styles only inline, forms only to
// ourselves, never framed, never cached.
func securityHeaders(w http.ResponseWriter) {
	noStore(w)
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// httpsRedirect sends a plain request to the https listener, or says
// why there is nowhere to go.
func (h *Handler) httpsRedirect(w http.ResponseWriter, r *http.Request) {
	cfg := h.b.Config()
	if cfg.HTTP == nil || len(cfg.HTTP.TLSBindings) == 0 {
		http.Error(w, "403 the settings page is served only over HTTPS; add http { tls_bindings = [...] } to the configuration",
			http.StatusForbidden)
		return
	}
	host := r.Host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		host = hh
	}
	if host == "" {
		host = cfg.Hostname
	}
	host = httpsHost(cfg, r, host)
	http.Redirect(w, r, "https://"+host+SettingsPath, http.StatusMovedPermanently)
}

func (h *Handler) settingsPage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.TLS == nil {
		h.httpsRedirect(w, r)
		return
	}
	s := h.session(r)
	var mb *config.Mailbox
	cfg := h.b.Config()
	if s != nil {
		// A reload may have removed the mailbox or changed its password
		// since the login: then the session is over.
		mb = cfg.Mailbox(s.address)
		if mb == nil || mb.Address != s.address || mb.PasswordHash != s.hash {
			h.sessions.remove(s.id)
			clearSessionCookie(w)
			s, mb = nil, nil
		}
	}
	if s == nil {
		h.render(w, http.StatusOK, pageData{Title: "Sign in"})
		return
	}
	h.render(w, http.StatusOK, h.settingsData(r, cfg, mb, s))
}

func (h *Handler) settingsData(r *http.Request, cfg *config.Config, mb *config.Mailbox, s *session) pageData {
	e := EndpointsFor(cfg, remoteAddr(r))
	d := pageData{Title: "POP and IMAP", Address: mb.Address, CSRF: s.csrf, Internal: e.Internal,
		POP3Enabled: mb.POP3, SubmissionOn: mb.Submission, ProfilePath: MobileConfigPath, Hostname: cfg.Hostname}
	row := func(c config.ConnSetting) endpointRow {
		return endpointRow{Host: c.Host, Port: c.Port, Encryption: encryptionLabel(c.Method),
			Username: mb.Address, Fingerprint: h.b.Fingerprint(c.Host)}
	}
	for _, c := range e.POP3 {
		d.POP3 = append(d.POP3, row(c))
	}
	for _, c := range e.SMTP {
		d.SMTP = append(d.SMTP, row(c))
	}
	n, used, err := h.b.Usage(mb.Address)
	if err != nil {
		h.log.Warn("settings page: usage", "mailbox", mb.Address, "err", err)
		d.UsageUnknown = true
	}
	d.Messages, d.UsedBytes, d.Used = n, used, humanBytes(used)
	if mb.Quota > 0 {
		d.QuotaBytes, d.Quota = mb.Quota, humanBytes(mb.Quota)
		d.Percent = int(min(100, used*100/mb.Quota))
	}
	return d
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.TLS == nil {
		// The body may hold a password that just crossed the network in
		// clear; do not even read it.
		http.Error(w, "403 sign in over HTTPS only", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "400 bad form", http.StatusBadRequest)
		return
	}
	email := strings.TrimSpace(r.PostForm.Get("email"))
	mb, err := h.b.Login(r.Context(), remoteAddr(r), email, r.PostForm.Get("password"))
	if errors.Is(err, ErrBadCredentials) {
		h.log.Info("web login failed", "user", email, "remote_ip", remoteAddr(r))
		h.render(w, http.StatusUnauthorized, pageData{Title: "Sign in", Email: email,
			Error: "The email address or password is not correct."})
		return
	}
	if errors.Is(err, ErrThrottled) {
		msg := "Too many failed sign-ins. Try again later."
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) {
			secs := max(1, int64((ra.RetryAfter()+time.Second-1)/time.Second))
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10)) // RFC 9110 §10.2.3
			wait := fmt.Sprintf("%d seconds", secs)
			if secs > 90 {
				wait = fmt.Sprintf("%d minutes", (secs+59)/60)
			}
			msg = "Too many failed sign-ins. Try again in about " + wait + "."
		}
		h.render(w, http.StatusTooManyRequests, pageData{Title: "Sign in", Email: email, Error: msg})
		return
	}
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away during the delay
		}
		h.log.Error("web login", "user", email, "err", err)
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	s := h.sessions.create(mb.Address, mb.PasswordHash)
	setSessionCookie(w, s)
	h.log.Info("web login", "user", mb.Address, "remote_ip", remoteAddr(r))
	http.Redirect(w, r, SettingsPath, http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s := h.session(r)
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if s == nil || r.ParseForm() != nil || !sameToken(r.PostForm.Get("csrf"), s.csrf) {
		http.Error(w, "403 forbidden", http.StatusForbidden)
		return
	}
	h.sessions.remove(s.id)
	clearSessionCookie(w)
	http.Redirect(w, r, SettingsPath, http.StatusSeeOther)
}

func (h *Handler) render(w http.ResponseWriter, status int, d pageData) {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		h.log.Error("settings page template", "err", err)
		http.Error(w, "500 internal error", http.StatusInternalServerError)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · mailpost</title>
<style>
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:40rem;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.5rem 0 1rem}
h2{font-size:1.05rem;margin:1.25rem 0 .5rem}
section{background:#fff;border-radius:8px;padding:1rem;margin-bottom:1rem;box-shadow:0 1px 2px #0002}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem .75rem;margin:0}
dt{color:#5a6376}dd{margin:0;overflow-wrap:anywhere}
code{font-size:.8rem}
label{display:block;margin:.75rem 0 .25rem}
input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #aab;border-radius:6px}
button,.button{display:inline-block;margin-top:1rem;padding:.6rem 1rem;font-size:1rem;border:0;border-radius:6px;background:#1f5fbf;color:#fff;text-decoration:none}
.secondary{background:#e3e6ec;color:#1d2330}
.error{background:#fde8e8;color:#8a1c1c;padding:.6rem;border-radius:6px}
.muted{color:#5a6376;font-size:.9rem}
meter{width:100%;height:1.2rem}
.endpoint+.endpoint{border-top:1px solid #e3e6ec;margin-top:.75rem;padding-top:.75rem}
</style>
</head>
<body><main>
{{if .Address}}
<h1>Settings › Mail › Accounts › POP and IMAP</h1>
<p class="muted">Signed in as <strong id="address">{{.Address}}</strong>.
{{if .Internal}}These are the settings for your local network.{{else}}These are the settings for use from the internet.{{end}}</p>

<section id="pop3">
<h2>POP3 (incoming){{if not .POP3Enabled}} — disabled for this mailbox{{end}}</h2>
{{range .POP3}}<dl class="endpoint">
<dt>Server</dt><dd class="host">{{.Host}}</dd>
<dt>Port</dt><dd class="port">{{.Port}}</dd>
<dt>Encryption</dt><dd class="encryption">{{.Encryption}}</dd>
<dt>User name</dt><dd class="username">{{.Username}}</dd>
{{if .Fingerprint}}<dt>Certificate SHA-256</dt><dd><code class="fingerprint">{{.Fingerprint}}</code></dd>{{end}}
</dl>{{else}}<p>POP3 is not offered.</p>{{end}}
</section>

<section id="smtp">
<h2>SMTP (outgoing){{if not .SubmissionOn}} — disabled for this mailbox{{end}}</h2>
{{range .SMTP}}<dl class="endpoint">
<dt>Server</dt><dd class="host">{{.Host}}</dd>
<dt>Port</dt><dd class="port">{{.Port}}</dd>
<dt>Encryption</dt><dd class="encryption">{{.Encryption}}</dd>
<dt>User name</dt><dd class="username">{{.Username}}</dd>
<dt>Authentication</dt><dd>Password (same as POP3)</dd>
{{if .Fingerprint}}<dt>Certificate SHA-256</dt><dd><code class="fingerprint">{{.Fingerprint}}</code></dd>{{end}}
</dl>{{else}}<p>SMTP submission is not offered.</p>{{end}}
</section>

<section id="usage">
<h2>Mailbox usage</h2>
{{if .UsageUnknown}}<p>Usage is not available right now.</p>
{{else}}<p id="usage-text">{{.Messages}} messages, {{.Used}}{{if .Quota}} of {{.Quota}} ({{.Percent}}%){{else}} (no quota){{end}}</p>
{{if .Quota}}<meter min="0" max="{{.QuotaBytes}}" value="{{.UsedBytes}}" high="{{.QuotaBytes}}">{{.Percent}}%</meter>{{end}}{{end}}
</section>

<section>
<h2>Set up a device</h2>
<p>iPhone, iPad and Mac: install the profile, then enter your password when asked. Thunderbird and Outlook find these settings by themselves from your email address.</p>
<a class="button" id="profile" href="{{.ProfilePath}}" download>Download profile (.mobileconfig)</a>
</section>

<form method="post" action="/settings/logout">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="secondary" type="submit">Sign out</button>
</form>
{{else}}
<h1>Sign in to see your mail settings</h1>
<section>
{{if .Error}}<p class="error" id="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/settings/login">
<label for="email">Email address</label>
<input id="email" name="email" type="email" autocomplete="username" required value="{{.Email}}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button id="signin" type="submit">Sign in</button>
</form>
</section>
{{end}}
</main></body>
</html>
`))

// httpsHost is host with the port a client reaches the https listeners
// on. A client whose request names the port it connected to reaches
// mailpost directly and is sent to the first tls_binding's port; one that
// came through a port map (the port it named, 80 by default, is not the
// listener's) is sent to 443, on the assumption that the map covers https
// too (config.HTTP.HTTPSPort).
func httpsHost(cfg *config.Config, r *http.Request, host string) string {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	published, bound := cfg.HTTP.HTTPSPort()
	port := bound
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		asked := "80"
		if _, p, err := net.SplitHostPort(r.Host); err == nil {
			asked = p
		}
		if _, p, err := net.SplitHostPort(local.String()); err == nil && p != asked {
			port = published
		}
	}
	if port == 443 || port == 0 {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
