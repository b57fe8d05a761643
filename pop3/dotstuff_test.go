package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// normalize is the reference for line ends: a bare LF becomes CRLF, and a
// message not ending in a line end gets CRLF (a trailing CR gets its LF).
func normalize(in []byte) []byte {
	var out []byte
	for i, c := range in {
		if c == '\n' && (i == 0 || in[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if n := len(out); n > 0 && out[n-1] != '\n' {
		if out[n-1] == '\r' {
			out = append(out, '\n')
		} else {
			out = append(out, '\r', '\n')
		}
	}
	return out
}

// refStuff is the obviously-correct, byte-at-a-time version of dotWriter.
func refStuff(in []byte) []byte {
	norm := normalize(in)
	var out []byte
	bol := true
	for _, c := range norm {
		if bol && c == '.' {
			out = append(out, '.')
		}
		out = append(out, c)
		bol = c == '\n'
	}
	return append(out, ".\r\n"...)
}

// unstuff reverses the framing and checks its shape.
func unstuff(t testing.TB, out []byte) []byte {
	t.Helper()
	if !bytes.HasSuffix(out, []byte(".\r\n")) {
		t.Fatalf("output %q does not end with .CRLF", out)
	}
	body := out[:len(out)-3]
	if len(body) > 0 && !bytes.HasSuffix(body, []byte("\r\n")) {
		t.Fatalf("terminator of %q does not follow a CRLF", out)
	}
	if i := bytes.IndexByte(bytes.ReplaceAll(body, []byte("\r\n"), nil), '\n'); i >= 0 {
		t.Fatalf("bare LF in output %q", out)
	}
	var res []byte
	for len(body) > 0 {
		i := bytes.Index(body, []byte("\r\n"))
		line := body[:i]
		if len(line) > 0 && line[0] == '.' {
			if len(line) < 2 || line[1] != '.' {
				t.Fatalf("unstuffed dot line %q in %q", line, out)
			}
			line = line[1:]
		}
		res = append(res, line...)
		res = append(res, '\r', '\n')
		body = body[i+2:]
	}
	return res
}

// stuff runs in through a dotWriter, one Write per chunk, with a small
// bufio.Writer so that its flushes fall everywhere too.
func stuff(t testing.TB, chunks ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 16)
	d := newDotWriter(bw)
	for _, c := range chunks {
		n, err := d.Write(c)
		if err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

var dotCases = []struct{ in, want string }{
	{"", ".\r\n"},
	{"a", "a\r\n.\r\n"},
	{"a\r\n", "a\r\n.\r\n"},
	{"a\n", "a\r\n.\r\n"},
	{".", "..\r\n.\r\n"},
	{".\r\n", "..\r\n.\r\n"},
	{"\r\n", "\r\n.\r\n"},
	{"\n", "\r\n.\r\n"},
	{"a\r\n.b\r\n", "a\r\n..b\r\n.\r\n"},
	{"a\n.b\n", "a\r\n..b\r\n.\r\n"},
	{"..\r\n", "...\r\n.\r\n"},
	{"a.b\r\n", "a.b\r\n.\r\n"},
	{"\r", "\r\n.\r\n"},
	{"a\rb\r\n", "a\rb\r\n.\r\n"},
	{"a\r.b", "a\r.b\r\n.\r\n"},
	{"\r\n\r\n", "\r\n\r\n.\r\n"},
	{"\n\n", "\r\n\r\n.\r\n"},
	{"\r\r\n", "\r\r\n.\r\n"},
	{".\n.\n", "..\r\n..\r\n.\r\n"},
	{"x\r\n.", "x\r\n..\r\n.\r\n"},
	{"x\r\n.\r", "x\r\n..\r\n.\r\n"},
	{"\r\n.\r\n.\r\n", "\r\n..\r\n..\r\n.\r\n"},
	{"a\n\r\nb", "a\r\n\r\nb\r\n.\r\n"},
	{"...\n", "....\r\n.\r\n"},
	{" .\r\n", " .\r\n.\r\n"},
	{"\x00.\r\n", "\x00.\r\n.\r\n"},
	{"line1\r\nline2", "line1\r\nline2\r\n.\r\n"},
	{".a\r\n.b\n.c", "..a\r\n..b\r\n..c\r\n.\r\n"},
	{"\n.", "\r\n..\r\n.\r\n"},
	{"a\r\n\n.\r\n", "a\r\n\r\n..\r\n.\r\n"},
	{"\r\n.\r\n", "\r\n..\r\n.\r\n"},
	{"Subject: x\r\n\r\n.\r\n..\r\n", "Subject: x\r\n\r\n..\r\n...\r\n.\r\n"},
}

// TestDotWriter checks every case whole, split in two at every offset, in
// three at every pair of offsets, and byte by byte: chunk boundaries fall
// between CR and LF, between LF and ".", and everywhere else.
func TestDotWriter(t *testing.T) {
	for _, tc := range dotCases {
		in := []byte(tc.in)
		if got := string(stuff(t, in)); got != tc.want {
			t.Errorf("stuff(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		if got := string(refStuff(in)); got != tc.want {
			t.Errorf("reference disagrees on %q: %q", tc.in, got)
		}
		for i := 0; i <= len(in); i++ {
			if got := string(stuff(t, in[:i], in[i:])); got != tc.want {
				t.Errorf("stuff(%q | %q) = %q, want %q", in[:i], in[i:], got, tc.want)
			}
			for j := i; j <= len(in); j++ {
				if got := string(stuff(t, in[:i], in[i:j], in[j:])); got != tc.want {
					t.Errorf("stuff(%q | %q | %q) = %q, want %q", in[:i], in[i:j], in[j:], got, tc.want)
				}
			}
		}
		var bytewise [][]byte
		for i := range in {
			bytewise = append(bytewise, in[i:i+1])
		}
		if got := string(stuff(t, bytewise...)); got != tc.want {
			t.Errorf("bytewise stuff(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := string(unstuff(t, []byte(tc.want))); got != string(normalize(in)) {
			t.Errorf("unstuff(%q) = %q, want %q", tc.want, got, normalize(in))
		}
	}
}

// TestDotWriterLarge compares long mixed input, written through
// copyMessage with one-byte and odd-sized reads, against the reference.
func TestDotWriterLarge(t *testing.T) {
	var b strings.Builder
	for i := range 5000 {
		switch i % 7 {
		case 0:
			b.WriteString(".dot line\r\n")
		case 1:
			b.WriteString("bare lf\n")
		case 2:
			b.WriteString(strings.Repeat("x", 3000) + "\r\n")
		case 3:
			b.WriteString("\r\n")
		case 4:
			b.WriteString("..\n")
		case 5:
			b.WriteString("cr\ronly\r\n")
		default:
			b.WriteString("plain text of a usual line in a message\r\n")
		}
	}
	b.WriteString(".no end")
	in := []byte(b.String())
	want := refStuff(in)
	readers := map[string]io.Reader{
		"whole":   bytes.NewReader(in),
		"onebyte": iotest.OneByteReader(bytes.NewReader(in)),
		"half":    iotest.HalfReader(bytes.NewReader(in)),
	}
	for name, r := range readers {
		var out bytes.Buffer
		bw := bufio.NewWriterSize(&out, bigBufSize)
		d := newDotWriter(bw)
		if err := copyMessage(d, r); err != nil {
			t.Fatal(err)
		}
		d.Close()
		bw.Flush()
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("%s: output differs from reference (len %d vs %d)", name, out.Len(), len(want))
		}
	}
}

func TestDotWriterErrors(t *testing.T) {
	bw := bufio.NewWriterSize(failWriter{}, 16)
	d := newDotWriter(bw)
	_, err := d.Write([]byte(strings.Repeat("line\r\n", 100)))
	if !errors.Is(err, errFail) {
		t.Errorf("Write error = %v, want errFail", err)
	}
	r := iotest.ErrReader(errFail)
	err = copyMessage(newDotWriter(bufio.NewWriter(io.Discard)), r)
	var re *readError
	if !errors.As(err, &re) || !errors.Is(err, errFail) {
		t.Errorf("copyMessage read error = %v, want readError(errFail)", err)
	}
}

var errFail = errors.New("fail")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errFail }

func TestCopyTop(t *testing.T) {
	long := strings.Repeat("h", 5000)
	cases := []struct {
		in    string
		lines int
		want  string
	}{
		{"A: 1\r\n\r\nb1\r\nb2\r\n", 0, "A: 1\r\n\r\n.\r\n"},
		{"A: 1\r\n\r\nb1\r\nb2\r\n", 1, "A: 1\r\n\r\nb1\r\n.\r\n"},
		{"A: 1\r\n\r\nb1\r\nb2\r\n", 2, "A: 1\r\n\r\nb1\r\nb2\r\n.\r\n"},
		{"A: 1\r\n\r\nb1\r\nb2\r\n", 9, "A: 1\r\n\r\nb1\r\nb2\r\n.\r\n"},
		{"A: 1\r\n\r\nb1\r\nb2", 9, "A: 1\r\n\r\nb1\r\nb2\r\n.\r\n"},
		{"A: 1\n\n.b1\nb2\n", 1, "A: 1\r\n\r\n..b1\r\n.\r\n"},
		{"A: 1\r\n", 3, "A: 1\r\n.\r\n"},
		{"A: 1", 0, "A: 1\r\n.\r\n"},
		{"", 0, ".\r\n"},
		{"\r\nbody\r\n", 0, "\r\n.\r\n"},
		{"\r\nbody\r\n", 1, "\r\nbody\r\n.\r\n"},
		// Header and body lines longer than the 4 KiB read buffer.
		{"A: " + long + "\r\n\r\n" + long + "\r\nb2\r\n", 1, "A: " + long + "\r\n\r\n" + long + "\r\n.\r\n"},
		// A header line ending in "\r\n" right after a split must not look blank.
		{"A: " + long[:4093] + "\r\nB: 2\r\n\r\nb\r\n", 0, "A: " + long[:4093] + "\r\nB: 2\r\n\r\n.\r\n"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		d := newDotWriter(bw)
		if err := copyTop(d, strings.NewReader(tc.in), tc.lines); err != nil {
			t.Fatal(err)
		}
		d.Close()
		bw.Flush()
		if out.String() != tc.want {
			t.Errorf("TOP %d of %.40q = %.60q, want %.60q", tc.lines, tc.in, out.String(), tc.want)
		}
	}
}

func FuzzDotStuff(f *testing.F) {
	for _, tc := range dotCases {
		f.Add([]byte(tc.in), uint16(len(tc.in)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		k := int(split) % (len(in) + 1)
		out := stuff(t, in[:k], in[k:])
		if len(in) > 0 && !bytes.HasSuffix(out, []byte("\r\n.\r\n")) {
			t.Fatalf("output %q does not end in CRLF.CRLF", out)
		}
		if got, want := unstuff(t, out), normalize(in); !bytes.Equal(got, want) {
			t.Fatalf("unstuff(stuff(%q)) = %q, want %q", in, got, want)
		}
		if want := refStuff(in); !bytes.Equal(out, want) {
			t.Fatalf("stuff(%q) = %q, reference %q", in, out, want)
		}
	})
}

func BenchmarkDotStuff(b *testing.B) {
	for _, size := range []int{20 << 10, 5 << 20} {
		msg := benchMessage(size)
		b.Run(byteSize(size), func(b *testing.B) {
			bw := bufio.NewWriterSize(io.Discard, bigBufSize)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				d := newDotWriter(bw)
				if err := copyMessage(d, bytes.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
				d.Close()
				bw.Flush()
			}
		})
	}
}
