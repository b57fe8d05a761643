package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"time"

	"mailpost/auth"
	"mailpost/storage"
)

// The control socket lets the command line talk to the running server: while
// `serve` holds the database, `deliver`, `status` and `settings` go through
// it. It is plain HTTP on a unix socket in data_dir, private to the service
// user (the directory is 0700 and the socket 0600), so no further auth.

type controlServer struct {
	path string
	srv  *http.Server
	done chan struct{}
}

func startControl(s *Server, path string) (*controlServer, error) {
	// We hold the database lock, so a socket file left here belongs to a
	// process that is gone.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/deliver", s.handleDeliver)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET /v1/settings", s.handleSettings)
	mux.HandleFunc("POST /v1/reload", s.handleReload)
	mux.HandleFunc("GET /v1/queue", s.handleQueue)
	mux.HandleFunc("POST /v1/queue/{id}/{action}", s.handleQueueAction)
	mux.HandleFunc("GET /v1/dns", s.handleDNS)
	mux.HandleFunc("GET /v1/revisions", s.handleRevisions)
	mux.HandleFunc("GET /v1/revisions/{seq}", s.handleRevision)
	mux.HandleFunc("GET /v1/backup", s.handleBackup)
	mux.HandleFunc("GET /v1/mailboxes", s.handleMailboxes)
	mux.HandleFunc("POST /v1/import", s.handleImport)
	mux.HandleFunc("POST /v1/import/known", s.handleKnownUIDLs)
	mux.HandleFunc("GET /v1/login-limits", s.handleLoginLimits)
	mux.HandleFunc("POST /v1/login-limits/clear", s.handleLoginLimitsClear)
	c := &controlServer{path: path, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("control socket failed", "err", err)
		}
	}()
	return c, nil
}

func (c *controlServer) shutdown(ctx context.Context) error {
	err := c.srv.Shutdown(ctx)
	<-c.done
	os.Remove(c.path)
	return err
}

// DeliverResult is what a delivery through the control socket reports.
type DeliverResult struct {
	Mailbox string `json:"mailbox"`
	UIDL    string `json:"uidl"`
	Size    int64  `json:"size"`
}

func (s *Server) handleDeliver(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	info, mailbox, err := Deliver(s.cur.Load().cfg, s.store, to, r.Body)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrNoSuchRecipient):
			code = http.StatusNotFound
		case errors.Is(err, storage.ErrQuotaExceeded):
			code = http.StatusInsufficientStorage
		case errors.Is(err, storage.ErrTooLarge):
			code = http.StatusRequestEntityTooLarge
		}
		s.log.Warn("delivery refused", "to", to, "err", err)
		http.Error(w, err.Error(), code)
		return
	}
	s.log.Info("delivered", "mailbox", mailbox, "uidl", info.UIDL, "size", info.Size, "via", "control")
	writeJSON(w, DeliverResult{Mailbox: mailbox, UIDL: info.UIDL, Size: info.Size})
}

// Status is the running server's own account of itself.
type Status struct {
	Hostname       string         `json:"hostname"`
	Started        time.Time      `json:"started"`
	ConfigFile     string         `json:"config_file"`
	ConfigRevision uint64         `json:"config_revision"`
	ConfigSHA256   string         `json:"config_sha256"`
	Degraded       string         `json:"degraded,omitempty"` // why the server runs on something other than its file
	LastReload     *ReloadResult  `json:"last_reload,omitempty"`
	Reloads        ReloadCounts   `json:"reloads"`
	Listeners      []ListenerInfo `json:"listeners"`
	Certificates   []CertStatus   `json:"certificates"`
	POP3Sessions   int            `json:"pop3_sessions"`
	SMTPSessions   int            `json:"smtp_sessions"`
	Memory         MemStats       `json:"memory"`
	StoreBytes     int64          `json:"store_bytes"`  // size of the database file
	QueueLength    int            `json:"queue_length"` // messages waiting for outbound delivery
	QueueError     string         `json:"queue_error,omitempty"`
	// LastLogins are the most recent logins across mailboxes, newest
	// first, one per mailbox (its last), at most statusLogins.
	LastLogins      []RecentLogin `json:"last_logins"`
	LastLoginsError string        `json:"last_logins_error,omitempty"`
	// LoginLimits counts the networks and accounts login_limits refuses
	// now and lists the fullest statusLoginLimits (nil from a server
	// older than the field).
	LoginLimits *auth.LimitSnapshot `json:"login_limits,omitempty"`
}

