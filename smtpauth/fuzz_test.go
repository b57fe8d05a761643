package smtpauth

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzSession feeds arbitrary client bytes to a session over net.Pipe, in
// both modes: the session must neither panic (go-smtp would recover and
// log it, so a panic log line fails the test too) nor hang.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"HELO x\r\nMAIL FROM:<a@b> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<x@elsewhere.example>\r\nRSET\r\nNOOP\r\nVRFY a\r\nQUIT\r\n",
		"EHLO x\r\nAUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=\r\nAUTH LOGIN\r\n*\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"EHLO x\r\nMAIL FROM:<> SIZE=99999999999\r\nBDAT 5 LAST\r\nhello",
		"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n",
		"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n..dot\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x00\xff\r\n\n\n\rEHLO\r\nMAIL\r\nRCPT\r\nDATA\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, mode := range []Mode{Submission, Inbound} {
			fuzzOne(t, mode, in)
		}
	})
}

func fuzzOne(t *testing.T, mode Mode, in []byte) {
	lb := &logBuf{}
	s := submissionSettings()
	s.Mode = mode
	s.MaxMessageBytes = 4096
	s.RateLimitPerIP = 3
	s.ReadTimeout = 500 * time.Millisecond
	s.WriteTimeout = 500 * time.Millisecond
	srv := NewServer(newFakeBackend(), s, slog.New(slog.NewTextHandler(lb, nil)))
	defer srv.Close()

	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(server, false, "fuzz")
	}()
	go io.Copy(io.Discard, client) // the replies
	client.SetWriteDeadline(time.Now().Add(2 * time.Second))
	client.Write(in)
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("session hung on %q", in)
	}
	if st := srv.Stats(); st.Sessions != 0 {
		t.Fatalf("%d sessions left", st.Sessions)
	}
	if logs := lb.String(); strings.Contains(logs, `msg="smtp panic in session"`) {
		t.Fatalf("panic on %q:\n%s", in, logs)
	}
}
