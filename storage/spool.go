package storage

import (
	"fmt"
	"io"
	"os"
)

// chunkSize is the largest body value. Big enough that a 5 MiB message is
// only ~80 keys, small enough that a reader holds little memory and each
// read transaction is short.
const chunkSize = 64 << 10

// crlfWriter normalizes line ends to CRLF while streaming: bare LF and bare
// CR become CRLF, CRLF stays. No final CRLF is added when the input lacks
// one, so the stored octets are exactly what RFC 1939 §3 RETR sends before
// dot-stuffing, and sizes in LIST (§5) are exact.
type crlfWriter struct {
	dst io.Writer
	cr  bool   // the last input byte was a CR whose partner is not yet known
	out []byte // reused output buffer
}

func (w *crlfWriter) Write(p []byte) (int, error) {
	out := w.out[:0]
	i := 0
	if w.cr && len(p) > 0 {
		out = append(out, '\r', '\n')
		if p[0] == '\n' {
			i = 1
		}
		w.cr = false
	}
	start := i
	for ; i < len(p); i++ {
		c := p[i]
		if c != '\r' && c != '\n' {
			continue
		}
		out = append(out, p[start:i]...)
		start = i + 1
		if c == '\n' {
			out = append(out, '\r', '\n')
			continue
		}
		if i+1 == len(p) {
			// A CR at the end of this write: the next write decides.
			w.cr = true
			continue
		}
		out = append(out, '\r', '\n')
		if p[i+1] == '\n' {
			i++
			start = i + 1
		}
	}
	out = append(out, p[start:]...)
	w.out = out
	if len(out) > 0 {
		if _, err := w.dst.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// finish flushes a trailing CR as CRLF (a bare CR is still a line end).
func (w *crlfWriter) finish() error {
	if !w.cr {
		return nil
	}
	w.cr = false
	_, err := w.dst.Write([]byte{'\r', '\n'})
	return err
}

// spool holds a normalized message between reading it from the caller and
// writing it in one Update: reading may wait on the network, and a bbolt
// write transaction must never wait on the network. Messages up to one
// chunk stay in memory; larger ones go to an unlinked temp file next to
// the database (not /tmp: mail is as private as the database).
type spool struct {
	dir   string
	limit int64 // 0 = unlimited
	mem   []byte
	f     *os.File
	size  int64
}

func (s *spool) Write(p []byte) (int, error) {
	if s.limit > 0 && s.size+int64(len(p)) > s.limit {
		return 0, ErrTooLarge
	}
	if s.f == nil && len(s.mem)+len(p) <= chunkSize {
		s.mem = append(s.mem, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, ".mailpost-spool-*")
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		// Unlink at once: nothing is left behind if the process dies.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.f = f
		if _, err := f.Write(s.mem); err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.mem = nil
	}
	n, err := s.f.Write(p)
	s.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("spool: %w", err)
	}
	return n, nil
}

// chunks is the number of body values the message needs.
func (s *spool) chunks() int {
	return int((s.size + chunkSize - 1) / chunkSize)
}

// chunk returns a fresh slice with chunk i. It is fresh because bbolt keeps
// a reference to a Put value until the transaction commits.
func (s *spool) chunk(i int) ([]byte, error) {
	off := int64(i) * chunkSize
	n := min(int64(chunkSize), s.size-off)
	if s.f == nil {
		return s.mem[off : off+n : off+n], nil
	}
	buf := make([]byte, n)
	if got, err := s.f.ReadAt(buf, off); got != len(buf) {
		return nil, fmt.Errorf("spool: short read at %d: %w", off, err)
	}
	return buf, nil
}

func (s *spool) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
