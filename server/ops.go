package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"mailpost/config"
	"mailpost/storage"
)

// Operations through the control socket: the hot backup, mailbox
// statistics and imports from other servers.

func (s *Server) handleBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	start := time.Now()
	// The exact length goes ahead of the copy: it is the client's proof
	// that the copy is whole. A failure mid-copy aborts the connection, and
	// the client sees fewer bytes than announced.
	n, err := s.store.BackupSized(w, func(size int64) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	})
	if err != nil {
		s.log.Error("backup failed", "bytes", n, "err", err)
		// Headers are out; the only way left to say "incomplete" is to
		// cut the connection.
		panic(http.ErrAbortHandler)
	}
	s.log.Info("backup written", "bytes", n, "duration", time.Since(start).Round(time.Millisecond), "via", "control")
}

// MailboxReport is one mailbox as `mailpost mailbox list|stats` shows it:
// its configuration (if it is still configured) and what the store holds.
type MailboxReport struct {
	Address    string   `json:"address"`
	Configured bool     `json:"configured"` // false: mail left in the store by a removed mailbox
	POP3       bool     `json:"pop3"`
	Submission bool     `json:"submission"`
	Aliases    []string `json:"aliases,omitempty"`
	Quota      int64    `json:"quota"` // 0 = unlimited
	Messages   int      `json:"messages"`
	Bytes      int64    `json:"bytes"`
	// LastLogin is the newest login with any of the mailbox's passwords;
	// its device field names a device password.
	LastLogin *storage.Login `json:"last_login,omitempty"`
	// MainLogin is the last login with the main password.
	MainLogin *storage.Login `json:"main_login,omitempty"`
	// Devices are the configured device passwords in file order, then
	// devices the store has a last use for but the file no longer names
	// (Removed), by name: the record stays until the mailbox is gone, so
	// an operator can see when a withdrawn device was last used.
	Devices []DeviceReport `json:"devices,omitempty"`
}

// DeviceReport is one device password of a mailbox and its last use.
type DeviceReport struct {
	Name    string         `json:"name"`
	Removed bool           `json:"removed,omitempty"` // in the store, no longer in the file
	Allow   []string       `json:"allow,omitempty"`
	From    []string       `json:"from,omitempty"`    // empty: any network
	Expires *time.Time     `json:"expires,omitempty"` // the first instant it no longer works
	Expired bool           `json:"expired,omitempty"`
	LastUse *storage.Login `json:"last_use,omitempty"`
}

// deviceReports joins a mailbox's configured devices (mb nil: none) with
// the last uses the store has.
func deviceReports(mb *config.Mailbox, used map[string]storage.Login, now time.Time) []DeviceReport {
	var out []DeviceReport
	seen := map[string]bool{}
	if mb != nil {
		for _, d := range mb.Devices {
			r := DeviceReport{Name: d.Name, Allow: d.Allow, Expired: d.Expired(now)}
			for _, p := range d.From {
				r.From = append(r.From, p.String())
			}
			if !d.Expires.IsZero() {
				e := d.Expires
				r.Expires = &e
			}
			if l, ok := used[d.Name]; ok {
				r.LastUse = &l
			}
			seen[d.Name] = true
			out = append(out, r)
		}
	}
	var gone []string
	for name := range used {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		l := used[name]
		out = append(out, DeviceReport{Name: name, Removed: true, LastUse: &l})
	}
	return out
}

// MailboxReports joins the configured mailboxes with the store's counters
// and last logins: configured ones first in file order, then mailboxes
// the store still holds mail for but the file no longer names.
func MailboxReports(cfg *config.Config, st *storage.Store) ([]MailboxReport, error) {
	stats, err := st.MailboxStats()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	byName := make(map[string]storage.MailboxStats, len(stats))
	for _, m := range stats {
		byName[m.Mailbox] = m
	}
	var out []MailboxReport
	for _, mb := range cfg.Mailboxes {
		m := byName[mb.Address]
		delete(byName, mb.Address)
		out = append(out, MailboxReport{Address: mb.Address, Configured: true, POP3: mb.POP3, Submission: mb.Submission,
			Aliases: mb.Aliases, Quota: mb.Quota, Messages: m.Messages, Bytes: m.Bytes, LastLogin: m.LastLogin,
			MainLogin: m.MainLogin, Devices: deviceReports(mb, m.Devices, now)})
	}
	for _, m := range stats {
		if _, left := byName[m.Mailbox]; left && (m.Messages > 0 || m.LastLogin != nil) {
			out = append(out, MailboxReport{Address: m.Mailbox, Messages: m.Messages, Bytes: m.Bytes, LastLogin: m.LastLogin,
				MainLogin: m.MainLogin, Devices: deviceReports(nil, m.Devices, now)})
		}
	}
	return out, nil
}

