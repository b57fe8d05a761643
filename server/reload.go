package server

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/hcl/v2"

	"mailpost/certs"
	"mailpost/config"
	"mailpost/smtpauth"
)

// ReloadResult is the outcome of one reload attempt, kept for `mailpost
// status` and returned to `mailpost reload`.
type ReloadResult struct {
	Time        time.Time     `json:"time"`
	Trigger     string        `json:"trigger"` // "file", "signal", "command"
	OK          bool          `json:"ok"`
	Changed     bool          `json:"changed"` // false: same config and certificates, nothing done
	Revision    uint64        `json:"revision,omitempty"`
	Error       string        `json:"error,omitempty"`
	Diagnostics string        `json:"diagnostics,omitempty"` // rendered, FILE:LINE:COL lines
	Duration    time.Duration `json:"duration"`
}

// ReloadCounts are running totals, for status and metrics.
type ReloadCounts struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
	NoOp   uint64 `json:"noop"`
}

// ReloadFile re-reads the config file and applies it if it is valid and
// different. A broken file leaves everything running as it was; the
// diagnostics are logged with their positions and kept for status.
func (s *Server) ReloadFile(trigger string) ReloadResult {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	start := time.Now()
	res := ReloadResult{Time: start, Trigger: trigger}
	finish := func() ReloadResult {
		res.Duration = time.Since(start)
		s.recordReload(res)
		return res
	}
	if s.cfgPath == "" {
		res.Error = "the server was not started from a config file"
		return finish()
	}
	cfg, diags := config.Load(s.cfgPath)
	if len(diags) > 0 {
		var buf bytes.Buffer
		src, _ := os.ReadFile(s.cfgPath)
		config.WriteDiagnostics(&buf, diags, src)
		res.Diagnostics = buf.String()
		for _, d := range diags {
			s.log.Warn("config diagnostic", "at", diagPos(d), "severity", severity(d), "msg", config.Sentence(d))
		}
	}
	if diags.HasErrors() {
		res.Error = fmt.Sprintf("%s has errors; the running configuration stays", s.cfgPath)
		return finish()
	}
	changed, rev, err := s.apply(cfg)
	res.Changed, res.Revision = changed, rev
	if err != nil {
		res.Error = err.Error()
		return finish()
	}
	res.OK = true
	return finish()
}

func (s *Server) recordReload(res ReloadResult) {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	s.lastReload = &res
	switch {
	case !res.OK:
		s.reloads.Failed++
		s.log.Error("reload refused", "trigger", res.Trigger, "err", res.Error, "duration", res.Duration)
	case !res.Changed:
		s.reloads.NoOp++
		s.degraded = ""
		s.log.Debug("reload: nothing changed", "trigger", res.Trigger)
	default:
		s.reloads.OK++
		s.degraded = ""
		s.log.Info("reloaded", "trigger", res.Trigger, "revision", res.Revision, "duration", res.Duration)
	}
}

// Apply makes cfg the running configuration (used by tests and by
// ReloadFile). It reports whether anything changed.
func (s *Server) Apply(cfg *config.Config) (changed bool, err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	changed, _, err = s.apply(cfg)
	return changed, err
}

// apply builds the new runtime next to the old one, opens the sockets it
// adds, then swaps it in and retires what it no longer needs. On any error
// the old runtime keeps running untouched.
func (s *Server) apply(cfg *config.Config) (bool, uint64, error) {
	old := s.cur.Load()
	if cfg.DataDir != old.cfg.DataDir {
		// The store is opened once; moving it needs a restart.
		s.log.Warn("data_dir changed; it takes effect at the next restart", "running", old.cfg.DataDir, "file", cfg.DataDir)
		c := *cfg
		c.DataDir = old.cfg.DataDir
		cfg = &c
	}
	rt, err := s.build(cfg)
	if err != nil {
		return false, 0, err
	}
	if rt.rev.SHA256 == old.rev.SHA256 && samePool(rt, old) {
		return false, old.rev.Seq, nil
	}
	if err := s.reconcile(rt); err != nil {
		return false, 0, fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	s.cur.Store(rt)
	s.pop3.SetSettings(s.pop3Settings(rt))
	s.subm.SetSettings(s.smtpSettings(rt, smtpauth.Submission))
	s.inbound.SetSettings(s.smtpSettings(rt, smtpauth.Inbound))
	s.outbound.SetSettings(outboundSettings(rt.cfg))
	s.configureACME(cfg)
	return true, rt.rev.Seq, nil
}

// samePool reports whether two runtimes serve the same certificates, so that
// a certificate file renewed under an unchanged config still counts as a
// change.
func samePool(a, b *runtime) bool {
	fa, fb := a.pool.Infos(), b.pool.Infos()
	return slices.EqualFunc(fa, fb, func(x, y certs.Info) bool { return x.Name == y.Name && x.SHA256 == y.SHA256 })
}

// Revalidate ends a POP3 session whose access the running config no longer
// grants: the mailbox or device was removed, POP3 was switched off for it,
// its networks changed, or the password changed since the login.
func (m *maildrop) Revalidate() error {
	return m.srv.stillAllowed(m.mailbox, m.device, m.loginHash, m.remote, config.ProtoPOP3)
}

// diagPos is FILE:LINE:COLUMN, the form editors and CI parse.
func diagPos(d *hcl.Diagnostic) string {
	if d.Subject == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
}

func severity(d *hcl.Diagnostic) string {
	if d.Severity == hcl.DiagError {
		return "error"
	}
	return "warning"
}

// LastReload returns the last reload attempt, if any, and the totals.
func (s *Server) LastReload() (*ReloadResult, ReloadCounts) {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	return s.lastReload, s.reloads
}
