package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/sidecrypt/sidecrypt/internal/config"
)

// runCLI runs the CLI in-process with env as its whole environment.
func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{ctx: context.Background(), stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: env}
	if len(args) > 0 && (args[0] == "--version" || args[0] == "__complete") {
		if args[0] == "--version" {
			code = cmdVersion(a, args[1:])
		} else {
			code = cmdComplete(a, args[1:])
		}
	} else {
		code = a.dispatch("sidecrypt", commands(), args)
	}
	return out.String(), errb.String(), code
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, _, code := runCLI(t, nil, args...)
		if code != 0 || !strings.HasPrefix(out, "sidecrypt ") {
			t.Errorf("%v: %d %q", args, code, out)
		}
	}
}

// TestTopLevelHelpNamesEverySubcommand: the one-line summary of each
// command group in `sidecrypt help` ends with the list of its
// subcommands, and that list is the group's own.
func TestTopLevelHelpNamesEverySubcommand(t *testing.T) {
	a := &app{ctx: context.Background(), environ: nil}
	for _, c := range commands() {
		subs := a.subcommands([]string{c.name})
		if subs == nil {
			continue
		}
		_, list, ok := strings.Cut(c.summary, ": ")
		if !ok {
			t.Errorf("%s: the summary %q does not list the subcommands", c.name, c.summary)
			continue
		}
		list = strings.Split(list, ";")[0]
		var named []string
		for _, w := range strings.Split(list, ",") {
			named = append(named, strings.TrimSpace(w))
		}
		for _, s := range subs {
			if !contains(named, s) {
				t.Errorf("sidecrypt help: %s lists %v, but %q is a subcommand too", c.name, named, s)
			}
		}
	}
}

// TestHelpShowsDoubleDashFlags: every command's help lists its flags as
// --name (one-letter flags as -x), the way the docs and synopses write
// them.
func TestHelpShowsDoubleDashFlags(t *testing.T) {
	a := &app{ctx: context.Background()}
	var walk func(path []string)
	checked := 0
	walk = func(path []string) {
		if subs := a.subcommands(path); subs != nil {
			for _, s := range subs {
				walk(append(append([]string{}, path...), s))
			}
			return
		}
		help := a.helpOf(path)
		if !strings.HasPrefix(help, "Usage: ") {
			t.Errorf("sidecrypt %s --help: %q", strings.Join(path, " "), help)
			return
		}
		checked++
		if m := regexp.MustCompile(`(?m)^  -[a-z][a-z-]+`).FindString(help); m != "" {
			t.Errorf("sidecrypt %s --help lists %q with one dash", strings.Join(path, " "), m)
		}
	}
	walk(nil)
	if checked < 40 {
		t.Fatalf("only %d commands checked", checked)
	}
}

// TestServeHasAFlagForEveryNonSecretSetting: the README promises it.
func TestServeHasAFlagForEveryNonSecretSetting(t *testing.T) {
	flags := (&app{ctx: context.Background()}).commandFlags([]string{"serve"})
	have := map[string]bool{}
	for _, f := range flags {
		have[f.name] = true
	}
	ct := reflect.TypeOf(config.Config{})
	n := 0
	for i := 0; i < ct.NumField(); i++ {
		f := ct.Field(i)
		name, ok := config.FlagName(f)
		if !ok {
			continue
		}
		n++
		if !have[name] {
			t.Errorf("serve --help has no --%s for SIDECRYPT_%s", name, f.Tag.Get("env"))
		}
		if f.Tag.Get("help") == "" {
			t.Errorf("config.Config.%s has no help tag", f.Name)
		}
	}
	for _, secret := range []string{"hsm-pin", "master-passphrase", "admin-token", "hsm-pin-file", "admin-client-token"} {
		if have[secret] {
			t.Errorf("serve has a flag for the secret --%s", secret)
		}
	}
	if n < 30 {
		t.Fatalf("only %d settings have flags", n)
	}
	// The help works whatever the environment holds, and a bad upstream
	// says what it wants.
	out, _, code := runCLI(t, []string{"SIDECRYPT_CACHE_TTL=soon"}, "serve", "--help")
	if code != 0 || !strings.Contains(out, "--upstream string") {
		t.Fatalf("serve --help with a bad environment: %d\n%s", code, out)
	}
	_, errOut, code := runCLI(t, []string{"SIDECRYPT_UPSTREAM=127.0.0.1:5984", "SIDECRYPT_RULES=x.yaml"}, "serve")
	if code != exitFail || !strings.Contains(errOut, "want http://host:port") || !strings.Contains(errOut, "did you mean http://127.0.0.1:5984?") {
		t.Fatalf("bare host:port upstream: %d %s", code, errOut)
	}
}

