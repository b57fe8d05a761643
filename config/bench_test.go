package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// benchSource is a realistic file: a self-signed certificate, pop3,
// submission and inbound blocks, and n mailboxes with an alias each (and
// every tenth a send_as list naming the next mailbox, as a shared
// assistant's would).
func benchSource(n int) []byte {
	var b strings.Builder
	b.WriteString(head)
	b.WriteString("pop3 {\n  ssl_bindings = [\"127.0.0.1:10995\"]\n  unencrypted_or_tls_bindings = [\"127.0.0.1:10110\"]\n}\n")
	b.WriteString("submission {\n  ssl_bindings = [\"127.0.0.1:10465\"]\n  unencrypted_or_tls_bindings = [\"127.0.0.1:10587\"]\n}\n")
	b.WriteString("inbound {\n  bindings = [\"127.0.0.1:0\"]\n}\n")
	for i := range n {
		sendAs := ""
		if i%10 == 0 {
			sendAs = fmt.Sprintf("  send_as = [\"user%d@example.com\", \"user%d@example.com\"]\n", i, i+1)
		}
		fmt.Fprintf(&b, "mailbox \"user%d@example.com\" {\n  password_hash = %q\n  aliases = [\"alias%d@example.com\"]\n  quota = \"1GiB\"\n%s}\n", i, goodHash, i, sendAs)
	}
	return []byte(b.String())
}

// BenchmarkParse measures a reload's parse-and-validate cost (no static
// certificate files, so no disk reads beyond the source).
func BenchmarkParse(b *testing.B) {
	for _, n := range []int{10, 1000} {
		src := benchSource(n)
		name := filepath.Join(b.TempDir(), "bench.hcl")
		b.Run(fmt.Sprintf("mailboxes=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				cfg, diags := Parse(name, src)
				if cfg == nil || diags.HasErrors() {
					b.Fatal(diags)
				}
			}
		})
	}
}
