// Command connmem measures what idle client connections cost a sidecar in
// resident memory, on each reverse-mode engine (docs/BENCHMARKS.md, "the
// engine chosen"). It starts the built-in upstream and `sidecrypt serve`
// (software KEK, a temporary keystore, examples/rules/clinic.yaml), opens
// -n connections to the sidecar, and prints the sidecar's VmRSS before and
// after, per connection. Each connection has either made one request and
// stays open (keep-alive, the default; a read of an unprotected database,
// passed through to the upstream) or has sent half a request head and
// stops (-partial, a slow client).
//
//	go run ./scripts/connmem -sidecrypt bin/sidecrypt -engine fasthttp -n 2000
//
// Linux only (it reads /proc). Raise the open-file limit first for large
// -n (ulimit -n).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	exe := flag.String("sidecrypt", "bin/sidecrypt", "the sidecrypt binary")
	engine := flag.String("engine", "fasthttp", "SIDECRYPT_ENGINE of the sidecar: fasthttp or nethttp")
	n := flag.Int("n", 2000, "connections to open")
	partial := flag.Bool("partial", false, "send half a request head on each connection instead of one request")
	rulesFile := flag.String("rules", "examples/rules/clinic.yaml", "rule file")
	flag.Parse()
	if err := run(*exe, *engine, *rulesFile, *n, *partial); err != nil {
		fmt.Fprintln(os.Stderr, "connmem:", err)
		os.Exit(1)
	}
}

func run(exe, engine, rulesFile string, n int, partial bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "connmem")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	up := exec.CommandContext(ctx, exe, "loadtest", "upstream", "--listen", "127.0.0.1:0")
	out, err := up.StdoutPipe()
	if err != nil {
		return err
	}
	if err := up.Start(); err != nil {
		return err
	}
	defer up.Wait()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	_, upURL, ok := strings.Cut(strings.TrimSpace(line), "listening on ")
	if !ok {
		return fmt.Errorf("upstream said %q", line)
	}

	addr, err := freeAddr()
	if err != nil {
		return err
	}
	sc := exec.CommandContext(ctx, exe, "serve")
	sc.Env = append(os.Environ(),
		"SIDECRYPT_ENGINE="+engine, "SIDECRYPT_LISTEN="+addr, "SIDECRYPT_UPSTREAM="+upURL,
		"SIDECRYPT_RULES="+rulesFile, "SIDECRYPT_KEYSTORE="+filepath.Join(dir, "keys.db"),
		"SIDECRYPT_ADMIN_LISTEN=off", "SIDECRYPT_ADMIN_SOCKET=off", "SIDECRYPT_HSM=software",
		"SIDECRYPT_MASTER_PASSPHRASE=connmem measurement passphrase", "SIDECRYPT_LOG_LEVEL=warn")
	logFile := filepath.Join(dir, "serve.log")
	logw, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logw.Close()
	sc.Stderr = logw // warnings about the keys this measurement never creates
	if err := sc.Start(); err != nil {
		return err
	}
	defer sc.Wait()
	if err := waitUp(addr); err != nil {
		b, _ := os.ReadFile(logFile)
		return fmt.Errorf("%w:\n%s", err, b)
	}
	time.Sleep(2 * time.Second) // start-up garbage collected (serve settles its heap)
	before, err := rss(sc.Process.Pid)
	if err != nil {
		return err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("after %d connections: %w", len(conns), err)
		}
		conns = append(conns, c)
		if partial {
			if _, err := fmt.Fprint(c, "GET /public/p1 HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprint(c, "GET /public/p1 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return fmt.Errorf("connection %d: %w", len(conns), err)
		}
		r.Body.Close()
	}
	time.Sleep(3 * time.Second)
	after, err := rss(sc.Process.Pid)
	if err != nil {
		return err
	}
	kind := "idle after one request"
	if partial {
		kind = "half a request head"
	}
	fmt.Printf("engine %s, %d connections (%s): resident %d kB before, %d kB with them, %.1f kB per connection\n",
		engine, n, kind, before, after, float64(after-before)/float64(n))
	sc.Process.Signal(os.Interrupt)
	up.Process.Signal(os.Interrupt)
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitUp(addr string) error {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("the sidecar did not start listening")
}

func rss(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, errors.New("no VmRSS")
}
