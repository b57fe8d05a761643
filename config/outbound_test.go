package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestOutboundAbsentAndDefaults(t *testing.T) {
	cfg, lines, _ := parseIn(t, t.TempDir(), head)
	if cfg == nil || len(lines) != 0 || cfg.Outbound != nil {
		t.Fatalf("no block: cfg.Outbound = %+v, diagnostics %q", cfg.Outbound, lines)
	}
	cfg, lines, _ = parseIn(t, t.TempDir(), head+"outbound {\n}\n")
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	want := &Outbound{MaxAttemptsFor: 5 * 24 * time.Hour}
	if !reflect.DeepEqual(cfg.Outbound, want) {
		t.Errorf("Outbound = %+v, want %+v", cfg.Outbound, want)
	}
}

func TestOutboundFull(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "relay.secret"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, lines, _ := parseIn(t, dir, head+`outbound {
  relay {
    address       = "smtp.provider.example:587"
    tls           = "starttls"
    username      = "apikey"
    password_file = "relay.secret"
  }
  max_attempts_for = "2d"
  dkim {
    selector  = "Mail"
    algorithm = "rsa"
  }
}
`)
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	want := &Outbound{
		Relay: &Relay{Address: "smtp.provider.example:587", Host: "smtp.provider.example", Port: 587,
			TLS: RelayStartTLS, Username: "apikey", Password: "s3cret"},
		MaxAttemptsFor: 48 * time.Hour,
		DKIM:           &DKIM{Selector: "mail", Algorithm: "rsa"},
	}
	if !reflect.DeepEqual(cfg.Outbound, want) {
		t.Errorf("Outbound =\n%+v %+v %+v\nwant\n%+v %+v %+v", cfg.Outbound, cfg.Outbound.Relay, cfg.Outbound.DKIM, want, want.Relay, want.DKIM)
	}
}

func TestOutboundPasswordEnv(t *testing.T) {
	t.Setenv("MAILPOST_TEST_RELAY_PW", "from-env")
	cfg, lines, _ := parseIn(t, t.TempDir(), head+`outbound {
  relay {
    address      = "127.0.0.1:2525"
    tls          = "none"
    username     = "u"
    password_env = "MAILPOST_TEST_RELAY_PW"
  }
}
`)
	if cfg == nil || len(lines) != 0 {
		t.Fatalf("diagnostics: %q", lines)
	}
	if r := cfg.Outbound.Relay; r.Password != "from-env" || r.TLS != RelayNoTLS || r.Host != "127.0.0.1" || r.Port != 2525 {
		t.Errorf("relay = %+v", r)
	}
}

// TestOutboundRules checks each refusal, positioned at the attribute at
// fault.
func TestOutboundRules(t *testing.T) {
	cases := []struct {
		name, body string
		want       string // a substring of the one expected diagnostic line
	}{
		{"cleartext remote relay", `relay {
  address = "smtp.provider.example:25"
  tls = "none"
}`, `t.hcl:9:3: error: The relay may use tls = "none" only on this machine`},
		{"bad tls", `relay {
  address = "[::1]:25"
  tls = "ssl"
}`, `t.hcl:9:3: error: The relay tls "ssl" is unknown`},
		{"no port", `relay {
  address = "smtp.provider.example"
}`, `t.hcl:8:3: error: The relay address "smtp.provider.example" is not host:port`},
		{"bad port", `relay {
  address = "smtp.provider.example:0"
}`, `t.hcl:8:3: error: The relay address "smtp.provider.example:0" has an invalid port`},
		{"two passwords", `relay {
  address = "localhost:25"
  username = "u"
  password_file = "/nonexistent"
  password_env = "HOME"
}`, `t.hcl:11:3: error: The relay sets both password_file and password_env`},
		{"missing file", `relay {
  address = "localhost:25"
  username = "u"
  password_file = "missing.secret"
}`, `t.hcl:10:3: error: The relay password_file`},
		{"username without password", `relay {
  address = "localhost:25"
  username = "u"
}`, `t.hcl:9:3: error: The relay has a username but no password`},
		{"bad duration", `max_attempts_for = "forever"`, `t.hcl:7:3: error: The max_attempts_for is invalid`},
		{"bad selector", `dkim {
  selector = "my selector"
}`, `t.hcl:8:3: error: The DKIM selector "my selector" is not a DNS label`},
		{"bad algorithm", `dkim {
  selector = "mail"
  algorithm = "dsa"
}`, `t.hcl:9:3: error: The DKIM algorithm "dsa" is unknown`},
		{"two relays", `relay {
  address = "localhost:25"
}
relay {
  address = "localhost:26"
}`, `t.hcl:10:1: error: Only one relay block is allowed; the first is on line 7`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, lines, _ := parseIn(t, t.TempDir(), head+"outbound {\n  "+c.body+"\n}\n")
			if cfg != nil {
				t.Errorf("accepted")
			}
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Errorf("diagnostics:\n%s\nwant one containing %q", strings.Join(lines, "\n"), c.want)
			}
		})
	}
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST.": true, "127.0.0.1": true, "127.3.2.1": true, "::1": true, "[::1]": true,
		"10.0.0.1": false, "smtp.example.com": false, "localhost.example.com": false, "": false,
	} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
