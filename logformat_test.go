package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestServeLogFormatJSON runs the built binary with -log-format json, holds
// one POP3 session and scrapes its admin listener, then stops it and
// decodes every stderr line as a JSON object: nothing else may be mixed
// in, and the session's end is one Info line with user, IP and counts.
func TestServeLogFormatJSON(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir, "mail.example.com")
	writeConfig(t, dir, e2eConfig(certFile, keyFile)+"\nadmin {\n  bindings = [\"127.0.0.1:0\"]\n}\n")

	in := startCmd(t, exec.Command(binary, "serve", "-config", filepath.Join(dir, "mailpost.hcl"), "-log-format", "json"),
		filepath.Join(dir, "data"))
	addrs, log := in.addrs, in.log

	// The idle process, as Prometheus sees it (the memory target).
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addrs["admin"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	rss := fams["mailpost_process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue()
	t.Logf("idle RSS from /metrics: %.1f MiB", rss/(1<<20))

	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addrs["pop3s"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for _, cmd := range []string{"", "USER alice@example.com", "PASS demo-password", "STAT", "QUIT"} {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
			t.Fatalf("%s: %q %v", cmd, l, err)
		}
	}
	io.Copy(io.Discard, r) // until the server closes
	c.Close()

	in.stop()

	var end map[string]any
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	for i, l := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("stderr line %d is not JSON: %v\n%s", i+1, err, l)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := obj[k]; !ok {
				t.Errorf("line %d has no %q: %s", i+1, k, l)
			}
		}
		if obj["level"] == "DEBUG" {
			t.Errorf("debug line at the default level: %s", l)
		}
		if obj["msg"] == "pop3 session end" {
			end = obj
		}
	}
	if len(lines) < 4 {
		t.Errorf("only %d log lines", len(lines))
	}
	if end == nil {
		t.Fatal("no pop3 session end line")
	}
	want := map[string]any{"level": "INFO", "user": "alice@example.com", "remote_ip": "127.0.0.1",
		"tls": true, "commands": float64(4), "retrieved": float64(0), "deleted": float64(0)}
	for k, v := range want {
		if end[k] != v {
			t.Errorf("session end %s = %v (%T), want %v", k, end[k], end[k], v)
		}
	}
	for _, k := range []string{"bytes_in", "bytes_out"} {
		if n, _ := end[k].(float64); n < 200 {
			t.Errorf("session end %s = %v", k, end[k])
		}
	}
}

func TestServeLogFormatRejected(t *testing.T) {
	_, stderr, code := mailpost(t, "", "serve", "-config", "/nonexistent.hcl", "-log-format", "xml")
	if code == 0 || !strings.Contains(stderr, `-log-format: "xml" is neither text nor json`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
