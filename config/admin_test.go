package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestAdminBlock(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		name  string
		block string
		want  *Admin   // nil: no block, or errors
		diags []string // substrings, one per expected diagnostic line, in order
	}{
		{name: "absent", block: ""},
		{name: "default", block: "admin {}\n", want: &Admin{Bindings: []netip.AddrPort{ap("127.0.0.1:9025")}}},
		{name: "null bindings", block: "admin {\n  bindings = null\n}\n", want: &Admin{Bindings: []netip.AddrPort{ap("127.0.0.1:9025")}}},
		{name: "loopback pair", block: "admin {\n  bindings = [\"127.0.0.1:9100\", \"[::1]:9100\"]\n}\n",
			want: &Admin{Bindings: []netip.AddrPort{ap("127.0.0.1:9100"), ap("[::1]:9100")}}},
		{name: "lan is a warning", block: "admin {\n  bindings = [\"192.0.2.10:9025\"]\n}\n",
			want:  &Admin{Bindings: []netip.AddrPort{ap("192.0.2.10:9025")}},
			diags: []string{"t.hcl:8:15: warning: 192.0.2.10:9025 serves /metrics without authentication"}},
		{name: "empty list", block: "admin {\n  bindings = []\n}\n",
			diags: []string{"t.hcl:8:3: error: The bindings list is empty"}},
		{name: "bad address", block: "admin {\n  bindings = [\"localhost:9025\"]\n}\n",
			diags: []string{"t.hcl:8:15: error: The binding \"localhost:9025\" does not start with an IP address"}},
		{name: "collides with pop3", block: "pop3 {\n  ssl_bindings = [\"127.0.0.1:9025\"]\n}\nadmin {}\n",
			diags: []string{"t.hcl:10:1: error: The admin block's default address 127.0.0.1:9025 is already bound on line 8"}},
		{name: "two blocks", block: "admin {}\nadmin {\n  bindings = [\"127.0.0.1:9026\"]\n}\n",
			diags: []string{"t.hcl:8:1: error: Only one admin block is allowed; the first is on line 7"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, lines, diags := parseIn(t, t.TempDir(), head+"\n"+c.block)
			if len(lines) != len(c.diags) {
				t.Fatalf("diagnostics %q, want %d matching %q", lines, len(c.diags), c.diags)
			}
			for i, l := range lines {
				if !strings.Contains(l, c.diags[i]) {
					t.Errorf("diagnostic %d = %q, want it to contain %q", i, l, c.diags[i])
				}
			}
			if diags.HasErrors() {
				return
			}
			if !reflect.DeepEqual(cfg.Admin, c.want) {
				t.Errorf("Admin = %+v, want %+v", cfg.Admin, c.want)
			}
		})
	}
}
