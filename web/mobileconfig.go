package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"mailpost/config"
)

// An Apple configuration profile with one com.apple.mail.managed payload
// (Apple's "Configuration Profile Reference", Mail payload) for a POP
// account. It is unsigned: iOS and macOS show it as "Not Verified" but
// install it. It carries no password; the device asks for it.

// plist is a tiny property-list writer: just the types a profile uses.
type plist struct{ buf bytes.Buffer }

func (p *plist) raw(s string) { p.buf.WriteString(s) }

func (p *plist) key(k string) {
	p.raw("<key>")
	xml.EscapeText(&p.buf, []byte(k))
	p.raw("</key>")
}

func (p *plist) str(k, v string) {
	p.key(k)
	p.raw("<string>")
	xml.EscapeText(&p.buf, []byte(v))
	p.raw("</string>\n")
}

func (p *plist) integer(k string, v int) {
	p.key(k)
	p.raw("<integer>" + strconv.Itoa(v) + "</integer>\n")
}

func (p *plist) boolean(k string, v bool) {
	p.key(k)
	if v {
		p.raw("<true/>\n")
	} else {
		p.raw("<false/>\n")
	}
}

// profileUUID derives a stable UUID (version 5 layout) from its parts, so
// that downloading the profile again replaces the installed one instead
// of adding a second account.
func profileUUID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x50 // RFC 9562 §5.5: version 5
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 §4.1: variant 10
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// reverseDNS turns mail.example.com into com.example.mail for identifiers.
func reverseDNS(host string) string {
	labels := strings.Split(strings.ToLower(strings.Trim(host, ".")), ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}

// MobileConfig renders the profile for address with the first (best)
// POP3 and SMTP endpoint of e. ok is false when either service is missing.
func MobileConfig(hostname, address string, e Endpoints) (profile []byte, ok bool) {
	if len(e.POP3) == 0 || len(e.SMTP) == 0 {
		return nil, false
	}
	in, out := e.POP3[0], e.SMTP[0]
	sum := sha256.Sum256([]byte(strings.ToLower(address)))
	ident := reverseDNS(hostname) + ".mailpost." + hex.EncodeToString(sum[:8])

	var p plist
	p.raw(xml.Header)
	p.raw(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	p.raw(`<plist version="1.0">` + "\n<dict>\n")
	p.key("PayloadContent")
	p.raw("\n<array>\n<dict>\n")
	p.str("EmailAccountDescription", address)
	p.str("EmailAccountName", address)
	p.str("EmailAccountType", "EmailTypePOP")
	p.str("EmailAddress", address)
	p.str("IncomingMailServerAuthentication", "EmailAuthPassword")
	p.str("IncomingMailServerHostName", in.Host)
	p.integer("IncomingMailServerPortNumber", in.Port)
	// UseSSL true is implicit TLS. The payload has no STARTTLS switch:
	// with false, Mail upgrades the connection when the server offers
	// STLS/STARTTLS (mailpost always does, and refuses a password
	// before it unless plain_text_login is set).
	p.boolean("IncomingMailServerUseSSL", in.Method == config.MethodSSL)
	p.str("IncomingMailServerUsername", address)
	p.str("OutgoingMailServerAuthentication", "EmailAuthPassword")
	p.str("OutgoingMailServerHostName", out.Host)
	p.integer("OutgoingMailServerPortNumber", out.Port)
	p.boolean("OutgoingMailServerUseSSL", out.Method == config.MethodSSL)
	p.str("OutgoingMailServerUsername", address)
	p.boolean("OutgoingPasswordSameAsIncomingPassword", true)
	p.str("PayloadDescription", "POP3 and SMTP settings for "+address)
	p.str("PayloadDisplayName", address)
	p.str("PayloadIdentifier", ident+".account")
	p.str("PayloadType", "com.apple.mail.managed")
	p.str("PayloadUUID", profileUUID(hostname, address, "account"))
	p.integer("PayloadVersion", 1)
	p.boolean("PreventAppSheet", false)
	p.boolean("PreventMove", false)
	p.boolean("SMIMEEnabled", false)
	p.raw("</dict>\n</array>\n")
	p.str("PayloadDescription", "Mail account for "+address+" on "+hostname)
	p.str("PayloadDisplayName", "Mail ("+address+")")
	p.str("PayloadIdentifier", ident)
	p.boolean("PayloadRemovalDisallowed", false)
	p.str("PayloadType", "Configuration")
	p.str("PayloadUUID", profileUUID(hostname, address, "profile"))
	p.integer("PayloadVersion", 1)
	p.raw("</dict>\n</plist>\n")
	return p.buf.Bytes(), true
}

// mobileConfig serves the profile for ?email= (any address of a
// configured domain: the profile holds no secret and is the same for
// every user but the address) or, without it, for the logged-in user.
func (h *Handler) mobileConfig(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	cfg := h.b.Config()
	addr := strings.TrimSpace(r.URL.Query().Get("email"))
	if addr == "" {
		if s := h.session(r); s != nil {
			addr = s.address
		}
	}
	if addr == "" {
		http.Error(w, "400 add ?email=you@domain or log in at "+SettingsPath, http.StatusBadRequest)
		return
	}
	if !validAddress(cfg, addr) {
		http.Error(w, "404 not a mail domain served here", http.StatusNotFound)
		return
	}
	profile, ok := MobileConfig(cfg.Hostname, addr, EndpointsFor(cfg, remoteAddr(r)))
	if !ok {
		http.Error(w, "404 POP3 or submission is not offered", http.StatusNotFound)
		return
	}
	noStore(w)
	w.Header().Set("Content-Type", "application/x-apple-aspen-config")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.mobileconfig"`, safeFilename(addr)))
	w.Header().Set("Content-Length", strconv.Itoa(len(profile)))
	w.Write(profile)
}

// safeFilename keeps letters, digits, '.', '-' and '_' and turns '@' into '-at-'.
func safeFilename(s string) string {
	s = strings.ReplaceAll(strings.ToLower(s), "@", "-at-")
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}
