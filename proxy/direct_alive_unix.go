//go:build linux || darwin || freebsd || netbsd || openbsd

package proxy

import (
	"net"
	"syscall"
)

// probe checks whether an idle connection can be reused: nothing is
// waiting on it (an idle HTTP/1.1 connection has nothing to read) and the
// peer has not closed it. One non-blocking peek, which is the read that
// http.Transport's read loop keeps pending on every idle connection. It
// is made once per connection, so that a check allocates nothing.
type probe struct {
	rc    syscall.RawConn
	peekf func(fd uintptr) bool
	ok    bool
	buf   [1]byte
}

// newProbe returns c's probe, or nil when c is not a socket: then the
// connection is never reused (correct, slower).
func newProbe(c net.Conn) *probe {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	pr := &probe{rc: rc}
	pr.peekf = pr.peek
	return pr
}

func (pr *probe) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), pr.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	// EAGAIN: open and nothing to read. No error: either the peer closed
	// it (0 bytes) or bytes are waiting (an unsolicited response);
	// neither is reusable. Any other error: broken.
	pr.ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK //nolint:errorlint // raw errno
	// Never wait for readability.
	return true
}

// alive reports whether the connection can be reused.
func (pr *probe) alive() bool {
	if pr == nil {
		return false
	}
	pr.ok = false
	err := pr.rc.Read(pr.peekf)
	return err == nil && pr.ok
}
