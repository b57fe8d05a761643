//go:build unix

package watch

import (
	"io/fs"
	"syscall"
)

// devIno returns the device and inode of fi, so a file replaced by another
// of the same size and mtime still looks different to the poller.
func devIno(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) // conversions: Dev is int32 on some BSDs
	}
	return 0, 0
}
