package loadtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	adminpkg "github.com/sidecrypt/sidecrypt/internal/admin"
	"github.com/sidecrypt/sidecrypt/loadtest/memcouch"
)

// component is something the run started (or was pointed at) that it
// must stop at the end and may account CPU to.
type component struct {
	name  string
	url   string // base URL, no trailing slash
	proc  *child // nil when not a child of ours
	group bool   // account CPU to the whole process group
	stop  func() // extra cleanup (temp dirs, in-process servers)
	// adminAddr is a sidecar's admin listener (for pprof), if known, and
	// adminToken an operator's token for it.
	adminAddr, adminToken string
}

func (c *component) close() {
	if c == nil {
		return
	}
	if c.proc != nil {
		c.proc.stop()
	}
	if c.stop != nil {
		c.stop()
	}
}

// pid returns the process to account CPU to, or 0.
func (c *component) pid() int {
	if c == nil || c.proc == nil {
		return 0
	}
	return c.proc.pid()
}

// startBuiltinUpstream serves memcouch: in a child process when exe (this
// program) is known, so that its CPU is accounted apart from the load
// generator's, else in this process.
func startBuiltinUpstream(ctx context.Context, exe string) (*component, error) {
	if exe == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("loadtest: built-in upstream: %w", err)
		}
		srv := &http.Server{Handler: memcouch.New(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		return &component{name: "upstream (built-in, in process)", url: "http://" + l.Addr().String(), stop: func() { srv.Close() }}, nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("loadtest: built-in upstream: %w", err)
	}
	cmd := exec.Command(exe, "loadtest", "upstream", "--listen", "127.0.0.1:0")
	cmd.Stdout = w
	cmd.Env = childEnv(nil)
	c, err := startChild("upstream (built-in)", cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	// The child prints its address on its first line: no port race.
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(r)
		line, _ := br.ReadString('\n')
		lines <- line
		io.Copy(c.log, br)
		r.Close()
	}()
	comp := &component{name: "upstream (built-in)", proc: c}
	select {
	case line := <-lines:
		_, addr, ok := strings.Cut(strings.TrimSpace(line), "listening on ")
		if !ok {
			comp.close()
			return nil, fmt.Errorf("loadtest: built-in upstream did not start: %q\n%s", line, c.log.Tail(2000))
		}
		comp.url = addr
	case <-time.After(30 * time.Second):
		comp.close()
		return nil, fmt.Errorf("loadtest: built-in upstream did not start within 30s")
	case <-ctx.Done():
		comp.close()
		return nil, ctx.Err()
	}
	return comp, nil
}

