package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/sidecrypt/sidecrypt/internal/config"
)

// Exit codes. 2 is a usage error, as with the flag package.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// app is one invocation: its streams and environment. Tests build one
// directly; main builds it from the process.
type app struct {
	ctx     context.Context
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	environ []string
}

// command is a subcommand, or a group of them (keys, rules, ...).
type command struct {
	name    string
	summary string
	run     func(a *app, args []string) int
}

// commands lists the top-level commands in the order help shows them.
func commands() []command {
	return []command{
		{"serve", "run the proxy (reverse mode with SIDECRYPT_UPSTREAM, forward mode without)", cmdServe},
		{"keys", "manage data keys: list, create, activate, rotate, cryptoperiod, revoke, override, destroy, status, rewrap, backup, restore, recovery-keygen, backup-signer, verify, seal-records, recover", cmdKeys},
		{"kek", "manage key-encryption keys in the HSM or KMS: list, rotate, retire, escrow", cmdKEK},
		{"sweep", "rewrite a collection in place: re-encrypt old key versions, encrypt legacy plaintext; --dry-run counts", cmdSweep},
		{"rules", "check, try, review and publish rule files: lint, test, diff, report, convert, push", cmdRules},
		{"audit", "check and follow the audit log: verify, tail", cmdAudit},
		{"admin", "admin API principals and tokens; call a running sidecar: token, principals, whoami, call", cmdAdmin},
		{"approvals", "dual control on a running sidecar: list, show, approve, reject", cmdApprovals},
		{"ca", "manage the forward-mode interception CA: init, show", cmdCA},
		{"loadtest", "measure throughput and latency against direct and plain-proxy baselines", cmdLoadtest},
		{"demo", "run the demo: a datastore, the sidecar in front of it, a few records (make demo)", cmdDemo},
		{"healthcheck", "ask the sidecar on this host whether it is up (--ready: ready); the image's HEALTHCHECK", cmdHealthcheck},
		{"completion", "print a shell completion script: bash, zsh, fish", cmdCompletion},
		{"version", "print the version (also: sidecrypt --version)", cmdVersion},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, stdin: os.Stdin, stdout: stdout, stderr: stderr, environ: os.Environ()}
	if len(args) > 0 {
		switch args[0] {
		case "--version", "-version", "-V":
			return cmdVersion(a, args[1:])
		case "__complete": // the shell completion scripts' callback, not listed
			return cmdComplete(a, args[1:])
		}
	}
	return a.dispatch("sidecrypt", commands(), args)
}

// dispatch runs the subcommand named by args[0] from cmds.
func (a *app) dispatch(prefix string, cmds []command, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 && args[0] == "help" {
			// "sidecrypt help keys" == "sidecrypt keys --help"
			return a.dispatch(prefix, cmds, []string{args[1], "--help"})
		}
		a.groupUsage(a.stdout, prefix, cmds)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range cmds {
		if c.name == args[0] {
			return c.run(a, args[1:])
		}
	}
	fmt.Fprintf(a.stderr, "%s: unknown command %q\n", prefix, args[0])
	names := make([]string, 0, len(cmds))
	for _, c := range cmds {
		names = append(names, c.name)
	}
	sort.Strings(names)
	fmt.Fprintf(a.stderr, "the commands are: %s\nrun '%s help' for details\n", strings.Join(names, ", "), prefix)
	return exitUsage
}

func (a *app) groupUsage(w io.Writer, prefix string, cmds []command) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\nCommands:\n", prefix)
	width := 10
	for _, c := range cmds {
		width = max(width, len(c.name))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", prefix)
	if prefix == "sidecrypt" {
		fmt.Fprint(w, "Settings come from SIDECRYPT_* environment variables; see README.md.\n")
	}
}

// flags returns a FlagSet for a subcommand whose usage text is usage (the
// synopsis line, then a description). Its help lists the flags the way the
// synopsis lines and the docs write them, --name (the flag package itself
// prints -name; both spellings parse).
func (a *app) flags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n", usage)
		if defs := flagDefaults(fs); defs != "" {
			fmt.Fprintf(w, "\nFlags:\n%s", defs)
		}
	}
	return fs
}

// flagDefaults renders fs's flags as flag.PrintDefaults does, but with
// two dashes: "  --name type\n    \tusage (default ...)". Single-letter
// flags keep one dash (-o, -n), as is the convention.
func flagDefaults(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		kind, text := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  %s%s", dash, f.Name)
		if kind != "" {
			b.WriteString(" " + kind)
		}
		b.WriteString("\n    \t" + strings.ReplaceAll(text, "\n", "\n    \t"))
		if def := f.DefValue; def != "" && def != "false" && def != "0" && def != "[]" {
			if kind == "string" {
				def = strconv.Quote(def)
			}
			fmt.Fprintf(&b, " (default %s)", def)
		}
		b.WriteString("\n")
	})
	return b.String()
}

// parse parses args into fs. It returns (code, false) when the caller must
// return code: -h/--help (0) or a bad flag (2).
func (a *app) parse(fs *flag.FlagSet, args []string) (int, bool) {
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "-h" || arg == "-help" || arg == "--help" {
			// --help is a request, not a mistake: usage goes to stdout
			// and the exit code is 0.
			fs.SetOutput(a.stdout)
			fs.Usage()
			return exitOK, false
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// parseInterspersed parses flags that may come before, between and after
// positional arguments (`rules test FILE --method POST`, `keys create pii
// --cryptoperiod 90d`), which the flag package alone does not allow. It
// returns the positional arguments.
func (a *app) parseInterspersed(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var pos []string
	for {
		if code, ok := a.parse(fs, args); !ok {
			return nil, code, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// config loads the configuration from the invocation's environment.
func (a *app) config() (config.Config, error) {
	return config.Load(a.environ)
}

// logger builds the process logger from the configuration.
func (a *app) logger(c config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	return a.newLogger(c, level)
}

func (a *app) newLogger(c config.Config, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: readableDurations}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(a.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(a.stderr, opts))
}

// readableDurations writes time.Duration values as Go writes them ("1.5ms",
// "30s") rather than as integer nanoseconds, which is what slog's JSON
// handler does by default and nobody reads at 3 a.m. (The text handler
// already writes them this way.)
func readableDurations(_ []string, attr slog.Attr) slog.Attr {
	if attr.Value.Kind() == slog.KindDuration {
		attr.Value = slog.StringValue(attr.Value.Duration().String())
	}
	return attr
}

// fail prints "sidecrypt: <err>" and returns exitFail.
func (a *app) fail(err error) int {
	fmt.Fprintf(a.stderr, "sidecrypt: %v\n", err)
	return exitFail
}

func cmdVersion(a *app, args []string) int {
	fs := a.flags("version", "sidecrypt version\n\nPrints the version of this binary.")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	fmt.Fprintf(a.stdout, "sidecrypt %s\n", version)
	return exitOK
}

// usageError reports a wrong use of a command and returns exitUsage.
func (a *app) usageError(fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(a.stderr, "%s: %s\n", fs.Name(), msg)
	fmt.Fprintf(a.stderr, "run 'sidecrypt %s --help' for usage\n", fs.Name())
	return exitUsage
}

// quietLogger is the logger for one-shot commands: warnings and errors
// only, so that a provider's start-up notes do not drown the output.
func (a *app) quietLogger(c config.Config) *slog.Logger {
	return a.newLogger(c, slog.LevelWarn)
}
