package certs

import (
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"
)

// fakeACME hands out whatever certificate the test stores in it.
type fakeACME struct {
	cert atomic.Pointer[tls.Certificate]
}

func (f *fakeACME) Certificate(name string) *tls.Certificate { return f.cert.Load() }
func (f *fakeACME) State(name string) ACMEState {
	if f.cert.Load() == nil {
		return ACMEState{Pending: "waiting for the CA", LastError: "connection refused"}
	}
	return ACMEState{NextRenewal: time.Unix(1e9, 0)}
}

// TestACMEStandInThenIssued shows the pool serving a stand-in while the
// provider has nothing, and the issued certificate as soon as it has one,
// without building a new pool.
func TestACMEStandInThenIssued(t *testing.T) {
	now := time.Now()
	f := &fakeACME{}
	pool, err := Build([]Source{{Name: "public", ACME: true, Provider: f, Names: []string{"mail.example.com", "Pop.example.com"}}}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "pop.example.com", SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}, SupportedVersions: []uint16{tls.VersionTLS13}}
	stand, err := pool.Get(hello, "")
	if err != nil {
		t.Fatal(err)
	}
	if stand.Leaf.DNSNames[0] != "pop.example.com" || stand.Leaf.Issuer.String() != stand.Leaf.Subject.String() {
		t.Errorf("stand-in = %v issued by %v, want self-signed for pop.example.com", stand.Leaf.DNSNames, stand.Leaf.Issuer)
	}
	infos := pool.Infos()
	if len(infos) != 2 || infos[1].Source != KindACME || infos[1].Pending != "waiting for the CA" || infos[1].LastError != "connection refused" || infos[1].SHA256 != "" {
		t.Errorf("pending infos = %+v", infos)
	}

	issued, err := SelfSigned([]string{"pop.example.com"}, now, 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.cert.Store(&issued)
	got, err := pool.Get(hello, "")
	if err != nil {
		t.Fatal(err)
	}
	if got != &issued {
		t.Error("the issued certificate is not served")
	}
	// A client without SNI gets the fallback name's certificate.
	if got, _ := pool.Get(&tls.ClientHelloInfo{}, "pop.example.com"); got != &issued {
		t.Error("no-SNI fallback does not reach the issued certificate")
	}
	in := pool.Infos()[1]
	if in.Pending != "" || in.SHA256 != Fingerprint(issued.Leaf) || !in.NotAfter.Equal(issued.Leaf.NotAfter) || !in.NextRenewal.Equal(time.Unix(1e9, 0)) {
		t.Errorf("issued info = %+v", in)
	}
}

// TestACMEWithoutProvider is the offline case (mailpost settings while the
// server is stopped): stand-ins, and a pending reason that says why.
func TestACMEWithoutProvider(t *testing.T) {
	pool, err := Build([]Source{{Name: "public", ACME: true, Names: []string{"mail.example.com"}}}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c := pool.ForName("mail.example.com"); c == nil {
		t.Fatal("no stand-in")
	}
	if in := pool.Infos()[0]; in.Pending != "the server is not running" {
		t.Errorf("info = %+v", in)
	}
}
