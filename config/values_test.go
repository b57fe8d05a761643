package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr string // substring of the error, "" = no error
	}{
		{"0", 0, ""},
		{"1048576", 1048576, ""},
		{"512B", 512, ""},
		{"2GiB", 2 << 30, ""},
		{"35MiB", 35 << 20, ""},
		{"35mib", 35 << 20, ""},
		{"1KiB", 1024, ""},
		{"1TiB", 1 << 40, ""},
		{"1kb", 1000, ""},
		{"2MB", 2000000, ""},
		{"3GB", 3000000000, ""},
		{"4TB", 4000000000000, ""},
		{"1.5KiB", 1536, ""},
		{"2 GiB", 2 << 30, ""},
		{" 7 ", 7, ""},
		{"1.7B", 1, ""}, // whole bytes, rounded down
		{"8388607TiB", 8388607 << 40, ""},
		{"8388608TiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
		{"", 0, "empty"},
		{"-1", 0, "negative"},
		{"-1GiB", 0, "negative"},
		{"GiB", 0, "does not start with a number"},
		{".5GiB", 0, "does not start with a number"},
		{"1..5GiB", 0, "does not start with a number"},
		{"2XB", 0, `unknown unit "XB"`},
		{"1e3", 0, `unknown unit "e3"`},
		{"2 G", 0, `unknown unit "G"`},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseSize(%q) error %v", tc.in, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseSize(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && got != tc.want:
			t.Errorf("ParseSize(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"0", 0, ""},
		{"+0", 0, ""},
		{"0s", 0, ""},
		{"60s", time.Minute, ""},
		{"30m", 30 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"30d", 30 * 24 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"0.5d", 12 * time.Hour, ""},
		{"100ms", 100 * time.Millisecond, ""},
		{"3us", 3 * time.Microsecond, ""},
		{"3µs", 3 * time.Microsecond, ""},
		{"7ns", 7, ""},
		{"2h45m30.5s", 2*time.Hour + 45*time.Minute + 30500*time.Millisecond, ""},
		{"106751d", 106751 * 24 * time.Hour, ""},
		{"106752d", 0, "too long"},
		{"106751d24h", 0, "too long"},
		{"", 0, "empty"},
		{"+", 0, "no number"},
		{"-5m", 0, "negative"},
		{"60", 0, "lacks a unit"},
		{"1h30", 0, "lacks a unit"},
		{"5w", 0, `unknown unit "w"`},
		{"10 minutes", 0, `unknown unit "minutes"`},
		{"h", 0, "not a number followed by a unit"},
		{".5h", 0, "not a number followed by a unit"},
	}
	for _, tc := range cases {
		got, err := ParseDuration(tc.in)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseDuration(%q) error %v", tc.in, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseDuration(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && got != tc.want:
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// Agreement with the standard library where the syntax overlaps.
	for _, s := range []string{"1h2m3s", "1.25s", "15m", "999ms", "2562047h"} {
		want, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ParseDuration(s); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; time.ParseDuration says %v", s, got, err, want)
		}
	}
}

func TestParseBinding(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:995":      "0.0.0.0:995",
		"[::]:995":         "[::]:995",
		"[0:0::0]:110":     "[::]:110",
		"127.0.0.1:0":      "127.0.0.1:0",
		"[fe80::1%lo]:110": "[fe80::1%lo]:110",
	} {
		ap, err := parseBinding(in)
		if err != nil || ap.String() != want {
			t.Errorf("parseBinding(%q) = %v, %v; want %s", in, ap, err, want)
		}
	}
}

func TestDNSNames(t *testing.T) {
	for s, want := range map[string]bool{
		"mail.example.com":                true,
		"mail.example.com.":               true,
		"a-b.c0.example":                  true,
		"xn--bcher-kva.ch":                true,
		"mail":                            false, // FQDN needs a dot
		"-a.example.com":                  false,
		"a-.example.com":                  false,
		"a..example.com":                  false,
		"a_b.example.com":                 false,
		"10.0.0.1":                        false,
		"bücher.ch":                       false,
		strings.Repeat("a", 64) + ".com":  false,
		strings.Repeat("a.", 127) + "com": false,
	} {
		if got := validFQDN(s); got != want {
			t.Errorf("validFQDN(%q) = %v, want %v", s, got, want)
		}
	}
}
