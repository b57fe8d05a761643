package acme

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestDropChallenge(t *testing.T) {
	authz := `{"status":"pending","identifier":{"type":"dns","value":"mail.example.com"},"challenges":[` +
		`{"type":"tls-alpn-01","url":"https://ca/1","token":"a"},{"type":"http-01","url":"https://ca/2","token":"b"},{"type":"dns-01","url":"https://ca/3","token":"c"}]}`
	out, ok := dropChallenge([]byte(authz), "tls-alpn-01")
	if !ok {
		t.Fatal("authorization not recognized")
	}
	var z struct {
		Status     string
		Identifier struct{ Value string }
		Challenges []struct{ Type, URL, Token string }
	}
	if err := json.Unmarshal(out, &z); err != nil {
		t.Fatal(err)
	}
	if z.Status != "pending" || z.Identifier.Value != "mail.example.com" || len(z.Challenges) != 2 ||
		z.Challenges[0].Type != "http-01" || z.Challenges[0].Token != "b" || z.Challenges[1].Type != "dns-01" {
		t.Errorf("rewritten = %s", out)
	}
	for _, other := range []string{`{"status":"valid","certificate":"x"}`, `not json`, `{"identifier":{},"challenges":"x"}`} {
		if _, ok := dropChallenge([]byte(other), "tls-alpn-01"); ok {
			t.Errorf("%s was taken for an authorization", other)
		}
	}
}

// TestCATransportKeepsProblems: a problem document is recorded (and passed
// on unchanged), badNonce is not.
func TestCATransportKeepsProblems(t *testing.T) {
	body := ""
	ct := &caTransport{base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 429, Header: http.Header{"Content-Type": {"application/problem+json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	})}
	req, _ := http.NewRequest("POST", "https://ca.invalid/new-order", nil)
	body = `{"type":"urn:ietf:params:acme:error:badNonce","detail":"stale"}`
	if _, err := ct.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if e := ct.lastErr.Load(); e != nil {
		t.Errorf("badNonce recorded: %v", e.msg)
	}
	body = `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates"}`
	resp, err := ct.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	passed, _ := io.ReadAll(resp.Body)
	if string(passed) != body {
		t.Errorf("body passed on = %q", passed)
	}
	if e := ct.lastErr.Load(); e == nil || e.msg != "429 urn:ietf:params:acme:error:rateLimited: too many certificates" {
		t.Errorf("recorded = %+v", e)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
