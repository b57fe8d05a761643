package acme

import (
	"encoding/json"
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
