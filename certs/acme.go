package certs

import (
	"crypto/tls"
	"time"
)

// ACMEProvider is what the pool asks for an ACME certificate at each
// lookup, so that a renewal reaches the next handshake without a new pool.
// The acme package implements it.
type ACMEProvider interface {
	// Certificate returns the issued certificate for name (Leaf set), or
	// nil while there is none.
	Certificate(name string) *tls.Certificate
	// State reports issuance progress for name.
	State(name string) ACMEState
}

// ACMEState is the progress of one ACME name, for status pages.
type ACMEState struct {
	Pending     string // why there is no certificate yet; "" once issued
	LastError   string // the CA's own words about the last failure
	NextRenewal time.Time
}

// standInValid is the life of a stand-in; it is regenerated at each Build,
// so it only has to outlast the wait for the CA.
const standInValid = 7 * 24 * time.Hour

// acmeEntries makes one entry per ACME name (autocert obtains one
// certificate per name), each with a self-signed stand-in for the time
// before the CA has issued one.
func acmeEntries(s Source, now time.Time) ([]*entry, error) {
	names, err := normalizeNames(s.Names)
	if err != nil {
		return nil, err
	}
	var out []*entry
	for _, n := range names {
		stand, err := SelfSigned([]string{n}, now, standInValid)
		if err != nil {
			return nil, err
		}
		out = append(out, &entry{name: s.Name, kind: KindACME, cert: &stand, names: []string{n}, acme: s.Provider})
	}
	return out, nil
}

// current returns the certificate an entry serves now and its expiry. A
// stand-in reports a zero expiry, so any real certificate for the same
// name wins over it.
func (e *entry) current() (*tls.Certificate, time.Time) {
	if e.kind != KindACME {
		return e.cert, e.expiry
	}
	if e.acme != nil {
		if c := e.acme.Certificate(e.names[0]); c != nil && c.Leaf != nil {
			return c, c.Leaf.NotAfter
		}
	}
	return e.cert, time.Time{}
}

func (e *entry) acmeInfo() Info {
	st := ACMEState{Pending: "the server is not running"}
	if e.acme != nil {
		st = e.acme.State(e.names[0])
	}
	info := Info{Name: e.name, Source: KindACME, Names: []string{e.names[0]},
		Pending: st.Pending, LastError: st.LastError, NextRenewal: st.NextRenewal}
	if c, expiry := e.current(); !expiry.IsZero() {
		info.Issuer, info.NotAfter, info.SHA256 = c.Leaf.Issuer.String(), expiry, Fingerprint(c.Leaf)
		info.Pending = ""
	} else {
		if info.Pending == "" {
			info.Pending = "no certificate issued yet"
		}
		info.Issuer, info.NotAfter = e.cert.Leaf.Issuer.String(), e.cert.Leaf.NotAfter
	}
	return info
}
