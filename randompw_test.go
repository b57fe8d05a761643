package main

import (
	"bytes"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"mailpost/auth"
)

func TestHashPasswordRandom(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"hash-password", "-random"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	m := regexp.MustCompile(`(?m)^# password: (\S+)\n#.*\n(password_hash = "(\S+)")\n$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output:\n%s", out.String())
	}
	pw, line, hash := m[1], m[2], m[3]
	if ok, err := auth.CheckPassword(hash, pw); !ok || err != nil {
		t.Errorf("the printed hash does not verify the printed password: %v %v", ok, err)
	}
	// The hash line is what a device block wants, HCL-quoted.
	if q, err := strconv.Unquote(strings.TrimPrefix(line, "password_hash = ")); err != nil || q != hash {
		t.Errorf("hash line %q: %v", line, err)
	}
	if !regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{5}(-[0-9a-hjkmnp-tv-z]{5}){3}$`).MatchString(pw) {
		t.Errorf("password %q is not 4 groups of 5 from the alphabet", pw)
	}
}

func TestRandomPasswordStrength(t *testing.T) {
	if len(randomAlphabet) != 32 || strings.ContainsAny(randomAlphabet, "ilouILOU") {
		t.Fatalf("alphabet %q", randomAlphabet)
	}
	bits := float64(randomGroups*randomGroupLen) * math.Log2(float64(len(randomAlphabet)))
	if bits < 100 || int(bits) != randomEntropy {
		t.Errorf("%.1f bits of entropy, constant says %d", bits, randomEntropy)
	}
	// Distinct runs, and every symbol turns up (a bias to a subset would
	// show as missing symbols over 200 passwords, 4000 draws).
	seen := map[string]bool{}
	symbols := map[rune]int{}
	for range 200 {
		pw, err := randomPassword()
		if err != nil {
			t.Fatal(err)
		}
		if seen[pw] {
			t.Fatalf("%q generated twice", pw)
		}
		seen[pw] = true
		for _, c := range strings.ReplaceAll(pw, randomSeparator, "") {
			symbols[c]++
		}
	}
	if len(symbols) != len(randomAlphabet) {
		t.Errorf("only %d of %d symbols used: %v", len(symbols), len(randomAlphabet), symbols)
	}
}
