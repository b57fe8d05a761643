package smtpauth

import "io"

// bareLFUnstuffer undoes SMTP dot-stuffing on lines that follow a bare LF.
//
// go-smtp ends DATA only at CRLF.CRLF and un-stuffs dots only after CRLF,
// which keeps SMTP smuggling out (RFC 5321 §2.3.8 forbids bare LF). But real
// clients do send bare LF line ends (python's smtplib with a bytes message,
// some scanners), and they dot-stuff after each LF as if it were a line end.
// Postfix's default (smtpd_forbid_bare_newline = normal) treats such a line
// as a line; so do we, for the stuffing only: the end of DATA still needs
// CRLF.CRLF, and storage turns every line end into CRLF. Without this, the
// line ".x" arrives as "..x".
type bareLFUnstuffer struct {
	r       io.Reader
	afterLF bool // the previous octet was a LF not preceded by CR
	prevCR  bool // the previous octet was CR
}

func (u *bareLFUnstuffer) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	out := p[:0]
	for _, c := range p[:n] {
		if u.afterLF && c == '.' {
			// A stuffed dot at the start of a bare-LF line: drop it.
			u.afterLF = false
			u.prevCR = false
			continue
		}
		u.afterLF = c == '\n' && !u.prevCR
		u.prevCR = c == '\r'
		out = append(out, c)
	}
	return len(out), err
}
