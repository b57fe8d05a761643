package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The raw* structs mirror the file one to one. gohcl fills them, with the
// source range of every attribute, and validate turns them into Config.
// Optional scalars are pointers so "absent" differs from a zero value.
type rawFile struct {
	Hostname      string    `hcl:"hostname"`
	HostnameRange hcl.Range `hcl:"hostname,attr_range"`
	DataDir       *string   `hcl:"data_dir,optional"`
	DataDirRange  hcl.Range `hcl:"data_dir,attr_range"`
	Domains       []string  `hcl:"domains,optional"`
	DomainsRange  hcl.Range `hcl:"domains,attr_range"`

	Certificates []*rawCertificate `hcl:"certificate,block"`
	// Service blocks are slices so a second block is reported by us, after
	// both are decoded.
	POP3       []*rawPOP3       `hcl:"pop3,block"`
	Submission []*rawSubmission `hcl:"submission,block"`
	Inbound    []*rawInbound    `hcl:"inbound,block"`
	HTTP       []*rawHTTP       `hcl:"http,block"`
	Admin      []*rawAdmin      `hcl:"admin,block"`
	Outbound   []*rawOutbound   `hcl:"outbound,block"`
	Mailboxes  []*rawMailbox    `hcl:"mailbox,block"`

	LoginLimits []*rawLoginLimits `hcl:"login_limits,block"`
}

type rawCertificate struct {
	Name      string    `hcl:"name,label"`
	NameRange hcl.Range `hcl:"name,label_range"`
	DefRange  hcl.Range `hcl:",def_range"`

	CertFile        *string    `hcl:"cert_file,optional"`
	CertFileRange   hcl.Range  `hcl:"cert_file,attr_range"`
	KeyFile         *string    `hcl:"key_file,optional"`
	KeyFileRange    hcl.Range  `hcl:"key_file,attr_range"`
	SelfSigned      *bool      `hcl:"self_signed,optional"`
	SelfSignedRange hcl.Range  `hcl:"self_signed,attr_range"`
	Names           []string   `hcl:"names,optional"`
	NamesRange      hcl.Range  `hcl:"names,attr_range"`
	ACME            []*rawACME `hcl:"acme,block"`
}

type rawPOP3 struct {
	DefRange hcl.Range `hcl:",def_range"`

	X509CertificateName      *string   `hcl:"x509_certificate_name,optional"`
	X509CertificateNameRange hcl.Range `hcl:"x509_certificate_name,attr_range"`
	SSLBindings              []string  `hcl:"ssl_bindings,optional"`
	SSLBindingsRange         hcl.Range `hcl:"ssl_bindings,attr_range"`
	TLSBindings              []string  `hcl:"unencrypted_or_tls_bindings,optional"`
	TLSBindingsRange         hcl.Range `hcl:"unencrypted_or_tls_bindings,attr_range"`
	External                 []string  `hcl:"external_connection_settings,optional"`
	ExternalRange            hcl.Range `hcl:"external_connection_settings,attr_range"`
	Internal                 []string  `hcl:"internal_connection_settings,optional"`
	InternalRange            hcl.Range `hcl:"internal_connection_settings,attr_range"`
	LoginType                *string   `hcl:"login_type,optional"`
	LoginTypeRange           hcl.Range `hcl:"login_type,attr_range"`
	PreAuthTimeout           *string   `hcl:"pre_authenticated_timeout,optional"`
	PreAuthTimeoutRange      hcl.Range `hcl:"pre_authenticated_timeout,attr_range"`
	AuthTimeout              *string   `hcl:"authenticated_timeout,optional"`
	AuthTimeoutRange         hcl.Range `hcl:"authenticated_timeout,attr_range"`
	MaxConnections           *int      `hcl:"max_connections,optional"`
	MaxConnectionsRange      hcl.Range `hcl:"max_connections,attr_range"`
	MaxConnectionsPerIP      *int      `hcl:"max_connections_per_ip,optional"`
	MaxConnectionsPerIPRange hcl.Range `hcl:"max_connections_per_ip,attr_range"`
	MaxCommandSize           *int      `hcl:"max_command_size,optional"`
	MaxCommandSizeRange      hcl.Range `hcl:"max_command_size,attr_range"`
	Banner                   *string   `hcl:"banner,optional"`
	BannerRange              hcl.Range `hcl:"banner,attr_range"`
}

