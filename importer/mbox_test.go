package importer

import (
	"strings"
	"testing"
	"time"
)

func TestReadMbox(t *testing.T) {
	type msg struct {
		body    string
		arrived time.Time
	}
	local := func(y int, mo time.Month, d, h, mi, s int) time.Time {
		return time.Date(y, mo, d, h, mi, s, 0, time.Local)
	}
	for _, tc := range []struct {
		name, in string
		want     []msg
		wantErr  string
	}{
		{name: "empty", in: ""},
		{name: "blank lines only", in: "\n\n"},
		{name: "one message, LF, trailing separator line",
			in:   "From a@example.org Thu Nov 24 18:22:48 2022\nSubject: x\n\nbody\n\n",
			want: []msg{{"Subject: x\r\n\r\nbody\r\n", local(2022, 11, 24, 18, 22, 48)}}},
		{name: "no final newline",
			in:   "From a@example.org Thu Nov 24 18:22:48 2022\nSubject: x\n\nbody",
			want: []msg{{"Subject: x\r\n\r\nbody\r\n", local(2022, 11, 24, 18, 22, 48)}}},
		{name: "CRLF input, two messages",
			in: "From a Mon Jan  2 15:04:05 2006\r\nSubject: 1\r\n\r\none\r\n\r\nFrom b Tue Jan  3 15:04:05 2006\r\nSubject: 2\r\n\r\ntwo\r\n",
			want: []msg{{"Subject: 1\r\n\r\none\r\n", local(2006, 1, 2, 15, 4, 5)},
				{"Subject: 2\r\n\r\ntwo\r\n", local(2006, 1, 3, 15, 4, 5)}}},
		{name: "mboxrd unquoting, From without blank line stays in the body",
			in:   "From a Thu Nov 24 18:22:48 2022\nSubject: q\n\n>From the start\n>>From deeper\n>not a from\nFrom inside, unquoted\n\n",
			want: []msg{{"Subject: q\r\n\r\nFrom the start\r\n>From deeper\r\n>not a from\r\nFrom inside, unquoted\r\n", local(2022, 11, 24, 18, 22, 48)}}},
		{name: "a body ending in blank lines keeps all but the separator",
			in:   "From a Thu Nov 24 18:22:48 2022\nSubject: b\n\nx\n\n\nFrom b Thu Nov 24 18:22:49 2022\nSubject: c\n\ny\n",
			want: []msg{{"Subject: b\r\n\r\nx\r\n\r\n", local(2022, 11, 24, 18, 22, 48)}, {"Subject: c\r\n\r\ny\r\n", local(2022, 11, 24, 18, 22, 49)}}},
		{name: "unparseable date", in: "From MAILER-DAEMON sometime\nSubject: d\n\nz\n",
			want: []msg{{"Subject: d\r\n\r\nz\r\n", time.Time{}}}},
		{name: "not an mbox", in: "Subject: x\n\nbody\n", wantErr: "line 1 comes before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []msg
			err := ReadMbox(strings.NewReader(tc.in), func(b []byte, at time.Time) error {
				got = append(got, msg{string(b), at})
				return nil
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d messages %+v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if got[i].body != tc.want[i].body || !got[i].arrived.Equal(tc.want[i].arrived) {
					t.Errorf("message %d = %q at %v, want %q at %v", i, got[i].body, got[i].arrived, tc.want[i].body, tc.want[i].arrived)
				}
			}
		})
	}
}

func TestCRLF(t *testing.T) {
	for in, want := range map[string]string{"": "", "a": "a\r\n", "a\nb\n": "a\r\nb\r\n", "a\r\nb": "a\r\nb\r\n", "\n": "\r\n", "a\r\r\n": "a\r\r\n"} {
		if got := string(CRLF([]byte(in))); got != want {
			t.Errorf("CRLF(%q) = %q, want %q", in, got, want)
		}
	}
}
