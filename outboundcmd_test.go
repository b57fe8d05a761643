package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"mailpost/server"
	"mailpost/storage"
)

// TestQueueActionAndDNSOffline runs `queue retry|drop` and `dns` with no
// server running: straight on the store.
func TestQueueActionAndDNSOffline(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mailpost.hcl")
	src := `hostname = "mail.example.com"
data_dir = "data"
domains  = ["example.com", "example.org"]
certificate "dev" {
  self_signed = true
}
pop3 {
  ssl_bindings = ["127.0.0.1:0"]
  unencrypted_or_tls_bindings = []
  external_connection_settings = ["mail.example.com:995:ssl"]
}
outbound {
  dkim {
    selector = "s1"
    algorithm = "rsa"
  }
}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := cmdDNS(path, &out, &errOut); err != nil {
		t.Fatalf("dns: %v\n%s", err, errOut.String())
	}
	dns := out.String()
	for _, want := range []string{
		"example.org.\t3600\tIN\tMX\t10 mail.example.com.",
		"example.com.\t3600\tIN\tTXT\t\"v=spf1 mx -all\"",
		"s1._domainkey.example.org.\t3600\tIN\tTXT\t\"v=DKIM1; k=rsa; p=",
		"_dmarc.example.com.\t3600\tIN\tTXT\t\"v=DMARC1; p=none; rua=mailto:postmaster@example.com\"",
		"_pop3s._tcp.example.com.\t3600\tIN\tSRV\t0 1 995 mail.example.com.",
		"_pop3._tcp.example.com.\t3600\tIN\tSRV\t0 0 0 .",
		"_submissions._tcp.example.org.\t3600\tIN\tSRV\t0 0 0 .",
	} {
		if !strings.Contains(dns, want) {
			t.Errorf("dns output lacks %q", want)
		}
	}
	// The key is kept: a second run prints the same record.
	var again bytes.Buffer
	if err := cmdDNS(path, &again, &errOut); err != nil || again.String() != dns {
		t.Errorf("second dns run differs (%v)", err)
	}

	st, err := storage.Open(server.DatabasePath(filepath.Join(dir, "data")))
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Submit(strings.NewReader("Subject: x\r\n\r\nx\r\n"), storage.Submission{Outbound: &storage.Outbound{From: "a@example.com", To: []string{"b@example.net"}}})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	id := res.Queued.ID
	idStr := strconv.FormatUint(id, 10)
	out.Reset()
	if err := cmdQueueAction(path, []string{"retry", idStr}, &out, &errOut); err != nil || !strings.Contains(out.String(), "due now") {
		t.Errorf("retry: %v %q", err, out.String())
	}
	if err := cmdQueueAction(path, []string{"drop", idStr}, &out, &errOut); err != nil {
		t.Errorf("drop: %v", err)
	}
	if err := cmdQueueAction(path, []string{"drop", idStr}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no queue entry") {
		t.Errorf("second drop: %v", err)
	}
	for _, bad := range [][]string{{}, {"retry"}, {"bounce", "1"}, {"drop", "x"}} {
		if err := cmdQueueAction(path, bad, &out, &errOut); err == nil {
			t.Errorf("queue %v accepted", bad)
		}
	}
}