// RecentLogin is a mailbox's last login: when, from which address, over
// which protocol.
type RecentLogin struct {
	Mailbox string `json:"mailbox"`
	storage.Login
}

// statusLogins is how many logins status shows: enough to spot a stranger
// at a glance; `mailpost mailbox stats` has them all.
const statusLogins = 10

// recentLogins reads every mailbox's last login (usage counters and login
// records only, no message) and keeps the newest n.
func recentLogins(st *storage.Store, n int) ([]RecentLogin, error) {
	stats, err := st.MailboxStats()
	if err != nil {
		return nil, fmt.Errorf("reading last logins: %w", err)
	}
	out := []RecentLogin{}
	for _, m := range stats {
		if m.LastLogin != nil {
			out = append(out, RecentLogin{Mailbox: m.Mailbox, Login: *m.LastLogin})
		}
	}
	slices.SortStableFunc(out, func(a, b RecentLogin) int { return b.Time.Compare(a.Time) })
	if len(out) > n {
		out = out[:n]
	}
	return out, nil
}

// MemStats is the Go runtime's view of the process's memory, in bytes:
// what live objects and goroutine stacks use, and what the runtime holds
// but does not use (it returns that to the OS gradually).
type MemStats struct {
	HeapLive   uint64 `json:"heap_live"` // heap objects, live or not yet collected
	Stacks     uint64 `json:"stacks"`    // goroutine stacks
	HeapFree   uint64 `json:"heap_free"` // free heap memory still mapped
	Total      uint64 `json:"total"`     // everything the runtime has mapped
	Goroutines uint64 `json:"goroutines"`
}

func readMemStats() MemStats {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(samples)
	v := func(i int) uint64 {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	return MemStats{HeapLive: v(0), Stacks: v(1), HeapFree: v(2), Total: v(3), Goroutines: v(4)}
}

// Status reports the running state.
func (s *Server) Status() Status {
	rt := s.cur.Load()
	last, counts := s.LastReload()
	s.statusMu.Lock()
	degraded := s.degraded
	s.statusMu.Unlock()
	st := Status{
		Hostname:       rt.cfg.Hostname,
		Started:        s.started,
		ConfigFile:     s.cfgPath,
		Degraded:       degraded,
		LastReload:     last,
		Reloads:        counts,
		ConfigRevision: rt.rev.Seq,
		ConfigSHA256:   rt.rev.SHA256,
		Listeners:      s.Listeners(),
		Certificates:   certStatuses(rt.pool, time.Now()),
		POP3Sessions:   s.pop3.Stats().Sessions,
		SMTPSessions:   s.subm.Stats().Sessions + s.inbound.Stats().Sessions,
		Memory:         readMemStats(),
	}
	ll := s.LoginLimits(statusLoginLimits)
	st.LoginLimits = &ll
	if fi, err := os.Stat(s.store.Path()); err == nil {
		st.StoreBytes = fi.Size()
	}
	if q, err := s.store.Queue(); err == nil {
		st.QueueLength = len(q)
	} else {
		st.QueueError = err.Error()
	}
	var err error
	if st.LastLogins, err = recentLogins(s.store, statusLogins); err != nil {
		// Status still answers: the rest of it is what an operator
		// needs when the store misbehaves.
		s.log.Warn("status", slog.Any("err", err))
		st.LastLoginsError = err.Error()
	}
	return st
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.Status())
}

func (s *Server) handleSettings(w http.ResponseWriter, r *http.Request) {
	rt := s.cur.Load()
	var buf bytes.Buffer
	WriteSettings(&buf, rt.cfg, rt.pool, s.store)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(buf.Bytes())
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, s.ReloadFile("command"))
}

func (s *Server) handleQueue(w http.ResponseWriter, r *http.Request) {
	q, err := s.store.Queue()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, q)
}

