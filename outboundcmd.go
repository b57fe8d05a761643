package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"mailpost/outbound"
	"mailpost/server"
	"mailpost/storage"
)

// cmdQueueAction runs `mailpost queue retry ID` (deliver now) and `mailpost
// queue drop ID` (remove without delivering or bouncing), through the
// running server when there is one, else on the store directly.
func cmdQueueAction(path string, args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || (args[0] != "retry" && args[0] != "drop") {
		return errors.New("want `queue retry ID` or `queue drop ID` (IDs as `mailpost queue` lists them)")
	}
	action := args[0]
	id, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil {
		return fmt.Errorf("the queue ID %q is not a number", args[1])
	}
	err = withServerOrStore(path, func(c *server.Client) error {
		return c.QueueAction(action, id)
	}, func(st *storage.Store) error {
		if action == "retry" {
			return outbound.Retry(st, id, time.Now())
		}
		return outbound.Drop(st, id)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no queue entry %d", id)
	} else if err != nil {
		return err
	}
	if action == "retry" {
		fmt.Fprintf(stdout, "queue entry %d is due now\n", id)
	} else {
		fmt.Fprintf(stdout, "queue entry %d dropped\n", id)
	}
	return nil
}

// cmdDNS prints the DNS records each local domain needs: MX, SPF, DKIM,
// DMARC and the RFC 6186 SRV records. The DKIM key lives in the store, so
// the running server answers when there is one; otherwise the store is
// opened here, and the key made if this is before the first start.
func cmdDNS(path string, stdout, stderr io.Writer) error {
	c := server.NewClient(peekDataDir(path))
	if c.Running() {
		out, err := c.DNS()
		if err != nil {
			return err
		}
		_, err = io.WriteString(stdout, out)
		return err
	}
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	out, err := server.DNSRecords(cfg, st)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, out)
	return err
}
