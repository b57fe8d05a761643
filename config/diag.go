package config

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// WriteDiagnostics renders one diagnostic per line as
// "FILE:LINE:COLUMN: error: plain sentence" (or "warning:"), the form
// compilers use so editors can jump to it. When src is non-nil, the source
// line and a caret marker under the subject follow, indented.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, src []byte) error {
	bw := bufio.NewWriter(w)
	for _, d := range diags {
		if d == nil {
			continue
		}
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		pos := ""
		if s := d.Subject; s != nil {
			switch {
			case s.Start.Line > 0:
				pos = fmt.Sprintf("%s:%d:%d: ", s.Filename, s.Start.Line, s.Start.Column)
			case s.Filename != "":
				pos = s.Filename + ": "
			}
		}
		fmt.Fprintf(bw, "%s%s: %s\n", pos, sev, Sentence(d))
		if src != nil && d.Subject != nil {
			writeSnippet(bw, *d.Subject, src)
		}
	}
	return bw.Flush()
}

// Sentence returns a diagnostic as one plain line of text. HCL puts the
// full sentence in Detail ("An argument named "x" is not expected here.")
// and a title in Summary; ours do the same, so Detail wins when present.
func Sentence(d *hcl.Diagnostic) string {
	s := d.Detail
	if strings.TrimSpace(s) == "" {
		s = d.Summary
	}
	// One line: HCL details are sometimes wrapped.
	s = strings.Join(strings.Fields(s), " ")
	return sentence(s)
}

// writeSnippet prints the source line holding rng.Start and a caret run
// under the subject, clipped to that line. Byte offsets are checked, since
// src might not be the text the range came from.
func writeSnippet(w io.Writer, rng hcl.Range, src []byte) {
	start := rng.Start.Byte
	if rng.Start.Line < 1 || start < 0 || start > len(src) {
		return
	}
	lineStart := strings.LastIndexByte(string(src[:start]), '\n') + 1
	lineEnd := len(src)
	if i := strings.IndexByte(string(src[start:]), '\n'); i >= 0 {
		lineEnd = start + i
	}
	line := strings.TrimRight(string(src[lineStart:lineEnd]), "\r")
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
	}
	end := rng.End.Byte
	if end > lineEnd || end < start {
		end = lineEnd
	}
	var pad strings.Builder
	for _, r := range string(src[lineStart:start]) {
		if r == '\t' {
			pad.WriteByte('\t')
		} else {
			pad.WriteByte(' ')
		}
	}
	width := utf8.RuneCount(src[start:end])
	if width < 1 {
		width = 1
	}
	fmt.Fprintf(w, "    %s\n    %s%s\n", line, pad.String(), strings.Repeat("^", width))
}
