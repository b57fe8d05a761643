// Package auth holds password hashing and the login guards shared by POP3 and
// SMTP submission: argon2id/bcrypt verification with a bounded number of
// concurrent computations and a short-lived success cache (Verifier), and a
// failure throttle whose delay grows per client network and per account
// (Throttle).
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2Params are the tunable costs of an argon2id hash.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over memory
	Threads uint8  // lanes
}

// DefaultParams is what HashPassword uses: the RFC 9106 §4 second
// recommended option (64 MiB) with t=3, p=2, which takes tens of
// milliseconds on one core of a small machine.
var DefaultParams = Argon2Params{Memory: 64 * 1024, Time: 3, Threads: 2}

// Limits accepted by ValidateHash and CheckPassword. A configuration file is
// trusted to name a hash but not to name one whose cost would let a handful of
// logins exhaust the machine, so anything beyond these is rejected.
const (
	maxArgonMemory  = 1 << 20 // KiB, i.e. 1 GiB
	maxArgonTime    = 64
	maxArgonThreads = 64
	minSaltLen      = 8  // RFC 9106 §3.1: salt at least 8 bytes
	maxSaltLen      = 64 // PHC string format: at most 48 bytes is typical; allow some slack
	minKeyLen       = 16 // shorter tags make collisions plausible
	maxKeyLen       = 64
	maxBcryptCost   = 16 // 2^16 rounds is already about 5 s per check
	saltLen         = 16
	keyLen          = 32
	argonVersion    = argon2.Version // 0x13 = 19
)

// ErrMalformedHash marks every syntax or parameter problem so callers can tell a
// bad hash from other failures with errors.Is.
var ErrMalformedHash = errors.New("malformed password hash")

// hashError builds an error whose text names the problem and never includes the
// hash itself (it is a secret-equivalent for offline guessing).
func hashError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedHash, fmt.Sprintf(format, args...))
}

// HashPassword hashes password with argon2id and DefaultParams, returning the
// PHC string form "$argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>".
func HashPassword(password string) (string, error) {
	return HashPasswordParams(password, DefaultParams)
}

// HashPasswordParams is HashPassword with explicit costs; tests use it with
// cheap parameters. The parameters must pass the same limits ValidateHash
// enforces, so a hash this function produces is always accepted back.
func HashPasswordParams(password string, p Argon2Params) (string, error) {
	if err := checkArgonParams(p); err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: hash password: reading salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argonVersion, p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt),
		base64.RawStdEncoding.EncodeToString(key)), nil
}

// ValidateHash reports whether h is a password hash mailpost can verify:
// argon2id in PHC string form, or bcrypt ($2a$, $2b$, $2y$), with parameters
// inside sane limits. The error names what is wrong without echoing h.
func ValidateHash(h string) error {
	_, err := parseHash(h)
	return err
}

// CheckPassword reports whether password matches hash. The comparison is
// constant-time; the error is non-nil only when hash is malformed.
func CheckPassword(hash, password string) (bool, error) {
	ph, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	return ph.check(password), nil
}

// parsedHash is a validated hash ready to be checked.
type parsedHash struct {
	bcrypt []byte // whole bcrypt string, when the scheme is bcrypt
	params Argon2Params
	salt   []byte
	key    []byte
}

func (ph *parsedHash) check(password string) bool {
	if ph.bcrypt != nil {
		// Only a mismatch can come back here: the syntax and cost were
		// checked in parseBcrypt, and bcrypt ignores bytes past 72 on compare.
		return bcrypt.CompareHashAndPassword(ph.bcrypt, []byte(password)) == nil
	}
	got := argon2.IDKey([]byte(password), ph.salt, ph.params.Time, ph.params.Memory, ph.params.Threads, uint32(len(ph.key)))
	return subtle.ConstantTimeCompare(got, ph.key) == 1
}

func parseHash(h string) (*parsedHash, error) {
	switch {
	case h == "":
		return nil, hashError("empty hash")
	case strings.HasPrefix(h, "$argon2id$"):
		return parseArgon2id(h)
	case strings.HasPrefix(h, "$argon2i$"), strings.HasPrefix(h, "$argon2d$"):
		return nil, hashError("only the argon2id variant is supported, not argon2i or argon2d")
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
		return parseBcrypt(h)
	case strings.HasPrefix(h, "$2"):
		return nil, hashError("unsupported bcrypt variant (want $2a$, $2b$ or $2y$)")
	default:
		return nil, hashError("unknown scheme (want $argon2id$ or bcrypt $2a$/$2b$/$2y$)")
	}
}

