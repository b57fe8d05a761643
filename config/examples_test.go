package config

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// certFileSummaries are the only errors an example may have: examples
// name certificate files that exist on a real server, not on this machine.
var certFileSummaries = map[string]bool{
	"Unreadable certificate": true,
	"Unreadable key":         true,
}

// TestExamples loads every examples/*.hcl so the shipped examples never
// rot. quickstart.hcl must load cleanly; the others may only fail on
// certificate files they name.
func TestExamples(t *testing.T) {
	dir := filepath.Join("..", "examples")
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		t.Logf("%s does not exist yet; nothing to check", dir)
		return
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("%s exists but holds no .hcl files", dir)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, diags := Load(f)
			var buf bytes.Buffer
			src, _ := os.ReadFile(f)
			if err := WriteDiagnostics(&buf, diags, src); err != nil {
				t.Fatal(err)
			}
			if filepath.Base(f) == "quickstart.hcl" {
				if cfg == nil || len(diags) != 0 {
					t.Fatalf("quickstart.hcl must load without diagnostics:\n%s", buf.String())
				}
				if cfg.POP3 == nil || cfg.Submission == nil || len(cfg.Certificates) == 0 || len(cfg.Mailboxes) == 0 {
					t.Errorf("quickstart.hcl lost its pop3 or submission block, certificate or mailbox: %+v", cfg)
				}
				// Everything on loopback high ports, so it runs without root.
				if cfg.Inbound != nil {
					t.Errorf("quickstart.hcl has an inbound block; port 25 needs root")
				}
				for _, ap := range append(append(slices.Clone(cfg.POP3.SSLBindings), cfg.POP3.UnencryptedOrTLSBindings...),
					append(slices.Clone(cfg.Submission.SSLBindings), cfg.Submission.UnencryptedOrTLSBindings...)...) {
					if !ap.Addr().IsLoopback() || ap.Port() < 1024 {
						t.Errorf("quickstart.hcl binds %s, not a loopback high port", ap)
					}
				}
				return
			}
			for _, d := range diags {
				if d.Severity == hcl.DiagError && !certFileSummaries[d.Summary] {
					t.Errorf("unexpected error in %s:\n%s", f, buf.String())
					break
				}
			}
		})
	}
}
