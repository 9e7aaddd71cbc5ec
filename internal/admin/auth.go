package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"mime"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// Who may call what, and how a request proves it. In order, every /v1
// and /debug request is checked for:
//
//  1. A browser behind it: an Origin header (or Sec-Fetch-Site other
//     than "none") is refused on every request. A web page cannot then
//     drive the API, whatever it sends: no CORS header is ever set, so
//     browsers refuse to show it any answer either.
//  2. Host (TCP only): it must name the address the connection came in
//     on (or localhost on a loopback address, or a name in
//     SIDECRYPT_ADMIN_HOSTS). A page on a rebound DNS name sends its own
//     name: refused (421).
//  3. Content-Type on every POST and PUT: application/json (rule
//     endpoints also take YAML types). A form or a "simple" text/plain
//     request is refused (415) before its body is read.
//  4. Credentials: on the Unix socket, the peer's uid (SO_PEERCRED) or a
//     bearer token; on TCP, a verified client certificate or a bearer
//     token. Nothing on TCP answers without one (401).
//  5. The route's roles (403).

// guard runs checks 1 to 3.
func (s *Server) guard(r *http.Request, conn connInfo, rt *route) *apiError {
	if r.Header.Get("Origin") != "" || (r.Header.Get("Sec-Fetch-Site") != "" && r.Header.Get("Sec-Fetch-Site") != "none") {
		return &apiError{http.StatusForbidden, "browser_refused", "requests from web pages are refused: the admin API is not for browsers (the request carried an Origin or Sec-Fetch-Site header)"}
	}
	if !conn.unix && !s.hostAllowed(r) {
		return &apiError{http.StatusMisdirectedRequest, "host_refused", fmt.Sprintf("Host %q is not this listener's address; add the name to SIDECRYPT_ADMIN_HOSTS if it is yours", r.Host)}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		types := rt.bodyTypes
		if len(types) == 0 {
			types = jsonOnly
		}
		if err != nil || !slices.Contains(types, mt) {
			return &apiError{http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Sprintf("send Content-Type: %s (a %s request must say what its body is, even when it is empty)", strings.Join(types, " or "), r.Method)}
		}
	}
	return nil
}

var (
	jsonOnly  = []string{"application/json"}
	ruleTypes = []string{"application/json", "application/yaml", "application/x-yaml"}
)

// hostAllowed checks Host against the connection's local address.
func (s *Server) hostAllowed(r *http.Request) bool {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, name := range s.c.AllowedHosts {
		name = strings.ToLower(name)
		if h, p, err := net.SplitHostPort(name); err == nil {
			if h == host && p == port {
				return true
			}
		} else if name == host {
			return true
		}
	}
	local, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if !ok || strconv.Itoa(local.Port) != port {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.Equal(local.IP)
	}
	return host == "localhost" && local.IP.IsLoopback()
}

// authenticate runs check 4.
func (s *Server) authenticate(r *http.Request, conn connInfo) (*Principal, *apiError) {
	auth := r.Header.Get("Authorization")
	if conn.unix && auth == "" {
		return s.socketPrincipal(conn)
	}
	if !conn.unix && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && auth == "" {
		return s.certPrincipal(r)
	}
	token, found := strings.CutPrefix(auth, "Bearer ")
	if !found || token == "" {
		return nil, &apiError{http.StatusUnauthorized, "unauthorized", "credentials required: the Unix socket (SIDECRYPT_ADMIN_SOCKET), a client certificate, or Authorization: Bearer <token>"}
	}
	p := s.tokenPrincipal(token)
	if p == nil {
		return nil, &apiError{http.StatusUnauthorized, "unauthorized", "unknown or wrong bearer token"}
	}
	if conn.unix {
		p.UID = conn.uid
	}
	return p, nil
}

