package config

import (
	"net/netip"

	"github.com/hashicorp/hcl/v2"
)

// Admin is the operators' listener: Prometheus metrics at /metrics. It
// serves plain HTTP without authentication, which is why it belongs on
// loopback (or a management network a scraper reaches).
type Admin struct {
	Bindings []netip.AddrPort
}

// DefaultAdminBinding is where the admin block listens when it names no
// bindings: loopback only, so nothing is exposed by writing `admin {}`.
var DefaultAdminBinding = netip.MustParseAddrPort("127.0.0.1:9025")

type rawAdmin struct {
	DefRange hcl.Range `hcl:",def_range"`

	Bindings      []string  `hcl:"bindings,optional"`
	BindingsRange hcl.Range `hcl:"bindings,attr_range"`
}

// adminBlock checks the admin block's bindings against every other binding
// in the file. An address other than loopback is allowed (a scraper on the
// LAN) but warned about: the metrics name mailboxes' counts and the
// server's certificates to whoever connects.
func (p *parser) adminBlock(ra *rawAdmin, env *serviceEnv) (*Admin, hcl.Diagnostics) {
	if ra.Bindings == nil {
		ra.BindingsRange = hcl.Range{} // null is as if left out
	}
	a := &Admin{}
	if !p.ok(ra.BindingsRange) {
		return a, nil
	}
	if ra.BindingsRange.Filename == "" {
		if first, dup := env.bound[DefaultAdminBinding]; dup {
			return a, hcl.Diagnostics{errorf(ra.DefRange, "Duplicate binding",
				"the admin block's default address %s is already bound on line %d; set bindings", DefaultAdminBinding, first.Start.Line)}
		}
		env.bound[DefaultAdminBinding] = ra.DefRange
		a.Bindings = []netip.AddrPort{DefaultAdminBinding}
		return a, nil
	}
	bs, diags := p.bindings(ra.Bindings, ra.BindingsRange, env.bound)
	if len(ra.Bindings) == 0 {
		diags = append(diags, errorf(ra.BindingsRange, "No admin bindings",
			"the bindings list is empty; leave it out for %s, or remove the admin block to turn metrics off", DefaultAdminBinding))
	}
	for _, b := range bs {
		if !b.ap.Addr().Unmap().IsLoopback() {
			diags = append(diags, warnf(b.rng, "Admin listener not on loopback",
				"%s serves /metrics without authentication to anyone who can reach it; prefer 127.0.0.1 or [::1], or firewall the port", b.ap))
		}
	}
	a.Bindings = addrPorts(bs)
	return a, diags
}
