package web

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailpost/config"
)

// testHCL has POP3 with plain_text_login so a plain internal setting is
// legal, and lists tls before ssl to show implicit TLS is put first.
const testHCL = `
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com", "example.org"]
certificate "dev" {
  self_signed = true
  names = ["mail.example.com", "mail.home.arpa"]
}
pop3 {
  login_type                   = "plain_text_login"
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:110:tls", "mail.example.com:995:ssl"]
  internal_connection_settings = ["mail.home.arpa:110:", "mail.home.arpa:995:ssl"]
}
submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}
http {
  bindings     = ["127.0.0.1:0"]
  tls_bindings = ["127.0.0.1:8443"]
}
mailbox "alice@example.com" {
  quota = "1MiB"
}
`

func loadConfig(t *testing.T, src string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mailpost.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	return cfg
}

// fakeBackend answers like the server with one mailbox, alice, whose
// password is "secret".
type fakeBackend struct {
	cfg    *config.Config
	logins int
}

func (f *fakeBackend) Config() *config.Config { return f.cfg }

func (f *fakeBackend) Login(_ context.Context, _ netip.Addr, user, pass string) (*config.Mailbox, error) {
	f.logins++
	mb := f.cfg.Mailbox(user)
	if mb == nil || mb.Address != strings.ToLower(user) || pass != "secret" {
		return nil, fmt.Errorf("checking %s: %w", user, ErrBadCredentials)
	}
	return mb, nil
}

func (f *fakeBackend) Fingerprint(host string) string {
	return "AA:BB:" + strings.ToUpper(host)
}

func (f *fakeBackend) Usage(string) (int, int64, error) { return 3, 256 << 10, nil }

func newHandler(t *testing.T) (*Handler, *fakeBackend) {
	t.Helper()
	b := &fakeBackend{cfg: loadConfig(t, testHCL)}
	return New(b, slog.New(slog.NewTextHandler(io.Discard, nil))), b
}

// serveTLS runs h on a real TLS socket on 127.0.0.1.
func serveTLS(t *testing.T, h http.Handler) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	c := srv.Client()
	c.Jar = jar
	c.Timeout = 10 * time.Second
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return srv, c
}

// fromInternet serves one request as if it came from a public address
// (a loopback socket cannot), straight into the handler.
func fromInternet(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	r.RemoteAddr = "203.0.113.9:40000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// Mozilla clientConfig 1.1, as Thunderbird reads it.
type mozConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID       string      `xml:"id,attr"`
		Domains  []string    `xml:"domain"`
		Incoming []mozServer `xml:"incomingServer"`
		Outgoing []mozServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type mozServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

func decodeXML(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := xml.Unmarshal(body, v); err != nil {
		t.Fatalf("parsing %T: %v\n%s", v, err, body)
	}
}

func checkMoz(t *testing.T, got []mozServer, typ string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s servers: got %d (%+v), want %d", typ, len(got), got, len(want))
	}
	for i, w := range want {
		host, rest, _ := strings.Cut(w, ":")
		port, sock, _ := strings.Cut(rest, ":")
		g := got[i]
		if g.Type != typ || g.Hostname != host || fmt.Sprint(g.Port) != port || g.SocketType != sock ||
			g.Username != "%EMAILADDRESS%" || g.Authentication != "password-cleartext" {
			t.Errorf("%s server %d = %+v, want %s:%s:%s with %%EMAILADDRESS%%", typ, i, g, host, port, sock)
		}
	}
}

