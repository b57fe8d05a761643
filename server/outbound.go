package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"mailpost/config"
	"mailpost/outbound"
	"mailpost/storage"
)

// outboundSettings is the queue runner's view of cfg; nil (no outbound
// block) keeps the queue without delivering it.
func outboundSettings(cfg *config.Config) *outbound.Settings {
	o := cfg.Outbound
	if o == nil {
		return nil
	}
	st := &outbound.Settings{
		Hostname:       cfg.Hostname,
		MaxAttemptsFor: o.MaxAttemptsFor,
		Domains:        cfg.Domains,
		Mailbox: func(addr string) string {
			if mb := cfg.Mailbox(addr); mb != nil {
				return mb.Address
			}
			return ""
		},
	}
	if r := o.Relay; r != nil {
		st.Relay = &outbound.Relay{Address: net.JoinHostPort(r.Host, strconv.Itoa(r.Port)),
			TLS: string(r.TLS), Username: r.Username, Password: r.Password}
	}
	if o.DKIM != nil {
		st.DKIM = &outbound.DKIMSettings{Selector: o.DKIM.Selector, Algorithm: o.DKIM.Algorithm}
	}
	return st
}

// DNSRecords renders what `mailpost dns` prints, with the DKIM key from
// the store (made now if the config names one the store lacks). Commands
// run without a server call it on a store they opened themselves.
func DNSRecords(cfg *config.Config, store *storage.Store) (string, error) {
	txt := ""
	if o := cfg.Outbound; o != nil && o.DKIM != nil {
		key, err := outbound.LoadOrCreateKey(store, &outbound.DKIMSettings{Selector: o.DKIM.Selector, Algorithm: o.DKIM.Algorithm})
		if err != nil {
			return "", err
		}
		if txt, err = outbound.DKIMRecord(key.Public()); err != nil {
			return "", err
		}
	}
	var buf bytes.Buffer
	if err := outbound.WriteDNSRecords(&buf, cfg, txt); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func (s *Server) handleDNS(w http.ResponseWriter, r *http.Request) {
	out, err := DNSRecords(s.cur.Load().cfg, s.store)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(out))
}

// handleQueueAction serves POST /v1/queue/{id}/{action}: retry makes the
// entry due now and wakes the runner; drop removes it.
func (s *Server) handleQueueAction(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "the queue id must be a number", http.StatusBadRequest)
		return
	}
	switch r.PathValue("action") {
	case "retry":
		err = outbound.Retry(s.store, id, time.Now())
		s.outbound.Wake()
	case "drop":
		err = outbound.Drop(s.store, id)
	default:
		http.Error(w, "the action must be retry or drop", http.StatusBadRequest)
		return
	}
	if errors.Is(err, storage.ErrNotFound) {
		http.Error(w, fmt.Sprintf("no queue entry %d", id), http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.log.Info("queue entry "+r.PathValue("action"), "queue_id", id, "via", "control")
	writeJSON(w, map[string]uint64{"id": id})
}

// QueueAction asks the running server to retry or drop a queue entry.
func (c *Client) QueueAction(action string, id uint64) error {
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://mailpost/v1/queue/%d/%s", id, action), nil)
	body, err := c.do(req)
	if err != nil {
		return err
	}
	var res map[string]uint64
	return json.Unmarshal(body, &res)
}

// DNS asks the running server for the DNS records its domains need.
func (c *Client) DNS() (string, error) {
	req, _ := http.NewRequest("GET", "http://mailpost/v1/dns", nil)
	body, err := c.do(req)
	return string(body), err
}
