//go:build !unix

package watch

import "io/fs"

// devIno is unknown here; the poller falls back to size, mtime and the
// symlink chain.
func devIno(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
