package watch

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	root := realTempDir(t)

	// Kubernetes ConfigMap: mailpost.hcl -> ..data/mailpost.hcl, ..data -> ..2026_11_25_a
	cm := filepath.Join(root, "cm")
	mkdirAll(t, cm)
	ts := k8sUpdate(t, cm, "a", "A")
	symlink(t, filepath.Join("..data", "mailpost.hcl"), filepath.Join(cm, "mailpost.hcl"))

	// certbot: live/x/fullchain.pem -> ../../archive/x/fullchain1.pem
	live := filepath.Join(root, "le", "live", "x")
	archive := filepath.Join(root, "le", "archive", "x")
	mkdirAll(t, live)
	mkdirAll(t, archive)
	write(t, filepath.Join(archive, "fullchain1.pem"), "c")
	symlink(t, "../../archive/x/fullchain1.pem", filepath.Join(live, "fullchain.pem"))

	// absolute link, a link loop, a file used as a directory
	write(t, filepath.Join(root, "plain"), "p")
	symlink(t, filepath.Join(root, "plain"), filepath.Join(root, "abs"))
	symlink(t, "loop2", filepath.Join(root, "loop1"))
	symlink(t, "loop1", filepath.Join(root, "loop2"))

	for _, tc := range []struct {
		path    string
		entries []entry
		exists  bool
		final   string // real path the chain ends in, when exists
	}{
		{
			path:   filepath.Join(cm, "mailpost.hcl"),
			exists: true,
			final:  filepath.Join(ts, "mailpost.hcl"),
			entries: []entry{
				{cm, "mailpost.hcl"}, {cm, "..data"}, {ts, "mailpost.hcl"},
			},
		},
		{
			path:    filepath.Join(cm, "..data", "mailpost.hcl"), // the parent is the link
			exists:  true,
			final:   filepath.Join(ts, "mailpost.hcl"),
			entries: []entry{{cm, "..data"}, {ts, "mailpost.hcl"}},
		},
		{
			path:    filepath.Join(live, "fullchain.pem"),
			exists:  true,
			final:   filepath.Join(archive, "fullchain1.pem"),
			entries: []entry{{live, "fullchain.pem"}, {archive, "fullchain1.pem"}},
		},
		{
			path:    filepath.Join(root, "abs"),
			exists:  true,
			final:   filepath.Join(root, "plain"),
			entries: []entry{{root, "abs"}, {root, "plain"}},
		},
		{
			path:    filepath.Join(root, "missing", "deeper", "x.pem"),
			entries: []entry{{root, "missing"}},
		},
		{
			path:    filepath.Join(root, "plain", "child"),
			entries: []entry{{root, "plain"}},
		},
		{
			path:    filepath.Join(root, "loop1"),
			entries: []entry{{root, "loop1"}, {root, "loop2"}},
		},
	} {
		t.Run(strings.TrimPrefix(tc.path, root), func(t *testing.T) {
			r := resolve(tc.path)
			if !slices.Equal(r.entries, tc.entries) {
				t.Errorf("entries\n got %v\nwant %v", r.entries, tc.entries)
			}
			if r.fp.exists != tc.exists {
				t.Fatalf("exists = %v", r.fp.exists)
			}
			if !tc.exists {
				return
			}
			if !strings.HasSuffix(r.fp.chain, "\x00"+tc.final) && r.fp.chain != tc.final {
				t.Errorf("chain %q does not end in %s", r.fp.chain, tc.final)
			}
			fi, err := os.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if dev, ino := devIno(fi); r.fp.dev != dev || r.fp.ino != ino || r.fp.size != fi.Size() {
				t.Errorf("fingerprint %+v does not match stat %v", r.fp, fi)
			}
		})
	}
}

// The fingerprint changes for every kind of replacement the poller must see,
// and not for a chmod.
func TestFingerprint(t *testing.T) {
	root := realTempDir(t)
	p := filepath.Join(root, "f")
	write(t, p, "same")
	fp := func() fingerprint { return resolve(p).fp }
	a := fp()
	if b := fp(); a != b {
		t.Fatalf("unstable: %+v vs %+v", a, b)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if b := fp(); a != b {
		t.Errorf("chmod changed the fingerprint: %+v vs %+v", a, b)
	}
	renameReplace(t, p, "same") // same size; a new inode
	if b := fp(); a == b {
		t.Error("rename-replace with same content not seen")
	}
	a = fp()
	write(t, p, "longer")
	if b := fp(); a == b {
		t.Error("size change not seen")
	}

	// A new link target with the same final file still counts: the path
	// now leads elsewhere, which is what a ..data swap looks like.
	l := filepath.Join(root, "l")
	symlink(t, "f", l)
	a = resolve(l).fp
	if err := os.Remove(l); err != nil {
		t.Fatal(err)
	}
	symlink(t, "./f", l)
	if b := resolve(l).fp; a == b {
		t.Error("symlink retarget not seen")
	}
}
