package pop3

import (
	"errors"
	"fmt"
)

// Response codes from RFC 2449 §8 (RESP-CODES, IN-USE, LOGIN-DELAY) and
// RFC 3206 (AUTH, SYS/TEMP, SYS/PERM). They go in brackets right after "-ERR".
const (
	CodeAuth       = "AUTH"
	CodeInUse      = "IN-USE"
	CodeLoginDelay = "LOGIN-DELAY"
	CodeSysTemp    = "SYS/TEMP"
	CodeSysPerm    = "SYS/PERM"
)

// Errors a Backend returns from Login. The session maps each to its reply;
// anything else becomes "-ERR [SYS/TEMP] ..." and is logged at Error.
var (
	ErrAuthFailed     = errors.New("authentication failed")
	ErrInUse          = errors.New("maildrop already locked")
	ErrAccessDisabled = errors.New("POP3 access disabled")
	// ErrLoginDelay: the account had too many failed logins and is
	// refused for a while (RFC 2449 §8.1.1 LOGIN-DELAY); ErrNetworkThrottled:
	// the client's network had (RFC 3206 SYS/TEMP). Neither is [AUTH],
	// which would make clients ask the user for a new password. If the
	// error chain has a RetryIn() string method ("in about 3 minutes"),
	// the reply says roughly how long to wait.
	ErrLoginDelay       = errors.New("too many failed logins for this account")
	ErrNetworkThrottled = errors.New("too many failed logins from this network")
)

// throttledReply is the reply to a login refused by ErrLoginDelay or
// ErrNetworkThrottled.
func throttledReply(err error) *Error {
	wait := "later"
	var ri interface{ RetryIn() string }
	if errors.As(err, &ri) {
		wait = ri.RetryIn()
	}
	if errors.Is(err, ErrLoginDelay) {
		return &Error{Code: CodeLoginDelay, Text: "too many failed logins for this account, try again " + wait, quiet: true}
	}
	return &Error{Code: CodeSysTemp, Text: "too many failed logins from your network, try again " + wait, quiet: true}
}

// Error is a negative reply that keeps the session going: the client sees
// "-ERR [Code] Text". Handlers return it; any other error closes the session.
type Error struct {
	Code string // response code without brackets, e.g. CodeAuth; may be empty
	Text string

	// quiet errors report the state of the server or the maildrop rather than
	// a client mistake, so they do not count toward the protocol-error limit.
	quiet bool
}

func (e *Error) Error() string {
	if e.Code == "" {
		return e.Text
	}
	return "[" + e.Code + "] " + e.Text
}

// line is the reply line without CRLF.
func (e *Error) line() string { return "-ERR " + e.Error() }

// Replies used by more than one handler.
var (
	errUnknownCommand = &Error{Text: "unknown command"}
	errWrongState     = &Error{Text: "command not valid in this state"}
	errSyntax         = &Error{Text: "syntax error"}
	errArgTooLong     = &Error{Text: "argument too long"}
	errBadChars       = &Error{Text: "invalid characters in command line"}
	errNoSuchMessage  = &Error{Text: "no such message"}
	errBadNumber      = &Error{Text: "invalid message number"}
	errNoUser         = &Error{Text: "USER first"}
	errLast           = &Error{Text: "LAST is obsolete (RFC 1939), use UIDL", quiet: true}
	errNoTLS          = &Error{Text: "STLS not available", quiet: true}
	errAlreadyTLS     = &Error{Text: "already using TLS"}
	errBadMechanism   = &Error{Text: "unsupported SASL mechanism, use PLAIN"}
	errAuthCancelled  = &Error{Text: "authentication cancelled"}
	errBadBase64      = &Error{Code: CodeAuth, Text: "invalid base64 in SASL response", quiet: true}

	// RFC 3206 §4: [AUTH] means retrying with other credentials may help.
	replyAuthFailed = &Error{Code: CodeAuth, Text: "authentication failed", quiet: true}
	// RFC 2449 §8.1.2: the maildrop is locked by another session.
	replyInUse    = &Error{Code: CodeInUse, Text: "maildrop already locked, try again later", quiet: true}
	replyDisabled = &Error{Code: CodeSysPerm, Text: "POP3 is not allowed for this mailbox or password", quiet: true}
	replyLoginTmp = &Error{Code: CodeSysTemp, Text: "cannot open maildrop, try again later", quiet: true}
	replyOpenTmp  = &Error{Code: CodeSysTemp, Text: "cannot read message, try again later", quiet: true}
)

// Lines sent just before the session closes.
const (
	lineInternal      = "-ERR [" + CodeSysTemp + "] internal error"
	lineShutdown      = "-ERR [" + CodeSysTemp + "] server shutting down"
	lineIdle          = "-ERR [" + CodeSysTemp + "] autologout; idle for too long"
	lineTooMany       = "-ERR [" + CodeSysTemp + "] too many connections"
	lineTooLong       = "-ERR command line too long"
	lineTooManyErrors = "-ERR too many errors, closing connection"
	lineTooManyFails  = "-ERR [" + CodeAuth + "] too many failed logins, closing connection"
)

// errorf builds a one-off negative reply.
func errorf(format string, args ...any) *Error {
	return &Error{Text: fmt.Sprintf(format, args...)}
}

// errQuit ends the session after a reply has been written (QUIT, too many
// errors, a cross-protocol first line).
var errQuit = errors.New("pop3: session ends")

// abortError ends the session without a reply: the connection is broken, or
// a multi-line reply was cut short and the client can no longer be answered.
type abortError struct{ err error }

func (e *abortError) Error() string { return "pop3: session aborted: " + e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }
