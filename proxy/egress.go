package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/rules"
)

// Forward mode reaches what the application asks for, so it decides for
// every request and every CONNECT where the request may go, on the
// addresses it will actually connect to:
//
//   - The datastore, named in the rules (version 2 "hosts", version 1
//     route hosts), is recognised by every name and address that reaches
//     it: a destination whose resolved address is one of the datastore's
//     is the datastore, whatever the request called it, and gets the
//     rules. A name that only matched by spelling would let
//     "http://10.0.0.5:5984/" (the datastore's own address) pass in
//     plaintext.
//   - Other destinations are reached only when the operator listed them
//     (Config.PassThrough), and then never at a loopback, private,
//     link-local or other special address unless an IP or CIDR entry
//     names that address: a forward proxy that reaches anything would
//     hand any client the cloud metadata service, the sidecar's own admin
//     API and every other local service.
//   - The sidecar's own listeners are never reached.
//
// The decision pins the addresses: the request is sent to one of the
// addresses that were checked, never to a second resolution of the name
// (DNS rebinding), and requests for the datastore and for other
// destinations use separate connection pools, so a connection to the
// datastore can never carry a request that was not protected.

var (
	refEgress = &refusal{http.StatusForbidden, CodeEgressRefused, "forward mode reaches only the datastore the rules name and the destinations listed in SIDECRYPT_PASSTHROUGH (loopback, private and link-local addresses only when listed by address); this destination is neither"}
	refLookup = &refusal{http.StatusBadGateway, CodeUpstreamUnavailable, "the destination's name could not be resolved"}
)

// errEgress is what the pinned dialers return when an address is not one
// the request may reach (a resolution that changed between the decision
// and the dial).
var errEgress = errors.New("proxy: destination address not allowed")

// destination is a forward-mode request's checked target.
type destination struct {
	host string // lower case, no trailing dot, no port
	port string
	// datastore: the destination is the datastore the rules protect.
	datastore bool
	// name is the rules' name for it when it was recognised by address
	// (version 1 routes match host names).
	name string
	// addrs are the addresses the request may be sent to.
	addrs []netip.Addr
}

// egressPolicy is Config.PassThrough, parsed.
type egressPolicy struct {
	names    []hostPort // host names, "*.example.com" wildcards included
	prefixes []prefixPort
}

type hostPort struct{ host, port string } // port "" = any

type prefixPort struct {
	prefix netip.Prefix
	port   string
}

// parseEgress parses pass-through entries: "host", "host:port",
// "*.example.com", an IP, "ip:port", "[v6]:port", or a CIDR.
func parseEgress(entries []string) (*egressPolicy, error) {
	e := &egressPolicy{}
	for _, raw := range entries {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		if pfx, err := netip.ParsePrefix(s); err == nil {
			e.prefixes = append(e.prefixes, prefixPort{prefix: pfx.Masked()})
			continue
		}
		host, port := s, ""
		if h, p, err := net.SplitHostPort(s); err == nil {
			host, port = h, p
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("pass-through entry %q: bad port", raw)
			}
		}
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			ip = ip.Unmap()
			e.prefixes = append(e.prefixes, prefixPort{prefix: netip.PrefixFrom(ip, ip.BitLen()), port: port})
			continue
		}
		host = normHost(host)
		if host == "" || strings.ContainsAny(host, "/ ") {
			return nil, fmt.Errorf("pass-through entry %q: want a host, host:port, an IP or a CIDR", raw)
		}
		e.names = append(e.names, hostPort{host, port})
	}
	return e, nil
}

func (e *egressPolicy) nameAllowed(host, port string) bool {
	for _, n := range e.names {
		if (n.port == "" || n.port == port) && hostMatches(n.host, host) {
			return true
		}
	}
	return false
}

func (e *egressPolicy) addrListed(a netip.Addr, port string) bool {
	for _, p := range e.prefixes {
		if (p.port == "" || p.port == port) && p.prefix.Contains(a) {
			return true
		}
	}
	return false
}

// special reports addresses that forward mode reaches only when an IP or
// CIDR entry lists them: loopback, private (RFC 1918, RFC 4193),
// link-local (cloud metadata lives there), unspecified, multicast,
// carrier-grade NAT (RFC 6598) and the IPv4 "this network" block.
func special(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	if a.Is4() {
		b := a.As4()
		return b[0] == 0 || b[0] == 100 && b[1]&0xc0 == 64 || b[0] == 255
	}
	return false
}

// normHost lower-cases a host and drops brackets and a trailing dot (the
// absolute form names the same host).
func normHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

// lookupCache resolves the datastore's own names for every forward
// request; a short cache keeps that to one lookup per name every few
// seconds.
type lookupCache struct {
	mu  sync.Mutex
	m   map[string]cachedAddrs
	ttl time.Duration
}

type cachedAddrs struct {
	addrs []netip.Addr
	at    time.Time
}

func (c *lookupCache) get(ctx context.Context, lookup LookupFunc, host string) []netip.Addr {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}
	}
	c.mu.Lock()
	e, ok := c.m[host]
	c.mu.Unlock()
	if ok && time.Since(e.at) < c.ttl {
		return e.addrs
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		// Keep the last good answer for a while: losing DNS must not turn
		// the datastore into "some other host".
		if ok && time.Since(e.at) < 10*c.ttl {
			return e.addrs
		}
		return nil
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]cachedAddrs)
	}
	c.m[host] = cachedAddrs{addrs, time.Now()}
	c.mu.Unlock()
	return addrs
}

