package acme

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// challengeFilter removes one challenge type from the authorization
// objects the CA sends (RFC 8555 §7.1.4). autocert always tries
// tls-alpn-01 first; when the configuration says http-01 (because nothing
// answers on 443), letting it try would cost a failed validation at every
// issuance, and public CAs rate-limit those. Hiding the challenge makes
// autocert go straight to the one configured.
type challengeFilter struct {
	base http.RoundTripper
	drop string
}

// maxACMEBody bounds what is read from the CA to rewrite; an authorization
// is a few kilobytes.
const maxACMEBody = 1 << 20

func (f *challengeFilter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxACMEBody))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if out, ok := dropChallenge(body, f.drop); ok {
		body = out
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	resp.ContentLength = int64(len(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// dropChallenge rewrites an authorization object without challenges of
// type typ. ok is false when body is not an authorization (left as is).
func dropChallenge(body []byte, typ string) ([]byte, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil || obj["identifier"] == nil || obj["challenges"] == nil {
		return nil, false
	}
	var chals []json.RawMessage
	if json.Unmarshal(obj["challenges"], &chals) != nil {
		return nil, false
	}
	kept := chals[:0]
	for _, c := range chals {
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(c, &head) == nil && head.Type == typ {
			continue
		}
		kept = append(kept, c)
	}
	raw, err := json.Marshal(kept)
	if err != nil {
		return nil, false
	}
	obj["challenges"] = raw
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, false
	}
	return out, true
}
