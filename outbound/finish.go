package outbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/textproto"
	"sort"
	"strings"
	"time"

	"mailpost/storage"
)

// finish records an attempt's results: recipients done (delivered, or
// failed for good and bounced) leave the entry, the entry leaves the queue
// when none is left, and the rest wait for the next attempt.
func (r *Runner) finish(ctx context.Context, st *Settings, q storage.QueuedMessage, results map[string]result, log *slog.Logger) {
	now := r.opt.Now()
	stopped := ctx.Err() != nil
	expired := now.Sub(q.Queued) >= st.MaxAttemptsFor
	var delivered, failed, waiting []string
	for _, rcpt := range q.To {
		res, ok := results[rcpt]
		switch {
		case ok && res.ok:
			delivered = append(delivered, rcpt)
		case ok && (res.permanent || expired && !stopped):
			failed = append(failed, rcpt)
		default:
			waiting = append(waiting, rcpt)
		}
	}
	r.stats.delivered.Add(uint64(len(delivered)))
	r.stats.failed.Add(uint64(len(failed)))
	for _, rcpt := range delivered {
		log.Info("outbound: delivered", "to", rcpt, "remote", results[rcpt].remote)
	}
	if len(failed) > 0 {
		for _, rcpt := range failed {
			log.Warn("outbound: delivery failed for good", "to", rcpt, "expired", !results[rcpt].permanent, "err", results[rcpt].String())
		}
		// The bounce is stored before the entry changes: a crash between
		// the two repeats the bounce, never loses it.
		if err := r.bounce(st, q, failed, results, now); err != nil {
			log.Error("outbound: bounce not stored", "err", err)
		}
	}
	if len(waiting) == 0 {
		if err := r.store.Dequeue(q.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			log.Error("outbound: dequeue", "err", err)
		}
		return
	}
	if stopped && len(delivered)+len(failed) == 0 {
		return // interrupted by Stop: not an attempt
	}
	lastErr := ""
	for _, rcpt := range waiting {
		if res, ok := results[rcpt]; ok {
			lastErr = rcpt + ": " + res.String()
			break
		}
	}
	err := r.store.UpdateQueued(q.ID, func(m *storage.QueuedMessage) {
		m.To = waiting
		if stopped {
			return
		}
		m.Attempts++
		m.NextAttempt = now.Add(r.backoff(m.Attempts))
		m.LastError = lastErr
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		log.Error("outbound: recording the attempt", "err", err)
		return
	}
	if !stopped {
		r.stats.deferred.Add(uint64(len(waiting)))
		r.deferred(now.Add(r.backoff(q.Attempts + 1)))
		log.Info("outbound: will retry", "waiting", len(waiting), "after", r.backoff(q.Attempts+1), "err", lastErr)
	}
}

// bounce stores an RFC 3464 delivery status notification for the failed
// recipients in the sender's mailbox. The null sender is never bounced
// (RFC 5321 §4.5.5), and neither is a sender with no local mailbox: this
// queue only holds mail submitted by local users, so that means the
// sender was removed, and sending a bounce out would be backscatter.
func (r *Runner) bounce(st *Settings, q storage.QueuedMessage, failed []string, results map[string]result, now time.Time) error {
	if q.From == "" || st.Mailbox == nil {
		return nil
	}
	mb := st.Mailbox(q.From)
	if mb == "" {
		r.log.Warn("outbound: no local mailbox for the bounce", "queue_id", q.ID, "from", q.From)
		return nil
	}
	headers, err := r.originalHeaders(q.ID)
	if err != nil {
		return err
	}
	msg := buildDSN(st.Hostname, q, failed, results, headers, now)
	if _, err := r.store.Submit(bytes.NewReader(msg), storage.Submission{Local: []string{mb}}); err != nil {
		return fmt.Errorf("bounce for queue entry %d into %s: %w", q.ID, mb, err)
	}
	return nil
}

// originalHeaders reads the header section of a queued message (the
// text/rfc822-headers part of a bounce, RFC 6522 §3), capped at 64 KiB.
func (r *Runner) originalHeaders(id uint64) ([]byte, error) {
	body, err := r.store.OpenQueued(id)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	br := bufio.NewReader(io.LimitReader(body, 64<<10))
	var out bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 && (err == nil || len(line) > 0) {
			break // blank line: end of headers
		}
		out.Write(line)
		if err != nil {
			break
		}
	}
	return out.Bytes(), nil
}