// socketPrincipal maps the socket peer's uid. With a principals file,
// only the uids it lists are let in: least privilege, and the way to
// give each person on the host their own roles. Without one, the user
// that runs the sidecar (who can read its keystore and HSM settings
// anyway) and root get every role, as principal "local:<user>".
func (s *Server) socketPrincipal(conn connInfo) (*Principal, *apiError) {
	if conn.uid < 0 {
		return nil, &apiError{http.StatusForbidden, "forbidden", "the socket caller's credentials could not be read"}
	}
	if dir := s.directory(); dir != nil {
		if e := dir.byUID[conn.uid]; e != nil {
			return e.principal("socket", conn.uid), nil
		}
		return nil, &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("uid %d is not mapped to a principal in SIDECRYPT_ADMIN_TOKENS_FILE (add uid: %d to one), and no bearer token was sent", conn.uid, conn.uid)}
	}
	if conn.uid == os.Geteuid() || conn.uid == 0 {
		return &Principal{Name: "local:" + userName(conn.uid), Roles: slices.Clone(AllRoles), Method: "socket", UID: conn.uid}, nil
	}
	return nil, &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("uid %d may not use the admin socket", conn.uid)}
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && principalName.MatchString(u.Username) {
		return u.Username
	}
	return "uid" + strconv.Itoa(uid)
}

// certPrincipal maps a verified client certificate: its CN, or any DNS,
// email or URI SAN, listed in a principal's cert_names.
func (s *Server) certPrincipal(r *http.Request) (*Principal, *apiError) {
	leaf := r.TLS.VerifiedChains[0][0]
	names := append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
	names = append(names, leaf.EmailAddresses...)
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	if dir := s.directory(); dir != nil {
		for _, n := range names {
			if e := dir.byCert[n]; n != "" && e != nil {
				return e.principal("certificate", -1), nil
			}
		}
	}
	return nil, &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("client certificate %q is not mapped to a principal (cert_names in SIDECRYPT_ADMIN_TOKENS_FILE)", leaf.Subject.CommonName)}
}

// tokenCacheTTL is how long a verified token is trusted without another
// Argon2id; a token revoked in the file stops working at the next
// reload of the file, which drops the cache.
const tokenCacheTTL = time.Minute

type tokenCache struct {
	mu      sync.Mutex
	dir     *Directory
	entries map[[32]byte]cachedToken
	// argon bounds concurrent hashing: a flood of wrong tokens costs at
	// most two cores.
	argon chan struct{}
}

type cachedToken struct {
	name  string
	until time.Time
}

func (s *Server) tokenPrincipal(token string) *Principal {
	if s.c.Token != "" {
		want := sha256.Sum256([]byte(s.c.Token))
		have := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(want[:], have[:]) == 1 {
			return &Principal{Name: LegacyPrincipal, Roles: slices.Clone(AllRoles), Method: "legacy-token", UID: -1}
		}
	}
	dir := s.directory()
	id := tokenID(token)
	if dir == nil || id == "" {
		return nil
	}
	e := dir.byToken[id]
	if e == nil {
		return nil
	}
	c := &s.tokens
	digest := tokenDigest(token)
	now := time.Now()
	c.mu.Lock()
	if c.dir != dir {
		c.dir, c.entries = dir, map[[32]byte]cachedToken{}
	}
	if ce, ok := c.entries[digest]; ok && now.Before(ce.until) && ce.name == e.Principal {
		c.mu.Unlock()
		return e.principal("token", -1)
	}
	c.mu.Unlock()
	c.argon <- struct{}{}
	ok := checkTokenHash(token, e.TokenHash)
	<-c.argon
	if !ok {
		return nil
	}
	c.mu.Lock()
	if c.dir == dir {
		if len(c.entries) > 1000 {
			clear(c.entries)
		}
		c.entries[digest] = cachedToken{name: e.Principal, until: now.Add(tokenCacheTTL)}
	}
	c.mu.Unlock()
	return e.principal("token", -1)
}

func (s *Server) directory() *Directory {
	if s.c.Principals == nil {
		return nil
	}
	return s.c.Principals.Current()
}

