package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.diag from the current output")

// TestGoldenBad parses every testdata/bad/*.hcl and compares the rendered
// diagnostics, snippets included, with the .diag file next to it.
func TestGoldenBad(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/bad/*.hcl files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			cfg, diags := Parse(filepath.ToSlash(f), src)
			if cfg != nil || !diags.HasErrors() {
				t.Errorf("a bad file was accepted")
			}
			var buf bytes.Buffer
			if err := WriteDiagnostics(&buf, diags, src); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(f, ".hcl") + ".diag"
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -run TestGoldenBad -update)", err)
			}
			if got := buf.String(); got != string(want) {
				t.Errorf("%s differs; got:\n%s", golden, got)
			}
		})
	}
}
