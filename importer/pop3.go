package importer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"mailpost/storage"
)

// Bounds on what the POP3 source reads: the old server may be broken or
// hostile, and must not make the import buffer without limit or hang.
const (
	// DefaultMaxSize is the largest message fetched when the caller sets
	// no smaller limit.
	DefaultMaxSize = 1 << 30
	// maxStatusLine bounds status and listing lines. RFC 2449 §4 says 512
	// octets for responses; real servers stay far below 4 KiB.
	maxStatusLine = 4 << 10
	// maxDataLine bounds one line of a message. RFC 5322 §2.1.1 says 998,
	// but real mail breaks that (long HTML lines, unwrapped base64), so
	// this is generous; the message as a whole is bounded by MaxSize.
	maxDataLine = 4 << 20
	// maxMessages bounds the listings (UIDL, LIST) held in memory.
	maxMessages = 1 << 20
	// knownBatch is how many UIDLs go into one Known call.
	knownBatch = 5000
	// DefaultTimeout is how long any one read or write may wait.
	DefaultTimeout = 2 * time.Minute
	// loginTimeout bounds connecting, TLS and login together.
	loginTimeout = time.Minute
)

// POP3 is a mailbox on another POP3 server, read without changing it: no
// DELE is ever sent, and the session ends with QUIT.
type POP3 struct {
	Addr     string // host:port
	Host     string // the name the certificate must carry
	Implicit bool   // pop3s: TLS from the first byte; else STLS (RFC 2595) is required
	User     string
	Password string
	// TLS is the client configuration (RootCAs, InsecureSkipVerify);
	// ServerName defaults to Host.
	TLS *tls.Config
	// Dialer connects; nil means a plain net.Dialer (the system resolver).
	Dialer *net.Dialer
	// MaxSize is the largest message fetched; larger ones are skipped and
	// counted in Stats.TooLarge. 0 means DefaultMaxSize.
	MaxSize int64
	// Timeout bounds each read and write; 0 means DefaultTimeout.
	Timeout time.Duration
	// Log receives warnings and progress lines; nil discards them. The
	// password never goes there.
	Log io.Writer
}

// ParseURL reads pop3s://USER@HOST[:PORT] (implicit TLS, port 995) or
// pop3://USER@HOST[:PORT] (STLS, port 110). USER may be percent-encoded
// (user%40example.com). A password in the URL is refused: it would end up
// in shell history and the process list.
func ParseURL(raw string) (POP3, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return POP3{}, fmt.Errorf("source URL: %w", err)
	}
	var p POP3
	port := ""
	switch u.Scheme {
	case "pop3s":
		p.Implicit, port = true, "995"
	case "pop3":
		port = "110"
	default:
		return POP3{}, fmt.Errorf("source URL %q: want pop3s:// or pop3://", raw)
	}
	if u.User == nil || u.User.Username() == "" {
		return POP3{}, fmt.Errorf("source URL %q: no user name (pop3s://USER@HOST)", raw)
	}
	if _, set := u.User.Password(); set {
		return POP3{}, errors.New("source URL: leave the password out of the URL (use -password-file, -password-stdin or the prompt)")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return POP3{}, fmt.Errorf("source URL %q: nothing may follow HOST:PORT", u.Redacted())
	}
	p.User = u.User.Username()
	p.Host = u.Hostname()
	if p.Host == "" {
		return POP3{}, fmt.Errorf("source URL %q: no host", u.Redacted())
	}
	if u.Port() != "" {
		n, err := strconv.Atoi(u.Port())
		if err != nil || n < 1 || n > 65535 {
			return POP3{}, fmt.Errorf("source URL %q: bad port", u.Redacted())
		}
		port = u.Port()
	}
	p.Addr = net.JoinHostPort(p.Host, port)
	return p, nil
}

// Each implements Source. It logs in, lists the UIDLs, asks known about
// all of them, then downloads only the others with RETR.
func (p *POP3) Each(ctx context.Context, known Known, put func(Message) error) (st Stats, err error) {
	c, err := p.connect(ctx)
	if err != nil {
		return st, err
	}
	defer func() {
		// A clean QUIT when everything went well; otherwise just close
		// (a QUIT after a protocol error could block on a broken peer).
		if err == nil {
			if _, qerr := c.cmd("QUIT"); qerr != nil {
				p.logf("warning: QUIT: %v", qerr)
			}
		}
		c.close()
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
	}()
	return p.copy(ctx, c, known, put)
}