func TestAutoconfigInternalOverTLS(t *testing.T) {
	h, _ := newHandler(t)
	srv, c := serveTLS(t, h)
	for _, path := range []string{AutoconfigPath, WellKnownAutoconfigPath} {
		resp, err := c.Get(srv.URL + path + "?emailaddress=bob%40example.org")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/xml") {
			t.Fatalf("%s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		var mc mozConfig
		decodeXML(t, body, &mc)
		if mc.Version != "1.1" || mc.Provider.ID != "example.org" ||
			strings.Join(mc.Provider.Domains, ",") != "example.com,example.org" {
			t.Errorf("%s: provider %+v", path, mc)
		}
		// The client is on loopback, so the internal settings apply:
		// ssl first, then the plain one the file configures. Submission
		// has no internal settings and falls back to external.
		checkMoz(t, mc.Provider.Incoming, "pop3", "mail.home.arpa:995:SSL", "mail.home.arpa:110:plain")
		checkMoz(t, mc.Provider.Outgoing, "smtp", "mail.example.com:465:SSL", "mail.example.com:587:STARTTLS")
	}
}

func TestAutoconfigExternal(t *testing.T) {
	h, _ := newHandler(t)
	w := fromInternet(h, httptest.NewRequest("GET", "http://autoconfig.example.com"+AutoconfigPath+"?emailaddress=x%40elsewhere.net", nil))
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	var mc mozConfig
	decodeXML(t, w.Body.Bytes(), &mc)
	if mc.Provider.ID != "example.com" {
		t.Errorf("a foreign domain must not become the provider id: %q", mc.Provider.ID)
	}
	// Written tls first in the file; implicit TLS is offered first.
	checkMoz(t, mc.Provider.Incoming, "pop3", "mail.example.com:995:SSL", "mail.example.com:110:STARTTLS")
	checkMoz(t, mc.Provider.Outgoing, "smtp", "mail.example.com:465:SSL", "mail.example.com:587:STARTTLS")
	if strings.Contains(w.Body.String(), "plain") {
		t.Errorf("no plain method is configured externally, yet the answer has one:\n%s", w.Body)
	}
}

// Outlook's POX response, [MS-OXDSCLI] §2.2.4.
type adResponse struct {
	XMLName  xml.Name `xml:"Autodiscover"`
	Response struct {
		XMLName xml.Name `xml:"Response"`
		User    struct {
			DisplayName string `xml:"DisplayName"`
		} `xml:"User"`
		Account struct {
			AccountType string       `xml:"AccountType"`
			Action      string       `xml:"Action"`
			Protocols   []adProtocol `xml:"Protocol"`
		} `xml:"Account"`
		Error *struct {
			ErrorCode int    `xml:"ErrorCode"`
			Message   string `xml:"Message"`
		} `xml:"Error"`
	} `xml:"Response"`
}

type adProtocol struct {
	Type, Server, LoginName, SSL, Encryption, SPA, AuthRequired, DomainRequired string
	Port                                                                        int
}

func adRequest(email, schema string) string {
	return `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>` + email + `</EMailAddress>
    <AcceptableResponseSchema>` + schema + `</AcceptableResponseSchema>
  </Request>
</Autodiscover>`
}

func postAutodiscover(t *testing.T, c *http.Client, u, body string) adResponse {
	t.Helper()
	resp, err := c.Post(u, "text/xml", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/xml") {
		t.Fatalf("%s: %s %s\n%s", u, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	var ad adResponse
	decodeXML(t, b, &ad)
	if ad.XMLName.Space != autodiscoverResponseNS {
		t.Errorf("root namespace %q", ad.XMLName.Space)
	}
	return ad
}

func TestAutodiscover(t *testing.T) {
	h, _ := newHandler(t)
	srv, c := serveTLS(t, h)
	for _, path := range []string{"/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml", "/AutoDiscover/AutoDiscover.xml"} {
		ad := postAutodiscover(t, c, srv.URL+path, adRequest("Alice@Example.com", outlookResponseNS))
		r := ad.Response
		if r.XMLName.Space != outlookResponseNS || r.Error != nil {
			t.Fatalf("%s: response %+v", path, r)
		}
		if r.Account.AccountType != "email" || r.Account.Action != "settings" || r.User.DisplayName != "Alice@Example.com" {
			t.Errorf("%s: account %+v user %+v", path, r.Account, r.User)
		}
		want := []adProtocol{
			{Type: "POP3", Server: "mail.home.arpa", Port: 995, SSL: "on", Encryption: "SSL"},
			{Type: "POP3", Server: "mail.home.arpa", Port: 110, SSL: "off", Encryption: "None"},
			{Type: "SMTP", Server: "mail.example.com", Port: 465, SSL: "on", Encryption: "SSL"},
			{Type: "SMTP", Server: "mail.example.com", Port: 587, SSL: "on", Encryption: "TLS"},
		}
		if len(r.Account.Protocols) != len(want) {
			t.Fatalf("%s: protocols %+v", path, r.Account.Protocols)
		}
		for i, w := range want {
			g := r.Account.Protocols[i]
			if g.Type != w.Type || g.Server != w.Server || g.Port != w.Port || g.SSL != w.SSL || g.Encryption != w.Encryption ||
				g.LoginName != "Alice@Example.com" || g.SPA != "off" || g.AuthRequired != "on" || g.DomainRequired != "off" {
				t.Errorf("%s: protocol %d = %+v, want %+v", path, i, g, w)
			}
		}
	}

	// From the internet: external settings only, no plain text.
	w := fromInternet(h, httptest.NewRequest("POST", "https://autodiscover.example.com"+AutodiscoverPath,
		strings.NewReader(adRequest("alice@example.com", outlookResponseNS))))
	var ad adResponse
	decodeXML(t, w.Body.Bytes(), &ad)
	var got []string
	for _, p := range ad.Response.Account.Protocols {
		got = append(got, fmt.Sprintf("%s %s:%d %s", p.Type, p.Server, p.Port, p.Encryption))
	}
	if s := strings.Join(got, ", "); s != "POP3 mail.example.com:995 SSL, POP3 mail.example.com:110 TLS, SMTP mail.example.com:465 SSL, SMTP mail.example.com:587 TLS" {
		t.Errorf("external protocols: %s", s)
	}

	// Errors come back as documents with an ErrorCode.
	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"foreign domain", adRequest("bob@elsewhere.net", outlookResponseNS), 600},
		{"mobile sync schema", adRequest("alice@example.com", "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"), 601},
		{"not xml", "hello", 600},
		{"wrong namespace", `<Autodiscover><Request><EMailAddress>alice@example.com</EMailAddress></Request></Autodiscover>`, 600},
	} {
		ad := postAutodiscover(t, c, srv.URL+AutodiscoverPath, tc.body)
		if ad.Response.Error == nil || ad.Response.Error.ErrorCode != tc.code || len(ad.Response.Account.Protocols) != 0 {
			t.Errorf("%s: response %+v, want error %d", tc.name, ad.Response, tc.code)
		}
	}
}

// plistValue is a decoded property list value: string, int64, bool,
// []any or map[string]any.
type plistValue = any

// decodePlist is a tiny plist XML reader: enough of Apple's DTD (dict,
// array, key, string, integer, true, false) to check a profile.
func decodePlist(t *testing.T, data []byte) map[string]any {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(string(data)))
	d.Strict = true
	var next func(start xml.StartElement) (plistValue, error)
	text := func() (string, error) {
		var s strings.Builder
		for {
			tok, err := d.Token()
			if err != nil {
				return "", err
			}
			switch tok := tok.(type) {
			case xml.CharData:
				s.Write(tok)
			case xml.EndElement:
				return s.String(), nil
			case xml.StartElement:
				return "", fmt.Errorf("unexpected <%s> in text", tok.Name.Local)
			}
		}
	}
	children := func() ([]xml.StartElement, []plistValue, error) {
		var names []xml.StartElement
		var vals []plistValue
		for {
			tok, err := d.Token()
			if err != nil {
				return nil, nil, err
			}
			switch tok := tok.(type) {
			case xml.StartElement:
				v, err := next(tok)
				if err != nil {
					return nil, nil, err
				}
				names, vals = append(names, tok), append(vals, v)
			case xml.EndElement:
				return names, vals, nil
			}
		}
	}
	next = func(start xml.StartElement) (plistValue, error) {
		switch start.Name.Local {
		case "string", "key":
			return text()
		case "integer":
			s, err := text()
			if err != nil {
				return nil, err
			}
			var n int64
			_, err = fmt.Sscan(s, &n)
			return n, err
		case "true", "false":
			_, err := text()
			return start.Name.Local == "true", err
		case "array":
			_, vals, err := children()
			return vals, err
		case "dict":
			names, vals, err := children()
			if err != nil {
				return nil, err
			}
			m := map[string]any{}
			for i := 0; i+1 < len(vals); i += 2 {
				if names[i].Name.Local != "key" {
					return nil, fmt.Errorf("dict entry %d is <%s>, not <key>", i, names[i].Name.Local)
				}
				k := vals[i].(string)
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("duplicate key %q", k)
				}
				m[k] = vals[i+1]
			}
			if len(vals)%2 != 0 {
				return nil, errors.New("dict with a key and no value")
			}
			return m, nil
		}
		return nil, fmt.Errorf("unknown plist element <%s>", start.Name.Local)
	}
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("plist: %v\n%s", err, data)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "plist" {
				t.Fatalf("root is <%s>", se.Name.Local)
			}
			_, vals, err := children()
			if err != nil || len(vals) != 1 {
				t.Fatalf("plist body: %v (%d values)\n%s", err, len(vals), data)
			}
			m, ok := vals[0].(map[string]any)
			if !ok {
				t.Fatalf("plist root is %T", vals[0])
			}
			return m
		}
	}
}

