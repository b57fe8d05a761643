package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// dotWriter frames a message as the body of an RFC 1939 §3 multi-line
// response: every line ends in CRLF (a bare LF is treated as a line end), a
// line starting with "." gets one more ".", and Close adds the terminating
// ".\r\n" after a CRLF.
//
// It scans for LFs with bytes.IndexByte and copies whole runs, because the
// byte-at-a-time state machine of textproto's DotWriter is several times
// slower for large messages.
type dotWriter struct {
	w   *bufio.Writer
	bol bool // the next byte starts a line
	cr  bool // the last byte written was a CR, so an LF completes a CRLF
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w, bol: true} }

func (d *dotWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return total - len(p), err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return total - len(p), err
			}
			d.bol = false
			d.cr = p[len(p)-1] == '\r'
			return total, nil
		}
		// p[:i] ends the current line; the CR before the LF may have been
		// written by the previous call.
		cr := d.cr
		if i > 0 {
			cr = p[i-1] == '\r'
		}
		var err error
		if cr {
			_, err = d.w.Write(p[:i+1])
		} else {
			if _, err = d.w.Write(p[:i]); err == nil {
				_, err = d.w.WriteString("\r\n")
			}
		}
		if err != nil {
			return total - len(p), err
		}
		d.bol, d.cr = true, false
		p = p[i+1:]
	}
	return total, nil
}

// Close ends the last line if the message did not, then writes the
// terminator. It does not flush.
func (d *dotWriter) Close() error {
	if !d.bol {
		end := "\r\n"
		if d.cr {
			end = "\n"
		}
		if _, err := d.w.WriteString(end); err != nil {
			return err
		}
		d.bol, d.cr = true, false
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}

// bigBufSize is the size of the write buffer and the copy buffer borrowed
// while a multi-line reply is written. Idle sessions hold neither.
const bigBufSize = 32 << 10

var (
	bigWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(io.Discard, bigBufSize) }}
	copyBufs   = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}
)

func getBigWriter(w io.Writer) *bufio.Writer {
	bw := bigWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putBigWriter(bw *bufio.Writer) {
	bw.Reset(io.Discard) // drop the reference to the connection
	bigWriters.Put(bw)
}

// readError marks a failure to read the message, as opposed to a failure to
// write to the client.
type readError struct{ err error }

func (e *readError) Error() string { return "reading message: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// copyMessage writes all of r through d with a pooled buffer.
func copyMessage(d *dotWriter, r io.Reader) error {
	if wt, ok := r.(io.WriterTo); ok {
		// A bytes.Reader or similar hands over its whole slice at once.
		_, err := wt.WriteTo(d)
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := d.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return &readError{rerr}
		}
	}
}

// copyTop writes the header, the blank line and then at most lines lines of
// the body of the message in r (RFC 1939 §7, TOP). A message without a blank
// line is sent whole.
func copyTop(d *dotWriter, r io.Reader, lines int) error {
	br := bufio.NewReaderSize(r, 4096)
	inHeader, lineStart := true, true
	for inHeader || lines > 0 {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if _, werr := d.Write(chunk); werr != nil {
				return werr
			}
			complete := chunk[len(chunk)-1] == '\n'
			if inHeader {
				// A line is only split when it is longer than the buffer, so
				// a blank line always arrives as one chunk.
				if lineStart && complete && (len(chunk) == 1 || (len(chunk) == 2 && chunk[0] == '\r')) {
					inHeader = false
				}
			} else if complete {
				lines--
			}
			lineStart = complete
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case err == io.EOF:
			return nil
		default:
			return &readError{err}
		}
	}
	return nil
}