func (p *POP3) copy(ctx context.Context, c *popClient, known Known, put func(Message) error) (Stats, error) {
	var st Stats
	reply, err := c.cmd("STAT")
	if err != nil {
		return st, err
	}
	var count int
	var total int64
	if _, err := fmt.Sscanf(reply, "%d %d", &count, &total); err != nil || count < 0 || count > maxMessages {
		return st, fmt.Errorf("STAT: unexpected reply %q", clip(reply))
	}
	st.Seen = count
	if count == 0 {
		return st, nil
	}
	sizes, err := listing(c, "LIST", count, func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n >= 0
	})
	var pe *popError
	if errors.As(err, &pe) {
		sizes = nil // LIST is required by RFC 1939, but sizes are only an early check
	} else if err != nil {
		return st, err
	}
	uidls, err := listing(c, "UIDL", count, func(s string) (string, bool) { return s, true })
	if errors.As(err, &pe) {
		p.logf("warning: the server has no UIDL (%s): every message is downloaded and named by its content (imp-…)", pe.reply)
		uidls = nil
	} else if err != nil {
		return st, err
	}
	// Keep only valid, unique UIDLs; the others fall back to the content
	// hash after download (RFC 1939 §7 requires both properties, and the
	// store refuses anything else).
	seen := make(map[string]int, len(uidls))
	for n := 1; n <= count; n++ { // in order: the first of a repeated UIDL keeps it
		u, ok := uidls[n]
		if !ok {
			continue
		}
		switch first, dup := seen[u]; {
		case !storage.ValidUIDL(u):
			p.logf("warning: message %d has an invalid UIDL %q; naming it by its content instead", n, clip(u))
			delete(uidls, n)
		case dup:
			p.logf("warning: messages %d and %d share the UIDL %q; naming the second by its content", first, n, u)
			delete(uidls, n)
		default:
			seen[u] = n
		}
	}
	have := map[string]bool{}
	if known != nil && len(uidls) > 0 {
		list := make([]string, 0, len(uidls))
		for n := 1; n <= count; n++ {
			if u, ok := uidls[n]; ok {
				list = append(list, u)
			}
		}
		for len(list) > 0 {
			batch := list[:min(len(list), knownBatch)]
			list = list[len(batch):]
			k, err := known(batch)
			if err != nil {
				return st, err
			}
			for u, v := range k {
				if v {
					have[u] = true
				}
			}
		}
	}
	maxSize := p.maxSize()
	for n := 1; n <= count; n++ {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		u, named := uidls[n]
		if named && have[u] {
			st.Known++
			continue
		}
		if sz, ok := sizes[n]; ok && sz > maxSize {
			p.logf("warning: message %d (%d octets) is larger than %d octets; skipped", n, sz, maxSize)
			st.TooLarge++
			continue
		}
		data, err := c.retr(n, maxSize)
		if err != nil {
			return st, err
		}
		if !named {
			u = ContentUIDL(data)
			if known != nil {
				k, err := known([]string{u})
				if err != nil {
					return st, err
				}
				if k[u] {
					st.Known++
					continue
				}
			}
		}
		st.Fetched += int64(len(data))
		if err := put(Message{UIDL: u, Arrived: ArrivalTime(data), Data: data}); err != nil {
			return st, err
		}
	}
	return st, nil
}

func (p *POP3) maxSize() int64 {
	if p.MaxSize > 0 {
		return p.MaxSize
	}
	return DefaultMaxSize
}

func (p *POP3) logf(format string, args ...any) {
	if p.Log != nil {
		fmt.Fprintf(p.Log, format+"\n", args...)
	}
}

// connect dials, secures and logs in, all within loginTimeout.
func (p *POP3) connect(ctx context.Context) (*popClient, error) {
	lctx, cancel := context.WithTimeoutCause(ctx, loginTimeout, fmt.Errorf("no login to %s within %s", p.Addr, loginTimeout))
	defer cancel()
	d := p.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	raw, err := d.DialContext(lctx, "tcp", p.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", p.Addr, err)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c := newPopClient(raw, timeout)
	// Cancelling either context closes the socket, which ends any read or
	// write in progress; the login one stops watching once we return.
	stopLogin := context.AfterFunc(lctx, func() { raw.Close() })
	defer stopLogin()
	c.stop = context.AfterFunc(ctx, func() { raw.Close() })
	fail := func(err error) (*popClient, error) {
		c.close()
		if lctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", context.Cause(lctx), err)
		}
		return nil, err
	}
	tcfg := p.tlsConfig()
	if p.Implicit {
		if err := c.startTLS(lctx, tcfg); err != nil {
			return fail(err)
		}
	}
	if _, err := c.status("greeting"); err != nil {
		return fail(err)
	}
	caps, capaErr := c.capa()
	if !p.Implicit {
		// RFC 2595 §4: STLS. Without it the password would cross the
		// network in the clear, which this command never does.
		if capaErr == nil && !caps.has("STLS") {
			return fail(fmt.Errorf("%s does not offer STLS; refusing to send the password without TLS (try pop3s://%s)", p.Addr, p.Host))
		}
		if _, err := c.cmd("STLS"); err != nil {
			return fail(fmt.Errorf("%w; refusing to send the password without TLS", err))
		}
		if err := c.startTLS(lctx, tcfg); err != nil {
			return fail(err)
		}
		// RFC 2595 §4: capabilities may differ after TLS; ask again.
		caps, capaErr = c.capa()
	}
	if capaErr != nil {
		var pe *popError
		if !errors.As(capaErr, &pe) {
			return fail(capaErr)
		}
		caps = nil // a server without CAPA: USER/PASS is all it has
	}
	if err := c.login(caps, p.User, p.Password); err != nil {
		return fail(err)
	}
	return c, nil
}