func checkProfile(t *testing.T, data []byte, email, popHost string, popPort int64, popSSL bool) {
	t.Helper()
	p := decodePlist(t, data)
	if p["PayloadType"] != "Configuration" || p["PayloadVersion"] != int64(1) || p["PayloadRemovalDisallowed"] != false {
		t.Errorf("profile header %v", p)
	}
	uuid, _ := p["PayloadUUID"].(string)
	if len(uuid) != 36 || uuid[14] != '5' {
		t.Errorf("PayloadUUID %q is not a version-5 UUID", uuid)
	}
	content, _ := p["PayloadContent"].([]any)
	if len(content) != 1 {
		t.Fatalf("PayloadContent %v", p["PayloadContent"])
	}
	m := content[0].(map[string]any)
	want := map[string]any{
		"PayloadType":                            "com.apple.mail.managed",
		"PayloadVersion":                         int64(1),
		"EmailAccountType":                       "EmailTypePOP",
		"EmailAddress":                           email,
		"IncomingMailServerHostName":             popHost,
		"IncomingMailServerPortNumber":           popPort,
		"IncomingMailServerUseSSL":               popSSL,
		"IncomingMailServerUsername":             email,
		"IncomingMailServerAuthentication":       "EmailAuthPassword",
		"OutgoingMailServerHostName":             "mail.example.com",
		"OutgoingMailServerPortNumber":           int64(465),
		"OutgoingMailServerUseSSL":               true,
		"OutgoingMailServerUsername":             email,
		"OutgoingMailServerAuthentication":       "EmailAuthPassword",
		"OutgoingPasswordSameAsIncomingPassword": true,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("payload %s = %#v, want %#v", k, m[k], v)
		}
	}
	if id, _ := m["PayloadIdentifier"].(string); !strings.HasPrefix(id, "com.example.mail.mailpost.") {
		t.Errorf("PayloadIdentifier %q", id)
	}
	if m["PayloadUUID"] == p["PayloadUUID"] {
		t.Error("payload and profile share a UUID")
	}
}