// parseArgon2id parses the PHC string format
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash> with unpadded
// standard base64, as written by the reference implementation (RFC 9106 §6 and
// the PHC string format specification).
func parseArgon2id(h string) (*parsedHash, error) {
	fields := strings.Split(h, "$")
	// fields[0] is the empty string before the leading '$'.
	if len(fields) != 6 {
		return nil, hashError("argon2id: want 5 '$'-separated fields ($argon2id$v=..$m=..,t=..,p=..$salt$hash), got %d", len(fields)-1)
	}
	ver, ok := strings.CutPrefix(fields[2], "v=")
	if !ok {
		return nil, hashError("argon2id: missing version field v=19")
	}
	if v, err := strconv.ParseUint(ver, 10, 32); err != nil || v != argonVersion {
		return nil, hashError("argon2id: unsupported version (want v=%d)", argonVersion)
	}
	p, err := parseArgonParams(fields[3])
	if err != nil {
		return nil, err
	}
	if err := checkArgonParams(p); err != nil {
		return nil, err
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(fields[4])
	if err != nil {
		return nil, hashError("argon2id: salt is not unpadded standard base64")
	}
	if len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return nil, hashError("argon2id: salt is %d bytes, want %d to %d", len(salt), minSaltLen, maxSaltLen)
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(fields[5])
	if err != nil {
		return nil, hashError("argon2id: hash is not unpadded standard base64")
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return nil, hashError("argon2id: hash is %d bytes, want %d to %d", len(key), minKeyLen, maxKeyLen)
	}
	return &parsedHash{params: p, salt: salt, key: key}, nil
}

// parseArgonParams parses "m=..,t=..,p=..". The PHC format fixes the order of
// parameters for a given function, so any other order is a malformed hash.
func parseArgonParams(s string) (Argon2Params, error) {
	parts := strings.Split(s, ",")
	names := [3]string{"m", "t", "p"}
	if len(parts) != len(names) {
		return Argon2Params{}, hashError("argon2id: parameters must be exactly m=..,t=..,p=..")
	}
	var vals [3]uint64
	for i, part := range parts {
		num, ok := strings.CutPrefix(part, names[i]+"=")
		if !ok {
			return Argon2Params{}, hashError("argon2id: parameter %d must be %s=, in the order m,t,p", i+1, names[i])
		}
		// ParseUint accepts no sign or spaces; 32 bits bounds everything before
		// the range checks in checkArgonParams.
		v, err := strconv.ParseUint(num, 10, 32)
		if err != nil || (len(num) > 1 && num[0] == '0') {
			return Argon2Params{}, hashError("argon2id: parameter %s is not a decimal number below 2^32", names[i])
		}
		vals[i] = v
	}
	if vals[2] > 255 {
		return Argon2Params{}, hashError("argon2id: parallelism p=%d is above %d", vals[2], maxArgonThreads)
	}
	return Argon2Params{Memory: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(vals[2])}, nil
}

func checkArgonParams(p Argon2Params) error {
	switch {
	case p.Threads < 1:
		return hashError("argon2id: parallelism p must be at least 1")
	case p.Threads > maxArgonThreads:
		return hashError("argon2id: parallelism p=%d is above %d", p.Threads, maxArgonThreads)
	case p.Time < 1:
		return hashError("argon2id: time t must be at least 1")
	case p.Time > maxArgonTime:
		return hashError("argon2id: time t=%d is above %d", p.Time, maxArgonTime)
	case p.Memory < 8*uint32(p.Threads):
		// RFC 9106 §3.1: memory is at least 8*p KiB.
		return hashError("argon2id: memory m=%d KiB is below 8*p", p.Memory)
	case p.Memory > maxArgonMemory:
		return hashError("argon2id: memory m=%d KiB is above 1 GiB, which would let a few logins exhaust the server", p.Memory)
	}
	return nil
}

// bcryptAlphabet is bcrypt's own base64 alphabet (not RFC 4648's).
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// parseBcrypt checks "$2b$<cost>$<22 salt chars><31 hash chars>" (60 bytes).
func parseBcrypt(h string) (*parsedHash, error) {
	if len(h) != 60 {
		return nil, hashError("bcrypt: want 60 characters, got %d", len(h))
	}
	if h[6] != '$' {
		return nil, hashError("bcrypt: want a two-digit cost between the 2nd and 3rd '$'")
	}
	cost, err := strconv.Atoi(h[4:6])
	if err != nil || h[4] < '0' || h[4] > '9' {
		return nil, hashError("bcrypt: cost is not a two-digit number")
	}
	if cost < bcrypt.MinCost || cost > maxBcryptCost {
		return nil, hashError("bcrypt: cost %d outside %d to %d", cost, bcrypt.MinCost, maxBcryptCost)
	}
	for i := 7; i < len(h); i++ {
		if !strings.ContainsRune(bcryptAlphabet, rune(h[i])) {
			return nil, hashError("bcrypt: salt and hash contain a character outside bcrypt's base64 alphabet")
		}
	}
	return &parsedHash{bcrypt: []byte(h)}, nil
}
