package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestListenUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "admin.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want mode %04o", p, fi.Mode(), err, want)
		}
	}
	// A live socket is not taken over.
	go func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(ln)
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "already serves") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// A stale one (its process gone) is.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = ListenUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()

	// A directory others may write, a file in the way, a path too long.
	open := filepath.Join(t.TempDir(), "shared")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if _, err := ListenUnix(filepath.Join(open, "admin.sock")); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("world-writable directory: %v", err)
	}
	file := filepath.Join(t.TempDir(), "admin.sock")
	os.WriteFile(file, nil, 0o600)
	if _, err := ListenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a file in the way: %v", err)
	}
	if _, err := ListenUnix("/tmp/" + strings.Repeat("x", 120)); err == nil || !strings.Contains(err.Error(), "limited to") {
		t.Fatalf("long path: %v", err)
	}
}

// serveSocket serves f's API on a Unix socket and returns a client.
func serveSocket(t *testing.T, f *fixture, token string) *Client {
	t.Helper()
	// Short: socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "sc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "a.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.api.Serve(ctx, nil, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	c, err := NewClient(ClientConfig{Socket: path, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func whoami(t *testing.T, c *Client) (int, Principal) {
	t.Helper()
	status, body, err := c.Do(context.Background(), "GET", "/v1/whoami", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var p Principal
	json.Unmarshal(body, &p)
	return status, p
}

// TestSocketCredentials: on the socket the caller's uid (SO_PEERCRED) is
// the credential, mapped by the principals file, or, without one, the
// sidecar's own user with every role.
func TestSocketCredentials(t *testing.T) {
	me := os.Geteuid()
	t.Run("no principals file", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{noPrincipals: true})
		c := serveSocket(t, f, "")
		status, p := whoami(t, c)
		if status != 200 || !strings.HasPrefix(p.Name, "local:") || p.Method != "socket" || p.UID != me || len(p.Roles) != 4 {
			t.Fatalf("whoami: %d %+v", status, p)
		}
		// No Host or Origin games on a socket a browser cannot reach,
		// but the body must still be JSON.
		status, body, _ := c.Do(context.Background(), "POST", "/v1/keys", []byte(`{"name":"pii"}`), "text/plain")
		if status != http.StatusUnsupportedMediaType {
			t.Fatalf("text/plain on the socket: %d %s", status, body)
		}
		status, body, _ = c.Do(context.Background(), "POST", "/v1/keys", []byte(`{"name":"pii"}`), "")
		if status != http.StatusCreated {
			t.Fatalf("create on the socket: %d %s", status, body)
		}
		calls := f.rec.Find("admin.call")
		if len(calls) != 1 || calls[0].Details["via"] != "socket" || calls[0].Details["uid"] != strconv.Itoa(me) || calls[0].Details["pid"] != strconv.Itoa(os.Getpid()) {
			t.Fatalf("admin.call %+v", calls)
		}
	})
	t.Run("uid mapped in the file", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{})
		c := serveSocket(t, f, "")
		// Not listed: refused, least privilege.
		if status, _ := whoami(t, c); status != http.StatusForbidden {
			t.Fatalf("unlisted uid: %d", status)
		}
		appendPrincipal(t, f.tokensFile, "  - principal: opsuser\n    roles: [auditor]\n    uid: "+strconv.Itoa(me)+"\n")
		time.Sleep(1100 * time.Millisecond) // the file is looked at once a second
		status, p := whoami(t, c)
		if status != 200 || p.Name != "opsuser" || p.UID != me || p.Roles[0] != RoleAuditor {
			t.Fatalf("mapped uid: %d %+v", status, p)
		}
		if status, _, _ := c.Do(context.Background(), "POST", "/v1/keys", []byte(`{"name":"pii"}`), ""); status != http.StatusForbidden {
			t.Fatalf("an auditor created a key over the socket: %d", status)
		}
		// A token over the socket names another principal (people who
		// share the service account keep their own identities).
		ct := serveSocket(t, f, f.tokens["olive"])
		status, p = whoami(t, ct)
		if status != 200 || p.Name != "olive" || p.Method != "token" || p.UID != me {
			t.Fatalf("token on the socket: %d %+v", status, p)
		}
	})
}

func appendPrincipal(t *testing.T, path, entry string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(entry)
	f.Close()
}

func TestPrincipalsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "principals.yaml")
	token, err := createToken(path, "alice", []Role{RoleOperator, RoleAuditor}, false, testParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(token, "sct_") || len(token) != 4+12+1+43 {
		t.Fatalf("token %q", token)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), token[17:]) || !strings.Contains(string(b), "$argon2id$v=19$") {
		t.Fatalf("the file must hold the hash only:\n%s", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, err := createToken(path, "alice", []Role{RoleOperator}, false, testParams); err == nil {
		t.Fatal("a second alice")
	}
	rotated, err := createToken(path, "alice", nil, true, testParams)
	if err != nil || rotated == token {
		t.Fatalf("rotate: %v", err)
	}
	src, err := OpenPrincipals(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := src.Current().byToken[tokenID(rotated)]
	if e == nil || !checkTokenHash(rotated, e.TokenHash) || checkTokenHash(token, e.TokenHash) {
		t.Fatal("the rotated token does not check, or the old one still does")
	}
	if err := RevokeToken(path, "alice"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), "alice") {
		t.Fatalf("a principal without credentials stays:\n%s", b)
	}

	// Others may not write the file: they could grant themselves roles.
	createToken(path, "bob", []Role{RoleOperator}, false, testParams)
	os.Chmod(path, 0o620)
	if _, err := OpenPrincipals(path, nil); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("group-writable file: %v", err)
	}
	os.Chmod(path, 0o600)

	for _, tc := range []struct{ name, doc, want string }{
		{"version", "version: 2\nprincipals: []\n", "version must be 1"},
		{"empty", "", "version must be 1"},
		{"unknown role", "version: 1\nprincipals:\n  - {principal: a, roles: [root], uid: 5}\n", "unknown role"},
		{"no roles", "version: 1\nprincipals:\n  - {principal: a, uid: 5}\n", "no roles"},
		{"no credential", "version: 1\nprincipals:\n  - {principal: a, roles: [auditor]}\n", "no credential"},
		{"reserved", "version: 1\nprincipals:\n  - {principal: admin, roles: [auditor], uid: 5}\n", "reserved"},
		{"bad name", "version: 1\nprincipals:\n  - {principal: \"a b\", roles: [auditor], uid: 5}\n", "a name is"},
		{"twice", "version: 1\nprincipals:\n  - {principal: a, roles: [auditor], uid: 5}\n  - {principal: a, roles: [auditor], uid: 6}\n", "listed twice"},
		{"uid twice", "version: 1\nprincipals:\n  - {principal: a, roles: [auditor], uid: 5}\n  - {principal: b, roles: [auditor], uid: 5}\n", "mapped twice"},
		{"cheap hash", "version: 1\nprincipals:\n  - {principal: a, roles: [auditor], token_id: 0123456789ab, token_hash: \"$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\"}\n", "out of range"},
		{"unknown field", "version: 1\nprincipals:\n  - {principal: a, roles: [auditor], uid: 5, token: plaintext}\n", "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParsePrincipals([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

// TestPrincipalsReload: a token made while the sidecar runs works
// without a restart; a broken file is refused and the last good one
// stays.
func TestPrincipalsReload(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	tok, err := createToken(f.tokensFile, "newcomer", []Role{RoleAuditor}, false, testParams)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if status, out, _ := f.send(t, req{method: "GET", path: "/v1/whoami", token: tok}); status != 200 || out["principal"] != "newcomer" {
		t.Fatalf("%d %v", status, out)
	}
	os.WriteFile(f.tokensFile, []byte("version: 1\nprincipals: [broken\n"), 0o600)
	time.Sleep(1100 * time.Millisecond)
	if status, _, _ := f.send(t, req{method: "GET", path: "/v1/whoami", token: tok}); status != 200 {
		t.Fatalf("a broken file replaced the good one: %d", status)
	}
}

func TestClientErrors(t *testing.T) {
	if _, err := NewClient(ClientConfig{Socket: "off"}); err == nil {
		t.Fatal("a client without a socket or URL")
	}
	c, _ := NewClient(ClientConfig{Socket: filepath.Join(t.TempDir(), "none.sock")})
	if _, _, err := c.Do(context.Background(), "GET", "/v1/whoami", nil, ""); err == nil || !strings.Contains(err.Error(), "is sidecrypt serve running") {
		t.Fatalf("%v", err)
	}
	if m := ErrorMessage([]byte(`{"error":{"code":"forbidden","message":"no"}}`)); m != "no (forbidden)" {
		t.Fatal(m)
	}
	_ = errors.New
}
