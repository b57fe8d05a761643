package config

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// RelayTLS is how the connection to a smarthost is protected.
type RelayTLS string

const (
	RelayImplicitTLS RelayTLS = "implicit" // TLS from the first octet (RFC 8314 §3.3)
	RelayStartTLS    RelayTLS = "starttls" // STARTTLS required (RFC 3207)
	RelayNoTLS       RelayTLS = "none"     // cleartext: loopback only
)

// Outbound is the effective configuration for delivering the outbound
// queue. Without an outbound block mail for other domains stays queued.
type Outbound struct {
	Relay          *Relay        // nil = direct delivery to each domain's MX
	MaxAttemptsFor time.Duration // retry temporary failures this long, then bounce
	DKIM           *DKIM         // nil = no signing
}

// Relay is a smarthost that takes every outbound message.
type Relay struct {
	Address  string // host:port as written
	Host     string // lower case, no brackets
	Port     int
	TLS      RelayTLS
	Username string // "" = no AUTH
	// Password is read from password_file or password_env when the file is
	// loaded, so a reload picks up a rotated secret.
	Password string
}

// DKIM configures signing of outbound mail (RFC 6376).
type DKIM struct {
	Selector  string
	Algorithm string // "ed25519" or "rsa" (2048 bits)
}

// Defaults for the outbound block.
const (
	DefaultMaxAttemptsFor = 5 * 24 * time.Hour
	DefaultDKIMAlgorithm  = "ed25519"
)

type rawOutbound struct {
	DefRange hcl.Range `hcl:",def_range"`

	Relay               []*rawRelay `hcl:"relay,block"`
	MaxAttemptsFor      *string     `hcl:"max_attempts_for,optional"`
	MaxAttemptsForRange hcl.Range   `hcl:"max_attempts_for,attr_range"`
	DKIM                []*rawDKIM  `hcl:"dkim,block"`
}

type rawRelay struct {
	DefRange hcl.Range `hcl:",def_range"`

	Address           string    `hcl:"address"`
	AddressRange      hcl.Range `hcl:"address,attr_range"`
	TLS               *string   `hcl:"tls,optional"`
	TLSRange          hcl.Range `hcl:"tls,attr_range"`
	Username          *string   `hcl:"username,optional"`
	UsernameRange     hcl.Range `hcl:"username,attr_range"`
	PasswordFile      *string   `hcl:"password_file,optional"`
	PasswordFileRange hcl.Range `hcl:"password_file,attr_range"`
	PasswordEnv       *string   `hcl:"password_env,optional"`
	PasswordEnvRange  hcl.Range `hcl:"password_env,attr_range"`
}

type rawDKIM struct {
	DefRange hcl.Range `hcl:",def_range"`

	Selector       string    `hcl:"selector"`
	SelectorRange  hcl.Range `hcl:"selector,attr_range"`
	Algorithm      *string   `hcl:"algorithm,optional"`
	AlgorithmRange hcl.Range `hcl:"algorithm,attr_range"`
}

// outbound checks the outbound block (the first of raw; extra blocks are
// reported by the caller).
func (p *parser) outbound(blocks []*rawOutbound) (*Outbound, hcl.Diagnostics) {
	if len(blocks) == 0 {
		return nil, nil
	}
	ro := blocks[0]
	var diags hcl.Diagnostics
	out := &Outbound{MaxAttemptsFor: DefaultMaxAttemptsFor}
	p.durationAttr(&diags, ro.MaxAttemptsFor, ro.MaxAttemptsForRange, "max_attempts_for", &out.MaxAttemptsFor)
	diags = append(diags, extraBlocks("outbound", blocks, func(b *rawOutbound) hcl.Range { return b.DefRange })...)

	if len(ro.Relay) > 0 {
		r, d := p.relay(ro.Relay[0])
		diags = append(diags, d...)
		out.Relay = r
		diags = append(diags, extraBlocks("relay", ro.Relay, func(b *rawRelay) hcl.Range { return b.DefRange })...)
	}
	if len(ro.DKIM) > 0 {
		rd := ro.DKIM[0]
		k := &DKIM{Selector: strings.ToLower(rd.Selector), Algorithm: DefaultDKIMAlgorithm}
		// A selector is one or more DNS labels (RFC 6376 §3.1).
		if p.ok(rd.SelectorRange) && !validDNSName(rd.Selector) {
			diags = append(diags, errorf(rd.SelectorRange, "Invalid DKIM selector",
				"the DKIM selector %q is not a DNS label such as mail or 2026a", rd.Selector))
		}
		if rd.Algorithm != nil && p.ok(rd.AlgorithmRange) {
			switch a := strings.ToLower(*rd.Algorithm); a {
			case "ed25519", "rsa":
				k.Algorithm = a
			default:
				diags = append(diags, errorf(rd.AlgorithmRange, "Invalid DKIM algorithm",
					"the DKIM algorithm %q is unknown; use ed25519 or rsa", *rd.Algorithm))
			}
		}
		out.DKIM = k
		diags = append(diags, extraBlocks("dkim", ro.DKIM, func(b *rawDKIM) hcl.Range { return b.DefRange })...)
	}
	return out, diags
}

