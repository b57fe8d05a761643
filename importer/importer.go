// Package importer reads the mailboxes of other servers for `mailpost
// import`: mbox files, Maildirs and POP3 servers. Each source yields its
// messages with a UIDL and an arrival time; storing them is the caller's
// business, so the package knows nothing about the store.
package importer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/mail"
	"strings"
	"time"
)

// Message is one message of an old mailbox.
type Message struct {
	// UIDL is what the message is stored under in the new mailbox: the old
	// server's own UIDL when it has a valid one (so POP3 clients that
	// leave mail on the server do not download it again), else
	// ContentUIDL of Data.
	UIDL    string
	Arrived time.Time // zero: unknown (the store then uses now)
	Data    []byte    // the message, CRLF line endings
}

// Known reports which of uidls the target mailbox already holds (or held:
// see the store's import ledger). Sources call it before downloading, so a
// re-run fetches only what is new.
type Known func(uidls []string) (map[string]bool, error)

// Stats counts what a source did.
type Stats struct {
	Seen     int   // messages the source holds
	Known    int   // skipped because Known reported them
	TooLarge int   // skipped because they exceed the size limit
	Fetched  int64 // octets read for messages handed to put
}

// Source is an old mailbox.
type Source interface {
	// Each calls put, in the source's order, for every message known does
	// not report. An error from put stops it and is returned as is.
	Each(ctx context.Context, known Known, put func(Message) error) (Stats, error)
}

// ContentUIDL names a message by its content: "imp-" and the first 128
// bits of SHA-256 over its CRLF bytes. 36 printable characters, well inside
// RFC 1939 §7's 70, and never the store's own generated "xxxxxxxx.N" form.
// (A content hash rather than Message-ID: Message-IDs are missing or reused
// in real archives; identical bytes are the same message.)
func ContentUIDL(msg []byte) string {
	sum := sha256.Sum256(msg)
	return "imp-" + hex.EncodeToString(sum[:16])
}

// maxHeaderScan bounds how much of a message ArrivalTime parses: headers
// are at the top, and a hostile message without a blank line must not
// make it read a gigabyte.
const maxHeaderScan = 256 << 10

// ArrivalTime is the message's Date header, else the date of its topmost
// Received header (the last hop's stamp), else zero.
func ArrivalTime(msg []byte) time.Time {
	head := msg[:min(len(msg), maxHeaderScan)]
	if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
		head = head[:i+4]
	} else if i := bytes.Index(head, []byte("\n\n")); i >= 0 {
		head = head[:i+2]
	}
	m, err := mail.ReadMessage(bytes.NewReader(head))
	if err != nil {
		return time.Time{}
	}
	if t, err := m.Header.Date(); err == nil {
		return t
	}
	for _, rcv := range m.Header["Received"] {
		// RFC 5321 §4.4: "Received: … ; date-time", the date after the last ';'.
		i := strings.LastIndexByte(rcv, ';')
		if i < 0 {
			continue
		}
		if t, err := mail.ParseDate(strings.TrimSpace(rcv[i+1:])); err == nil {
			return t
		}
	}
	return time.Time{}
}

// CRLF turns every line ending (LF or CRLF) into CRLF and ends the last
// line, so a message hashes the same whichever way it was stored.
func CRLF(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		out = append(out, bytes.TrimSuffix(line, []byte("\r"))...)
		out = append(out, '\r', '\n')
		b = rest
	}
	return out
}

// eachByContent is the file sources' Each: the UIDL comes from the bytes,
// so every message is read, then asked about one at a time.
func eachByContent(ctx context.Context, read func(fn func(msg []byte, arrived time.Time) error) error, known Known, put func(Message) error) (Stats, error) {
	var st Stats
	err := read(func(msg []byte, arrived time.Time) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		st.Seen++
		uidl := ContentUIDL(msg)
		if known != nil {
			k, err := known([]string{uidl})
			if err != nil {
				return err
			}
			if k[uidl] {
				st.Known++
				return nil
			}
		}
		if arrived.IsZero() {
			arrived = ArrivalTime(msg)
		}
		st.Fetched += int64(len(msg))
		return put(Message{UIDL: uidl, Arrived: arrived, Data: msg})
	})
	return st, err
}