func (s *Server) handleRevisions(w http.ResponseWriter, r *http.Request) {
	revs, err := s.store.Revisions()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, revs)
}

func (s *Server) handleRevision(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		http.Error(w, "revision must be a number", http.StatusBadRequest)
		return
	}
	rev, err := s.store.Revision(seq)
	if errors.Is(err, storage.ErrNotFound) {
		http.Error(w, fmt.Sprintf("no revision %d", seq), http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, rev)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ErrNotRunning means no server answers on the control socket.
var ErrNotRunning = errors.New("no running server answers on the control socket")

// Client talks to a running server over its control socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the server whose data_dir is dataDir.
func NewClient(dataDir string) *Client {
	path := ControlSocketPath(dataDir)
	return &Client{path: path, http: &http.Client{
		Timeout: 5 * time.Minute,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *Client) do(req *http.Request) ([]byte, error) {
	status, body, err := c.exchange(req, 1<<20)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("server refused: %s", bytes.TrimSpace(body))
	}
	return body, nil
}

// exchange sends req and returns the status and at most limit bytes of the
// answer, for callers that map statuses to errors themselves. A socket
// nobody listens on is ErrNotRunning.
func (c *Client) exchange(req *http.Request, limit int64) (int, []byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) || errors.Is(err, os.ErrNotExist) {
			return 0, nil, fmt.Errorf("%w (%s): %v", ErrNotRunning, c.path, err)
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	return resp.StatusCode, body, err
}

// Running reports whether a server answers on the socket. Callers that
// stream a body check first, because a failed request consumes the body.
func (c *Client) Running() bool {
	conn, err := net.DialTimeout("unix", c.path, 2*time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Deliver hands one message to the running server. If none runs, it
// returns ErrNotRunning without reading msg.
func (c *Client) Deliver(to string, msg io.Reader) (DeliverResult, error) {
	var res DeliverResult
	if !c.Running() {
		return res, fmt.Errorf("%w (%s)", ErrNotRunning, c.path)
	}
	req, err := http.NewRequest("POST", "http://mailpost/v1/deliver?to="+url.QueryEscape(to), msg)
	if err != nil {
		return res, err
	}
	body, err := c.do(req)
	if err != nil {
		return res, err
	}
	return res, json.Unmarshal(body, &res)
}

// Status asks the running server for its status.
func (c *Client) Status() (Status, error) {
	var st Status
	req, _ := http.NewRequest("GET", "http://mailpost/v1/status", nil)
	body, err := c.do(req)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(body, &st)
}

// Reload asks the running server to re-read its config file.
func (c *Client) Reload() (ReloadResult, error) {
	var res ReloadResult
	req, _ := http.NewRequest("POST", "http://mailpost/v1/reload", nil)
	body, err := c.do(req)
	if err != nil {
		return res, err
	}
	return res, json.Unmarshal(body, &res)
}

// Queue lists the outbound queue of the running server.
func (c *Client) Queue() ([]storage.QueuedMessage, error) {
	var q []storage.QueuedMessage
	req, _ := http.NewRequest("GET", "http://mailpost/v1/queue", nil)
	body, err := c.do(req)
	if err != nil {
		return nil, err
	}
	return q, json.Unmarshal(body, &q)
}

// Revisions lists the config revisions the running server has recorded.
func (c *Client) Revisions() ([]storage.Revision, error) {
	var revs []storage.Revision
	req, _ := http.NewRequest("GET", "http://mailpost/v1/revisions", nil)
	body, err := c.do(req)
	if err != nil {
		return nil, err
	}
	return revs, json.Unmarshal(body, &revs)
}

// Revision fetches one recorded config revision with its source.
func (c *Client) Revision(seq uint64) (storage.Revision, error) {
	var rev storage.Revision
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://mailpost/v1/revisions/%d", seq), nil)
	body, err := c.do(req)
	if err != nil {
		return rev, err
	}
	return rev, json.Unmarshal(body, &rev)
}

// Settings asks the running server for its effective settings, rendered.
func (c *Client) Settings() (string, error) {
	req, _ := http.NewRequest("GET", "http://mailpost/v1/settings", nil)
	body, err := c.do(req)
	return string(body), err
}
