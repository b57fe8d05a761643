package config

import (
	"bytes"
	"os"
	"path/filepath"
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
				if cfg.POP3 == nil || len(cfg.Certificates) == 0 || len(cfg.Mailboxes) == 0 {
					t.Errorf("quickstart.hcl lost its pop3 block, certificate or mailbox: %+v", cfg)
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
