package main

// `sidecrypt demo` (what `make demo` runs): a datastore, the sidecar in
// front of it on the embedded defaults, a few realistic records written
// through it, and, side by side, what the application sees and what the
// datastore holds. Everything it starts it stops.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

const demoRecords = `{"docs": [
 {"_id": "p-1001", "type": "patient", "name": "Ann Example", "ssn": "123-45-6789",
  "email": "ann@example.com", "phone": "+1 555 0100", "birth_date": "1980-02-29",
  "diagnosis": "J45.909 asthma", "card_number": "4111111111111111", "ward": "B", "visits": 7},
 {"_id": "p-1002", "type": "patient", "name": "Bob Sample", "ssn": "987-65-4321",
  "email": "bob@example.org", "phone": "+44 20 7946 0000", "birth_date": "1975-11-02",
  "diagnosis": "E11.9 type 2 diabetes", "card_number": "5500000000000004", "ward": "C", "visits": 12},
 {"_id": "p-1003", "type": "patient", "name": "Chloé Dupont", "ssn": "2 80 03 75 123 456",
  "email": "chloe@example.fr", "phone": "+33 1 23 45 67 89", "birth_date": "1980-03-15",
  "diagnosis": "I10 hypertension", "card_number": "340000000000009", "ward": "A", "visits": 3}
]}`

func cmdDemo(a *app, args []string) int {
	fs := a.flags("demo", `sidecrypt demo [--pouchdb PATH] [--keep]

Starts pouchdb-server (a CouchDB-API datastore, in memory) and sidecrypt in
front of it with examples/rules/clinic.yaml and the embedded defaults
(software KEK provider, file keystore in a temporary directory), writes a
few patient records through the sidecar, and prints what the application
sees next to what the datastore holds. Then it stops everything it started.
'make demo' installs pouchdb-server (scripts/deps.sh) and runs this.`)
	pouch := fs.String("pouchdb", ".deps/pouchdb/node_modules/.bin/pouchdb-server", "pouchdb-server executable")
	rulesFile := fs.String("rules", "examples/rules/clinic.yaml", "rule file")
	keep := fs.Bool("keep", false, "keep the temporary directory (keys, audit log) for a look afterwards")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	d := &demo{a: a, pouchBin: *pouch, rules: *rulesFile}
	err := d.run(*keep)
	d.stop()
	if err != nil {
		return a.fail(fmt.Errorf("demo: %w", err))
	}
	return exitOK
}

type demo struct {
	a        *app
	pouchBin string
	rules    string
	dir      string
	procs    []*exec.Cmd
	env      []string
	self     string
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.a.stdout, format+"\n", args...) }

