package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"mailpost/config"
)

const webConfig = `
hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com"]
certificate "dev" {
  self_signed = true
}
pop3 {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:995:ssl", "mail.example.com:110:tls"]
}
submission {
  ssl_bindings                 = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings  = ["127.0.0.1:0"]
  external_connection_settings = ["mail.example.com:465:ssl", "mail.example.com:587:tls"]
}
http {
  bindings     = ["127.0.0.1:0"]
  tls_bindings = ["127.0.0.1:0"]
}
mailbox "alice@example.com" {
  password_hash = "` + demoHash + `"
  quota         = "1MiB"
}
`

func startWebServer(t *testing.T) (s *testServer, httpAddr, httpsAddr string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mailpost.hcl")
	if err := os.WriteFile(path, []byte(webConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatalf("config: %v", diags)
	}
	s, err := startServer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range s.Listeners() {
		switch l.Proto {
		case "http":
			httpAddr = l.Addr
		case "https":
			httpsAddr = l.Addr
		}
	}
	if httpAddr == "" || httpsAddr == "" {
		t.Fatalf("listeners %v", s.Listeners())
	}
	return s, httpAddr, httpsAddr
}

// requireChromium finds Debian's chromium; like main_test.go's
// requireTool, MAILPOST_REQUIRE_CLIENTS turns a missing one into a failure.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("MAILPOST_REQUIRE_CLIENTS") != "" {
		t.Fatal("chromium is not installed (scripts/install-test-deps.sh installs it)")
	}
	t.Skip("chromium is not installed; run scripts/install-test-deps.sh")
	return ""
}

// TestWebPublishedOnListeners checks the wiring: the real http listener
// answers autoconfig and the ACME path beside it, and the https one
// profiles, through the server's own config.
func TestWebPublishedOnListeners(t *testing.T) {
	_, httpAddr, httpsAddr := startWebServer(t)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("http://" + httpAddr + "/mail/config-v1.1.xml?emailaddress=alice%40example.com")
	if code != 200 || !strings.Contains(body, "<hostname>mail.example.com</hostname>") || !strings.Contains(body, "<port>995</port>") {
		t.Errorf("autoconfig: %d\n%s", code, body)
	}
	if code, _ := get("http://" + httpAddr + "/.well-known/acme-challenge/nothing"); code != 404 {
		t.Errorf("unknown ACME token: %d", code)
	}
	if code, body := get("https://" + httpsAddr + "/mail.mobileconfig?email=alice%40example.com"); code != 200 || !strings.Contains(body, "com.apple.mail.managed") {
		t.Errorf("profile over https: %d", code)
	}
	if code, _ := get("http://" + httpAddr + "/settings"); code != http.StatusMovedPermanently {
		t.Errorf("plain settings page: %d, want a redirect to https", code)
	}
	// Outlook's redirect method on the plain listener, then its POST on
	// the https one.
	resp, err := c.Get("http://" + httpAddr + "/autodiscover/autodiscover.xml")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://mail.example.com/autodiscover/autodiscover.xml" {
		t.Errorf("autodiscover over http: %s -> %q", resp.Status, resp.Header.Get("Location"))
	}
	resp, err = c.Post("https://"+httpsAddr+"/autodiscover/autodiscover.xml", "text/xml", strings.NewReader(`<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>
<EMailAddress>alice@example.com</EMailAddress>
<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
</Request></Autodiscover>`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "<Server>mail.example.com</Server>") || !strings.Contains(string(b), "<Port>465</Port>") {
		t.Errorf("autodiscover POST over https: %s\n%s", resp.Status, b)
	}
}

// TestSettingsPageInChromium logs in to the settings page in headless
// Chromium against a running server: a wrong password shows an error, the
// right one shows the settings, usage and the certificate fingerprint the
// server really serves; the session cookie is checked as the browser
// stored it, and a phone-sized screenshot is taken.
func TestSettingsPageInChromium(t *testing.T) {
	chromium := requireChromium(t)
	s, _, httpsAddr := startWebServer(t)
	msg := "Subject: hi\r\n\r\n" + strings.Repeat("x", 10<<10) + "\r\n"
	if _, _, err := Deliver(s.cfg, s.store, "alice@example.com", strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	var fingerprint string
	for _, cs := range certStatuses(s.cur.Load().pool, time.Now()) {
		fingerprint = cs.SHA256
	}
	if fingerprint == "" {
		t.Fatal("no certificate fingerprint")
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(390, 844), // a phone
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		// The server's certificate is self-signed: accepted for this
		// test only.
		chromedp.Flag("ignore-certificate-errors", true),
		// No name is ever resolved; the page is reached by IP.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)

	url := "https://" + httpsAddr + "/settings"
	// The first Run starts the browser, which lives as long as bctx.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), "alice@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "wrong-password"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("error")),
	); err != nil {
		t.Fatalf("wrong password round: %v", err)
	}
	errText, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID("error")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errText, "not correct") {
		t.Errorf("error shown: %q", errText)
	}

	if err := chromedp.Do(bctx,
		// The error page keeps the address and, of course, not the
		// password.
		chromedp.SendKeys(chromedp.ID("password"), "demo-password"),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("address")),
	); err != nil {
		t.Fatalf("login round: %v", err)
	}
	text := func(id string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("reading #%s: %v", id, err)
		}
		return v
	}
	address, pop3, smtp, usage := text("address"), text("pop3"), text("smtp"), text("usage-text")
	cookies, err := chromedp.Run(bctx, func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
		return res.Cookies, err
	})
	if err != nil {
		t.Fatalf("cookies: %v", err)
	}
	shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if address != "alice@example.com" {
		t.Errorf("signed in as %q", address)
	}
	for _, want := range []string{"mail.example.com", "995", "SSL/TLS", "110", "STARTTLS", "alice@example.com", fingerprint} {
		if !strings.Contains(pop3, want) {
			t.Errorf("POP3 section lacks %q:\n%s", want, pop3)
		}
	}
	for _, want := range []string{"mail.example.com", "465", "587", "STARTTLS", fingerprint} {
		if !strings.Contains(smtp, want) {
			t.Errorf("SMTP section lacks %q:\n%s", want, smtp)
		}
	}
	if !strings.Contains(usage, "1 messages") || !strings.Contains(usage, "of 1.0 MiB") {
		t.Errorf("usage: %q", usage)
	}
	var found bool
	for _, c := range cookies {
		if c.Name == "__Host-mailpost-session" {
			found = true
			if !c.Secure || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" {
				t.Errorf("session cookie as stored by the browser: %+v", c)
			}
		}
	}
	if !found {
		t.Errorf("no session cookie in the browser: %v", cookies)
	}

	if !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(shot))
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 300 {
		t.Errorf("screenshot is %v", b)
	}
	out := filepath.Join(t.TempDir(), "settings.png")
	if err := os.WriteFile(out, shot, 0o600); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("MAILPOST_SCREENSHOT_DIR"); dir != "" {
		os.WriteFile(filepath.Join(dir, "settings.png"), shot, 0o644)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
		t.Errorf("screenshot file: %v", err)
	}
}
