package doctest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// docs are the documents whose shell blocks run. docs/KEK.md took over
// docs/HSM.md; whichever exists runs.
var docs = []string{"README.md", "docs/KEK.md", "docs/HSM.md", "docs/KEYS.md", "docs/OPERATIONS.md", "docs/DEPLOY.md"}

// sidecryptBin is built once by TestMain.
var sidecryptBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "sidecrypt-doctest-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		sidecryptBin = filepath.Join(dir, "sidecrypt")
		// The Dockerfile's own build command (deploy_test.go), so that
		// every run checks it without a Docker engine.
		line, err := dockerBuildCommand()
		if err != nil {
			fmt.Fprintln(os.Stderr, "doctest:", err)
			return 1
		}
		line = strings.ReplaceAll(strings.ReplaceAll(line, "/out/sidecrypt", sidecryptBin), "${VERSION}", "doctest")
		build := exec.Command("sh", "-c", line)
		build.Dir = testenv.RepoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "doctest: the Dockerfile's build command %q: %v\n%s", line, err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// --- parsing ---

type marker struct {
	kind    string // run, skip, file, output, setup
	arg     string // skip reason, file name, output command, setup script
	bg      bool
	stdin   string
	hasExit bool
	exit    int
}

type block struct {
	doc    string
	line   int // of the opening fence (1-based); of the comment for setup
	lang   string
	body   []string
	marker *marker
}

func (b *block) where() string { return fmt.Sprintf("%s:%d", b.doc, b.line) }

// needsMarker: blocks an operator would type.
func (b *block) needsMarker() bool {
	switch b.lang {
	case "sh", "bash", "shell", "console":
		return true
	case "":
		for _, l := range b.body {
			if strings.TrimSpace(l) != "" {
				return strings.HasPrefix(l, "$ ")
			}
		}
	}
	return false
}

var (
	markerLine = regexp.MustCompile(`^<!--\s*doctest:\s*(.*?)\s*-->\s*$`)
	fenceOpen  = regexp.MustCompile("^(```+)\\s*([A-Za-z0-9_-]*)")
)

// parse finds the fenced blocks and the markers of a document. Setup
// comments become blocks of their own.
func parse(doc, text string) ([]*block, error) {
	lines := strings.Split(text, "\n")
	var out []*block
	var pending *marker
	pendingLine := 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := markerLine.FindStringSubmatch(l); m != nil {
			mk, err := parseMarker(m[1])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", doc, i+1, err)
			}
			pending, pendingLine = mk, i+1
			continue
		}
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "<!-- doctest: setup"); ok && !strings.Contains(rest, "-->") {
			start := i + 1
			var script []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "-->"; i++ {
				script = append(script, lines[i])
			}
			out = append(out, &block{doc: doc, line: start, lang: "sh", body: script, marker: &marker{kind: "setup"}})
			continue
		}
		if m := fenceOpen.FindStringSubmatch(l); m != nil {
			b := &block{doc: doc, line: i + 1, lang: m[2]}
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], m[1]); i++ {
				b.body = append(b.body, lines[i])
			}
			if pending != nil {
				b.marker = pending
				pending = nil
			}
			out = append(out, b)
			continue
		}
		if pending != nil && strings.TrimSpace(l) != "" {
			return nil, fmt.Errorf("%s:%d: the doctest marker is not followed by a code block", doc, pendingLine)
		}
	}
	return out, nil
}

func parseMarker(s string) (*marker, error) {
	if reason, ok := strings.CutPrefix(s, "skip"); ok {
		// A reason is prose: it may hold ";".
		if strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("doctest: skip needs a reason")
		}
		return &marker{kind: "skip", arg: strings.TrimSpace(reason)}, nil
	}
	parts := strings.Split(s, ";")
	head := strings.TrimSpace(parts[0])
	kind, arg, _ := strings.Cut(head, " ")
	mk := &marker{kind: kind, arg: strings.TrimSpace(arg)}
	switch kind {
	case "run":
	case "skip":
		if mk.arg == "" {
			return nil, fmt.Errorf("doctest: skip needs a reason")
		}
	case "file", "output", "is":
		if mk.arg == "" {
			return nil, fmt.Errorf("doctest: %s needs an argument", kind)
		}
	default:
		return nil, fmt.Errorf("doctest: unknown marker %q (want run, skip, file, is, output or setup)", kind)
	}
	for _, opt := range parts[1:] {
		name, val, _ := strings.Cut(strings.TrimSpace(opt), " ")
		switch name {
		case "background":
			mk.bg = true
		case "stdin":
			mk.stdin = val
		case "exit":
			n, err := strconv.Atoi(val)
			if err != nil {
				return nil, fmt.Errorf("doctest: exit %q", val)
			}
			mk.hasExit, mk.exit = true, n
		default:
			return nil, fmt.Errorf("doctest: unknown option %q", name)
		}
	}
	return mk, nil
}