func (d *demo) run(keep bool) error {
	var err error
	if d.self, err = os.Executable(); err != nil {
		return err
	}
	if _, err := os.Stat(d.pouchBin); err != nil {
		return fmt.Errorf("pouchdb-server not found at %s: run scripts/deps.sh (make demo does)", d.pouchBin)
	}
	// The datastore runs in the demo's temporary directory.
	if d.pouchBin, err = filepath.Abs(d.pouchBin); err != nil {
		return err
	}
	if d.rules, err = filepath.Abs(d.rules); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "sidecrypt-demo-"); err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(d.dir)
	}
	dbAddr, err := freePort()
	if err != nil {
		return err
	}
	proxyAddr, _ := freePort()
	adminAddr, _ := freePort()
	db, proxy := "http://"+dbAddr, "http://"+proxyAddr

	d.say("sidecrypt demo: a sidecar that encrypts the fields its rules name\n")
	_, port, _ := net.SplitHostPort(dbAddr)
	if err := d.start("pouchdb-server", filepath.Join(d.dir, "pouchdb.log"), d.pouchBin,
		"--in-memory", "--host", "127.0.0.1", "--port", port, "--dir", d.dir, "-n"); err != nil {
		return err
	}
	if err := waitUp(db+"/", 60*time.Second); err != nil {
		return fmt.Errorf("pouchdb-server: %w (log: %s)", err, filepath.Join(d.dir, "pouchdb.log"))
	}
	d.say("1. datastore  pouchdb-server (CouchDB API, in memory) at %s", db)

	d.env = append(os.Environ(),
		"SIDECRYPT_UPSTREAM="+db, "SIDECRYPT_LISTEN="+proxyAddr, "SIDECRYPT_ADMIN_LISTEN="+adminAddr,
		"SIDECRYPT_RULES="+d.rules, "SIDECRYPT_KEYSTORE="+filepath.Join(d.dir, "data", "keys.db"),
		// The software KEK provider is for development; a real deployment
		// points SIDECRYPT_HSM at an HSM (docs/KEK.md).
		"SIDECRYPT_MASTER_PASSPHRASE=demo passphrase - development only",
		"SIDECRYPT_LOG_LEVEL=warn")
	d.say("2. keys       software KEK provider (development only), keystore %s", filepath.Join(d.dir, "data"))
	for _, k := range []string{"pii", "phi", "contact", "card"} {
		d.say("               $ sidecrypt keys create %s", k)
		if out, err := d.sidecrypt("keys", "create", k); err != nil {
			return fmt.Errorf("keys create %s: %w\n%s", k, err, out)
		}
	}
	if err := d.start("sidecrypt serve", filepath.Join(d.dir, "serve.log"), d.self, "serve"); err != nil {
		return err
	}
	if err := waitUp("http://"+adminAddr+"/readyz", 30*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(d.dir, "serve.log"))
		return fmt.Errorf("sidecrypt serve: %w\n%s", err, log)
	}
	d.say("3. sidecar    $ sidecrypt serve   (reverse mode: %s -> %s, rules %s)", proxy, db, relPath(d.rules))

	if _, err := request("PUT", proxy+"/clinic", ""); err != nil {
		return err
	}
	if _, err := request("POST", proxy+"/clinic/_bulk_docs", demoRecords); err != nil {
		return err
	}
	d.say("4. the app    POST %s/clinic/_bulk_docs   (3 patient records, through the sidecar)\n", proxy)

	appView, err := request("GET", proxy+"/clinic/p-1001", "")
	if err != nil {
		return err
	}
	storeView, err := request("GET", db+"/clinic/p-1001", "")
	if err != nil {
		return err
	}
	d.sideBySide("what the app sees (through sidecrypt)", appView, "what the datastore holds (read directly)", storeView)

	raw, err := request("GET", db+"/clinic/_all_docs?include_docs=true", "")
	if err != nil {
		return err
	}
	secrets := []string{"Ann Example", "123-45-6789", "987-65-4321", "ann@example.com", "J45.909", "4111111111111111", "Chloé"}
	for _, secret := range secrets {
		if bytes.Contains(raw, []byte(secret)) {
			return fmt.Errorf("the protected value %q reached the datastore in plaintext", secret)
		}
	}
	d.say("\nThe datastore holds tokens only: none of %d protected values (names, SSNs, emails, diagnoses,\ncard numbers) appears in plaintext in any stored document.", len(secrets))

	found, err := request("POST", proxy+"/clinic/_find", `{"selector":{"email":"bob@example.org"}}`)
	if err != nil {
		return err
	}
	var res struct {
		Docs []struct {
			Name string `json:"name"`
			ID   string `json:"_id"`
		} `json:"docs"`
	}
	_ = json.Unmarshal(found, &res)
	if len(res.Docs) != 1 {
		return fmt.Errorf("_find by email found %d documents: %s", len(res.Docs), found)
	}
	d.say("Search still works: POST /clinic/_find {\"selector\":{\"email\":\"bob@example.org\"}} -> %s (%s):", res.Docs[0].ID, res.Docs[0].Name)
	d.say("  the email is encrypted deterministically, so the sidecar encrypts the query value to the same token.")
	d.say("Card numbers are masked for this app (decrypt.mask card: last4); its rules let it open pii, phi and contact.")

	d.stopServe()
	out, err := d.sidecrypt("audit", "verify")
	if err != nil {
		return fmt.Errorf("audit verify: %w\n%s", err, out)
	}
	d.say("\n$ sidecrypt audit verify\n%s", indent(strings.TrimSpace(out), "  "))
	if keep {
		d.say("\nKept %s (keys, KEK file, audit log).", d.dir)
	}
	d.say("\nStopped everything the demo started. Next: README.md, docs/RULES.md, docs/DEPLOY.md.")
	return nil
}

// start runs a background process with its output in logFile.
func (d *demo) start(name, logFile, bin string, args ...string) error {
	f, err := os.Create(logFile)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = d.env
	cmd.Dir = d.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	f.Close()
	d.procs = append(d.procs, cmd)
	return nil
}

// stopServe stops the sidecar (the last process started) so that it
// writes its final audit checkpoint.
func (d *demo) stopServe() {
	if len(d.procs) < 2 {
		return
	}
	stopProc(d.procs[len(d.procs)-1])
	d.procs = d.procs[:len(d.procs)-1]
}

func (d *demo) stop() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		stopProc(d.procs[i])
	}
	d.procs = nil
}

func stopProc(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func (d *demo) sidecrypt(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(d.a.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.self, args...)
	cmd.Env = d.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// sideBySide prints two JSON documents as indented columns. Long tokens
// are shortened so that the columns fit a terminal.
func (d *demo) sideBySide(leftTitle string, left []byte, rightTitle string, right []byte) {
	const width = 44
	l, r := prettyLines(left), prettyLines(right)
	d.say("  %-*s   %s", width, leftTitle, rightTitle)
	d.say("  %s   %s", strings.Repeat("-", width), strings.Repeat("-", width))
	for i := range max(len(l), len(r)) {
		var a, b string
		if i < len(l) {
			a = l[i]
		}
		if i < len(r) {
			b = r[i]
		}
		d.say("  %s   %s", pad(shorten(a, width), width), shorten(b, width))
	}
}

func prettyLines(b []byte) []string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(b), "", "  "); err != nil {
		return strings.Split(string(b), "\n")
	}
	return strings.Split(buf.String(), "\n")
}

func shorten(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-2]) + `…"`
}

func pad(s string, width int) string {
	return s + strings.Repeat(" ", max(0, width-utf8.RuneCountInString(s)))
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

func relPath(p string) string {
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
	}
	return p
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitUp(url string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return nil
			}
		}
	}
	return fmt.Errorf("not ready at %s after %v", url, timeout)
}

func request(method, url, body string) ([]byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}