// pouchDBPath finds pouchdb-server: $SIDECRYPT_POUCHDB, the copy that
// scripts/deps.sh installs under .deps/ (looked for from the working
// directory up), or PATH.
func pouchDBPath() (string, bool) {
	if p := os.Getenv("SIDECRYPT_POUCHDB"); p != "" {
		return p, true
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, ".deps", "pouchdb", "node_modules", ".bin", "pouchdb-server")
			if _, err := os.Stat(p); err == nil {
				return p, true
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return lookPath("pouchdb-server")
}

func startPouchDB(ctx context.Context) (*component, error) {
	bin, ok := pouchDBPath()
	if !ok {
		return nil, fmt.Errorf("loadtest: pouchdb-server not found (run scripts/deps.sh, or set SIDECRYPT_POUCHDB)")
	}
	dir, err := os.MkdirTemp("", "sidecrypt-loadtest-pouchdb-")
	if err != nil {
		return nil, fmt.Errorf("loadtest: pouchdb: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--in-memory", "--host", "127.0.0.1", "--port", port, "--dir", dir, "-n")
	cmd.Dir = dir
	cmd.Env = childEnv(nil)
	c, err := startChild("pouchdb-server", cmd)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	comp := &component{name: "upstream (pouchdb-server)", url: "http://" + addr, proc: c, group: true, stop: func() { os.RemoveAll(dir) }}
	if err := c.waitReady(ctx, 60*time.Second, func() bool { return httpUp(comp.url + "/") }); err != nil {
		comp.close()
		return nil, err
	}
	return comp, nil
}

// nginxConfig is a plain reverse proxy to upstream (host:port), set up as
// an operator would for a fair comparison: keep-alive connections to the
// upstream, request and response bodies buffered in memory (sidecrypt
// buffers protected bodies in memory too), no access log (sidecrypt
// writes none per request), and as many workers as sidecrypt has
// GOMAXPROCS.
func nginxConfig(listen, upstream, dir string, workers int, userLine string) string {
	p := func(name string) string { return filepath.Join(dir, name) }
	return fmt.Sprintf(`# generated by sidecrypt loadtest
%sworker_processes %d;
daemon off;
master_process on;
pid %s;
error_log %s warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    proxy_buffer_size 64k;
    proxy_buffers 32 64k;
    proxy_busy_buffers_size 128k;
    keepalive_requests 1000000;
    upstream datastore {
        server %s;
        keepalive 256;
    }
    server {
        listen %s;
        location / {
            proxy_pass http://datastore;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_read_timeout 60s;
        }
    }
}
`, userLine, workers, p("nginx.pid"), p("error.log"),
		p("client_body"), p("proxy"), p("fastcgi"), p("uwsgi"), p("scgi"),
		upstream, listen)
}

// nginxUserLine returns the user directive nginx needs when started as
// root (its workers then drop to nobody, which must be able to reach the
// temp directory), or "" otherwise.
func nginxUserLine() string {
	if os.Geteuid() != 0 {
		return ""
	}
	group := "nogroup" // Debian's
	if _, err := user.LookupGroup(group); err != nil {
		group = "nobody"
	}
	return fmt.Sprintf("user nobody %s;\n", group)
}

// sidecarWorkers is the GOMAXPROCS a sidecrypt child will have: it
// inherits this process's environment and cgroup, so the same value.
func sidecarWorkers() int { return runtime.GOMAXPROCS(0) }

func startNginx(ctx context.Context, bin, upstreamURL string) (*component, int, error) {
	u, err := url.Parse(upstreamURL)
	if err != nil || u.Scheme != "http" {
		return nil, 0, fmt.Errorf("loadtest: nginx target needs an http:// upstream, not %q", upstreamURL)
	}
	dir, err := os.MkdirTemp("", "sidecrypt-loadtest-nginx-")
	if err != nil {
		return nil, 0, fmt.Errorf("loadtest: nginx: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	// Workers running as nobody must reach the temp paths.
	os.Chmod(dir, 0o755)
	for _, sub := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		os.Mkdir(filepath.Join(dir, sub), 0o777)
		os.Chmod(filepath.Join(dir, sub), 0o777)
	}
	addr, err := freeAddr()
	if err != nil {
		cleanup()
		return nil, 0, err
	}
	workers := sidecarWorkers()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(addr, u.Host, dir, workers, nginxUserLine())), 0o644); err != nil {
		cleanup()
		return nil, 0, fmt.Errorf("loadtest: nginx: %w", err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	cmd.Env = childEnv(nil)
	c, err := startChild("nginx", cmd)
	if err != nil {
		cleanup()
		return nil, 0, err
	}
	comp := &component{name: "nginx", url: "http://" + addr, proc: c, group: true, stop: cleanup}
	if err := c.waitReady(ctx, 15*time.Second, func() bool { return tcpUp(addr) }); err != nil {
		if b, rerr := os.ReadFile(filepath.Join(dir, "error.log")); rerr == nil {
			err = fmt.Errorf("%w\n%s", err, strings.TrimSpace(string(b)))
		}
		comp.close()
		return nil, 0, err
	}
	return comp, workers, nil
}

// serveAvailable reports whether exe has a working `serve` command (the
// load test checks rather than assumes, so it can run before the proxy
// is built and say why a sidecrypt target is missing).
func serveAvailable(exe string) error {
	if exe == "" {
		return errors.New("the sidecrypt executable is not known")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "serve", "--help")
	cmd.Env = childEnv(nil)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("`%s serve --help` failed (%v): %s", filepath.Base(exe), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// childEnv is this process's environment without SIDECRYPT_* settings
// (a child sidecar must get exactly the settings the load test chose,
// not the operator's), plus extra.
func childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIDECRYPT_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// passthroughDB is the database the passthrough target's rules name: one
// the load test never uses.
const passthroughDB = "not-this-database"

// sidecarKeys are the data keys both sidecar targets create.
var sidecarKeys = []string{"pii", "contact"}

func startSidecar(ctx context.Context, exe, name, upstreamURL, rules, engine string) (*component, error) {
	dir, err := os.MkdirTemp("", "sidecrypt-loadtest-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("loadtest: %s: %w", name, err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(rules), 0o600); err != nil {
		cleanup()
		return nil, fmt.Errorf("loadtest: %s: %w", name, err)
	}
	var secret [32]byte
	rand.Read(secret[:])
	listen, err := freeAddr()
	if err != nil {
		cleanup()
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		cleanup()
		return nil, err
	}
	tokensFile := filepath.Join(dir, "admin-principals.yaml")
	adminToken, err := adminpkg.CreateToken(tokensFile, "loadtest", []adminpkg.Role{adminpkg.RoleOperator}, false)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("loadtest: %s: %w", name, err)
	}
	env := childEnv([]string{
		"SIDECRYPT_LISTEN=" + listen,
		"SIDECRYPT_UPSTREAM=" + upstreamURL,
		"SIDECRYPT_RULES=" + rulesFile,
		"SIDECRYPT_KEYSTORE=" + filepath.Join(dir, "keys.db"),
		"SIDECRYPT_HSM=software",
		// A throwaway passphrase for throwaway keys: it lives in this
		// process and the child's environment only.
		"SIDECRYPT_MASTER_PASSPHRASE=" + hex.EncodeToString(secret[:]),
		"SIDECRYPT_KEK_FILE=" + filepath.Join(dir, "kek.json"),
		"SIDECRYPT_ADMIN_LISTEN=" + admin,
		// pprof is for operators, with a token (a socket path under
		// a long TMPDIR could be too long for bind).
		"SIDECRYPT_ADMIN_SOCKET=off",
		"SIDECRYPT_ADMIN_TOKENS_FILE=" + tokensFile,
		"SIDECRYPT_AUDIT_LOG=" + filepath.Join(dir, "audit.log"),
		"SIDECRYPT_LOG_LEVEL=warn",
	})
	if engine != "" {
		env = append(env, "SIDECRYPT_ENGINE="+engine)
	}
	for _, key := range sidecarKeys {
		kctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		cmd := exec.CommandContext(kctx, exe, "keys", "create", key)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("loadtest: `sidecrypt keys create %s` failed (%v): %s", key, err, strings.TrimSpace(string(out)))
		}
	}
	cmd := exec.Command(exe, "serve")
	cmd.Env = env
	c, err := startChild(name, cmd)
	if err != nil {
		cleanup()
		return nil, err
	}
	comp := &component{name: name, url: "http://" + listen, proc: c, stop: cleanup}
	// Ready when /readyz says so; while the admin listener is not there
	// yet (or has no /readyz), when the proxy port accepts connections.
	ready := func() bool {
		resp, err := (&http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}).Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return true
			case http.StatusNotFound:
				return tcpUp(listen)
			}
			return false
		}
		return tcpUp(listen)
	}
	if err := c.waitReady(ctx, 60*time.Second, ready); err != nil {
		comp.close()
		return nil, err
	}
	comp.adminAddr, comp.adminToken = admin, adminToken
	return comp, nil
}

