package acme

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// caTransport sits between autocert and the CA. It does two things
// autocert has no hook for:
//
//   - It removes one challenge type from the authorization objects the CA
//     sends (RFC 8555 §7.1.4). autocert always tries tls-alpn-01 first;
//     when the configuration says http-01 (because nothing answers on
//     443), letting it try would cost a failed validation at every
//     issuance, and public CAs rate-limit those. Hiding the challenge
//     makes autocert go straight to the one configured.
//   - It remembers the CA's last error (an RFC 8555 §6.7 problem document,
//     or the connection failure), so that a renewal failing inside
//     autocert's own timer can still be reported with the CA's words.
//   - Once retired it refuses every request without sending it. That is
//     how a manager's renewal timers, which autocert cannot stop, are kept
//     from ordering certificates for names removed from the configuration
//     (see Service.retire).
type caTransport struct {
	base    http.RoundTripper
	drop    string // challenge type to hide; "" = none
	lastErr atomic.Pointer[caError]
	retired atomic.Bool
}

// errRetired is what a retired manager's timers get from the transport and
// the cache.
var errRetired = errors.New("acme: this ACME client was retired by a reload; it no longer contacts the CA or writes the store")

// retire makes every later request fail locally and drops the idle
// connections to the CA.
func (f *caTransport) retire() {
	f.retired.Store(true)
	if c, ok := f.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

type caError struct {
	at  time.Time
	msg string
}

func (f *caTransport) note(msg string) {
	f.lastErr.Store(&caError{at: time.Now(), msg: msg})
}

// maxACMEBody bounds what is read from the CA to rewrite; an authorization
// is a few kilobytes.
const maxACMEBody = 1 << 20

func (f *caTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if f.retired.Load() {
		// A RoundTripper closes the body even when it fails.
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errRetired
	}
	resp, err := f.base.RoundTrip(req)
	if err != nil {
		f.note(err.Error())
		return resp, err
	}
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode >= 400 && strings.HasPrefix(ct, "application/problem+json") {
		return f.problem(resp)
	}
	if f.drop == "" || resp.StatusCode != http.StatusOK || !strings.Contains(ct, "json") {
		return resp, nil
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

// problem records a problem document and hands it on unchanged.
func (f *caTransport) problem(resp *http.Response) (*http.Response, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxACMEBody))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var p struct {
		Type   string `json:"type"`
		Detail string `json:"detail"`
	}
	// badNonce is retried by the ACME client itself (RFC 8555 §6.5); it
	// is not a failure worth reporting.
	if json.Unmarshal(body, &p) == nil && !strings.HasSuffix(p.Type, ":badNonce") {
		f.note(fmt.Sprintf("%d %s: %s", resp.StatusCode, p.Type, p.Detail))
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
