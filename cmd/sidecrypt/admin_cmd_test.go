package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// cliRun runs one sidecrypt command in this process with env and returns
// its exit code, stdout and stderr.
func cliRun(ctx context.Context, env []string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	a := &app{ctx: ctx, stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: env}
	code := a.dispatch("sidecrypt", commands(), args)
	return code, out.String(), errb.String()
}

// TestDualControlThroughTheCLI runs serve in this process and drives dual
// control as two security officers and an auditor would: through the
// admin socket, with the approvals commands, the audit log following
// along with tail -f.
func TestDualControlThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	upstream := httptest.NewServer(http.NotFoundHandler())
	defer upstream.Close()
	rules := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rules, []byte("version: 1\nroutes:\n  - name: p\n    match: {methods: [POST], paths: [\"/p\"]}\n    encrypt:\n      - {fields: [\"$.ssn\"], key: pii, mode: random}\n"), 0o600)
	env := []string{
		"SIDECRYPT_KEYSTORE=" + filepath.Join(dir, "data", "keys.db"),
		"SIDECRYPT_MASTER_PASSPHRASE=admin cli test passphrase",
		"SIDECRYPT_RULES=" + rules,
		"SIDECRYPT_UPSTREAM=" + upstream.URL,
		"SIDECRYPT_LISTEN=" + testenv.FreeAddr(t),
		"SIDECRYPT_ADMIN_LISTEN=" + testenv.FreeAddr(t),
		"SIDECRYPT_ADMIN_TOKENS_FILE=" + filepath.Join(dir, "etc", "principals.yaml"),
		"SIDECRYPT_AUDIT_WITNESS=file:" + filepath.Join(dir, "witness", "heads"),
	}
	ctx := context.Background()
	must := func(env []string, args ...string) string {
		t.Helper()
		code, out, errs := cliRun(ctx, env, args...)
		if code != 0 {
			t.Fatalf("sidecrypt %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	token := map[string]string{}
	for name, role := range map[string]string{"sofia": "security-officer", "sam": "security-officer", "olive": "operator"} {
		token[name] = strings.TrimSpace(must(env, "admin", "token", "create", name, "--role", role))
	}
	// This user, on the socket, is an auditor.
	f, _ := os.OpenFile(filepath.Join(dir, "etc", "principals.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "  - principal: me\n    roles: [auditor]\n    uid: %d\n", os.Geteuid())
	f.Close()
	must(env, "keys", "create", "pii")
	must(env, "keys", "rotate", "pii") // v1 deactivated: destroyable

	cfg, err := config.Load(env)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(sctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	waitFor(t, "the admin socket", func() bool {
		code, _, _ := cliRun(ctx, env, "admin", "whoami")
		return code == 0
	})
	if out := must(env, "admin", "whoami"); !strings.HasPrefix(out, fmt.Sprintf("me (auditor) via socket, uid %d", os.Geteuid())) {
		t.Fatalf("whoami: %q", out)
	}

	// The auditor follows the log.
	var tail testenv.SyncBuffer
	tctx, stopTail := context.WithCancel(ctx)
	tailDone := make(chan struct{})
	go func() {
		a := &app{ctx: tctx, stdin: strings.NewReader(""), stdout: &tail, stderr: io.Discard, environ: env}
		a.dispatch("sidecrypt", commands(), []string{"audit", "tail", "-f", "-n", "0"})
		close(tailDone)
	}()
	defer func() { stopTail(); <-tailDone }()

	as := func(name string) []string {
		return append(env[:len(env):len(env)], "SIDECRYPT_ADMIN_CLIENT_TOKEN="+token[name])
	}

	// An operator may not destroy at all.
	code, _, errs := cliRun(ctx, as("olive"), "admin", "call", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii"}`)
	if code != 1 || !strings.Contains(errs, "403") {
		t.Fatalf("operator destroy: %d %s", code, errs)
	}
	// A security officer asks; nothing happens yet.
	out := must(as("sofia"), "admin", "call", "POST", "/v1/keys/pii/versions/1/destroy", `{"confirm":"pii","reason":"end of life"}`)
	id := regexp.MustCompile(`approvals approve ([0-9a-f]{12})`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no request id in %s", out)
	}
	if list := must(env, "approvals", "list"); !strings.Contains(list, id[1]) || !strings.Contains(list, "destroy pii v1") || !strings.Contains(list, "sofia") {
		t.Fatalf("approvals list:\n%s", list)
	}
	if keys := must(env, "keys", "list"); !strings.Contains(keys, "deactivated") {
		t.Fatalf("destroyed before approval:\n%s", keys)
	}
	// Not by the requester, not by the auditor.
	for _, who := range [][]string{as("sofia"), env} {
		if code, _, errs := cliRun(ctx, who, "approvals", "approve", id[1]); code != 1 || !strings.Contains(errs, "403") {
			t.Fatalf("approve: %d %s", code, errs)
		}
	}
	out = must(as("sam"), "approvals", "approve", id[1])
	if !strings.Contains(out, "approved and done: destroy pii v1") || !strings.Contains(out, "requested by sofia, approved by sam") {
		t.Fatalf("approve: %s", out)
	}
	if keys := must(env, "keys", "list"); !strings.Contains(keys, "destroyed") {
		t.Fatalf("not destroyed after approval:\n%s", keys)
	}

	// The follower saw request, approval and the destroy by both.
	waitFor(t, "tail -f to show the destroy", func() bool { return strings.Contains(tail.String(), "key.destroy") })
	for _, want := range []string{"approval.request", "request " + id[1] + " (key.destroy): destroy pii v1", "approval.approve", "admin:sofia+sam", "admin.call"} {
		if !strings.Contains(tail.String(), want) {
			t.Fatalf("tail -f lacks %q:\n%s", want, tail.String())
		}
	}
	// The log verifies, against the witness too.
	waitFor(t, "a head at the witness", func() bool {
		_, err := os.Stat(filepath.Join(dir, "witness", "heads"))
		return err == nil
	})
	time.Sleep(1500 * time.Millisecond) // the head catches up with the last events
	if out := must(env, "audit", "verify", "--witness"); !strings.Contains(out, "OK") || !strings.Contains(out, "witness:         ok") {
		t.Fatalf("verify:\n%s", out)
	}
}
