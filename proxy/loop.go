package proxy

import (
	"context"
	"errors"
	"net"
)

// errProxyLoop: an upstream connection would reach this proxy itself. In
// forward mode any client can ask for any host, including the proxy's own
// address; without this check each such request would proxy itself until
// sockets ran out.
var errProxyLoop = errors.New("proxy: the destination is this proxy itself")

// selfAddr is the proxy's listening address. A listener on an unspecified
// address (0.0.0.0, ::) is reachable on every local address with its port.
type selfAddr struct {
	port  int
	ip    net.IP   // nil when unspecified
	local []net.IP // loopback and interface addresses, when unspecified
}

func newSelfAddr(a net.Addr) *selfAddr {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	s := &selfAddr{port: tcp.Port}
	if !tcp.IP.IsUnspecified() {
		s.ip = tcp.IP
		return s
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				s.local = append(s.local, n.IP)
			}
		}
	}
	return s
}

// is reports whether remote is the proxy's own listener.
func (s *selfAddr) is(remote net.Addr) bool {
	tcp, ok := remote.(*net.TCPAddr)
	if s == nil || !ok || tcp.Port != s.port {
		return false
	}
	if s.ip != nil {
		return tcp.IP.Equal(s.ip)
	}
	if tcp.IP.IsLoopback() {
		return true
	}
	for _, ip := range s.local {
		if ip.Equal(tcp.IP) {
			return true
		}
	}
	return false
}

type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// refuseLoops wraps a dialer so that it never returns a connection to the
// proxy's own listener. Checking the connected address, not the host name,
// catches every spelling (localhost, 127.0.0.1, the host's own name or IP).
func (p *Proxy) refuseLoops(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if p.self.Load().is(c.RemoteAddr()) {
			c.Close()
			return nil, errProxyLoop
		}
		return c, nil
	}
}