type rawSubmission struct {
	DefRange hcl.Range `hcl:",def_range"`

	X509CertificateName      *string   `hcl:"x509_certificate_name,optional"`
	X509CertificateNameRange hcl.Range `hcl:"x509_certificate_name,attr_range"`
	SSLBindings              []string  `hcl:"ssl_bindings,optional"`
	SSLBindingsRange         hcl.Range `hcl:"ssl_bindings,attr_range"`
	TLSBindings              []string  `hcl:"unencrypted_or_tls_bindings,optional"`
	TLSBindingsRange         hcl.Range `hcl:"unencrypted_or_tls_bindings,attr_range"`
	External                 []string  `hcl:"external_connection_settings,optional"`
	ExternalRange            hcl.Range `hcl:"external_connection_settings,attr_range"`
	Internal                 []string  `hcl:"internal_connection_settings,optional"`
	InternalRange            hcl.Range `hcl:"internal_connection_settings,attr_range"`
	MaxMessageSize           *string   `hcl:"max_message_size,optional"`
	MaxMessageSizeRange      hcl.Range `hcl:"max_message_size,attr_range"`
	MaxRecipients            *int      `hcl:"max_recipients,optional"`
	MaxRecipientsRange       hcl.Range `hcl:"max_recipients,attr_range"`
	Timeout                  *string   `hcl:"timeout,optional"`
	TimeoutRange             hcl.Range `hcl:"timeout,attr_range"`
	MaxConnections           *int      `hcl:"max_connections,optional"`
	MaxConnectionsRange      hcl.Range `hcl:"max_connections,attr_range"`
	MaxConnectionsPerIP      *int      `hcl:"max_connections_per_ip,optional"`
	MaxConnectionsPerIPRange hcl.Range `hcl:"max_connections_per_ip,attr_range"`
}

type rawInbound struct {
	DefRange hcl.Range `hcl:",def_range"`

	Bindings                 []string  `hcl:"bindings,optional"`
	BindingsRange            hcl.Range `hcl:"bindings,attr_range"`
	X509CertificateName      *string   `hcl:"x509_certificate_name,optional"`
	X509CertificateNameRange hcl.Range `hcl:"x509_certificate_name,attr_range"`
	MaxMessageSize           *string   `hcl:"max_message_size,optional"`
	MaxMessageSizeRange      hcl.Range `hcl:"max_message_size,attr_range"`
	MaxRecipients            *int      `hcl:"max_recipients,optional"`
	MaxRecipientsRange       hcl.Range `hcl:"max_recipients,attr_range"`
	Timeout                  *string   `hcl:"timeout,optional"`
	TimeoutRange             hcl.Range `hcl:"timeout,attr_range"`
	MaxConnections           *int      `hcl:"max_connections,optional"`
	MaxConnectionsRange      hcl.Range `hcl:"max_connections,attr_range"`
	MaxConnectionsPerIP      *int      `hcl:"max_connections_per_ip,optional"`
	MaxConnectionsPerIPRange hcl.Range `hcl:"max_connections_per_ip,attr_range"`
	RateLimitPerIP           *int      `hcl:"rate_limit_per_ip,optional"`
	RateLimitPerIPRange      hcl.Range `hcl:"rate_limit_per_ip,attr_range"`
}

