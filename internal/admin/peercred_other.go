//go:build !linux

package admin

import (
	"errors"
	"net"
)

// peerCred is implemented for Linux (SO_PEERCRED) only; elsewhere socket
// callers cannot be told apart and are refused, and the API needs TCP
// with credentials.
func peerCred(*net.UnixConn) (uid, pid int, err error) {
	return -1, -1, errors.New("peer credentials are only read on Linux")
}
