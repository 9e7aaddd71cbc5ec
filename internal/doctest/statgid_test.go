package doctest

import (
	"os"
	"syscall"
)

// statGID is the group of a file.
func statGID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return -1
}