func TestMobileConfig(t *testing.T) {
	h, _ := newHandler(t)
	srv, c := serveTLS(t, h)
	resp, err := c.Get(srv.URL + MobileConfigPath + "?email=bob%40example.org")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-apple-aspen-config" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="bob-at-example.org.mobileconfig"` {
		t.Fatalf("%s %v", resp.Status, resp.Header)
	}
	// Loopback client: internal POP3 (ssl sorts first), external SMTP.
	checkProfile(t, body, "bob@example.org", "mail.home.arpa", 995, true)

	w := fromInternet(h, httptest.NewRequest("GET", "https://mail.example.com"+MobileConfigPath+"?email=bob%40example.org", nil))
	checkProfile(t, w.Body.Bytes(), "bob@example.org", "mail.example.com", 995, true)
	// Stable: the same address gets the same UUIDs, so a reinstall replaces.
	if w2 := fromInternet(h, httptest.NewRequest("GET", "https://mail.example.com"+MobileConfigPath+"?email=bob%40example.org", nil)); w2.Body.String() != w.Body.String() {
		t.Error("two downloads of one profile differ")
	}

	for q, code := range map[string]int{"": 400, "?email=bob%40elsewhere.net": 404, "?email=%3Cscript%3E%40example.com": 404} {
		resp, err := c.Get(srv.URL + MobileConfigPath + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("%q: %s, want %d", q, resp.Status, code)
		}
	}
}