type rawMailbox struct {
	Address      string    `hcl:"address,label"`
	AddressRange hcl.Range `hcl:"address,label_range"`
	DefRange     hcl.Range `hcl:",def_range"`

	PasswordHash      *string   `hcl:"password_hash,optional"`
	PasswordHashRange hcl.Range `hcl:"password_hash,attr_range"`
	POP3              *bool     `hcl:"pop3,optional"`
	Submission        *bool     `hcl:"submission,optional"`
	Aliases           []string  `hcl:"aliases,optional"`
	AliasesRange      hcl.Range `hcl:"aliases,attr_range"`
	Quota             *string   `hcl:"quota,optional"`
	QuotaRange        hcl.Range `hcl:"quota,attr_range"`
	SendAs            []string  `hcl:"send_as,optional"`
	SendAsRange       hcl.Range `hcl:"send_as,attr_range"`
	Retention         *string   `hcl:"retention,optional"`
	RetentionRange    hcl.Range `hcl:"retention,attr_range"`
	SortOrder         *string   `hcl:"sort_order,optional"`
	SortOrderRange    hcl.Range `hcl:"sort_order,attr_range"`
	NewLoginNotice    *bool     `hcl:"new_login_notice,optional"`

	Devices []*rawDevice `hcl:"device,block"`
}

// Load reads and validates the file at path. cfg is non-nil iff diags has no
// errors; diags may hold warnings either way.
func Load(path string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		why := "it could not be read"
		var pe *fs.PathError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			why = "it does not exist"
		case errors.Is(err, fs.ErrPermission):
			why = "permission was denied"
		case errors.As(err, &pe):
			why = "it could not be read (" + pe.Err.Error() + ")"
		}
		return nil, hcl.Diagnostics{errorf(hcl.Range{Filename: path}, "Cannot read configuration",
			"cannot read the configuration file %s: %s", path, why)}
	}
	return Parse(path, src)
}

// Parse validates src as the contents of filename. Relative paths in the
// file are resolved against the directory of filename.
func Parse(filename string, src []byte) (*Config, hcl.Diagnostics) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() || file == nil {
		return nil, finish(diags)
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return nil, finish(diags)
	}
	var raw rawFile
	// A nil EvalContext: variables and functions are reported by HCL as
	// "not allowed here" instead of being evaluated.
	decDiags := gohcl.DecodeBody(body, nil, &raw)
	p := &parser{filename: filename, body: body, broken: map[hcl.Pos]bool{}}
	diags = append(diags, p.polish(decDiags)...)
	cfg, vdiags := p.validate(&raw)
	diags = append(diags, vdiags...)
	diags = finish(diags)
	if diags.HasErrors() {
		return nil, diags
	}
	cfg.Filename = filename
	cfg.Source = src
	return cfg, diags
}

// parser carries what validation needs besides the decoded values: the
// syntax tree (for list element positions) and the attributes gohcl could
// not decode, whose zero values must not cause follow-on diagnostics.
type parser struct {
	filename string
	body     *hclsyntax.Body
	broken   map[hcl.Pos]bool // start of attribute ranges that failed to decode
	attrs    []*hclsyntax.Attribute
	byStart  map[hcl.Pos]*hclsyntax.Attribute

	acmeDomains map[string]string // ACME domain → certificate obtaining it
	acmeUses    []acmeUse         // challenges the acme blocks ask for
}

// finish orders diagnostics by position so output follows the file (gohcl
// visits attributes in map order) and drops exact duplicates.
func finish(diags hcl.Diagnostics) hcl.Diagnostics {
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil && b.Subject == nil:
			return 0
		case a.Subject == nil:
			return -1
		case b.Subject == nil:
			return 1
		}
		if c := strings.Compare(a.Subject.Filename, b.Subject.Filename); c != 0 {
			return c
		}
		return a.Subject.Start.Byte - b.Subject.Start.Byte
	})
	out := diags[:0]
	for i, d := range diags {
		if i > 0 {
			prev := out[len(out)-1]
			if prev.Severity == d.Severity && prev.Detail == d.Detail && prev.Summary == d.Summary &&
				(prev.Subject == nil) == (d.Subject == nil) && (d.Subject == nil || *prev.Subject == *d.Subject) {
				continue
			}
		}
		out = append(out, d)
	}
	return out
}

