// Package config reads and validates mailpost's HCL configuration file.
//
// It is pure: Load reads the file and the certificate files it names (to
// validate them) but opens no sockets and starts no goroutines. Every problem
// is reported as an hcl.Diagnostic positioned at the offending attribute, all
// at once, so an operator can fix a file in one pass.
package config

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// LoginType says whether POP3 accepts passwords over an unencrypted channel.
type LoginType string

const (
	// SecureLogin allows USER/PASS and AUTH only after TLS (RFC 2595 §2.1).
	SecureLogin LoginType = "secure_login"
	// PlainTextLogin allows passwords on unencrypted connections too.
	PlainTextLogin LoginType = "plain_text_login"
)

// Method is the encryption a client is told to use for a connection setting.
type Method string

const (
	MethodSSL  Method = "ssl" // implicit TLS (RFC 8314 §3.3)
	MethodTLS  Method = "tls" // STLS after connecting (RFC 2595 §4)
	MethodNone Method = ""    // unencrypted
)

// ConnSetting is an Exchange-style "FQDN:port:method" triple advertised to
// clients; it need not equal a binding (a NAT or container may map ports).
type ConnSetting struct {
	Host   string
	Port   int
	Method Method
}

// String renders the setting in the form it is written in the file.
func (c ConnSetting) String() string {
	return c.Host + ":" + strconv.Itoa(c.Port) + ":" + string(c.Method)
}

// Certificate is one entry of the certificate pool. Exactly one source is
// set: static files (CertFile/KeyFile/Static) or SelfSigned. A future ACME
// source gets its own field next to these and joins the one-source check.
type Certificate struct {
	Name              string
	CertFile, KeyFile string // absolute; empty unless static
	SelfSigned        bool
	ACME              *ACME            // obtained from an ACME CA; nil unless acme
	Names             []string         // names covered (lower case)
	Static            *tls.Certificate // parsed, Leaf set; nil unless static
	DefRange          hcl.Range
}

// Covers reports whether the certificate is valid for name: an exact match of
// one of its names, or a wildcard "*.example.com" standing for exactly one
// label (RFC 6125 §6.4.3), case-insensitively.
func (c *Certificate) Covers(name string) bool {
	if c == nil {
		return false
	}
	name = normName(name)
	if name == "" {
		return false
	}
	for _, n := range c.Names {
		if n == name {
			return true
		}
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			label, parent, found := strings.Cut(name, ".")
			if found && label != "" && label != "*" && parent == rest {
				return true
			}
		}
	}
	return false
}

// POP3 is the effective POP3 service configuration, defaults applied.
type POP3 struct {
	X509CertificateName        string
	SSLBindings                []netip.AddrPort
	UnencryptedOrTLSBindings   []netip.AddrPort
	ExternalConnectionSettings []ConnSetting
	InternalConnectionSettings []ConnSetting
	LoginType                  LoginType
	PreAuthenticatedTimeout    time.Duration
	AuthenticatedTimeout       time.Duration
	MaxConnections             int
	MaxConnectionsPerIP        int
	MaxCommandSize             int
	Banner                     string
}

// Submission is the effective SMTP submission service (RFC 6409), defaults
// applied. AUTH is accepted only over TLS: implicit on SSLBindings
// (RFC 8314 §3.3), after STARTTLS on UnencryptedOrTLSBindings (RFC 3207).
type Submission struct {
	X509CertificateName        string
	SSLBindings                []netip.AddrPort
	UnencryptedOrTLSBindings   []netip.AddrPort
	ExternalConnectionSettings []ConnSetting
	InternalConnectionSettings []ConnSetting
	MaxMessageSize             int64 // bytes, the SIZE extension's limit (RFC 1870)
	MaxRecipients              int
	Timeout                    time.Duration // read/write inactivity
	MaxConnections             int
	MaxConnectionsPerIP        int
}

// Inbound is the effective configuration for receiving mail from other
// servers for the local domains (the MX role, port 25), defaults applied.
// STARTTLS is opportunistic: it is offered when a certificate in the pool
// covers X509CertificateName, and mail is still accepted without it.
type Inbound struct {
	Bindings            []netip.AddrPort
	X509CertificateName string
	MaxMessageSize      int64
	MaxRecipients       int
	Timeout             time.Duration
	MaxConnections      int
	MaxConnectionsPerIP int
	RateLimitPerIP      int // messages per minute per client IP, 0 = unlimited
}

// Mailbox is one local account.
type Mailbox struct {
	Address      string // lower case
	PasswordHash string // may be empty: nobody can log in
	POP3         bool
	Submission   bool
	Aliases      []string // lower case
	Quota        int64    // bytes, 0 = unlimited
	// SendAs lists the envelope and From addresses the account may submit
	// mail as (lower case); by default its address and aliases.
	SendAs []string
	// Devices are scoped second passwords (see Device), in file order.
	Devices []*Device
	// RetentionDays: retrieved messages older than this many days are
	// removed, announced as EXPIRE (RFC 2449 §6.7); -1 = never.
	RetentionDays int
	// SortDescending lists messages newest first (Exchange's
	// MessageRetrievalSortOrder) for clients that read the top of the list.
	SortDescending bool
	// NewLoginNotice: the first successful login from a network or device
	// not seen before puts a short notice into the mailbox.
	NewLoginNotice bool
}

