package watch

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxHops bounds symlink expansion the way the kernel does (ELOOP after 40),
// so a link cycle ends as "missing" instead of spinning.
const maxHops = 40

// entry is one name in one directory whose change can change what a watched
// path reads as: the file itself, or a symlink on the way to it.
type entry struct {
	dir  string // absolute and free of symlinks
	name string // base name inside dir
}

// fingerprint is what the poller compares. Two equal fingerprints mean the
// path most likely still reads the same: same symlink chain, same final file
// (dev, inode), same size and mtime.
type fingerprint struct {
	exists   bool
	dev, ino uint64
	size     int64
	mtime    int64  // UnixNano
	chain    string // each symlink met as "link>target", then the final real path
}

// resolution is the outcome of walking one path.
type resolution struct {
	entries []entry // deduplicated, in walk order
	fp      fingerprint
}

// addDirs adds the directories to watch for r to the set.
func (r resolution) addDirs(to map[string]bool) {
	for _, e := range r.entries {
		to[e.dir] = true
	}
}

// resolve walks abs (absolute, cleaned) one component at a time, like
// filepath.EvalSymlinks, but records every entry a change of which would
// change the result: each symlink met (in the directory where the link
// lives) and the final name. Plain directories on the way are not recorded:
// their removal or rename shows up as an event on the directory itself (see
// Watcher.handle), and deeper ancestors are left to the poller.
//
// A missing component ends the walk and is recorded, so the nearest existing
// directory is watched for it and its creation is seen.
func resolve(abs string) resolution {
	var (
		r     resolution
		chain strings.Builder
		dir   = string(filepath.Separator)
		rest  = splitPath(abs)
		hops  int
	)
	add := func(e entry) {
		for _, x := range r.entries {
			if x == e {
				return
			}
		}
		r.entries = append(r.entries, e)
	}
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case ".":
			continue
		case "..":
			// dir has no symlinks left in it, so its lexical parent is its
			// real parent.
			dir = filepath.Dir(dir)
			continue
		}
		p := filepath.Join(dir, c)
		e := entry{dir: dir, name: c}
		fi, err := os.Lstat(p)
		if err != nil {
			// Missing (or unreadable): watch the directory we got to for
			// this name. The fingerprint keeps only the links met so far, so
			// creating an intermediate directory alone does not look like
			// a change to the poller.
			add(e)
			r.fp = fingerprint{chain: chain.String()}
			return r
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			add(e)
			hops++
			target, err := os.Readlink(p)
			if err != nil || hops > maxHops {
				r.fp = fingerprint{chain: chain.String()}
				return r
			}
			chain.WriteString(p)
			chain.WriteByte('>')
			chain.WriteString(target)
			chain.WriteByte(0)
			if filepath.IsAbs(target) {
				dir = string(filepath.Separator)
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		if len(rest) == 0 {
			add(e)
			dev, ino := devIno(fi)
			chain.WriteString(p)
			r.fp = fingerprint{
				exists: true,
				dev:    dev,
				ino:    ino,
				size:   fi.Size(),
				mtime:  fi.ModTime().UnixNano(),
				chain:  chain.String(),
			}
			return r
		}
		if !fi.IsDir() {
			// "file/child": ENOTDIR for the reader, so the same as missing.
			add(e)
			r.fp = fingerprint{chain: chain.String()}
			return r
		}
		dir = p
	}
	// The walk ended on a directory (a link to "..", say). Nothing readable
	// as a file is there; watch the directory's own entry.
	if dir != string(filepath.Separator) {
		add(entry{dir: filepath.Dir(dir), name: filepath.Base(dir)})
	}
	r.fp = fingerprint{chain: chain.String() + dir + "/"}
	return r
}

// splitPath splits p on separators, dropping empty components.
func splitPath(p string) []string {
	parts := strings.Split(p, string(filepath.Separator))
	out := parts[:0]
	for _, s := range parts {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
