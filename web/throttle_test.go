package web

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"mailpost/config"
)

// throttledBackend refuses every login the way the server's guard does:
// ErrThrottled wrapping an error that knows when to come back.
type throttledBackend struct {
	*fakeBackend
	wait time.Duration
}

type retryErr time.Duration

func (e retryErr) Error() string             { return "over the limit" }
func (e retryErr) RetryAfter() time.Duration { return time.Duration(e) }

func (b throttledBackend) Login(context.Context, netip.Addr, string, string) (*config.Mailbox, error) {
	return nil, fmt.Errorf("%w: %w", ErrThrottled, retryErr(b.wait))
}

// A sign-in refused by login_limits is 429 with Retry-After (rounded up to
// whole seconds) and a sentence saying how long, not "wrong password".
func TestSettingsLoginThrottled(t *testing.T) {
	for _, tc := range []struct {
		wait       time.Duration
		retryAfter string
		text       string
	}{
		{1500 * time.Millisecond, "2", "about 2 seconds"},
		{200 * time.Second, "200", "about 4 minutes"},
	} {
		b := throttledBackend{fakeBackend: &fakeBackend{cfg: loadConfig(t, testHCL)}, wait: tc.wait}
		srv, c := serveTLS(t, New(b, slog.New(slog.NewTextHandler(io.Discard, nil))))
		resp, err := c.PostForm(srv.URL+LoginPath, url.Values{"email": {"alice@example.com"}, "password": {"secret"}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != tc.retryAfter || !strings.Contains(string(body), tc.text) ||
			strings.Contains(string(body), "not correct") || len(resp.Cookies()) != 0 {
			t.Fatalf("wait %v: %s Retry-After %q cookies %v\n%s", tc.wait, resp.Status, resp.Header.Get("Retry-After"), resp.Cookies(), body)
		}
	}
}