func (s *Server) handleMailboxes(w http.ResponseWriter, r *http.Request) {
	reps, err := MailboxReports(s.cur.Load().cfg, s.store)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, reps)
}

// ErrAlreadyImported means the mailbox already holds a message with the
// import's UIDL (the same content, imported before).
var ErrAlreadyImported = errors.New("already imported")

// Import puts one message from another server into the mailbox addr names,
// under an explicit UIDL (so a second import of the same message is
// refused with ErrAlreadyImported) and its original arrival time (zero:
// now). Quotas apply as for any delivery.
func Import(cfg *config.Config, st *storage.Store, addr, uidl string, arrived time.Time, r io.Reader) (storage.MessageInfo, string, error) {
	mb := cfg.Mailbox(addr)
	if mb == nil {
		return storage.MessageInfo{}, "", fmt.Errorf("%s: %w", addr, ErrNoSuchRecipient)
	}
	// Imported: the UIDL also goes into the mailbox's import ledger, so a
	// re-run does not bring the message back after a client deletes it.
	info, err := st.Deliver(mb.Address, r, storage.DeliverOptions{Quota: mb.Quota, UIDL: uidl, Arrived: arrived, Imported: true})
	if errors.Is(err, storage.ErrDuplicateUIDL) {
		return info, mb.Address, fmt.Errorf("%s in %s: %w", uidl, mb.Address, ErrAlreadyImported)
	}
	return info, mb.Address, err
}

// KnownResult answers "which of these UIDLs does the mailbox have": the
// mailbox the address names, its quota and usage (the import's size
// limit), and the UIDLs it holds or, with the ledger, was ever given by
// an import.
type KnownResult struct {
	Mailbox string   `json:"mailbox"`
	Quota   int64    `json:"quota"` // 0 = unlimited
	Bytes   int64    `json:"bytes"`
	Known   []string `json:"known"`
}

// maxKnownQuery bounds one UIDL query: 10,000 UIDLs of at most 70
// characters, JSON-quoted, fit well inside.
const maxKnownQuery = 1 << 20

// KnownUIDLs resolves addr and asks the store which of uidls it knows.
func KnownUIDLs(cfg *config.Config, st *storage.Store, addr string, uidls []string, withLedger bool) (KnownResult, error) {
	mb := cfg.Mailbox(addr)
	if mb == nil {
		return KnownResult{}, fmt.Errorf("%s: %w", addr, ErrNoSuchRecipient)
	}
	known, err := st.KnownUIDLs(mb.Address, uidls, withLedger)
	if err != nil {
		return KnownResult{}, err
	}
	_, used, err := st.Usage(mb.Address)
	if err != nil {
		return KnownResult{}, err
	}
	res := KnownResult{Mailbox: mb.Address, Quota: mb.Quota, Bytes: used, Known: make([]string, 0, len(known))}
	for _, u := range uidls {
		if known[u] {
			res.Known = append(res.Known, u)
			delete(known, u) // each once, in the caller's order
		}
	}
	return res, nil
}

