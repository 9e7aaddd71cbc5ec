package testenv

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// etcd in tests
//
// StartEtcd and StartEtcdCluster run Debian's etcd-server (etcd 3.4, binary
// /usr/bin/etcd) on free loopback ports with a data directory under
// t.TempDir(), and stop every member when the test ends. A member can be
// stopped, killed and started again on its old ports and data (Restart), so
// that tests can take one member of a three-member cluster away, or the
// whole store, and bring it back.

// EtcdPath returns the etcd server binary (SIDECRYPT_TEST_ETCD, or etcd on
// PATH, /usr/bin or /usr/sbin).
func EtcdPath() (string, bool) {
	if p := os.Getenv("SIDECRYPT_TEST_ETCD"); p != "" {
		return p, true
	}
	return LookPath("etcd")
}

// Etcd is a running etcd cluster of one or more members.
type Etcd struct {
	Members []*EtcdMember
}

// EtcdMember is one etcd server process.
type EtcdMember struct {
	Name      string
	ClientURL string // http://127.0.0.1:PORT
	PeerURL   string
	DataDir   string

	t       testing.TB
	bin     string
	cluster string // --initial-cluster
	token   string

	mu   sync.Mutex
	proc *Process
	runs int
}

// Endpoints returns every member's client URL.
func (e *Etcd) Endpoints() []string {
	out := make([]string, len(e.Members))
	for i, m := range e.Members {
		out[i] = m.ClientURL
	}
	return out
}

// Hosts returns every member's host:port, as an etcd:// URL lists them.
func (e *Etcd) Hosts() string {
	hosts := make([]string, len(e.Members))
	for i, m := range e.Members {
		hosts[i] = strings.TrimPrefix(m.ClientURL, "http://")
	}
	return strings.Join(hosts, ",")
}

// StartEtcd starts a single-member etcd and waits until it is healthy.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return StartEtcdCluster(t, 1)
}

// StartEtcdCluster starts an n-member etcd cluster on loopback and waits
// until every member reports healthy (a leader is elected). Ports are
// picked free just before the start; if a member loses the race for its
// port, the whole cluster is started again on new ones (at most three
// times).
func StartEtcdCluster(t testing.TB, n int) *Etcd {
	t.Helper()
	bin, ok := EtcdPath()
	if !ok {
		Missing(t, "etcd (the etcd server)", "apt-get install etcd-server")
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		e, err := startEtcdCluster(t, bin, n, attempt)
		if err == nil {
			return e
		}
		lastErr = err
	}
	t.Fatalf("testenv: etcd: %v", lastErr)
	return nil
}

func startEtcdCluster(t testing.TB, bin string, n, attempt int) (*Etcd, error) {
	dir := t.TempDir()
	token := fmt.Sprintf("sidecrypt-test-%d-%d", time.Now().UnixNano(), attempt)
	e := &Etcd{}
	var peers []string
	for i := 0; i < n; i++ {
		m := &EtcdMember{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: "http://" + FreeAddr(t),
			PeerURL:   "http://" + FreeAddr(t),
			DataDir:   filepath.Join(dir, fmt.Sprintf("m%d", i)),
			t:         t, bin: bin, token: token,
		}
		e.Members = append(e.Members, m)
		peers = append(peers, m.Name+"="+m.PeerURL)
	}
	for _, m := range e.Members {
		m.cluster = strings.Join(peers, ",")
		m.start()
	}
	for _, m := range e.Members {
		if err := m.waitHealthy(60 * time.Second); err != nil {
			for _, m := range e.Members {
				m.Kill()
			}
			return nil, err
		}
	}
	return e, nil
}

func (m *EtcdMember) start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	state := "new"
	if m.runs > 0 {
		state = "existing"
	}
	m.runs++
	args := []string{
		"--name", m.Name,
		"--data-dir", m.DataDir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.cluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", m.token,
		"--logger", "zap",
		"--log-level", "warn",
		// Short election timings: a lost member is noticed, and a new
		// leader elected, within a second on loopback.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
	}
	m.proc = Start(m.t, "etcd "+m.Name, exec.Command(m.bin, args...))
}

// Process returns the member's current process.
func (m *EtcdMember) Process() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// waitHealthy polls the member's /health until it reports a leader, the
// process exits, or timeout passes.
func (m *EtcdMember) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		p := m.Process()
		if p.Exited() {
			return fmt.Errorf("member %s exited before it was healthy:\n%s", m.Name, p.Log.String())
		}
		resp, err := client.Get(m.ClientURL + "/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("member %s not healthy at %s after %v", m.Name, m.ClientURL, timeout)
}

// Stop ends the member gracefully (SIGTERM).
func (m *EtcdMember) Stop() { m.Process().Stop() }

// Kill ends the member at once (SIGKILL), as a crash would.
func (m *EtcdMember) Kill() { m.Process().Kill() }

// Restart starts a stopped member again on its ports and data directory
// and waits until it is healthy (which needs a quorum of members up).
func (m *EtcdMember) Restart(t testing.TB) {
	t.Helper()
	if !m.Process().Exited() {
		t.Fatalf("testenv: etcd member %s is still running", m.Name)
	}
	m.start()
	if err := m.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("testenv: etcd restart: %v", err)
	}
}

// TCPProxy forwards TCP connections from a loopback port to a target, and
// can cut them all at once to simulate a network partition between a
// client and a server that both stay up.
type TCPProxy struct {
	Addr   string // 127.0.0.1:PORT to dial instead of the target
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartTCPProxy listens on a free loopback port and forwards to target
// (host:port) until the test ends.
func StartTCPProxy(t testing.TB, target string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: tcp proxy: %v", err)
	}
	p := &TCPProxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			up.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *TCPProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every open connection and refuses new ones (accepting and
// closing them at once) until Heal.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Heal lets connections through again.
func (p *TCPProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Close stops the proxy and closes every connection.
func (p *TCPProxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
