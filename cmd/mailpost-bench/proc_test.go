package main

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

func TestParseStatPPid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"1234 (dovecot) S 1 1234 1234 0 -1", 1, true},
		// A command name with spaces and parentheses, as process titles
		// like Dovecot's can have.
		{"77 (pop3-login (x) y) S 42 77 77 0 -1", 42, true},
		{"77 (a) b) R 9 77", 9, true},
		{"garbage", 0, false},
		{"5 (x)", 0, false},
		{"5 (x) S notanumber", 0, false},
	} {
		got, ok := parseStatPPid(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseStatPPid(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDescendants(t *testing.T) {
	parents := map[int]int{
		10: 1, 11: 10, 12: 10, 13: 11, // the tree under 10
		20: 1, 21: 20, // another tree
		30: 31, 31: 30, // a cycle not reachable from 10
	}
	got := descendants(10, parents)
	slices.Sort(got)
	if want := []int{10, 11, 12, 13}; !slices.Equal(got, want) {
		t.Errorf("descendants(10) = %v, want %v", got, want)
	}
	// A cycle through the root must still end.
	if got := descendants(30, parents); len(got) != 2 {
		t.Errorf("descendants(30) = %v, want 2 pids", got)
	}
}

// TestTreePSS measures a real process tree: this test process plus a
// child it starts; the sum must count both.
func TestTreePSS(t *testing.T) {
	self, n, err := treePSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self <= 0 || n < 1 {
		t.Fatalf("treePSS(self) = %d KiB over %d processes", self, n)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sleep: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	_, n2, err := treePSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if n2 != n+1 {
		t.Errorf("with a child: %d processes, want %d", n2, n+1)
	}
	child, _, err := treePSS(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if child <= 0 {
		t.Errorf("child's PSS %d KiB", child)
	}
	if _, _, err := treePSS(1 << 30); err == nil {
		t.Error("treePSS of a pid that cannot exist: no error")
	}
}

func TestMedianRange(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		med, lo, hi float64
	}{
		{[]float64{5}, 5, 5, 5},
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		in := slices.Clone(tc.in)
		med, lo, hi := medianRange(in)
		if med != tc.med || lo != tc.lo || hi != tc.hi {
			t.Errorf("medianRange(%v) = %v, %v, %v; want %v, %v, %v", tc.in, med, lo, hi, tc.med, tc.lo, tc.hi)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("medianRange reordered its input: %v", in)
		}
	}
}