// Config is a validated configuration. Treat it as immutable: the server
// shares one snapshot between sessions.
type Config struct {
	Filename     string // as given to Load
	Source       []byte // exact file bytes
	Hostname     string
	DataDir      string   // absolute
	Domains      []string // lower case
	Certificates []*Certificate
	POP3         *POP3       // nil = off
	Submission   *Submission // nil = off
	Inbound      *Inbound    // nil = off
	HTTP         *HTTP       // nil = no web front (no ACME challenges answered)
	Admin        *Admin      // nil = no metrics listener
	Outbound     *Outbound   // nil = the queue is kept, not delivered
	LoginLimits  LoginLimits // defaults applied
	Mailboxes    []*Mailbox

	byAddr map[string]*Mailbox // address and aliases → mailbox; built by Parse
}

// Mailbox returns the mailbox whose address or alias is addr
// (case-insensitive), or nil.
func (c *Config) Mailbox(addr string) *Mailbox {
	if c == nil {
		return nil
	}
	key := lowerAddr(addr)
	if c.byAddr != nil {
		return c.byAddr[key]
	}
	for _, m := range c.Mailboxes {
		if m.Address == key {
			return m
		}
		for _, a := range m.Aliases {
			if a == key {
				return m
			}
		}
	}
	return nil
}

// CanSendAs reports whether the mailbox whose (primary) address is mailbox
// may submit mail as addr, both compared case-insensitively. An alias is not
// a login name, so it does not name a mailbox here. The empty reverse-path
// (bounces, RFC 5321 §4.5.5) is never in SendAs, so it is refused.
func (c *Config) CanSendAs(mailbox, addr string) bool {
	m := c.Mailbox(mailbox)
	if m == nil || m.Address != lowerAddr(mailbox) {
		return false
	}
	addr = lowerAddr(addr)
	if addr == "" {
		return false
	}
	for _, a := range m.SendAs {
		if a == addr {
			return true
		}
	}
	return false
}

// lowerAddr lower-cases an address the way Parse normalizes mailbox names.
func lowerAddr(a string) string {
	return strings.ToLower(strings.TrimSpace(a))
}

// CertificateFor returns the first certificate in the pool (file order) that
// covers name, or nil.
func (c *Config) CertificateFor(name string) *Certificate {
	if c == nil {
		return nil
	}
	for _, cert := range c.Certificates {
		if cert.Covers(name) {
			return cert
		}
	}
	return nil
}

// IsLocalDomain reports whether d is one of the configured domains.
func (c *Config) IsLocalDomain(d string) bool {
	if c == nil {
		return false
	}
	d = normName(d)
	for _, x := range c.Domains {
		if x == d {
			return true
		}
	}
	return false
}

// Defaults, in one place.
const (
	DefaultDataDir                 = "/var/lib/mailpost"
	DefaultPreAuthenticatedTimeout = 60 * time.Second
	DefaultAuthenticatedTimeout    = 30 * time.Minute
	DefaultMaxConnections          = 2000
	DefaultMaxConnectionsPerIP     = 20
	DefaultMaxCommandSize          = 512
	DefaultBanner                  = "mailpost POP3 ready"

	// RFC 2449 §4: a command line, CRLF included, may be up to 255 octets;
	// the server must accept at least that.
	MinMaxCommandSize = 255
	MaxMaxCommandSize = 65536

	// Certificates that expire sooner than this get a warning.
	ExpiryWarning = 14 * 24 * time.Hour

	// SMTP, submission and inbound alike.
	DefaultMaxMessageSize = 35 << 20
	MinMaxMessageSize     = 1 << 10
	MaxMaxMessageSize     = 1 << 30
	DefaultMaxRecipients  = 100
	MaxMaxRecipients      = 10000
	// RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next
	// command.
	DefaultSMTPTimeout = 5 * time.Minute

	DefaultSubmissionMaxConnections      = 500
	DefaultSubmissionMaxConnectionsPerIP = 20
	DefaultInboundMaxConnections         = 500
	DefaultInboundMaxConnectionsPerIP    = 10
	DefaultInboundRateLimitPerIP         = 60
)

var (
	defaultSSLBindings = []string{"[::]:995", "0.0.0.0:995"}
	defaultTLSBindings = []string{"[::]:110", "0.0.0.0:110"}

	defaultSubmissionSSLBindings = []string{"[::]:465", "0.0.0.0:465"}
	defaultSubmissionTLSBindings = []string{"[::]:587", "0.0.0.0:587"}
	defaultInboundBindings       = []string{"[::]:25", "0.0.0.0:25"}
)

// errorf and warnf build a diagnostic: a short Summary, and a Detail that is
// the whole sentence WriteDiagnostics prints.
func errorf(rng hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: sentence(fmt.Sprintf(format, args...)), Subject: rng.Ptr()}
}

func warnf(rng hcl.Range, summary, format string, args ...any) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary, Detail: sentence(fmt.Sprintf(format, args...)), Subject: rng.Ptr()}
}

// sentence capitalizes s and ends it with a period.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	// Capitalize a plain English first word only: "max_connections" or
	// "alice@example.com" must keep their spelling.
	word, _, _ := strings.Cut(s, " ")
	if strings.Trim(word, "abcdefghijklmnopqrstuvwxyz") == "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	if !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, "?") && !strings.HasSuffix(s, "!") {
		s += "."
	}
	return s
}