// polish rewrites gohcl's type-conversion diagnostics into sentences naming
// the attribute, drops the "must be known" echo that follows a variable or
// function diagnostic, and remembers which attributes failed.
func (p *parser) polish(diags hcl.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, d := range diags {
		if d.Subject != nil && d.Severity == hcl.DiagError {
			if a := p.attrAt(*d.Subject); a != nil {
				p.broken[a.SrcRange.Start] = true
				if d.Summary == "Unsuitable value type" {
					if strings.Contains(d.Detail, "must be known") {
						continue // the variable/function diagnostic already says why
					}
					why := strings.TrimPrefix(d.Detail, "Unsuitable value: ")
					why = strings.TrimSuffix(why, ".")
					d.Detail = sentence("the value of " + a.Name + " has the wrong type: " + why)
				}
			}
		}
		if d.Subject != nil {
			d.Detail = labelDetail(d)
		}
		out = append(out, d)
	}
	return out
}

// HCL's label-count messages say "must have 1 labels (name)"; these say
// it in plain words.
var (
	missingLabels = regexp.MustCompile(`^All (\S+) blocks must have (\d+) labels \((.*)\)\.$`)
	extraLabels   = regexp.MustCompile(`^Only (\d+) labels \((.*)\) are expected for (\S+) blocks\.$`)
)

func labelDetail(d *hcl.Diagnostic) string {
	if m := missingLabels.FindStringSubmatch(d.Detail); m != nil && m[2] == "1" {
		return fmt.Sprintf("Every %s block needs one label, its %s, as in %s \"...\" { }.", m[1], m[3], m[1])
	}
	if m := extraLabels.FindStringSubmatch(d.Detail); m != nil && m[1] == "1" {
		return fmt.Sprintf("A %s block takes only one label, its %s.", m[3], m[2])
	}
	return d.Detail
}

// attributes lists every attribute in the file once, in source order.
func (p *parser) attributes() []*hclsyntax.Attribute {
	if p.attrs != nil {
		return p.attrs
	}
	p.attrs = []*hclsyntax.Attribute{}
	var walk func(b *hclsyntax.Body)
	walk = func(b *hclsyntax.Body) {
		for _, a := range b.Attributes {
			p.attrs = append(p.attrs, a)
		}
		for _, blk := range b.Blocks {
			if blk.Body != nil {
				walk(blk.Body)
			}
		}
	}
	walk(p.body)
	p.byStart = make(map[hcl.Pos]*hclsyntax.Attribute, len(p.attrs))
	for _, a := range p.attrs {
		p.byStart[a.SrcRange.Start] = a
	}
	return p.attrs
}

// attrAt finds the attribute whose value contains r. Only the value counts:
// a "missing argument" diagnostic sits at the start of its body, which may
// be where another attribute's name begins.
func (p *parser) attrAt(r hcl.Range) *hclsyntax.Attribute {
	for _, a := range p.attributes() {
		if a.Expr.Range().ContainsOffset(r.Start.Byte) {
			return a
		}
	}
	return nil
}

// attrByRange finds the attribute whose whole range is rng.
func (p *parser) attrByRange(rng hcl.Range) *hclsyntax.Attribute {
	p.attributes()
	if a := p.byStart[rng.Start]; a != nil && a.SrcRange == rng {
		return a
	}
	return nil
}

// ok reports whether the attribute at rng decoded cleanly. rng is an
// attr_range; a zero range (attribute absent) counts as fine.
func (p *parser) ok(rng hcl.Range) bool {
	return !p.broken[rng.Start] || rng.Filename == ""
}

// elemRanges returns the range of each element of the list literal in the
// attribute at rng, so a diagnostic can point at the one bad entry. When the
// value is not a literal list of n elements, every element gets the whole
// attribute range.
func (p *parser) elemRanges(rng hcl.Range, n int) []hcl.Range {
	out := make([]hcl.Range, n)
	for i := range out {
		out[i] = rng
	}
	a := p.attrByRange(rng)
	if a == nil {
		return out
	}
	if t, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(t.Exprs) == n {
		for i, e := range t.Exprs {
			out[i] = e.Range()
		}
	}
	return out
}

// resolvePath makes a path from the file absolute, relative to the file's
// directory.
func (p *parser) resolvePath(path string) string {
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	dir := filepath.Dir(p.filename)
	if abs, err := filepath.Abs(filepath.Join(dir, path)); err == nil {
		return abs
	}
	return filepath.Join(dir, path)
}
