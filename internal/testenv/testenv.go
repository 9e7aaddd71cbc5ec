// Package testenv starts the real components that sidecrypt's tests run
// against (pouchdb-server, SoftHSM2 tokens, etcd), on free loopback ports,
// and stops them when the test ends.
//
// A component that is not installed makes the test skip when run by hand
// with `go test`, and fail under `make test`, which sets
// SIDECRYPT_TEST_REQUIRE_ALL=1 after installing everything through
// scripts/deps.sh: CI must never pass by skipping.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireAll reports whether missing components must fail tests.
func RequireAll() bool { return os.Getenv("SIDECRYPT_TEST_REQUIRE_ALL") == "1" }

// Missing skips or fails t because a component is not installed.
func Missing(t testing.TB, what, install string) {
	t.Helper()
	msg := fmt.Sprintf("%s not found (install it with %s, or run `make test`, which does)", what, install)
	if RequireAll() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// RepoRoot returns the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// LookPath finds a program on PATH or in /usr/sbin and /usr/bin (Debian
// puts nginx in sbin, which a non-root PATH may lack).
func LookPath(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago. Prefer listening on ":0" directly where the code under test allows
// it; this is for external programs that must be told a port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Process is an external program started for a test.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Log  *SyncBuffer // combined stdout and stderr

	mu     sync.Mutex
	done   chan struct{}
	exited bool
}

// Start runs a program in its own process group, logging its output, and
// registers a cleanup that stops it (SIGTERM, then SIGKILL after 5s).
func Start(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Name: name, Cmd: cmd, Log: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.Log
	cmd.Stderr = p.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, p.Log.String())
		}
	})
	return p
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Done is closed when the process ends.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop ends the process group: SIGTERM, then SIGKILL after 5 seconds.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process group at once with SIGKILL, as a crash would.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// WaitHTTP polls url until it answers with a status below 500, the process
// exits, or the timeout passes.
func WaitHTTP(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if p != nil && p.Exited() {
			t.Fatalf("testenv: %s exited before it was ready:\n%s", p.Name, p.Log.String())
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	name := url
	if p != nil {
		name = p.Name
	}
	t.Fatalf("testenv: %s not ready at %s after %v", name, url, timeout)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// PouchDB is a running pouchdb-server (CouchDB API, in memory).
type PouchDB struct {
	URL  string // http://127.0.0.1:PORT, no trailing slash
	Proc *Process
}

// PouchDBPath returns the pouchdb-server executable installed by
// scripts/deps.sh, or one named by SIDECRYPT_TEST_POUCHDB, or one on PATH.
func PouchDBPath() (string, bool) {
	if p := os.Getenv("SIDECRYPT_TEST_POUCHDB"); p != "" {
		return p, true
	}
	p := filepath.Join(RepoRoot(), ".deps", "pouchdb", "node_modules", ".bin", "pouchdb-server")
	if _, err := os.Stat(p); err == nil {
		return p, true
	}
	return LookPath("pouchdb-server")
}

// StartPouchDB starts pouchdb-server --in-memory on a free loopback port in
// a temporary directory and waits until it answers.
func StartPouchDB(t testing.TB) *PouchDB {
	t.Helper()
	bin, ok := PouchDBPath()
	if !ok {
		Missing(t, "pouchdb-server", "scripts/deps.sh")
	}
	if _, ok := LookPath("node"); !ok {
		Missing(t, "node", "apt-get install nodejs")
	}
	dir := t.TempDir()
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	// --dir keeps its config.json and log.txt out of the working tree;
	// -n (no stdout logs) keeps test output quiet.
	cmd := exec.Command(bin, "--in-memory", "--host", "127.0.0.1", "--port", port, "--dir", dir, "-n")
	cmd.Dir = dir
	p := Start(t, "pouchdb-server", cmd)
	url := "http://" + addr
	WaitHTTP(t, p, url+"/", 60*time.Second)
	return &PouchDB{URL: url, Proc: p}
}

// Run runs a command to completion with a timeout and returns its combined
// output, failing the test if it fails.
func Run(t testing.TB, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