func TestMobileConfigSTARTTLSOnly(t *testing.T) {
	cfg := loadConfig(t, strings.Replace(testHCL, `"mail.example.com:110:tls", "mail.example.com:995:ssl"`, `"mail.example.com:110:tls"`, 1))
	e := EndpointsFor(cfg, netip.MustParseAddr("198.51.100.1"))
	p, ok := MobileConfig(cfg.Hostname, "a@example.com", e)
	if !ok {
		t.Fatal("no profile")
	}
	checkProfile(t, p, "a@example.com", "mail.example.com", 110, false)
}

func TestEndpointsForNetworks(t *testing.T) {
	cfg := loadConfig(t, testHCL)
	for addr, internal := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.1.2.3": true, "192.168.1.20": true, "172.16.0.9": true,
		"fd00::1": true, "fe80::1": true, "::ffff:192.168.0.2": true,
		"203.0.113.9": false, "2001:db8::1": false, "100.64.0.1": false, "8.8.8.8": false,
	} {
		e := EndpointsFor(cfg, netip.MustParseAddr(addr).Unmap())
		if e.Internal != internal {
			t.Errorf("%s: internal = %v, want %v", addr, e.Internal, internal)
		}
		if want := map[bool]string{true: "mail.home.arpa", false: "mail.example.com"}[internal]; e.POP3[0].Host != want {
			t.Errorf("%s: POP3 host %s, want %s", addr, e.POP3[0].Host, want)
		}
	}
	// Without a pop3 or submission block nothing is offered.
	cfg.POP3, cfg.Submission = nil, nil
	if e := EndpointsFor(cfg, netip.MustParseAddr("127.0.0.1")); len(e.POP3)+len(e.SMTP) != 0 {
		t.Errorf("endpoints without services: %+v", e)
	}
}

