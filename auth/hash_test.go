package auth

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// cheap keeps tests fast; the code paths are the same as DefaultParams.
var cheap = Argon2Params{Memory: 64, Time: 1, Threads: 1}

var phcRE = regexp.MustCompile(`^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$`)

func TestHashRoundTrip(t *testing.T) {
	h1, err := HashPasswordParams("correct horse", cheap)
	if err != nil {
		t.Fatal(err)
	}
	m := phcRE.FindStringSubmatch(h1)
	if m == nil {
		t.Fatalf("hash %q is not PHC argon2id with 16-byte salt and 32-byte key", h1)
	}
	if m[1] != "64" || m[2] != "1" || m[3] != "1" {
		t.Errorf("params in hash = m=%s,t=%s,p=%s, want m=64,t=1,p=1", m[1], m[2], m[3])
	}
	if err := ValidateHash(h1); err != nil {
		t.Errorf("ValidateHash(own hash) = %v", err)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{
		{"correct horse", true},
		{"correct horsE", false},
		{"correct hors", false},
		{"", false},
	} {
		got, err := CheckPassword(h1, tc.pw)
		if err != nil || got != tc.want {
			t.Errorf("CheckPassword(%q) = %v, %v; want %v, nil", tc.pw, got, err, tc.want)
		}
	}
	h2, err := HashPasswordParams("correct horse", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if h1 == h2 {
		t.Error("two hashes of the same password are equal: salt is not random")
	}
}

func TestHashPasswordDefaults(t *testing.T) {
	h, err := HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") || phcRE.FindString(h) == "" {
		t.Fatalf("HashPassword = %q, want argon2id m=65536,t=3,p=2", h)
	}
	if ok, err := CheckPassword(h, "pw"); !ok || err != nil {
		t.Fatalf("CheckPassword = %v, %v", ok, err)
	}
}

func TestHashPasswordParamsRejectsBadParams(t *testing.T) {
	if _, err := HashPasswordParams("pw", Argon2Params{Memory: 2 << 20, Time: 1, Threads: 1}); !errors.Is(err, ErrMalformedHash) {
		t.Errorf("2 GiB params: err = %v, want ErrMalformedHash", err)
	}
	if _, err := HashPasswordParams("pw", Argon2Params{}); err == nil {
		t.Error("zero params accepted")
	}
}

// A salt and key that are valid on their own, so each case breaks one thing.
const (
	goodSalt = "c2FsdHNhbHRzYWx0c2FsdA"                      // 16 bytes
	goodKey  = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U" // 32 bytes
)

func argon(params string) string {
	return "$argon2id$v=19$" + params + "$" + goodSalt + "$" + goodKey
}

func TestValidateHashErrors(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	bcs := string(bc)
	for _, tc := range []struct {
		name, hash, want string // want: substring of the error, "" for valid
	}{
		{"ok argon2id", argon("m=65536,t=3,p=2"), ""},
		{"ok 1GiB edge", argon("m=1048576,t=1,p=1"), ""},
		{"ok bcrypt 2a", bcs, ""},
		{"ok bcrypt 2b", "$2b$" + bcs[4:], ""},
		{"ok bcrypt 2y", "$2y$" + bcs[4:], ""},
		{"empty", "", "empty hash"},
		{"plaintext", "hunter2", "unknown scheme"},
		{"md5crypt", "$1$abc$def", "unknown scheme"},
		{"argon2i", "$argon2i$v=19$m=65536,t=3,p=2$" + goodSalt + "$" + goodKey, "only the argon2id variant"},
		{"argon2d", "$argon2d$v=19$m=65536,t=3,p=2$" + goodSalt + "$" + goodKey, "only the argon2id variant"},
		{"too few fields", "$argon2id$v=19$m=65536,t=3,p=2$" + goodSalt, "want 5 '$'-separated fields"},
		{"too many fields", argon("m=65536,t=3,p=2") + "$x", "want 5 '$'-separated fields"},
		{"no version", "$argon2id$m=65536,t=3,p=2$" + goodSalt + "$" + goodKey + "$", "missing version"},
		{"version 16", "$argon2id$v=16$m=65536,t=3,p=2$" + goodSalt + "$" + goodKey, "unsupported version"},
		{"version junk", "$argon2id$v=x$m=65536,t=3,p=2$" + goodSalt + "$" + goodKey, "unsupported version"},
		{"params order", argon("t=3,m=65536,p=2"), "must be m=, in the order m,t,p"},
		{"params missing", argon("m=65536,t=3"), "exactly m=..,t=..,p=.."},
		{"params extra", argon("m=65536,t=3,p=2,keyid=x"), "exactly m=..,t=..,p=.."},
		{"m not number", argon("m=lots,t=3,p=2"), "parameter m is not a decimal number"},
		{"m negative", argon("m=-1,t=3,p=2"), "parameter m is not a decimal number"},
		{"m overflow", argon("m=4294967296,t=3,p=2"), "parameter m is not a decimal number"},
		{"t leading zero", argon("m=65536,t=03,p=2"), "parameter t is not a decimal number"},
		{"m over 1GiB", argon("m=1048577,t=1,p=1"), "above 1 GiB"},
		{"m below 8p", argon("m=15,t=1,p=2"), "below 8*p"},
		{"t zero", argon("m=65536,t=0,p=2"), "time t must be at least 1"},
		{"t absurd", argon("m=65536,t=65,p=2"), "time t=65 is above 64"},
		{"p zero", argon("m=65536,t=3,p=0"), "parallelism p must be at least 1"},
		{"p absurd", argon("m=65536,t=3,p=65"), "parallelism p=65 is above 64"},
		{"p over 255", argon("m=65536,t=3,p=300"), "parallelism p=300 is above 64"},
		{"salt not base64", "$argon2id$v=19$m=65536,t=3,p=2$!!!!$" + goodKey, "salt is not unpadded standard base64"},
		{"salt padded", "$argon2id$v=19$m=65536,t=3,p=2$" + goodSalt + "==$" + goodKey, "salt is not unpadded standard base64"},
		{"salt short", "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$" + goodKey, "salt is 4 bytes"},
		{"key not base64", "$argon2id$v=19$m=65536,t=3,p=2$" + goodSalt + "$a-b_", "hash is not unpadded standard base64"},
		{"key short", "$argon2id$v=19$m=65536,t=3,p=2$" + goodSalt + "$a2V5", "hash is 3 bytes"},
		{"bcrypt 2x", "$2x$" + bcs[4:], "unsupported bcrypt variant"},
		{"bcrypt short", bcs[:59], "want 60 characters, got 59"},
		{"bcrypt cost junk", "$2a$x4" + bcs[6:], "cost is not a two-digit number"},
		{"bcrypt cost sign", "$2a$+4" + bcs[6:], "cost is not a two-digit number"},
		{"bcrypt cost low", "$2a$03" + bcs[6:], "cost 3 outside 4 to 16"},
		{"bcrypt cost high", "$2a$17" + bcs[6:], "cost 17 outside 4 to 16"},
		{"bcrypt no sep", "$2a$04x" + bcs[7:], "two-digit cost"},
		{"bcrypt alphabet", bcs[:59] + "=", "outside bcrypt's base64 alphabet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateHash(tc.hash)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidateHash = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateHash = nil, want error containing %q", tc.want)
			}
			if !errors.Is(err, ErrMalformedHash) {
				t.Errorf("error %v is not ErrMalformedHash", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
			// The hash is secret-equivalent: neither its salt nor its key may
			// appear in the message.
			for _, secret := range []string{goodSalt, goodKey, bcs[7:]} {
				if strings.Contains(err.Error(), secret[:12]) {
					t.Errorf("error %q echoes part of the hash", err)
				}
			}
			if ok, cerr := CheckPassword(tc.hash, "pw"); ok || cerr == nil {
				t.Errorf("CheckPassword on bad hash = %v, %v; want false, error", ok, cerr)
			}
		})
	}
}

func TestCheckPasswordBcrypt(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// $2b$ and $2y$ differ from $2a$ only in historical bugs for passwords
	// over 255 bytes, so the same digest verifies under every prefix.
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		h := prefix + string(bc[4:])
		if ok, err := CheckPassword(h, "s3cret pass"); !ok || err != nil {
			t.Errorf("%s right password: %v, %v", prefix, ok, err)
		}
		if ok, err := CheckPassword(h, "s3cret pasS"); ok || err != nil {
			t.Errorf("%s wrong password: %v, %v", prefix, ok, err)
		}
	}
	// A well-known vector (OpenBSD's test suite, also used by many ports):
	// "U*U" with cost 5.
	const vec = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"
	if ok, err := CheckPassword(vec, "U*U"); !ok || err != nil {
		t.Errorf("known vector: %v, %v", ok, err)
	}
	// Passwords longer than bcrypt's 72-byte limit are a mismatch, not an
	// error that callers would mistake for a broken hash.
	if ok, err := CheckPassword(string(bc), strings.Repeat("x", 200)); ok || err != nil {
		t.Errorf("long password: %v, %v; want false, nil", ok, err)
	}
}
