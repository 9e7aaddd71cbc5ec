package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the load test started. It runs in its own process
// group, so that stopping it stops what it forked (nginx's workers) and a
// Ctrl-C at the terminal reaches only the load test, which then stops its
// children in order.
type child struct {
	name string
	cmd  *exec.Cmd
	log  *tailBuffer
	done chan struct{}
	err  error // set before done is closed
}

// tailBuffer keeps the last 64 KiB a child wrote, for error messages.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

const tailMax = 64 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailMax {
		t.b = append(t.b[:0], t.b[len(t.b)-tailMax:]...)
	}
	return len(p), nil
}

// Tail returns the last lines written, at most n bytes.
func (t *tailBuffer) Tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.b
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(string(b))
}

func startChild(name string, cmd *exec.Cmd) (*child, error) {
	c := &child{name: name, cmd: cmd, log: &tailBuffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = c.log
	}
	cmd.Stderr = c.log
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadtest: start %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop ends the child's process group: SIGTERM, then SIGKILL after 5 s.
func (c *child) stop() {
	if c.exited() {
		return
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// exitError describes how a child that should still run ended.
func (c *child) exitError() error {
	return fmt.Errorf("loadtest: %s exited (%v):\n%s", c.name, c.err, c.log.Tail(2000))
}

// waitReady polls until ready reports true, the child exits, ctx ends or
// timeout passes.
func (c *child) waitReady(ctx context.Context, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if c.exited() {
			return c.exitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: %s not ready after %v:\n%s", c.name, timeout, c.log.Tail(2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago,
// for programs that must be told a port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("loadtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// httpUp reports whether url answers with a status below 500.
func httpUp(url string) bool {
	c := http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode < 500
}

// tcpUp reports whether something accepts connections at addr.
func tcpUp(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// lookPath finds a program on PATH or in the sbin and bin directories a
// non-root PATH may lack (Debian installs nginx in /usr/sbin).
func lookPath(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// CPU accounting from /proc/PID/stat (Linux). utime and stime are in
// clock ticks: sysconf(_SC_CLK_TCK), which `getconf CLK_TCK` prints; it
// is 100 on every Linux architecture Go supports, the fallback.

var (
	clockTicksOnce sync.Once
	clockTicks     = 100.0
)

func ticksPerSecond() float64 {
	clockTicksOnce.Do(func() {
		out, err := exec.Command("getconf", "CLK_TCK").Output()
		if err != nil {
			return
		}
		if n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && n > 0 {
			clockTicks = n
		}
	})
	return clockTicks
}

// procStat is what CPU accounting needs from /proc/PID/stat.
type procStat struct {
	pgrp  int
	ticks int64 // utime + stime
}

var errNoProc = errors.New("loadtest: /proc not available")

func readProcStat(path string) (procStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat parses /proc/PID/stat. The command name (field 2) is in
// parentheses and may hold spaces and parentheses itself, so fields are
// counted from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("loadtest: malformed /proc stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); pgrp is field 5, utime 14, stime 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("loadtest: short /proc stat line")
	}
	pgrp, err1 := strconv.Atoi(f[2])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("loadtest: /proc stat line: %w", err)
	}
	return procStat{pgrp: pgrp, ticks: ut + st}, nil
}

// cpuSeconds returns the CPU time used so far by pid, or with group by
// every process in the process group pid leads (nginx's master and
// workers).
func cpuSeconds(pid int, group bool) (float64, error) {
	if !group {
		st, err := readProcStat(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, errNoProc
		}
		return float64(st.ticks) / ticksPerSecond(), nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, errNoProc
	}
	var ticks int64
	found := false
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		st, err := readProcStat("/proc/" + e.Name() + "/stat")
		if err != nil || st.pgrp != pid {
			continue
		}
		ticks += st.ticks
		found = true
	}
	if !found {
		return 0, errNoProc
	}
	return float64(ticks) / ticksPerSecond(), nil
}

var _ io.Writer = (*tailBuffer)(nil)
