// Package auth holds password hashing and the login guards shared by POP3 and
// SMTP submission.
package auth

// ValidateHash reports whether h is a password hash mailpost can verify
// (argon2id in PHC form, or bcrypt). STUB: replaced by the real check.
func ValidateHash(h string) error { return nil }
