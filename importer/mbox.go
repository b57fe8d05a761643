package importer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Mbox is an mbox file read from R (a file, or stdin for "mbox:-").
type Mbox struct {
	R io.Reader
}

// Each implements Source.
func (m Mbox) Each(ctx context.Context, known Known, put func(Message) error) (Stats, error) {
	return eachByContent(ctx, func(fn func([]byte, time.Time) error) error { return ReadMbox(m.R, fn) }, known, put)
}

// ReadMbox calls fn for every message of an mbox file, normalized to CRLF.
//
// A message starts at a "From " line at the start of the file or after an
// empty line (the blank-line rule keeps an unquoted "From " inside a body
// from splitting it, which sloppy mboxo writers leave behind); the empty
// line before it belongs to the separator, not the message. Body lines
// ">From ", ">>From ", … lose one ">" (mboxrd, RFC 4155 appendix A). For
// mboxo files that is the same for ">From ", and only a body line that
// really began ">From " comes out one ">" short.
func ReadMbox(r io.Reader, fn func(msg []byte, arrived time.Time) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		cur       bytes.Buffer
		started   bool
		prevBlank = true // the start of the file counts as after an empty line
		arrived   time.Time
		lineNo    int
	)
	flush := func() error {
		if !started {
			return nil
		}
		msg := cur.Bytes()
		// The empty line that separated this message from the next (or
		// that writers put after the last one) is mbox framing.
		// Every line was written with its CRLF, so that is one CRLF.
		if bytes.HasSuffix(msg, []byte("\r\n\r\n")) {
			msg = msg[:len(msg)-2]
		}
		out := append([]byte(nil), msg...)
		cur.Reset()
		if len(out) == 0 { // "From " lines back to back: nothing to import
			return nil
		}
		return fn(out, arrived)
	}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return flush()
			}
			return fmt.Errorf("mbox: %w", err)
		}
		lineNo++
		line = bytes.TrimRight(line, "\r\n")
		if prevBlank && bytes.HasPrefix(line, []byte("From ")) {
			if err := flush(); err != nil {
				return err
			}
			started = true
			arrived = fromLineDate(string(line))
			prevBlank = false
			continue
		}
		if !started {
			if len(line) == 0 {
				continue
			}
			return fmt.Errorf("not an mbox file: line %d comes before any \"From \" line", lineNo)
		}
		if q := bytes.TrimLeft(line, ">"); len(q) < len(line) && bytes.HasPrefix(q, []byte("From ")) {
			line = line[1:]
		}
		cur.Write(line)
		cur.WriteString("\r\n")
		prevBlank = len(line) == 0
	}
}

// fromLineDate reads the date of an mbox "From sender date" line, which is
// asctime() in the writer's local time, sometimes with a zone after it.
func fromLineDate(line string) time.Time {
	f := strings.Fields(line)
	if len(f) < 3 {
		return time.Time{}
	}
	rest := strings.Join(f[2:], " ")
	for _, layout := range []string{"Mon Jan 2 15:04:05 2006", "Mon Jan 2 15:04:05 2006 -0700", "Mon Jan 2 15:04:05 -0700 2006", "Mon Jan 2 15:04:05 MST 2006"} {
		if t, err := time.ParseInLocation(layout, rest, time.Local); err == nil {
			return t
		}
	}
	return time.Time{}
}