func TestCompleteCandidates(t *testing.T) {
	for _, tc := range []struct {
		words []string
		want  []string // all of these, among others
		none  bool
	}{
		{[]string{""}, []string{"serve", "keys", "kek", "rules", "completion", "version"}, false},
		{[]string{"ke"}, []string{"keys", "kek"}, false},
		{[]string{"keys", ""}, []string{"list", "create", "rotate", "backup", "restore"}, false},
		{[]string{"rules", ""}, []string{"lint", "test", "diff", "report", "convert", "push"}, false},
		{[]string{"keys", "list", "--"}, []string{"--json", "--no-verify"}, false},
		{[]string{"serve", "--upstream-"}, []string{"--upstream-ca", "--upstream-timeout"}, false},
		{[]string{"keys", "backup", "--out", ""}, nil, true}, // a file name: the shell's
		{[]string{"rules", "lint", "cl"}, nil, true},         // a positional file
		{[]string{"nonsense", ""}, nil, true},                // unknown command
		{[]string{"keys", "create", "pii", "--cr"}, []string{"--cryptoperiod"}, false},
	} {
		out, _, code := runCLI(t, nil, append([]string{"__complete"}, tc.words...)...)
		got := strings.Fields(out)
		if code != 0 || (tc.none && len(got) != 0) {
			t.Errorf("%q: %d %v", tc.words, code, got)
		}
		for _, w := range tc.want {
			if !contains(got, w) {
				t.Errorf("%q: %v lacks %q", tc.words, got, w)
			}
		}
		for _, g := range got {
			if !strings.HasPrefix(g, tc.words[len(tc.words)-1]) {
				t.Errorf("%q: %q does not complete the word", tc.words, g)
			}
		}
	}
}

// TestCompletionScripts loads each script into its shell, as an operator
// would, and asks it to complete: bash and zsh are real shells here
// (scripts/deps.sh installs zsh), fish is checked for syntax when present.
func TestCompletionScripts(t *testing.T) {
	// TestMain (testscript.Main) put a "sidecrypt" that is this test
	// binary on PATH.
	if _, err := exec.LookPath("sidecrypt"); err != nil {
		t.Fatalf("no sidecrypt on PATH: %v", err)
	}
	env := os.Environ()
	for _, c := range []string{"bash", "zsh", "fish"} {
		if _, _, code := runCLI(t, nil, "completion", c); code != 0 {
			t.Errorf("completion %s: %d", c, code)
		}
	}

	t.Run("bash", func(t *testing.T) {
		script := `source <(sidecrypt completion bash)
COMP_WORDS=(sidecrypt keys ro); COMP_CWORD=2; _sidecrypt; echo "${COMPREPLY[*]}"
COMP_WORDS=(sidecrypt serve --admin-l); COMP_CWORD=2; _sidecrypt; echo "${COMPREPLY[*]}"
complete -p sidecrypt`
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		want := "rotate\n--admin-listen\ncomplete -o default -F _sidecrypt sidecrypt\n"
		if err != nil || string(out) != want {
			t.Fatalf("bash: %v\n%s\nwant\n%s", err, out, want)
		}
	})
	t.Run("zsh", func(t *testing.T) {
		zsh, err := exec.LookPath("zsh")
		if err != nil {
			if os.Getenv("SIDECRYPT_TEST_REQUIRE_ALL") == "1" {
				t.Fatal("zsh not found (scripts/deps.sh test installs it)")
			}
			t.Skip("zsh not installed")
		}
		// compadd only works inside a completion widget; stand in for it
		// and for compdef to see what the function offers.
		script := `compdef() { :; }
compadd() { shift 2; print -l -- "$@"; }
_files() { print FILES; }
source <(sidecrypt completion zsh)
words=(sidecrypt rules d); CURRENT=3; _sidecrypt
words=(sidecrypt keys backup --out ''); CURRENT=5; _sidecrypt`
		cmd := exec.Command(zsh, "-f", "-c", script)
		cmd.Env = append(env, "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "diff\nFILES\n" {
			t.Fatalf("zsh: %v\n%s", err, out)
		}
	})
	t.Run("fish", func(t *testing.T) {
		fish, err := exec.LookPath("fish")
		if err != nil {
			t.Skip("fish not installed (optional)")
		}
		out, _, _ := runCLI(t, nil, "completion", "fish")
		cmd := exec.Command(fish, "--no-execute", "-c", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fish: %v\n%s", err, b)
		}
	})
}