func getBody(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestSettingsLoginFlow(t *testing.T) {
	h, b := newHandler(t)
	srv, c := serveTLS(t, h)

	resp, body := getBody(t, c, srv.URL+SettingsPath)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) || !strings.Contains(body, `name="viewport"`) {
		t.Fatalf("login form: %s\n%s", resp.Status, body)
	}
	for _, hd := range []string{"Content-Security-Policy", "Cache-Control", "X-Frame-Options"} {
		if resp.Header.Get(hd) == "" {
			t.Errorf("missing %s", hd)
		}
	}

	// Wrong password: 401, an error, no cookie.
	resp, err := c.PostForm(srv.URL+LoginPath, url.Values{"email": {"alice@example.com"}, "password": {"nope"}})
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(wrong), "not correct") || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong password: %s cookies %v\n%s", resp.Status, resp.Cookies(), wrong)
	}

	// Right password: a __Host- cookie, Secure, HttpOnly, SameSite=Strict.
	resp, err = c.PostForm(srv.URL+LoginPath, url.Values{"email": {"Alice@Example.com"}, "password": {"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != SettingsPath {
		t.Fatalf("login: %s -> %s", resp.Status, resp.Header.Get("Location"))
	}
	sc := resp.Header.Get("Set-Cookie")
	for _, attr := range []string{cookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, attr) {
			t.Errorf("Set-Cookie %q lacks %s", sc, attr)
		}
	}
	if strings.Contains(strings.ToLower(sc), "domain=") {
		t.Errorf("Set-Cookie %q has a Domain", sc)
	}
	if b.logins != 2 {
		t.Errorf("backend saw %d logins, want 2", b.logins)
	}

	resp, body = getBody(t, c, srv.URL+SettingsPath)
	for _, want := range []string{
		`id="address">alice@example.com<`,
		`class="host">mail.home.arpa<`, `class="port">995<`, `class="encryption">SSL/TLS<`,
		`class="encryption">None<`, `class="port">587<`, `class="encryption">STARTTLS<`,
		`class="username">alice@example.com<`, `AA:BB:MAIL.HOME.ARPA`, `AA:BB:MAIL.EXAMPLE.COM`,
		`3 messages, 256.0 KiB of 1.0 MiB (25%)`, `<meter min="0" max="1048576" value="262144"`,
		`href="/mail.mobileconfig"`, `local network`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("settings page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", body)
	}

	// The profile link works with the session alone.
	resp, prof := getBody(t, c, srv.URL+MobileConfigPath)
	if resp.StatusCode != 200 {
		t.Fatalf("profile: %s %s", resp.Status, prof)
	}
	checkProfile(t, []byte(prof), "alice@example.com", "mail.home.arpa", 995, true)

	// A cross-site POST is refused before the handler runs.
	req, _ := http.NewRequest("POST", srv.URL+LogoutPath, strings.NewReader("csrf=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || h.sessions.len() != 1 {
		t.Errorf("cross-site logout: %s, %d sessions", resp.Status, h.sessions.len())
	}
	// Same-site without the token: refused too.
	resp, err = c.PostForm(srv.URL+LogoutPath, url.Values{"csrf": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || h.sessions.len() != 1 {
		t.Errorf("logout without token: %s, %d sessions", resp.Status, h.sessions.len())
	}
	var token string
	for s := range h.sessions.m {
		token = h.sessions.m[s].csrf
	}
	resp, err = c.PostForm(srv.URL+LogoutPath, url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || h.sessions.len() != 0 {
		t.Errorf("logout: %s, %d sessions", resp.Status, h.sessions.len())
	}
	if _, body := getBody(t, c, srv.URL+SettingsPath); !strings.Contains(body, `name="password"`) {
		t.Error("still signed in after logout")
	}
}

func TestSettingsPlainHTTP(t *testing.T) {
	h, b := newHandler(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, _ := getBody(t, c, srv.URL+SettingsPath)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://127.0.0.1:8443/settings" {
		t.Errorf("plain GET: %s -> %s", resp.Status, resp.Header.Get("Location"))
	}
	// Even from loopback, a password over plain HTTP is not looked at.
	resp, err := c.PostForm(srv.URL+LoginPath, url.Values{"email": {"alice@example.com"}, "password": {"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || b.logins != 0 || len(resp.Cookies()) != 0 {
		t.Errorf("plain login: %s, %d backend logins", resp.Status, b.logins)
	}
	// Without TLS bindings there is nowhere to send the user.
	b.cfg.HTTP.TLSBindings = nil
	if resp, _ := getBody(t, c, srv.URL+SettingsPath); resp.StatusCode != http.StatusForbidden {
		t.Errorf("no https listener: %s", resp.Status)
	}
	// The published settings are fine over plain HTTP: Thunderbird tries
	// http://autoconfig.<domain>/ first.
	if resp, _ := getBody(t, c, srv.URL+AutoconfigPath); resp.StatusCode != 200 {
		t.Errorf("autoconfig over http: %s", resp.Status)
	}
}

func TestSessionExpiryAndRevocation(t *testing.T) {
	h, b := newHandler(t)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	mb := b.cfg.Mailbox("alice@example.com")
	s := h.sessions.create(mb.Address, mb.PasswordHash)
	req := func() *http.Request {
		r := httptest.NewRequest("GET", "https://mail.example.com"+SettingsPath, nil)
		r.TLS = &tls.ConnectionState{}
		r.AddCookie(&http.Cookie{Name: cookieName, Value: s.id})
		return r
	}
	if h.session(req()) == nil {
		t.Fatal("fresh session not found")
	}
	// Used every 20 minutes it lives on, until the 12-hour limit.
	for range 35 {
		now = now.Add(20 * time.Minute)
		if h.session(req()) == nil {
			t.Fatalf("session gone at %s", now)
		}
	}
	now = now.Add(21 * time.Minute) // 12h01m after login
	if h.session(req()) != nil {
		t.Fatal("session outlived maxLifetime")
	}
	s = h.sessions.create(mb.Address, mb.PasswordHash)
	now = now.Add(idleTimeout)
	if h.session(req()) != nil {
		t.Fatal("idle session survived idleTimeout")
	}
	// A changed password (reload) ends the session at the next page view.
	s = h.sessions.create(mb.Address, mb.PasswordHash)
	mb.PasswordHash = "$argon2id$changed"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req())
	if !strings.Contains(w.Body.String(), `name="password"`) || h.sessions.len() != 0 {
		t.Errorf("session survived a password change (%d left)", h.sessions.len())
	}
	// The map is bounded.
	for range maxSessions + 5 {
		h.sessions.create(mb.Address, mb.PasswordHash)
	}
	if n := h.sessions.len(); n != maxSessions {
		t.Errorf("%d sessions, want the cap %d", n, maxSessions)
	}
}

// Outlook's response schema, namespace-qualified as Outlook reads it: an
// element in the wrong namespace decodes as missing.
type strictAD struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response struct {
		User struct {
			DisplayName string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a DisplayName"`
		} `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a User"`
		Account struct {
			AccountType string          `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a AccountType"`
			Action      string          `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Action"`
			Protocols   []strictADProto `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Protocol"`
		} `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Account"`
		Error *struct {
			ErrorCode int `xml:"ErrorCode"`
		} `xml:"Error"`
	} `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
}

type strictADProto struct {
	Type         string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Type"`
	Server       string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Server"`
	Port         int    `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Port"`
	LoginName    string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a LoginName"`
	SPA          string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a SPA"`
	SSL          string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a SSL"`
	Encryption   string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Encryption"`
	AuthRequired string `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a AuthRequired"`
}

func (p strictADProto) String() string {
	return fmt.Sprintf("%s %s:%d ssl=%s enc=%s login=%s spa=%s auth=%s", p.Type, p.Server, p.Port, p.SSL, p.Encryption, p.LoginName, p.SPA, p.AuthRequired)
}

// strictProtocols parses body as Outlook would and renders its Protocol
// elements, one line each.
func strictProtocols(t *testing.T, body []byte) (strictAD, string) {
	t.Helper()
	var ad strictAD
	decodeXML(t, body, &ad)
	var lines []string
	for _, p := range ad.Response.Account.Protocols {
		lines = append(lines, p.String())
	}
	return ad, strings.Join(lines, "\n")
}

// TestAutodiscoverGET: clients that GET with the address in the query get
// the document a POST gets; a GET without one is a clear 400.
func TestAutodiscoverGET(t *testing.T) {
	h, _ := newHandler(t)
	srv, c := serveTLS(t, h)
	const internal = `POP3 mail.home.arpa:995 ssl=on enc=SSL login=bob@example.org spa=off auth=on
POP3 mail.home.arpa:110 ssl=off enc=None login=bob@example.org spa=off auth=on
SMTP mail.example.com:465 ssl=on enc=SSL login=bob@example.org spa=off auth=on
SMTP mail.example.com:587 ssl=on enc=TLS login=bob@example.org spa=off auth=on`
	for _, q := range []string{"?EMailAddress=bob%40example.org", "?emailaddress=bob%40example.org", "?Email=bob%40example.org"} {
		resp, body := getBody(t, c, srv.URL+"/AutoDiscover/AutoDiscover.xml"+q)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/xml") {
			t.Fatalf("GET %s: %s %s", q, resp.Status, resp.Header.Get("Content-Type"))
		}
		ad, got := strictProtocols(t, []byte(body))
		if got != internal || ad.Response.Account.AccountType != "email" || ad.Response.Account.Action != "settings" ||
			ad.Response.User.DisplayName != "bob@example.org" {
			t.Errorf("GET %s:\n%s\nwant:\n%s\n%s", q, got, internal, body)
		}
	}
	// The POST answer is the same document.
	resp, err := c.Post(srv.URL+AutodiscoverPath, "text/xml", strings.NewReader(adRequest("bob@example.org", outlookResponseNS)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, got := strictProtocols(t, body); got != internal {
		t.Errorf("POST:\n%s\nwant:\n%s", got, internal)
	}

	// From the internet, over GET too: external settings, no plain text.
	w := fromInternet(h, httptest.NewRequest("GET", "https://autodiscover.example.com"+AutodiscoverPath+"?EMailAddress=alice%40example.com", nil))
	if _, got := strictProtocols(t, w.Body.Bytes()); got != `POP3 mail.example.com:995 ssl=on enc=SSL login=alice@example.com spa=off auth=on
POP3 mail.example.com:110 ssl=on enc=TLS login=alice@example.com spa=off auth=on
SMTP mail.example.com:465 ssl=on enc=SSL login=alice@example.com spa=off auth=on
SMTP mail.example.com:587 ssl=on enc=TLS login=alice@example.com spa=off auth=on` {
		t.Errorf("external GET:\n%s", got)
	}

	// A foreign domain is the schema's error 600, as for a POST.
	resp, body2 := getBody(t, c, srv.URL+AutodiscoverPath+"?EMailAddress=eve%40elsewhere.net")
	var ad adResponse
	decodeXML(t, []byte(body2), &ad)
	if resp.StatusCode != 200 || ad.Response.Error == nil || ad.Response.Error.ErrorCode != 600 || len(ad.Response.Account.Protocols) != 0 {
		t.Errorf("foreign GET: %s %+v", resp.Status, ad.Response)
	}
	// No address: nothing to answer, and it says how to ask.
	if resp, body := getBody(t, c, srv.URL+AutodiscoverPath); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "EMailAddress=") {
		t.Errorf("bare GET: %s %q", resp.Status, body)
	}
	req, _ := http.NewRequest("PUT", srv.URL+AutodiscoverPath, strings.NewReader("x"))
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD, POST" {
		t.Errorf("PUT: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestAutodiscoverHTTPRedirect is Outlook's "HTTP redirect method": an
// unauthenticated GET on http://autodiscover.<domain>/autodiscover/
// autodiscover.xml answered with 302 to the mail host over https, where
// Outlook then POSTs. Both listeners are real sockets on loopback.
func TestAutodiscoverHTTPRedirect(t *testing.T) {
	h, b := newHandler(t)
	tlsSrv, tlsClient := serveTLS(t, h)
	plain := httptest.NewServer(h)
	t.Cleanup(plain.Close)
	c := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(host, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", plain.URL+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	// Through a port map (the client asked for port 80, the listener is
	// elsewhere): https is assumed mapped from 443 too.
	resp := get("autodiscover.example.com", "/Autodiscover/Autodiscover.xml")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://mail.example.com/autodiscover/autodiscover.xml" {
		t.Errorf("mapped GET: %s -> %q", resp.Status, resp.Header.Get("Location"))
	}
	// Straight to the listener's port: the tls_binding's port, and the
	// query kept for clients that GET.
	_, port, _ := strings.Cut(strings.TrimPrefix(plain.URL, "http://"), ":")
	resp = get("autodiscover.example.com:"+port, AutodiscoverPath+"?EMailAddress=alice%40example.com")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || loc != "https://mail.example.com:8443/autodiscover/autodiscover.xml?EMailAddress=alice%40example.com" {
		t.Errorf("direct GET: %s -> %q", resp.Status, loc)
	}
	// Outlook follows with its POST to the same path over TLS (here the
	// test's TLS listener stands in for mail.example.com:8443).
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	ad := postAutodiscover(t, tlsClient, tlsSrv.URL+u.Path, adRequest("alice@example.com", outlookResponseNS))
	if ad.Response.Error != nil || len(ad.Response.Account.Protocols) != 4 {
		t.Errorf("POST after the redirect: %+v", ad.Response)
	}

	// Without an https listener there is nowhere to redirect to: a GET
	// with an address is answered on plain HTTP, one without is a 400.
	b.cfg.HTTP.TLSBindings = nil
	if resp := get("autodiscover.example.com", AutodiscoverPath); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no https, bare GET: %s", resp.Status)
	}
	resp2, body := getBody(t, c, plain.URL+AutodiscoverPath+"?EMailAddress=alice%40example.com")
	if _, got := strictProtocols(t, []byte(body)); resp2.StatusCode != 200 || !strings.HasPrefix(got, "POP3 mail.home.arpa:995 ssl=on enc=SSL login=alice@example.com") {
		t.Errorf("no https, GET: %s\n%s", resp2.Status, got)
	}
}