// buildDSN writes a multipart/report (RFC 6522) with a human-readable
// part, a message/delivery-status part (RFC 3464 §2) and the original
// headers.
func buildDSN(hostname string, q storage.QueuedMessage, failed []string, results map[string]result, headers []byte, now time.Time) []byte {
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := "=_mailpost_" + hex.EncodeToString(rnd[:])
	var b bytes.Buffer
	crlf := func(format string, args ...any) {
		fmt.Fprintf(&b, format, args...)
		b.WriteString("\r\n")
	}
	crlf("From: Mail Delivery System <MAILER-DAEMON@%s>", hostname)
	crlf("To: <%s>", q.From)
	crlf("Subject: %s", mime.QEncoding.Encode("utf-8", "Undelivered Mail Returned to Sender"))
	crlf("Date: %s", now.Format(time.RFC1123Z))
	crlf("Message-ID: <%s.bounce.%d@%s>", hex.EncodeToString(rnd[:6]), q.ID, hostname)
	// RFC 3834 §5: an automatic message, so auto-responders stay quiet.
	crlf("Auto-Submitted: auto-replied")
	crlf("MIME-Version: 1.0")
	crlf("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	crlf("")
	crlf("This is a MIME-encapsulated delivery status notification.")
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/plain; charset=utf-8")
	crlf("")
	crlf("This is the mail system at %s.", hostname)
	crlf("")
	crlf("Your message, queued %s, could not be delivered to the", q.Queued.Format(time.RFC1123Z))
	crlf("following recipient(s):")
	crlf("")
	sorted := append([]string(nil), failed...)
	sort.Strings(sorted)
	for _, rcpt := range sorted {
		res := results[rcpt]
		why := res.String()
		if !res.permanent {
			why = "gave up retrying; last error: " + why
		}
		crlf("  <%s>: %s", rcpt, oneLine(why))
	}
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: message/delivery-status")
	crlf("")
	// Per-message fields (RFC 3464 §2.2).
	crlf("Reporting-MTA: dns; %s", hostname)
	crlf("X-Mailpost-Queue-ID: %d", q.ID)
	crlf("Arrival-Date: %s", q.Queued.Format(time.RFC1123Z))
	for _, rcpt := range sorted {
		res := results[rcpt]
		// Per-recipient fields (RFC 3464 §2.3).
		crlf("")
		crlf("Final-Recipient: rfc822; %s", rcpt)
		crlf("Action: failed")
		crlf("Status: %s", dsnStatus(res))
		if res.remote != "" {
			crlf("Remote-MTA: dns; %s", res.remote)
		}
		if res.code != 0 {
			crlf("Diagnostic-Code: smtp; %s", oneLine(res.String()))
		} else {
			crlf("Diagnostic-Code: X-mailpost; %s", oneLine(res.msg))
		}
		crlf("Last-Attempt-Date: %s", now.Format(time.RFC1123Z))
	}
	crlf("")
	crlf("--%s", boundary)
	crlf("Content-Type: text/rfc822-headers")
	crlf("")
	b.Write(headers)
	if len(headers) > 0 && !bytes.HasSuffix(headers, []byte("\n")) {
		crlf("")
	}
	crlf("")
	crlf("--%s--", boundary)
	return b.Bytes()
}

// dsnStatus is the RFC 3463 code for a recipient: the server's enhanced
// code when it gave one, else one derived from the reply class, or 4.4.7
// ("delivery time expired") when retries ran out without a reply.
func dsnStatus(res result) string {
	switch {
	case res.status != "":
		return res.status
	case res.permanent && res.code == 0:
		return "5.1.2" // bad destination system (RFC 3463 §3.2)
	case res.permanent:
		return "5.0.0"
	default:
		return "4.4.7"
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(textproto.TrimString(s)), " ")
}
