package pop3

import (
	"fmt"
	"testing"
)

// retryErr words its wait the way auth.Refusal does (tested there).
type retryErr string

func (e retryErr) Error() string   { return "over the limit" }
func (e retryErr) RetryIn() string { return string(e) }

// A throttled login is LOGIN-DELAY for the account, SYS/TEMP for the
// network (RFC 2449 §8.1.1, RFC 3206), never AUTH, with the wait.
func TestThrottledReply(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: %w", ErrLoginDelay, retryErr("in about 1 second")),
			"-ERR [LOGIN-DELAY] too many failed logins for this account, try again in about 1 second"},
		{fmt.Errorf("%w: %w", ErrNetworkThrottled, retryErr("in about 61 seconds")),
			"-ERR [SYS/TEMP] too many failed logins from your network, try again in about 61 seconds"},
		{fmt.Errorf("%w: %w", ErrLoginDelay, retryErr("in about 15 minutes")),
			"-ERR [LOGIN-DELAY] too many failed logins for this account, try again in about 15 minutes"},
		{fmt.Errorf("%w: %w", ErrNetworkThrottled, retryErr("in about 144 hours")),
			"-ERR [SYS/TEMP] too many failed logins from your network, try again in about 144 hours"},
		{ErrNetworkThrottled, "-ERR [SYS/TEMP] too many failed logins from your network, try again later"},
	} {
		if got := throttledReply(tc.err).line(); got != tc.want {
			t.Errorf("%v:\n got %q\nwant %q", tc.err, got, tc.want)
		}
	}
}
