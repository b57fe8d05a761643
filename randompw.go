package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"strings"

	"mailpost/auth"
)

// Random passwords: groups of characters from the lower-case Crockford
// base32 alphabet, which has no i, l, o or u, so nothing reads as 1 or 0
// or another letter on a label or over the phone. 32 symbols are 5 bits
// each, drawn without bias from a byte's low 5 bits.
const (
	randomAlphabet  = "0123456789abcdefghjkmnpqrstvwxyz"
	randomGroups    = 4
	randomGroupLen  = 5
	randomEntropy   = randomGroups * randomGroupLen * 5 // bits: 100
	randomSeparator = "-"
)

// randomPassword returns a new password like "k3v9q-7xw2m-c0t4r-hp8ja"
// with randomEntropy bits from crypto/rand.
func randomPassword() (string, error) {
	raw := make([]byte, randomGroups*randomGroupLen)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	var b strings.Builder
	for i, c := range raw {
		if i > 0 && i%randomGroupLen == 0 {
			b.WriteString(randomSeparator)
		}
		b.WriteByte(randomAlphabet[c&31])
	}
	return b.String(), nil
}

// cmdRandomPassword prints a new password once, with its hash as a line to
// paste into a device block; mailpost keeps no copy of the password.
func cmdRandomPassword(stdout io.Writer) error {
	pw, err := randomPassword()
	if err != nil {
		return err
	}
	h, err := auth.HashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# password: %s\n# (%d random bits; shown only now: give it to the device, then paste the line below into its device block)\npassword_hash = %q\n",
		pw, randomEntropy, h)
	return nil
}
