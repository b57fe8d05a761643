package smtpauth

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBareLFUnstuffer(t *testing.T) {
	cases := []struct{ in, want string }{
		{"a\r\n.b\r\n", "a\r\n.b\r\n"},   // after CRLF go-smtp already un-stuffed: leave it
		{"a\n..b\n", "a\n.b\n"},          // stuffed after a bare LF
		{"a\n.\n", "a\n\n"},              // a lone stuffed dot
		{"a\n...\n", "a\n..\n"},          // only one dot comes off
		{"a\r\n..b\r\n", "a\r\n..b\r\n"}, // CRLF lines are not touched twice
		{"a\n\n..b\n", "a\n\n.b\n"},      // empty bare-LF line before it
		{"a\r\n\n..b", "a\r\n\n.b"},      // LF after a CRLF is a bare LF too
		{"x.y\n", "x.y\n"},               // dots elsewhere stay
		{"\r.\n.a", "\r.\na"},            // a lone CR is not a line end; the LF after "." is
		{"", ""},
	}
	for _, c := range cases {
		for name, r := range map[string]io.Reader{
			"whole":   strings.NewReader(c.in),
			"onebyte": iotest.OneByteReader(strings.NewReader(c.in)),
		} {
			got, err := io.ReadAll(&bareLFUnstuffer{r: r})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("%s %q: got %q, want %q", name, c.in, got, c.want)
			}
		}
	}
}
