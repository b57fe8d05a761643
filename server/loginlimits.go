package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"mailpost/auth"
)

// The login guard's state lives in memory only: these control-socket
// routes are how an operator sees who is refused now and lets one address,
// network or account in again without a restart.

// statusLoginLimits is how many refused keys `mailpost status` lists; the
// counts cover them all and `mailpost login-limits` lists more.
const statusLoginLimits = 5

// loginLimitsDefault and loginLimitsMax bound GET /v1/login-limits?n=.
const (
	loginLimitsDefault = 100
	loginLimitsMax     = 1000
)

// LoginLimits is the guard's snapshot: how many networks and accounts
// refuse logins now, and the fullest n of them.
func (s *Server) LoginLimits(n int) auth.LimitSnapshot {
	return s.guard.Snapshot(n)
}

// ClearLoginLimit drops the guard's buckets that key names (an address, a
// tier's network or an account; see auth.Guard.Clear), logging each.
func (s *Server) ClearLoginLimit(key, via string) (auth.ClearResult, error) {
	res, err := s.guard.Clear(key)
	if err != nil {
		return res, fmt.Errorf("clearing login limits: %w", err)
	}
	for _, e := range res.Cleared {
		s.log.Info("login limit cleared", "tier", e.Tier.String(), "key", e.Key, "refusing", e.Refusing,
			"refused", e.Refused, "via", via)
	}
	if len(res.Cleared) == 0 {
		s.log.Info("login limit clear matched nothing", "key", res.Key, "as", res.As, "via", via)
	}
	return res, nil
}

func (s *Server) handleLoginLimits(w http.ResponseWriter, r *http.Request) {
	n := loginLimitsDefault
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			http.Error(w, "n must be a count", http.StatusBadRequest)
			return
		}
	}
	writeJSON(w, s.LoginLimits(min(n, loginLimitsMax)))
}

// ClearRequest is the body of POST /v1/login-limits/clear.
type ClearRequest struct {
	Key string `json:"key"`
}

func (s *Server) handleLoginLimitsClear(w http.ResponseWriter, r *http.Request) {
	var req ClearRequest
	// A key is an address, a prefix or an account: 1 KiB is plenty.
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, fmt.Sprintf("want a JSON body {\"key\": ...}: %v", err), http.StatusBadRequest)
		return
	}
	res, err := s.ClearLoginLimit(req.Key, "control")
	if errors.Is(err, auth.ErrBadLimitKey) {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, res)
}

// LoginLimits asks the running server which networks and accounts its
// login guard refuses now, listing the fullest n.
func (c *Client) LoginLimits(n int) (auth.LimitSnapshot, error) {
	var snap auth.LimitSnapshot
	req, _ := http.NewRequest("GET", "http://mailpost/v1/login-limits?n="+strconv.Itoa(n), nil)
	body, err := c.do(req)
	if err != nil {
		return snap, err
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		return snap, fmt.Errorf("reading the login limits: %w", err)
	}
	return snap, nil
}

// ClearLoginLimit asks the running server to drop the login guard's
// buckets for key: an address, a tier's network or an account.
func (c *Client) ClearLoginLimit(key string) (auth.ClearResult, error) {
	var res auth.ClearResult
	b, err := json.Marshal(ClearRequest{Key: key})
	if err != nil {
		return res, err
	}
	req, _ := http.NewRequest("POST", "http://mailpost/v1/login-limits/clear", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	body, err := c.do(req)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("reading the clear result: %w", err)
	}
	return res, nil
}