func (p *parser) relay(rr *rawRelay) (*Relay, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	r := &Relay{Address: rr.Address, TLS: RelayStartTLS}
	addrOK := false
	if p.ok(rr.AddressRange) {
		host, port, err := net.SplitHostPort(rr.Address)
		n, perr := strconv.Atoi(port)
		_, ipErr := netip.ParseAddr(host)
		switch {
		case err != nil:
			diags = append(diags, errorf(rr.AddressRange, "Invalid relay address",
				"the relay address %q is not host:port such as smtp.example.net:587", rr.Address))
		case perr != nil || n < 1 || n > 65535:
			diags = append(diags, errorf(rr.AddressRange, "Invalid relay address",
				"the relay address %q has an invalid port %q; use 1 to 65535", rr.Address, port))
		case ipErr != nil && !validDNSName(host):
			diags = append(diags, errorf(rr.AddressRange, "Invalid relay address",
				"the relay address %q does not start with a host name or IP address", rr.Address))
		default:
			r.Host, r.Port, addrOK = strings.ToLower(host), n, true
		}
	}
	if rr.TLS != nil && p.ok(rr.TLSRange) {
		switch t := RelayTLS(strings.ToLower(*rr.TLS)); t {
		case RelayImplicitTLS, RelayStartTLS:
			r.TLS = t
		case RelayNoTLS:
			r.TLS = t
			// The password and every message would cross the network in
			// clear; only a relay on this machine may be reached that way.
			if addrOK && !IsLoopbackHost(r.Host) {
				diags = append(diags, errorf(rr.TLSRange, "Cleartext relay",
					"the relay may use tls = \"none\" only on this machine (localhost, 127.0.0.1 or ::1), not %s", r.Host))
			}
		default:
			diags = append(diags, errorf(rr.TLSRange, "Invalid relay tls",
				"the relay tls %q is unknown; use implicit, starttls or none", *rr.TLS))
		}
	}
	if rr.Username != nil && p.ok(rr.UsernameRange) {
		r.Username = *rr.Username
	}
	switch {
	case rr.PasswordFile != nil && rr.PasswordEnv != nil:
		diags = append(diags, errorf(rr.PasswordEnvRange, "Two password sources",
			"the relay sets both password_file and password_env; choose one"))
	case rr.PasswordFile != nil && p.ok(rr.PasswordFileRange):
		path := p.resolvePath(*rr.PasswordFile)
		b, err := os.ReadFile(path)
		if err != nil {
			diags = append(diags, errorf(rr.PasswordFileRange, "Cannot read password_file",
				"the relay password_file %s cannot be read: %s", path, err.Error()))
		} else {
			// A trailing newline is the editor's, not the password's.
			r.Password = strings.TrimRight(string(b), "\r\n")
		}
	case rr.PasswordEnv != nil && p.ok(rr.PasswordEnvRange):
		v, ok := os.LookupEnv(*rr.PasswordEnv)
		if !ok {
			diags = append(diags, errorf(rr.PasswordEnvRange, "Unset password_env",
				"the environment variable %s named by password_env is not set", *rr.PasswordEnv))
		}
		r.Password = v
	}
	if r.Username == "" && r.Password != "" {
		diags = append(diags, warnf(rr.DefRange, "Password without username",
			"the relay has a password but no username, so it is never used"))
	}
	if r.Username != "" && rr.PasswordFile == nil && rr.PasswordEnv == nil {
		diags = append(diags, errorf(rr.UsernameRange, "Missing relay password",
			"the relay has a username but no password; set password_file or password_env"))
	}
	return r, diags
}

// IsLoopbackHost reports whether host (a name or an IP literal) is this
// machine: "localhost" or a loopback address. Nothing is resolved.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}
