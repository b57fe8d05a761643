package importer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Maildir is a Maildir directory.
type Maildir struct {
	Dir string
}

// Each implements Source.
func (m Maildir) Each(ctx context.Context, known Known, put func(Message) error) (Stats, error) {
	return eachByContent(ctx, func(fn func([]byte, time.Time) error) error { return ReadMaildir(m.Dir, fn) }, known, put)
}

// ReadMaildir calls fn for every message in DIR/cur and DIR/new (tmp holds
// deliveries in progress), in file-name order, which for the usual
// "<unix time>.<unique>" names is arrival order. A file's modification time
// is its arrival time, as in Dovecot. Maildir++ subfolders (.Sent, …) are
// not imported: POP3 only ever sees the inbox.
func ReadMaildir(dir string, fn func(msg []byte, arrived time.Time) error) error {
	type entry struct {
		path, name string
		mtime      time.Time
	}
	var all []entry
	found := false
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
		found = true
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return fmt.Errorf("maildir: %w", err)
			}
			all = append(all, entry{filepath.Join(dir, sub, e.Name()), e.Name(), info.ModTime()})
		}
	}
	if !found {
		return fmt.Errorf("%s is not a Maildir (no cur/ or new/)", dir)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	for _, e := range all {
		b, err := os.ReadFile(e.path)
		if err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
		if err := fn(CRLF(b), e.mtime); err != nil {
			return fmt.Errorf("%s: %w", e.path, err)
		}
	}
	return nil
}