func (s *Server) handleKnownUIDLs(w http.ResponseWriter, r *http.Request) {
	var uidls []string
	if err := json.NewDecoder(io.LimitReader(r.Body, maxKnownQuery)).Decode(&uidls); err != nil {
		http.Error(w, "want a JSON list of UIDLs (at most 1 MiB): "+err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	res, err := KnownUIDLs(s.cur.Load().cfg, s.store, q.Get("to"), uidls, q.Get("ledger") != "0")
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoSuchRecipient) {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return
	}
	writeJSON(w, res)
}

func (s *Server) handleImport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var arrived time.Time
	if v := q.Get("arrived"); v != "" {
		var err error
		if arrived, err = time.Parse(time.RFC3339Nano, v); err != nil {
			http.Error(w, "arrived must be RFC 3339", http.StatusBadRequest)
			return
		}
	}
	info, mailbox, err := Import(s.cur.Load().cfg, s.store, q.Get("to"), q.Get("uidl"), arrived, r.Body)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrAlreadyImported):
			code = http.StatusConflict
		case errors.Is(err, ErrNoSuchRecipient):
			code = http.StatusNotFound
		case errors.Is(err, storage.ErrQuotaExceeded):
			code = http.StatusInsufficientStorage
		case errors.Is(err, storage.ErrInvalidUIDL):
			code = http.StatusBadRequest
		}
		if code != http.StatusConflict {
			s.log.Warn("import refused", "to", q.Get("to"), "err", err)
		}
		http.Error(w, err.Error(), code)
		return
	}
	s.log.Debug("imported", "mailbox", mailbox, "uidl", info.UIDL, "size", info.Size)
	writeJSON(w, DeliverResult{Mailbox: mailbox, UIDL: info.UIDL, Size: info.Size})
}

// Backup streams a hot copy of the running server's store into w and
// returns its length. An error means the copy in w is incomplete.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://mailpost/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	// No overall timeout: a large store takes as long as it takes; ctx
	// is the caller's way to give up.
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return 0, fmt.Errorf("%w (%s): %v", ErrNotRunning, c.path, err)
		}
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("server refused the backup: %s %s", resp.Status, msg)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("backup cut off after %d bytes: %w", n, err)
	}
	if resp.ContentLength < 0 || n != resp.ContentLength {
		return n, fmt.Errorf("backup incomplete: got %d of %d bytes", n, resp.ContentLength)
	}
	return n, nil
}

// Mailboxes asks the running server for every mailbox's configuration,
// usage and last login.
func (c *Client) Mailboxes() ([]MailboxReport, error) {
	var reps []MailboxReport
	req, _ := http.NewRequest("GET", "http://mailpost/v1/mailboxes", nil)
	body, err := c.do(req)
	if err != nil {
		return nil, err
	}
	return reps, json.Unmarshal(body, &reps)
}

// Import hands one message to the running server's Import. A message
// already there comes back as ErrAlreadyImported.
func (c *Client) Import(to, uidl string, arrived time.Time, msg io.Reader) (DeliverResult, error) {
	var res DeliverResult
	q := url.Values{"to": {to}, "uidl": {uidl}}
	if !arrived.IsZero() {
		q.Set("arrived", arrived.Format(time.RFC3339Nano))
	}
	req, err := http.NewRequest("POST", "http://mailpost/v1/import?"+q.Encode(), msg)
	if err != nil {
		return res, err
	}
	status, body, err := c.exchange(req, 1<<16)
	if err != nil {
		return res, err
	}
	switch status {
	case http.StatusOK:
		return res, json.Unmarshal(body, &res)
	case http.StatusConflict:
		return res, fmt.Errorf("%s: %w", uidl, ErrAlreadyImported)
	case http.StatusNotFound:
		return res, fmt.Errorf("%s: %w", to, ErrNoSuchRecipient)
	case http.StatusInsufficientStorage:
		return res, fmt.Errorf("%s: %w", to, storage.ErrQuotaExceeded)
	case http.StatusBadRequest:
		return res, fmt.Errorf("%s: %w", bytes.TrimSpace(body), storage.ErrInvalidUIDL)
	}
	return res, fmt.Errorf("server refused: %s", body)
}

// KnownUIDLs asks the running server which of uidls the mailbox to holds
// (and, withLedger, was ever given by an import). Callers keep each query
// under 10,000 UIDLs.
func (c *Client) KnownUIDLs(to string, uidls []string, withLedger bool) (KnownResult, error) {
	var res KnownResult
	body, err := json.Marshal(uidls)
	if err != nil {
		return res, err
	}
	q := url.Values{"to": {to}, "ledger": {"1"}}
	if !withLedger {
		q.Set("ledger", "0")
	}
	req, err := http.NewRequest("POST", "http://mailpost/v1/import/known?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	status, out, err := c.exchange(req, 2*maxKnownQuery)
	if err != nil {
		return res, err
	}
	switch status {
	case http.StatusOK:
		return res, json.Unmarshal(out, &res)
	case http.StatusNotFound:
		return res, fmt.Errorf("%s: %w", to, ErrNoSuchRecipient)
	}
	return res, fmt.Errorf("server refused the UIDL query: %s", bytes.TrimSpace(out))
}