// handle wraps a route: guard, authenticate, authorize, run, and record
// state-changing calls in the audit log.
func (s *Server) handle(rt *route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn := connFrom(r.Context())
		if ae := s.guard(r, conn, rt); ae != nil {
			s.deny(r, conn, nil, ae)
			writeError(w, ae.status, ae.code, ae.msg)
			return
		}
		p, ae := s.authenticate(r, conn)
		if ae != nil {
			s.deny(r, conn, nil, ae)
			if ae.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sidecrypt-admin"`)
			}
			writeError(w, ae.status, ae.code, ae.msg)
			return
		}
		if len(rt.roles) > 0 && !slices.ContainsFunc(rt.roles, p.Has) {
			ae := &apiError{http.StatusForbidden, "forbidden", fmt.Sprintf("%s needs the role %s; %s has %s", rt.pattern, rolesText(rt.roles), p.Name, rolesText(p.Roles))}
			s.deny(r, conn, p, ae)
			writeError(w, ae.status, ae.code, ae.msg)
			return
		}
		ctx := audit.WithActor(r.Context(), p.Actor())
		ctx = context.WithValue(ctx, principalKey{}, p)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		if err := rt.h(sw, r.WithContext(ctx)); err != nil {
			s.writeErr(sw, r, err)
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.recordCall(ctx, r, conn, p, sw.status)
		}
	})
}

type principalKey struct{}

// principalFrom returns the caller of a request that passed handle.
func principalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

func rolesText(rs []Role) string {
	if len(rs) == 0 {
		return "(none)"
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return strings.Join(out, " or ")
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Flush lets pprof's streaming endpoints flush.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// callDetails says how a caller reached the API, for the audit log: the
// method of authentication, the socket peer's uid and pid, or the TCP
// peer's address. Never a credential.
func callDetails(r *http.Request, conn connInfo, p *Principal) map[string]string {
	d := map[string]string{"method": r.Method, "endpoint": r.URL.Path}
	if conn.unix {
		d["via"] = "socket"
		if conn.uid >= 0 {
			d["uid"], d["pid"] = strconv.Itoa(conn.uid), strconv.Itoa(conn.pid)
		}
	} else {
		d["via"] = "tcp"
		d["remote"] = remoteHost(r)
	}
	if p != nil {
		d["auth"] = p.Method
	}
	return d
}

// recordCall audits a state-changing call once it is answered.
func (s *Server) recordCall(ctx context.Context, r *http.Request, conn connInfo, p *Principal, status int) {
	d := callDetails(r, conn, p)
	d["status"] = strconv.Itoa(status)
	outcome := "ok"
	if status >= 400 {
		outcome = "error"
	}
	if err := s.c.Recorder.Record(context.WithoutCancel(ctx), audit.Event{Actor: p.Actor(), Action: "admin.call", Outcome: outcome, Details: d}); err != nil {
		s.log.Error("admin: audit write failed", "err", err)
	}
}

// record writes an audit event attributed to the context's actor (the
// file log does this itself; other recorders do not).
func (s *Server) record(ctx context.Context, e audit.Event) error {
	if e.Actor == "" {
		e.Actor = audit.ActorFrom(ctx)
	}
	if e.Outcome == "" {
		e.Outcome = "ok"
	}
	return s.c.Recorder.Record(ctx, e)
}

// deny audits a refused admin call. A presented credential is never
// recorded.
func (s *Server) deny(r *http.Request, conn connInfo, p *Principal, ae *apiError) {
	actor := "admin:unauthenticated"
	if p != nil {
		actor = p.Actor()
	}
	d := callDetails(r, conn, p)
	d["code"] = ae.code
	if ae.code == "host_refused" {
		d["host"] = sanitizeHeader(r.Host)
	}
	if o := r.Header.Get("Origin"); o != "" {
		d["origin"] = sanitizeHeader(o)
	}
	err := s.c.Recorder.Record(context.WithoutCancel(r.Context()), audit.Event{
		Actor: actor, Action: "admin.denied", Outcome: "denied", Reason: ae.msg, Details: d,
	})
	if err != nil {
		s.log.Error("admin: audit write failed", "err", err)
	}
	s.log.Warn("admin: call refused", "method", r.Method, "endpoint", r.URL.Path, "actor", actor, "code", ae.code, "via", d["via"], "uid", d["uid"], "remote", d["remote"])
}

// sanitizeHeader bounds a header value for the audit log.
func sanitizeHeader(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}
