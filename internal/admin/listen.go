package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// connInfo says how a request reached the API: over the Unix socket
// (with the peer's credentials) or over TCP.
type connInfo struct {
	unix     bool
	uid, pid int // the socket peer's; -1 when unknown
}

type connKey struct{}

func connFrom(ctx context.Context) connInfo {
	if c, ok := ctx.Value(connKey{}).(connInfo); ok {
		return c
	}
	return connInfo{uid: -1, pid: -1}
}

// MaxSocketPath is the longest path bind(2) takes for a Unix socket on
// every platform we build for (sun_path is 104 bytes on the BSDs, 108
// on Linux, both with a terminating NUL).
const MaxSocketPath = 103

// ListenUnix listens on the Unix socket at path, for the admin API. The
// directory is created with mode 0700 if absent and must belong to this
// process's user (or root) and not be writable by others; the socket is
// made mode 0600. Whoever can connect is who this user lets in: the
// user itself and root, which the API then tells apart by their peer
// credentials (SO_PEERCRED). A socket left by a process that is gone is
// replaced; one that answers is refused.
func ListenUnix(path string) (net.Listener, error) {
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("admin: socket path %s is %d bytes; Unix socket paths are limited to %d: set a shorter SIDECRYPT_ADMIN_SOCKET", path, len(path), MaxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin: socket directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("admin: socket directory: %w", err)
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && sys.Uid != 0 {
		return nil, fmt.Errorf("admin: socket directory %s belongs to uid %d, not to this process (uid %d): another user could replace the socket", dir, sys.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("admin: socket directory %s is writable by group or others (mode %04o): another user could replace the socket; use a private directory", dir, fi.Mode().Perm())
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin: another process already serves the admin socket %s (another sidecrypt serve with the same SIDECRYPT_ADMIN_SOCKET?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", path, err)
	}
	// The directory is private, so the moment between bind and chmod
	// exposes nothing; the mode still says who may connect.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ln, nil
}

// TLSConfig builds the TCP listener's TLS settings: the server's
// certificate and, with clientCA, client certificates that are verified
// when presented (health probes present none; the API then needs a
// token).
func TLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("admin: SIDECRYPT_ADMIN_TLS_CERT/KEY: %w", err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("admin: SIDECRYPT_ADMIN_CLIENT_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin: SIDECRYPT_ADMIN_CLIENT_CA %s holds no PEM certificate", clientCA)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// Serve serves the API on tcp and unix (either may be nil) until ctx
// ends, then shuts both down. It also expires approval requests.
func (s *Server) Serve(ctx context.Context, tcp, unix net.Listener) error {
	errc := make(chan error, 2)
	var servers []*http.Server
	start := func(ln net.Listener, isUnix bool) {
		srv := &http.Server{
			Handler:           s,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				info := connInfo{unix: isUnix, uid: -1, pid: -1}
				if uc, ok := c.(*net.UnixConn); ok {
					if uid, pid, err := peerCred(uc); err == nil {
						info.uid, info.pid = uid, pid
					} else {
						s.log.Warn("admin: peer credentials of a socket caller unavailable; it will be refused", "err", err)
					}
				}
				return context.WithValue(ctx, connKey{}, info)
			},
		}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	if tcp != nil {
		start(tcp, false)
	}
	if unix != nil {
		start(unix, true)
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			s.approvals.expire(context.WithoutCancel(ctx))
		case err = <-errc:
			if err != nil {
				break loop
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(sctx)
	}
	return err
}