func readDocs(t *testing.T) map[string][]*block {
	t.Helper()
	out := map[string][]*block{}
	for _, d := range docs {
		text, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), d))
		if os.IsNotExist(err) && (d == "docs/HSM.md" || d == "docs/KEK.md") {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		bs, err := parse(d, string(text))
		if err != nil {
			t.Fatal(err)
		}
		out[d] = bs
	}
	return out
}

// TestEveryShellBlockIsMarked: a block an operator would type either runs
// or says why not.
func TestEveryShellBlockIsMarked(t *testing.T) {
	n := 0
	for _, bs := range readDocs(t) {
		for _, b := range bs {
			if b.needsMarker() && b.marker == nil {
				t.Errorf("%s: a %q block without a doctest marker: mark it run, or skip with the reason (see internal/doctest)", b.where(), b.lang)
			}
			if b.marker != nil {
				n++
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d marked blocks", n)
	}
}

// --- running ---

// session is one document's terminal.
type session struct {
	t        *testing.T
	dir      string // scratch: state, logs
	work     string // the working directory commands start in
	env      []string
	rewrite  *strings.Replacer
	bgPIDs   []int
	adminURL string
}

const stubs = `#!/bin/bash
# stand-ins for the docs test (internal/doctest)
case "$(basename "$0")" in
make)
	if [ "$1" = build ]; then echo "make build: bin/sidecrypt is the binary the docs test built"; exit 0; fi
	echo "make $*: not available inside the docs test" >&2; exit 1 ;;
sudo)
	exec "$@" ;;
apt-get)
	[ "$1" = install ] || { echo "apt-get $1: not available inside the docs test" >&2; exit 1; }
	shift
	for p; do
		case $p in -*) continue ;; esac
		dpkg -s "$p" >/dev/null 2>&1 || { echo "apt-get stub: package $p is not installed (scripts/deps.sh test installs it)" >&2; exit 1; }
	done ;;
esac
`

func newSession(t *testing.T, doc string, blocks []*block) *session {
	dir := t.TempDir()
	s := &session{t: t, dir: dir, work: filepath.Join(dir, "work")}
	home := filepath.Join(dir, "home")
	stubDir := filepath.Join(dir, "stubs")
	binDir := filepath.Join(dir, "bin")
	for _, d := range []string{s.work, home, stubDir, binDir, filepath.Join(s.work, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"make", "sudo", "apt-get"} {
		if err := os.WriteFile(filepath.Join(stubDir, name), []byte(stubs), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, link := range []string{filepath.Join(binDir, "sidecrypt"), filepath.Join(s.work, "bin", "sidecrypt")} {
		if err := os.Symlink(sidecryptBin, link); err != nil {
			t.Fatal(err)
		}
	}
	// What a checkout has that the documents use: the example rules, and
	// the npm packages scripts/deps.sh installed (make demo).
	for _, name := range []string{"examples", ".deps"} {
		if err := os.Symlink(filepath.Join(testenv.RepoRoot(), name), filepath.Join(s.work, name)); err != nil {
			t.Fatal(err)
		}
	}

	var all strings.Builder
	for _, b := range blocks {
		if b.marker != nil && b.marker.kind != "skip" {
			all.WriteString(strings.Join(b.body, "\n"))
		}
	}
	text := all.String()
	proxyAddr, adminAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	s.adminURL = "http://" + adminAddr
	pairs := []string{"127.0.0.1:8080", proxyAddr, "127.0.0.1:8081", adminAddr}
	if strings.Contains(text, "5984") {
		db := testenv.StartPouchDB(t)
		host := strings.TrimPrefix(db.URL, "http://")
		pairs = append(pairs, "127.0.0.1:5984", host, "localhost:5984", host)
	}
	if strings.Contains(text, "etcd://") {
		e := testenv.StartEtcd(t)
		pairs = append(pairs, "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379", e.Hosts(), "10.0.0.1:2379", e.Hosts())
	}
	s.rewrite = strings.NewReplacer(pairs...)

	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SIDECRYPT_") && k != "SIDECRYPT_TEST_REQUIRE_ALL" || k == "SOFTHSM2_CONF" || k == "HOME" || k == "PATH" || k == "GOFLAGS" {
			continue
		}
		s.env = append(s.env, kv)
	}
	s.env = append(s.env, "HOME="+home, "PATH="+stubDir+":"+binDir+":"+os.Getenv("PATH"),
		"SIDECRYPT_LISTEN="+proxyAddr, "SIDECRYPT_ADMIN_LISTEN="+adminAddr, "TERM=dumb", "COLUMNS=200")
	if err := os.WriteFile(filepath.Join(dir, "env"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cwd"), []byte(s.work), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stopBackground)
	return s
}

// script wraps commands so that the working directory and the exported
// variables carry over between blocks, as in one terminal.
func (s *session) script(body string, strict bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "source %q\ncd \"$(cat %q)\"\n", filepath.Join(s.dir, "env"), filepath.Join(s.dir, "cwd"))
	fmt.Fprintf(&b, "trap 'export -p > %q; pwd > %q' EXIT\n", filepath.Join(s.dir, "env"), filepath.Join(s.dir, "cwd"))
	if strict {
		b.WriteString("set -eo pipefail\n")
	}
	b.WriteString(body)
	b.WriteString("\n")
	return b.String()
}

// bash runs a script; with stdin set, on a terminal (script(1)) typing it.
func (s *session) bash(script, stdin string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	file := filepath.Join(s.dir, "cmd.sh")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		s.t.Fatal(err)
	}
	var cmd *exec.Cmd
	if stdin != "" {
		cmd = exec.CommandContext(ctx, "script", "-qefc", "bash --noprofile --norc "+file, "/dev/null")
	} else {
		cmd = exec.CommandContext(ctx, "bash", "--noprofile", "--norc", file)
	}
	cmd.Env = s.env
	cmd.Dir = s.work
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	var out []byte
	var err error
	if stdin != "" {
		out, err = typeAtPrompt(cmd, stdin)
	} else {
		out, err = cmd.CombinedOutput()
	}
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			return string(out) + "\n[doctest: timed out after 3m]", -1
		}
	}
	return strings.ReplaceAll(string(out), "\r\n", "\n"), code
}

// typeAtPrompt runs cmd (on a terminal, through script(1)) and types text
// and Enter once the output stops at a prompt (a line ending in ": " or
// "? "), as a person would; the terminal's echo then shows it after the
// prompt, as in the docs.
func typeAtPrompt(cmd *exec.Cmd, text string) ([]byte, error) {
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	typed := false
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			in.Close()
			return out.bytes(), err
		case <-tick.C:
			if typed {
				continue
			}
			b := out.bytes()
			last := b[bytes.LastIndexByte(b, '\n')+1:]
			if bytes.HasSuffix(last, []byte(": ")) || bytes.HasSuffix(last, []byte("? ")) {
				io.WriteString(in, text+"\n")
				typed = true
			}
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

func (s *session) stopBackground() {
	for _, pid := range s.bgPIDs {
		_ = syscall.Kill(-pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range s.bgPIDs {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	s.bgPIDs = nil
}

// logicalLines joins backslash continuations.
func logicalLines(body []string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range body {
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\"))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(l)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// stripComment drops a trailing "  # comment" outside quotes.
func stripComment(l string) string {
	inS, inD := false, false
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case c == '\'' && !inD:
			inS = !inS
		case c == '"' && !inS:
			inD = !inD
		case c == '#' && !inS && !inD && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t'):
			return strings.TrimRight(l[:i], " \t")
		}
	}
	return l
}

func (s *session) runSh(b *block) {
	body := s.rewrite.Replace(strings.Join(b.body, "\n"))
	if b.marker.bg {
		lines := logicalLines(strings.Split(body, "\n"))
		last := -1
		for i, l := range lines {
			if strings.TrimSpace(stripComment(l)) != "" {
				last = i
			}
		}
		if last < 0 {
			s.t.Fatalf("%s: background: no command", b.where())
		}
		log := filepath.Join(s.dir, fmt.Sprintf("background-%d.log", b.line))
		pidFile := filepath.Join(s.dir, "bg.pid")
		// set -m: the job gets a process group of its own, which
		// stopBackground ends.
		lines[last] = fmt.Sprintf("set -m\n%s > %q 2>&1 < /dev/null &\necho $! > %q", stripComment(lines[last]), log, pidFile)
		body = strings.Join(lines, "\n")
		out, code := s.bash(s.script(body, true), "")
		if code != 0 {
			s.t.Fatalf("%s: exit %d\n%s", b.where(), code, out)
		}
		pidText, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
		if pid > 0 {
			s.bgPIDs = append(s.bgPIDs, pid)
		}
		s.waitHealthy(b, pid, log)
		return
	}
	out, code := s.bash(s.script(body, true), "")
	if code != 0 {
		s.t.Fatalf("%s: exit %d\n%s", b.where(), code, out)
	}
}

func (s *session) waitHealthy(b *block, pid int, log string) {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(s.adminURL + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if pid > 0 && syscall.Kill(pid, 0) != nil {
			out, _ := os.ReadFile(log)
			s.t.Fatalf("%s: the background command exited:\n%s", b.where(), out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := os.ReadFile(log)
	s.t.Fatalf("%s: the background command's admin listener did not answer /healthz in 60s:\n%s", b.where(), out)
}

// command is one "$ " command of a console block and what it shows.
type command struct {
	line int
	cmd  string
	want []string
}

func consoleCommands(b *block) []command {
	var out []command
	for i := 0; i < len(b.body); i++ {
		l := b.body[i]
		if c, ok := strings.CutPrefix(l, "$ "); ok {
			cmd := command{line: b.line + 1 + i, cmd: c}
			for strings.HasSuffix(cmd.cmd, "\\") && i+1 < len(b.body) {
				i++
				cmd.cmd = strings.TrimSuffix(cmd.cmd, "\\") + " " + strings.TrimSpace(b.body[i])
			}
			out = append(out, cmd)
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].want = append(out[len(out)-1].want, l)
		}
	}
	for i := range out {
		for len(out[i].want) > 0 && strings.TrimSpace(out[i].want[len(out[i].want)-1]) == "" {
			out[i].want = out[i].want[:len(out[i].want)-1]
		}
	}
	return out
}

func (s *session) runConsole(b *block) {
	cmds := consoleCommands(b)
	if len(cmds) == 0 {
		s.t.Fatalf("%s: a console block without a \"$ \" command", b.where())
	}
	for i, c := range cmds {
		cmdText := s.rewrite.Replace(c.cmd)
		out, code := s.bash(s.script(cmdText, false), b.marker.stdin)
		wantCode := 0
		if i == len(cmds)-1 && b.marker.hasExit {
			wantCode = b.marker.exit
		}
		loc := fmt.Sprintf("%s:%d", b.doc, c.line)
		if code != wantCode {
			s.t.Errorf("%s: $ %s\nexit %d, want %d\n%s", loc, c.cmd, code, wantCode, out)
			if wantCode == 0 {
				s.t.FailNow()
			}
			continue
		}
		if len(c.want) > 0 {
			if diff := compare(c.want, out, s.work, s.dir); diff != "" {
				s.t.Errorf("%s: $ %s\n%s", loc, c.cmd, diff)
			}
		}
	}
}

func (s *session) runOutput(b *block) {
	out, code := s.bash(s.script(s.rewrite.Replace(b.marker.arg), false), "")
	if code != 0 {
		s.t.Fatalf("%s: %s: exit %d\n%s", b.where(), b.marker.arg, code, out)
	}
	if diff := compare(b.body, out, s.work, s.dir); diff != "" {
		s.t.Errorf("%s: the output of %s differs from the block:\n%s", b.where(), b.marker.arg, diff)
	}
}

func (s *session) writeFile(b *block) {
	path := b.marker.arg
	if !filepath.IsAbs(path) {
		cwd, _ := os.ReadFile(filepath.Join(s.dir, "cwd"))
		path = filepath.Join(strings.TrimSpace(string(cwd)), path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s.rewrite.Replace(strings.Join(b.body, "\n"))+"\n"), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// --- comparing ---

var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})`), "<time>"},
	{regexp.MustCompile(`\bsc[12]\.[A-Za-z0-9_-]+`), "<token>"},
	{regexp.MustCompile(`\b[0-9a-f]{12,}\b`), "<hex>"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:<port>"},
	{regexp.MustCompile(`\b\d{6,}\b`), "<n>"},
	{regexp.MustCompile(`[ \t]+`), " "},
}

func normalize(l string) string {
	for _, n := range normalizers {
		l = n.re.ReplaceAllString(l, n.with)
	}
	return strings.TrimRight(l, " ")
}

var logLine = regexp.MustCompile(`^(time=\S+ level=|\{"time":)`)

// compare matches output against the expected lines; "" when they agree.
func compare(want []string, output string, dirs ...string) string {
	for _, d := range dirs {
		output = strings.ReplaceAll(output, d+"/", "")
		output = strings.ReplaceAll(output, d, ".")
	}
	got := strings.Split(strings.TrimRight(output, "\n"), "\n")
	showsLogs := false
	for _, w := range want {
		if logLine.MatchString(w) {
			showsLogs = true
		}
	}
	var gotN []string
	for _, g := range got {
		if !showsLogs && logLine.MatchString(g) {
			continue
		}
		gotN = append(gotN, normalize(g))
	}
	var pats []*regexp.Regexp
	for _, w := range want {
		if strings.TrimSpace(w) == "..." || strings.TrimSpace(w) == "…" {
			pats = append(pats, nil)
			continue
		}
		n := normalize(w)
		var re strings.Builder
		re.WriteString("^")
		for i, part := range regexp.MustCompile(`…|\.\.\.`).Split(n, -1) {
			if i > 0 {
				re.WriteString(".*")
			}
			re.WriteString(regexp.QuoteMeta(part))
		}
		re.WriteString("$")
		pats = append(pats, regexp.MustCompile(re.String()))
	}
	if match(pats, gotN) {
		return ""
	}
	return fmt.Sprintf("--- the docs show (normalised)\n%s\n--- the command printed (normalised)\n%s",
		strings.Join(normalizeAll(want), "\n"), strings.Join(gotN, "\n"))
}

func normalizeAll(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = normalize(l)
	}
	return out
}

// match: each pattern matches one line in order; nil matches any run.
func match(pats []*regexp.Regexp, lines []string) bool {
	if len(pats) == 0 {
		return len(lines) == 0
	}
	if pats[0] == nil {
		for i := 0; i <= len(lines); i++ {
			if match(pats[1:], lines[i:]) {
				return true
			}
		}
		return false
	}
	return len(lines) > 0 && pats[0].MatchString(lines[0]) && match(pats[1:], lines[1:])
}

// TestDocs runs every marked block of each document in order.
func TestDocs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the documented commands against real components")
	}
	all := readDocs(t)
	for _, d := range docs {
		blocks, ok := all[d]
		if !ok {
			continue
		}
		t.Run(strings.ReplaceAll(d, "/", "_"), func(t *testing.T) {
			s := newSession(t, d, blocks)
			for _, b := range blocks {
				if b.marker == nil {
					continue
				}
				switch b.marker.kind {
				case "skip":
					t.Logf("%s: skipped: %s", b.where(), b.marker.arg)
				case "file":
					s.writeFile(b)
				case "is":
					want, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), b.marker.arg))
					if err != nil {
						t.Fatalf("%s: %v", b.where(), err)
					}
					if got := strings.Join(b.body, "\n") + "\n"; got != string(want) {
						t.Errorf("%s: the block is not %s as it is; show the file whole (copy it in)", b.where(), b.marker.arg)
					}
				case "setup":
					s.runSh(b)
				case "output":
					s.runOutput(b)
				case "run":
					if b.lang == "console" || b.lang == "" {
						s.runConsole(b)
					} else {
						s.runSh(b)
					}
				}
			}
		})
	}
}

// TestCompare pins the output matching rules the docs rely on.
func TestCompare(t *testing.T) {
	out := "created pii v1 (active, KEK v1, fingerprint 0483761b4c9f70257bbc71b8654aa3c6)\n" +
		"time=2026-11-25T21:55:59.814Z level=WARN msg=\"hsm: software KEK provider\"\n" +
		"NAME  VERSION   CREATED\npii   v1        2026-11-25T21:55:59Z\n" +
		"token sc2.AQFzA3BpaQAAAAEzfWMyUgY0UoB\nat 127.0.0.1:34567 in /tmp/x/work/data\n"
	want := []string{
		"created pii v1 (active, KEK v1, fingerprint e39ea12ee40033b7a28f88001c37db1e)",
		"NAME VERSION CREATED",
		"...",
		"token sc2.AQFzA3BpaQAAAAHrcHIk…",
		"at 127.0.0.1:8080 in data",
	}
	if d := compare(want, out, "/tmp/x/work"); d != "" {
		t.Fatal(d)
	}
	if d := compare([]string{"created pii v2 …"}, "created pii v1 (active)\n"); d == "" {
		t.Fatal("a different version matched")
	}
	if got := logicalLines([]string{"a \\", "  b", "c"}); len(got) != 2 || got[0] != "a    b" {
		t.Fatalf("%q", got)
	}
	if got := stripComment(`sidecrypt serve   # listens on 127.0.0.1:8080, 'x'`); got != "sidecrypt serve" {
		t.Fatalf("%q", got)
	}
	if got := stripComment(`export X='a # b'  # c`); got != `export X='a # b'` {
		t.Fatalf("%q", got)
	}
}