func (p *POP3) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if p.TLS != nil {
		cfg = p.TLS.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = p.Host
	}
	return cfg
}

// popError is a -ERR reply.
type popError struct {
	cmd, reply string
}

func (e *popError) Error() string { return fmt.Sprintf("%s: the server said -ERR %s", e.cmd, e.reply) }

// popClient is the client side of one POP3 session (RFC 1939).
type popClient struct {
	raw  net.Conn // closing it unblocks everything
	conn net.Conn // raw, or TLS over it
	br   *bufio.Reader
	bw   *bufio.Writer
	stop func() bool // unregisters the close-on-cancel hook
}

// deadlineConn gives every Read and Write its own deadline, so a server
// that stops sending in the middle of a large RETR is noticed within
// timeout, however long the whole message takes.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (d deadlineConn) Read(b []byte) (int, error) {
	d.Conn.SetReadDeadline(time.Now().Add(d.timeout))
	return d.Conn.Read(b)
}

func (d deadlineConn) Write(b []byte) (int, error) {
	d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.Conn.Write(b)
}

func newPopClient(raw net.Conn, timeout time.Duration) *popClient {
	c := &popClient{raw: raw, conn: deadlineConn{raw, timeout}, stop: func() bool { return false }}
	c.br = bufio.NewReaderSize(c.conn, 64<<10)
	c.bw = bufio.NewWriter(c.conn)
	return c
}

func (c *popClient) close() {
	c.stop()
	c.raw.Close()
}

func (c *popClient) startTLS(ctx context.Context, cfg *tls.Config) error {
	if c.br.Buffered() > 0 {
		// RFC 2595 §4 / a STARTTLS injection: bytes sent before the
		// handshake must not be read as if they came over TLS.
		return errors.New("STLS: the server sent data before the TLS handshake")
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS with %s: %w", cfg.ServerName, err)
	}
	c.conn = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	return nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns one line without its line end (CRLF, or a bare LF from
// sloppy servers). The slice is valid until the next read.
func (c *popClient) readLine(limit int) ([]byte, error) {
	var long []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		if len(long)+len(frag) > limit {
			return nil, fmt.Errorf("%w (over %d octets)", errLineTooLong, limit)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, frag...)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the server hung up
			}
			return nil, err
		}
		line := frag
		if long != nil {
			line = append(long, frag...)
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return line, nil
	}
}

// status reads a status line and returns the text after "+OK".
func (c *popClient) status(what string) (string, error) {
	line, err := c.readLine(maxStatusLine)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := string(line)
	if rest, ok := strings.CutPrefix(s, "+OK"); ok {
		return strings.TrimSpace(rest), nil
	}
	if rest, ok := strings.CutPrefix(s, "-ERR"); ok {
		return "", &popError{cmd: what, reply: clip(strings.TrimSpace(rest))}
	}
	return "", fmt.Errorf("%s: unexpected reply %q", what, clip(s))
}

// send writes one command line; name is what errors call it (never the
// line itself when it carries a secret).
func (c *popClient) send(line string) error {
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	return c.bw.Flush()
}

// cmd sends a command without secrets and reads its status line.
func (c *popClient) cmd(line string) (string, error) {
	name, _, _ := strings.Cut(line, " ")
	if err := c.send(line); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return c.status(line)
}

type capabilities map[string]string

func (c capabilities) has(name string) bool { _, ok := c[name]; return ok }

