package config

import (
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// sizeUnits maps a lower-cased unit to its multiplier. Decimal units are
// 1000-based and binary (IEC) units 1024-based, as their names promise.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"tb":  1000 * 1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseSize parses a byte count: a plain integer ("1048576") or a number with
// a unit, B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
// 1024), case-insensitive, e.g. "2GiB", "35MiB", "1.5 GB". The result is
// rounded down to whole bytes. Negative sizes are rejected.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("the size is empty; write a number of bytes or a number with a unit such as 2GiB")
	}
	if t[0] == '-' {
		return 0, fmt.Errorf("the size %q is negative", s)
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if !isDecimal(num) {
		return 0, fmt.Errorf("the size %q does not start with a number", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("the size %q has an unknown unit %q; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB", s, strings.TrimSpace(t[i:]))
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("the size %q does not start with a number", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("the size %q is too large", s)
	}
	return n.Int64(), nil
}

// isDecimal reports whether s is digits with at most one interior or
// trailing fraction part ("12", "1.5", "2."), the only number form sizes and
// durations accept.
func isDecimal(s string) bool {
	digits, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] >= '0' && s[i] <= '9':
			digits++
		case s[i] == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1 && s[0] != '.'
}

// durationUnits are Go's time.ParseDuration units plus "d" (24h), which
// mailpost accepts because retention-like settings read better in days.
var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond,
	"us": time.Microsecond,
	"µs": time.Microsecond, // U+00B5 micro sign
	"μs": time.Microsecond, // U+03BC Greek mu
	"ms": time.Millisecond,
	"s":  time.Second,
	"m":  time.Minute,
	"h":  time.Hour,
	"d":  24 * time.Hour,
}

// ParseDuration parses a duration in time.ParseDuration syntax ("90s",
// "1h30m", "1.5h") extended with a "d" unit of 24 hours ("30d", "1d12h").
// A bare "0" is allowed; negative durations are rejected.
func ParseDuration(s string) (time.Duration, error) {
	t := s
	if t == "" {
		return 0, fmt.Errorf("the duration is empty; write a number with a unit such as 30s, 10m or 1d")
	}
	if t[0] == '-' {
		return 0, fmt.Errorf("the duration %q is negative", s)
	}
	if t[0] == '+' {
		t = t[1:]
	}
	if t == "0" {
		return 0, nil
	}
	if t == "" {
		return 0, fmt.Errorf("the duration %q has no number", s)
	}
	var exact int64
	for t != "" {
		i := 0
		for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
			i++
		}
		num := t[:i]
		if !isDecimal(num) {
			return 0, fmt.Errorf("the duration %q is not a number followed by a unit (such as 30s, 10m, 1d12h)", s)
		}
		t = t[i:]
		j := 0
		for j < len(t) && !(t[j] >= '0' && t[j] <= '9' || t[j] == '.') {
			j++
		}
		unitName := t[:j]
		t = t[j:]
		unit, ok := durationUnits[unitName]
		if !ok {
			if unitName == "" {
				return 0, fmt.Errorf("the duration %q lacks a unit; use ns, us, ms, s, m, h or d", s)
			}
			return 0, fmt.Errorf("the duration %q has an unknown unit %q; use ns, us, ms, s, m, h or d", s, strings.TrimSpace(unitName))
		}
		whole, frac, _ := strings.Cut(num, ".")
		w, err := strconv.ParseInt(whole, 10, 64)
		if err != nil || w > math.MaxInt64/int64(unit) {
			return 0, fmt.Errorf("the duration %q is too long", s)
		}
		part := w * int64(unit)
		if frac != "" {
			f, _ := strconv.ParseFloat("0."+frac, 64)
			part += int64(f * float64(unit))
		}
		if exact > math.MaxInt64-part {
			return 0, fmt.Errorf("the duration %q is too long", s)
		}
		exact += part
	}
	return time.Duration(exact), nil
}