// isLoopback reports whether rawURL's host is a loopback address or
// localhost.
func isLoopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CommandTarget is a proxy the load test starts as a child process and
// measures next to the built-in targets (Config.Commands). In Argv,
// {listen} is replaced by a free loopback host:port the proxy must listen
// on, and {upstream} by the upstream's base URL; the target is ready when
// {listen} accepts connections. Its CPU is its process group's.
type CommandTarget struct {
	Name string
	Argv []string
}

// ParseCommandTarget reads NAME=COMMAND, the command split on spaces (no
// quoting: give a wrapper script for anything more).
func ParseCommandTarget(s string) (CommandTarget, error) {
	name, cmd, ok := strings.Cut(s, "=")
	ct := CommandTarget{Name: strings.TrimSpace(name), Argv: strings.Fields(cmd)}
	if !ok {
		return ct, fmt.Errorf("command target %q: want NAME=COMMAND with {listen} and {upstream} in it", s)
	}
	return ct, ct.check()
}

func (ct CommandTarget) check() error {
	switch {
	case !targetNameOK(ct.Name):
		return fmt.Errorf("command target name %q: lowercase letters, digits and - only, starting with a letter", ct.Name)
	case len(ct.Argv) == 0:
		return fmt.Errorf("command target %s: no command", ct.Name)
	case !slices.ContainsFunc(ct.Argv, func(a string) bool { return strings.Contains(a, "{listen}") }):
		return fmt.Errorf("command target %s: the command must listen on {listen}", ct.Name)
	}
	return nil
}

func targetNameOK(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func startCommand(ctx context.Context, ct CommandTarget, upstreamURL string) (*component, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	argv := make([]string, len(ct.Argv))
	for i, a := range ct.Argv {
		argv[i] = strings.NewReplacer("{listen}", addr, "{upstream}", upstreamURL).Replace(a)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv(nil)
	c, err := startChild(ct.Name, cmd)
	if err != nil {
		return nil, err
	}
	comp := &component{name: ct.Name, url: "http://" + addr, proc: c, group: true}
	if err := c.waitReady(ctx, 30*time.Second, func() bool { return tcpUp(addr) }); err != nil {
		comp.close()
		return nil, fmt.Errorf("loadtest: %s: %w", ct.Name, err)
	}
	return comp, nil
}
