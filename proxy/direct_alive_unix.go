//go:build linux || darwin || freebsd || netbsd || openbsd

package proxy

import (
	"net"
	"syscall"
)

// connAlive reports whether an idle connection can be reused: nothing is
// waiting on it (an idle HTTP/1.1 connection has nothing to read) and the
// peer has not closed it. One non-blocking peek, which is the read that
// http.Transport's read loop keeps pending on every idle connection.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// EAGAIN: open and nothing to read. No error: either the peer
		// closed it (0 bytes) or bytes are waiting (an unsolicited
		// response); neither is reusable. Any other error: broken.
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK //nolint:errorlint // raw errno
		// Never wait for readability.
		return true
	})
	return err == nil && alive
}