// validDNSName reports whether s is a DNS host name: labels of letters,
// digits and hyphens (RFC 1123 §2.1), not starting or ending with a hyphen,
// 1–63 octets each, 253 in all. A top-level label of only digits is refused
// so that IPv4 literals are not mistaken for names (RFC 3696 §2).
func validDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// validFQDN is validDNSName with at least two labels.
func validFQDN(s string) bool {
	return validDNSName(s) && strings.Contains(strings.TrimSuffix(s, "."), ".")
}

// normName lower-cases a DNS name and drops the root dot.
func normName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// parseBinding parses a listen address "IP:port". Host names are refused:
// mailpost never resolves names, so what it binds is what the file says.
func parseBinding(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		return ap, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("the binding %q has no port; write IP:port such as 0.0.0.0:995 or [::]:995", s)
	}
	host, port := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	addr, aerr := netip.ParseAddr(host)
	switch {
	case aerr != nil && strings.Contains(host, ":"):
		return netip.AddrPort{}, fmt.Errorf("the binding %q is not IP:port; an IPv6 address must be in brackets, such as [::]:995", s)
	case aerr != nil:
		return netip.AddrPort{}, fmt.Errorf("the binding %q does not start with an IP address; host names are not allowed because mailpost never resolves names (use 0.0.0.0 or [::] for all addresses)", s)
	case addr.Is6() && !strings.HasPrefix(s, "["):
		return netip.AddrPort{}, fmt.Errorf("the binding %q needs brackets around its IPv6 address, such as [::]:995", s)
	}
	if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
		return netip.AddrPort{}, fmt.Errorf("the binding %q has an invalid port %q; use 0 to 65535", s, port)
	}
	return netip.AddrPort{}, fmt.Errorf("the binding %q is not a valid IP:port", s)
}

// parseConnSetting parses the Exchange-style "FQDN:port:method" form.
func parseConnSetting(s string) (ConnSetting, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return ConnSetting{}, fmt.Errorf("the connection setting %q is not in the form FQDN:port:method (method ssl, tls or empty)", s)
	}
	host := parts[0]
	if !validFQDN(host) {
		return ConnSetting{}, fmt.Errorf("the connection setting %q does not start with a fully qualified domain name such as mail.example.com", s)
	}
	port, err := strconv.Atoi(parts[1])
	if err != nil || port < 1 || port > 65535 {
		return ConnSetting{}, fmt.Errorf("the connection setting %q has an invalid port %q; use 1 to 65535", s, parts[1])
	}
	m := MethodNone
	if len(parts) == 3 {
		switch strings.ToLower(parts[2]) {
		case "ssl":
			m = MethodSSL
		case "tls":
			m = MethodTLS
		case "":
		default:
			return ConnSetting{}, fmt.Errorf("the connection setting %q has an unknown method %q; use ssl, tls or leave it empty for unencrypted", s, parts[2])
		}
	}
	return ConnSetting{Host: normName(host), Port: port, Method: m}, nil
}

// parseAddress splits and checks an email address used as a mailbox or alias
// name. Quoted local parts are not supported: the address is an account name.
func parseAddress(s string) (local, domain string, err error) {
	at := strings.IndexByte(s, '@')
	if at < 0 || strings.Count(s, "@") != 1 {
		return "", "", fmt.Errorf("%q is not an email address of the form local@domain", s)
	}
	local, domain = s[:at], s[at+1:]
	if local == "" {
		return "", "", fmt.Errorf("the address %q has an empty local part", s)
	}
	// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
	if len(local) > 64 {
		return "", "", fmt.Errorf("the local part of %q is longer than 64 octets", s)
	}
	for _, r := range local {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", "", fmt.Errorf("the local part of %q contains a space or control character", s)
		}
	}
	if !validDNSName(domain) {
		return "", "", fmt.Errorf("the domain of %q is not a valid DNS name", s)
	}
	return strings.ToLower(local), normName(domain), nil
}
