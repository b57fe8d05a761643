package watch

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkResolveConfigMap is the cost of following one path through the
// Kubernetes layout (two links), paid per path on every poll and every
// structural event.
func BenchmarkResolveConfigMap(b *testing.B) {
	dir, err := filepath.EvalSymlinks(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ts := filepath.Join(dir, "..2026_11_25_a")
	mkdirAll(b, ts)
	write(b, filepath.Join(ts, "mailpost.hcl"), "x")
	symlink(b, "..2026_11_25_a", filepath.Join(dir, "..data"))
	p := filepath.Join(dir, "mailpost.hcl")
	symlink(b, "..data/mailpost.hcl", p)
	b.ReportAllocs()
	for b.Loop() {
		if r := resolve(p); !r.fp.exists {
			b.Fatal("not resolved")
		}
	}
}

// BenchmarkWriteToEvent measures the time from an in-place write to the
// Event, with the default 150 ms debounce: the figure the spec bounds by
// Debounce + ~100 ms. ms/event is reported beside ns/op.
func BenchmarkWriteToEvent(b *testing.B) {
	dir, err := filepath.EvalSymlinks(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(dir, "mailpost.hcl")
	write(b, p, "x")
	w, err := New([]string{p}, Options{PollInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var total time.Duration
	i := 0
	for b.Loop() {
		i++
		// Bursts of 100 writes, as in TestBurst.
		var last time.Time
		for j := range 100 {
			write(b, p, fmt.Sprintf("%d/%d", i, j))
			last = time.Now()
		}
		select {
		case ev := <-w.Events():
			if !slices.Contains(ev.Paths, p) {
				b.Fatalf("event for %v", ev.Paths)
			}
			total += ev.Time.Sub(last)
		case <-time.After(5 * time.Second):
			b.Fatal("no event")
		}
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(i), "ms-after-last-write")
}