// LookupFunc resolves a host name to addresses.
type LookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// datastoreNames returns the names under which the rules name the
// datastore, each with its port ("" = any), and whether some route
// matches every host (version 1 routes without hosts).
func datastoreNames(plan *rules.Plan) (names []hostPort, wildcards []string, anyHost bool) {
	if plan == nil {
		return nil, nil, false
	}
	if plan.Schema != nil {
		// A version 2 file that names no hosts names no datastore for
		// forward mode: nothing is intercepted, and only what
		// SIDECRYPT_PASSTHROUGH lists is reached. serve refuses to start
		// so; a reload to such a file fails closed.
		for _, h := range plan.Schema.Hosts {
			host, port := h, ""
			if hh, pp, err := net.SplitHostPort(h); err == nil {
				host, port = hh, pp
			}
			names = append(names, hostPort{normHost(host), port})
		}
		return names, nil, false
	}
	hosts, any := plan.Hosts()
	for _, h := range hosts {
		if strings.HasPrefix(h, "*.") {
			wildcards = append(wildcards, strings.ToLower(h))
			continue
		}
		names = append(names, hostPort{normHost(h), ""})
	}
	return names, wildcards, any
}

// destinationFor checks a forward-mode destination (hostport from the
// request URL or the CONNECT line; defPort when it has none) and pins the
// addresses the request may be sent to.
func (p *Proxy) destinationFor(ctx context.Context, plan *rules.Plan, hostport, defPort string) (*destination, *refusal) {
	host, port := hostport, defPort
	if h, pp, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, pp
	}
	d := &destination{host: normHost(host), port: port}
	if d.host == "" {
		return nil, refEgress
	}
	names, wildcards, anyHost := datastoreNames(plan)

	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(d.host); err == nil {
		addrs = []netip.Addr{ip.Unmap()}
	} else {
		var lerr error
		addrs, lerr = p.lookup(ctx, d.host)
		if lerr != nil || len(addrs) == 0 {
			return nil, refLookup
		}
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
		}
	}

	// The datastore, by name or by address.
	byName := false
	for _, n := range names {
		if n.host == d.host && (n.port == "" || n.port == port) {
			byName = true
			d.name = n.host
		}
	}
	dsAddr := map[netip.Addr]string{}
	for _, n := range names {
		if n.port != "" && n.port != port {
			continue
		}
		for _, a := range p.dsLookups.get(ctx, p.lookup, n.host) {
			if _, ok := dsAddr[a]; !ok {
				dsAddr[a] = n.host
			}
		}
	}
	for _, a := range addrs {
		if p.isSelf(a, port) {
			continue
		}
		if name, ok := dsAddr[a]; ok {
			d.datastore = true
			if d.name == "" {
				d.name = name
			}
			d.addrs = append(d.addrs, a)
		}
	}
	if d.datastore {
		return d, nil
	}
	if byName {
		// The name is the datastore's, but none of its current addresses
		// are (the datastore's own lookup failed or changed): protect,
		// and send only where the name resolves now.
		d.datastore = true
		for _, a := range addrs {
			if !p.isSelf(a, port) {
				d.addrs = append(d.addrs, a)
			}
		}
		if len(d.addrs) == 0 {
			return nil, refLoop
		}
		return d, nil
	}

	// Not the datastore: intercepted by a wildcard or hostless version 1
	// route, or listed for pass-through, and then only at addresses that
	// are public or listed by address.
	intercepted := anyHost
	for _, w := range wildcards {
		if hostMatches(w, d.host) {
			intercepted = true
		}
	}
	d.datastore = intercepted // the rules apply to it
	named := intercepted || p.egress.nameAllowed(d.host, port)
	for _, a := range addrs {
		if p.isSelf(a, port) {
			continue
		}
		if p.egress.addrListed(a, port) || named && !special(a) {
			d.addrs = append(d.addrs, a)
		}
	}
	if len(d.addrs) == 0 {
		for _, a := range addrs {
			if p.isSelf(a, port) {
				return nil, refLoop
			}
		}
		return nil, refEgress
	}
	return d, nil
}

// isSelf reports whether a is one of the sidecar's own listeners (the
// proxy itself, or an address in Config.Guard).
func (p *Proxy) isSelf(a netip.Addr, port string) bool {
	n, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	tcp := &net.TCPAddr{IP: a.AsSlice(), Port: n}
	if p.self.Load().is(tcp) {
		return true
	}
	for _, g := range p.guard {
		if g.is(tcp) {
			return true
		}
	}
	return false
}

// pinnedDial dials one of the exchange's pinned addresses (forward mode),
// or addr as given (reverse mode: the configured upstream). datastore
// selects which forward-mode exchanges the transport serves: a mismatch
// means a request reached the wrong pool, and is refused.
func (p *Proxy) pinnedDial(dial dialFunc, datastore bool) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ex := exchangeFrom(ctx)
		if ex == nil || ex.dest == nil {
			if p.fw != nil {
				// Forward mode never dials an unchecked address.
				return nil, errEgress
			}
			return dial(ctx, network, addr)
		}
		d := ex.dest
		if d.datastore != datastore {
			return nil, errEgress
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var last error = errEgress
		for _, a := range d.addrs {
			c, err := dial(ctx, network, net.JoinHostPort(a.String(), port))
			if err != nil {
				last = err
				continue
			}
			return c, nil
		}
		return nil, last
	}
}