// capa asks for the capabilities (RFC 2449 §5).
func (c *popClient) capa() (capabilities, error) {
	if _, err := c.cmd("CAPA"); err != nil {
		return nil, err
	}
	caps := capabilities{}
	for i := 0; ; i++ {
		line, err := c.readLine(maxStatusLine)
		if err != nil {
			return nil, fmt.Errorf("CAPA: %w", err)
		}
		if string(line) == "." {
			return caps, nil
		}
		if i > 1000 {
			return nil, errors.New("CAPA: endless capability list")
		}
		name, args, _ := strings.Cut(string(line), " ")
		caps[strings.ToUpper(name)] = strings.ToUpper(args)
	}
}

// login uses SASL PLAIN (RFC 5034, with the initial response) when offered,
// else USER/PASS (RFC 1939 §7). Only ever called over TLS.
func (c *popClient) login(caps capabilities, user, pass string) error {
	if strings.Contains(user, "\x00") || strings.ContainsAny(pass, "\x00\r\n") || strings.ContainsAny(user, "\r\n") {
		return errors.New("the user name or password contains a NUL or line break")
	}
	if caps != nil && containsWord(caps["SASL"], "PLAIN") {
		resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		if err := c.send("AUTH PLAIN " + resp); err != nil {
			return fmt.Errorf("AUTH PLAIN: %w", err)
		}
		reply, err := c.readLine(maxStatusLine)
		if err != nil {
			return fmt.Errorf("AUTH PLAIN: %w", err)
		}
		if bytes.HasPrefix(reply, []byte("+ ")) || string(reply) == "+" {
			// A server that wants the response after an empty challenge
			// ignored the initial one: cancel (RFC 5034 §4) and say so.
			c.send("*")
			c.status("AUTH cancel")
			return errors.New("AUTH PLAIN: the server did not take the initial response")
		}
		return authReply("AUTH PLAIN", user, string(reply))
	}
	if _, err := c.cmd("USER " + user); err != nil {
		return fmt.Errorf("login as %s refused: %w", user, err)
	}
	if err := c.send("PASS " + pass); err != nil {
		return fmt.Errorf("PASS: %w", err)
	}
	line, err := c.readLine(maxStatusLine)
	if err != nil {
		return fmt.Errorf("PASS: %w", err)
	}
	return authReply("PASS", user, string(line))
}

func authReply(cmd, user, line string) error {
	if strings.HasPrefix(line, "+OK") {
		return nil
	}
	if rest, ok := strings.CutPrefix(line, "-ERR"); ok {
		return fmt.Errorf("login as %s refused: %w", user, &popError{cmd: cmd, reply: clip(strings.TrimSpace(rest))})
	}
	return fmt.Errorf("%s: unexpected reply %q", cmd, clip(line))
}

func containsWord(list, word string) bool {
	for _, w := range strings.Fields(list) {
		if w == word {
			return true
		}
	}
	return false
}

// listing runs LIST or UIDL without argument and returns message number ->
// value. Numbers outside 1..count, repeated numbers and unparseable values
// are dropped: the caller treats a missing entry as unknown.
func listing[V any](c *popClient, cmd string, count int, parse func(string) (V, bool)) (map[int]V, error) {
	if _, err := c.cmd(cmd); err != nil {
		return nil, err
	}
	out := make(map[int]V, count)
	for i := 0; ; i++ {
		line, err := c.readLine(maxStatusLine)
		if err != nil {
			return nil, fmt.Errorf("%s listing: %w", cmd, err)
		}
		if string(line) == "." {
			return out, nil
		}
		if i > count+1000 {
			return nil, fmt.Errorf("%s listing: more lines than the %d messages STAT announced", cmd, count)
		}
		num, val, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > count {
			continue
		}
		if _, dup := out[n]; dup {
			continue
		}
		if v, ok := parse(strings.TrimSpace(val)); ok {
			out[n] = v
		}
	}
}

// retr downloads message n, undoing the dot-stuffing (RFC 1939 §3) and
// ending every line in CRLF. More than max octets is an error: the session
// cannot skip the rest of a multi-line reply, and LIST said it was smaller.
func (c *popClient) retr(n int, max int64) ([]byte, error) {
	what := fmt.Sprintf("RETR %d", n)
	if _, err := c.cmd(what); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		line, err := c.readLine(maxDataLine)
		if err != nil {
			return nil, fmt.Errorf("%s: cut off after %d octets: %w", what, buf.Len(), err)
		}
		if len(line) > 0 && line[0] == '.' {
			if len(line) == 1 {
				return buf.Bytes(), nil
			}
			line = line[1:]
		}
		if int64(buf.Len()+len(line)+2) > max {
			return nil, fmt.Errorf("%s: more than %d octets", what, max)
		}
		buf.Write(line)
		buf.WriteString("\r\n")
	}
}

// clip shortens what a server sent before it goes into an error message.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
