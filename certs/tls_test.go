package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tlsServer serves TLS on a loopback address with cfg. Each connection gets
// the handshake, then "ok\n", then is closed. Handshake errors are sent on
// the returned channel (buffered, never blocks the server).
func tlsServer(t *testing.T, network, addr string, cfg *tls.Config) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	errs := make(chan error, 16)
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed by cleanup
			}
			tc := tls.Server(c, cfg)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				select {
				case errs <- err:
				default:
				}
				c.Close()
				continue
			}
			io.WriteString(tc, "ok\n")
			tc.Close()
		}
	}()
	return ln.Addr().String(), errs
}

// dial completes a handshake and reads the server's line, returning the
// server's leaf certificate.
func dial(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	if string(line) != "ok\n" {
		return nil, errors.New("unexpected server reply " + string(line))
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

func trust(certs ...*tls.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Leaf)
	}
	return p
}

func TestHandshakePicksBySNI(t *testing.T) {
	mail := static(t, "mail", 90*24*time.Hour, "mail.example.com")
	wild := static(t, "wild", 90*24*time.Hour, "*.example.org")
	p, err := Build([]Source{mail, wild, {Name: "local", SelfSigned: true, Names: []string{"localhost", "127.0.0.1", "::1"}}}, newMemKV(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	local := p.ForName("localhost")
	roots := trust(mail.Static, wild.Static, local)
	cfg := ServerTLSConfig(func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return p.Get(h, "localhost") })
	addr, _ := tlsServer(t, "tcp", "127.0.0.1:0", cfg)

	// Real clients verify against the name they asked for, so a successful
	// verified handshake proves the right certificate was chosen; the
	// fingerprint check makes it explicit.
	for _, tc := range []struct {
		sni  string
		want *tls.Certificate
	}{
		{"mail.example.com", mail.Static},
		{"pop.example.org", wild.Static},
		{"localhost", local},
	} {
		// t0-based static certs: verify at t0, not the wall clock.
		leaf, err := dial(t, addr, &tls.Config{ServerName: tc.sni, RootCAs: roots, Time: func() time.Time {
			if tc.want == local {
				return time.Now()
			}
			return t0
		}})
		if err != nil {
			t.Errorf("SNI %s: %v", tc.sni, err)
			continue
		}
		if !bytes.Equal(leaf.Raw, tc.want.Leaf.Raw) {
			t.Errorf("SNI %s: got certificate for %v", tc.sni, leaf.DNSNames)
		}
	}

	// Connecting by IP sends no SNI (RFC 6066 §3): the fallback name's
	// certificate is served, and it verifies for the IP because the
	// self-signed certificate carries it as a SAN.
	leaf, err := dial(t, addr, &tls.Config{RootCAs: roots}) // ServerName defaults to "127.0.0.1"
	if err != nil {
		t.Fatalf("no SNI: %v", err)
	}
	if !bytes.Equal(leaf.Raw, local.Leaf.Raw) {
		t.Errorf("no SNI: got certificate for %v, want the fallback", leaf.DNSNames)
	}
}

func TestHandshakeIPv6(t *testing.T) {
	c, err := SelfSigned([]string{"::1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Build([]Source{{Name: "v6", Static: &c}}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := tlsServer(t, "tcp", "[::1]:0", ServerTLSConfig(func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return p.Get(h, "::1") }))
	if _, err := dial(t, addr, &tls.Config{RootCAs: trust(&c)}); err != nil {
		t.Fatalf("IPv6 handshake: %v", err)
	}
}

func TestOldTLSRefused(t *testing.T) {
	c, err := SelfSigned([]string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerTLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &c, nil })
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion = %x", cfg.MinVersion)
	}
	addr, serverErrs := tlsServer(t, "tcp", "127.0.0.1:0", cfg)

	_, err = dial(t, addr, &tls.Config{RootCAs: trust(&c), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		t.Fatal("TLS 1.1 client completed a handshake")
	}
	t.Logf("client error: %v", err)
	if !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("client error = %v, want a protocol version alert", err)
	}
	select {
	case serr := <-serverErrs:
		t.Logf("server error: %v", serr)
		if !strings.Contains(serr.Error(), "version") {
			t.Errorf("server handshake error = %v, want a version mismatch", serr)
		}
	case <-time.After(10 * time.Second):
		t.Error("server reported no handshake error")
	}
	// The same listener still serves TLS 1.2.
	if _, err := dial(t, addr, &tls.Config{RootCAs: trust(&c), MaxVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("TLS 1.2 client: %v", err)
	}
}

func TestServerTLSConfigSwap(t *testing.T) {
	now := time.Now()
	var cur atomic.Pointer[Pool]
	build := func() (*Pool, *tls.Certificate) {
		t.Helper()
		// A nil store: each Build makes a new self-signed certificate, as a
		// reload with a replaced static file would bring a new one.
		p, err := Build([]Source{{Name: "mail", SelfSigned: true, Names: []string{"localhost", "127.0.0.1"}}}, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		return p, p.ForName("localhost")
	}
	p1, c1 := build()
	p2, c2 := build()
	cur.Store(p1)
	cfg := ServerTLSConfig(func(h *tls.ClientHelloInfo) (*tls.Certificate, error) { return cur.Load().Get(h, "localhost") })
	addr, _ := tlsServer(t, "tcp", "127.0.0.1:0", cfg)
	client := &tls.Config{ServerName: "localhost", RootCAs: trust(c1, c2)}

	leaf, err := dial(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Raw, c1.Leaf.Raw) {
		t.Fatal("first handshake did not use pool 1")
	}
	cur.Store(p2) // no listener touched
	leaf, err = dial(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Raw, c2.Leaf.Raw) {
		t.Error("handshake after the swap still used the old certificate")
	}
}
