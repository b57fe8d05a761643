package outbound

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"mailpost/storage"
)

// DKIMNamespace is the store blob namespace that holds signing keys, one
// per selector and algorithm (PKCS #8 DER).
const DKIMNamespace = "dkim"

type dkimKey struct {
	signer crypto.Signer
}

func blobKey(k *DKIMSettings) string { return k.Selector + "." + k.Algorithm }

// LoadOrCreateKey returns the signing key for k, generating and storing it
// the first time: ed25519 (RFC 8463) or RSA-2048 (RFC 8301 §3.2 asks for at
// least 1024 bits, 2048 being the common choice).
func LoadOrCreateKey(store *storage.Store, k *DKIMSettings) (crypto.Signer, error) {
	name := blobKey(k)
	der, err := store.GetBlob(DKIMNamespace, name)
	if err != nil {
		return nil, err
	}
	if der != nil {
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("dkim key %s: %w", name, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("dkim key %s: %T is not a signing key", name, key)
		}
		return s, nil
	}
	var s crypto.Signer
	switch k.Algorithm {
	case "rsa":
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519", "":
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		err = fmt.Errorf("unknown algorithm %q", k.Algorithm)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", name, err)
	}
	der, err = x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", name, err)
	}
	if err := store.PutBlob(DKIMNamespace, name, der); err != nil {
		return nil, err
	}
	return s, nil
}

// key returns the cached signer for k.
func (r *Runner) key(k *DKIMSettings) (crypto.Signer, error) {
	r.keyMu.Lock()
	defer r.keyMu.Unlock()
	name := blobKey(k)
	if c := r.keys[name]; c != nil {
		return c.signer, nil
	}
	s, err := LoadOrCreateKey(r.store, k)
	if err != nil {
		return nil, err
	}
	r.keys[name] = &dkimKey{signer: s}
	return s, nil
}

// DKIMRecord is the TXT record value that publishes pub at
// SELECTOR._domainkey.DOMAIN (RFC 6376 §3.6.1).
func DKIMRecord(pub crypto.PublicKey) (string, error) {
	switch p := pub.(type) {
	case ed25519.PublicKey:
		// RFC 8463 §4.2: the raw 32-octet key.
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(p), nil
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	}
	return "", fmt.Errorf("dkim: unsupported public key %T", pub)
}

// signedHeaders are the fields RFC 6376 §5.4.1 recommends signing.
var signedHeaders = []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

// sign returns the DKIM-Signature field (with its CRLF) for queue entry q,
// or "" when there is nothing to sign with or the From domain is not ours.
// The body is read twice (once here, once to send) rather than held in
// memory.
func (r *Runner) sign(st *Settings, q storage.QueuedMessage) (string, error) {
	if st.DKIM == nil {
		return "", nil
	}
	domain, err := r.fromDomain(q.ID)
	if err != nil {
		return "", err
	}
	if domain == "" || !slices.Contains(st.Domains, domain) {
		d := domainOf(q.From)
		if !slices.Contains(st.Domains, d) {
			return "", nil
		}
		domain = d
	}
	key, err := r.key(st.DKIM)
	if err != nil {
		return "", err
	}
	signer, err := dkim.NewSigner(&dkim.SignOptions{
		Domain: domain, Selector: st.DKIM.Selector, Signer: key, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             signedHeaders,
	})
	if err != nil {
		return "", err
	}
	body, err := r.store.OpenQueued(q.ID)
	if err != nil {
		signer.Close()
		return "", err
	}
	defer body.Close()
	if _, err := io.Copy(signer, body); err != nil {
		signer.Close()
		return "", err
	}
	if err := signer.Close(); err != nil {
		return "", err
	}
	return signer.Signature(), nil
}

// fromDomain is the domain of the message's From header (RFC 5322
// §3.6.2), lower case, or "" when there is none to parse.
func (r *Runner) fromDomain(id uint64) (string, error) {
	body, err := r.store.OpenQueued(id)
	if err != nil {
		return "", err
	}
	defer body.Close()
	m, err := mail.ReadMessage(io.LimitReader(body, 256<<10))
	if err != nil {
		return "", nil
	}
	addrs, err := m.Header.AddressList("From")
	if err != nil || len(addrs) == 0 {
		return "", nil
	}
	return domainOf(strings.ToLower(addrs[0].Address)), nil
}
