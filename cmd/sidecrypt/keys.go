package main

// The keys and kek commands: thin wrappers that read the environment, open
// the keystore, the HSM and the audit log, and call keystore.Manager. All
// lifecycle rules live in keystore; nothing here decides what is allowed.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"golang.org/x/time/rate"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
	"github.com/sidecrypt/sidecrypt/keystore"
)

func cmdKeys(a *app, args []string) int {
	return a.dispatch("sidecrypt keys", []command{
		{"list", "list keys, their versions and states", cmdKeysList},
		{"create", "create a key (version 1)", cmdKeysCreate},
		{"activate", "activate a pre-active version and make it primary", cmdKeysActivate},
		{"rotate", "add a version and make it primary; the old one keeps decrypting", cmdKeysRotate},
		{"cryptoperiod", "set how long a primary seals before the scheduler rotates it", cmdKeysCryptoperiod},
		{"revoke", "deactivate a version, or mark it compromised", cmdKeysRevoke},
		{"override", "let a compromised version decrypt for a limited time", cmdKeysOverride},
		{"destroy", "erase a version's key material (crypto-shredding)", cmdKeysDestroy},
		{"status", "show the values the store sweep found under each version", cmdKeysStatus},
		{"rewrap", "re-wrap every data key under the current KEK", cmdKeysRewrap},
		{"backup", "write every data key, sealed to a recovery key, to a file", cmdKeysBackup},
		{"restore", "restore data keys from a backup into this keystore and HSM", cmdKeysRestore},
		{"recover", "re-wrap every data key under a new primary provider from its escrow copy (SIDECRYPT_HSM_ESCROW)", cmdKeysRecover},
		{"recovery-keygen", "make a recovery key pair for backups", cmdKeysRecoveryKeygen},
		{"backup-signer", "print the HSM's backup signing public key, for restores into a new HSM", cmdKeysBackupSigner},
		{"verify", "check every keystore record's integrity (HSM record MAC, generations, head record)", cmdKeysVerify},
		{"seal-records", "seal the records of a keystore from before record integrity (one-time migration)", cmdKeysSealRecords},
	}, args)
}

func cmdKEK(a *app, args []string) int {
	return a.dispatch("sidecrypt kek", []command{
		{"list", "list KEK versions and how many data keys each wraps", cmdKEKList},
		{"rotate", "create a new KEK version in the HSM and make it current", cmdKEKRotate},
		{"retire", "retire a KEK version that no data key uses any more", cmdKEKRetire},
		{"escrow", "list, rotate and retire the escrow provider's KEK versions (SIDECRYPT_HSM_ESCROW)", cmdKEKEscrow},
	}, args)
}

// envHelp is appended to every keys/kek usage text.
const envHelp = `
Settings come from the environment: SIDECRYPT_KEYSTORE (key store file),
SIDECRYPT_HSM ("software", a pkcs11: or an awskms: URI), SIDECRYPT_HSM_PIN,
SIDECRYPT_HSM_ESCROW (a second provider that wraps every data key too),
SIDECRYPT_MASTER_PASSPHRASE and SIDECRYPT_KEK_FILE (software provider),
SIDECRYPT_AUDIT_LOG. Secrets are never taken from flags. See docs/KEYS.md.`

func isSoftware(cfg config.Config) bool { return cfg.HSM == "" || cfg.HSM == "software" }

// keysSession is what a keys or kek command works with: the key
// environment that serve opens too (env.go), and a context that attributes
// audit events to the operator.
type keysSession struct {
	*keyEnv
	ctx context.Context
	m   *keystore.Manager
}

// session opens the keystore, the HSM and the audit log. create lets the
// software provider make its KEK file, and a PKCS#11 token its first KEK.
func (a *app) session(create bool) (*keysSession, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	if isSoftware(cfg) && cfg.MasterPassphrase == "" {
		return nil, errors.New("SIDECRYPT_MASTER_PASSPHRASE is not set: the software KEK provider (SIDECRYPT_HSM=software) seals its key file with it; set it, or SIDECRYPT_MASTER_PASSPHRASE_FILE")
	}
	env, err := openKeyEnv(a.ctx, cfg, a.quietLogger(cfg), create, nil)
	if err != nil {
		if !create && errors.Is(err, hsm.ErrNoKEK) {
			if isSoftware(cfg) {
				return nil, fmt.Errorf("no KEK file at %s yet: 'sidecrypt keys create NAME' or 'sidecrypt kek rotate' makes one (%w)", cfg.KEKFile, err)
			}
			return nil, fmt.Errorf("the HSM has no KEK yet: 'sidecrypt kek rotate' or 'sidecrypt keys create NAME' generates the first (%w)", err)
		}
		return nil, err
	}
	return &keysSession{keyEnv: env, ctx: audit.WithActor(a.ctx, cliActor()), m: env.manager}, nil
}

// withSession runs fn with a session and reports any error.
func (a *app) withSession(create bool, fn func(s *keysSession) error) int {
	s, err := a.session(create)
	if err != nil {
		return a.fail(err)
	}
	return a.inSession(s, fn)
}

// inSession runs fn with the open session s, closes it and reports any
// error.
func (a *app) inSession(s *keysSession, fn func(s *keysSession) error) int {
	err := fn(s)
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return a.fail(err)
	}
	return exitOK
}

// parseCryptoperiod accepts Go durations (2160h, 90m) and whole days or
// weeks (90d, 12w); "0" means no scheduled rotation.
func parseCryptoperiod(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseUint(num, 10, 32)
			if err != nil || n == 0 || float64(n)*float64(u.unit) > math.MaxInt64 {
				return 0, fmt.Errorf("invalid duration %q (want e.g. 90d, 12w, 720h)", s)
			}
			return time.Duration(n) * u.unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 90d, 12w, 720h)", s)
	}
	return d, nil
}

// formatPeriod prints a duration in the units operators use.
func formatPeriod(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d%(7*24*time.Hour) == 0:
		return fmt.Sprintf("%dw", d/(7*24*time.Hour))
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneName checks that exactly one key name was given.
func (a *app) oneName(fs *flag.FlagSet, pos []string) (string, bool) {
	if len(pos) != 1 {
		a.usageError(fs, "name exactly one key")
		return "", false
	}
	return pos[0], true
}

func (a *app) versionFlag(fs *flag.FlagSet, v uint) (uint32, bool) {
	if v == 0 || v > math.MaxUint32 {
		a.usageError(fs, "--version N is required (N >= 1)")
		return 0, false
	}
	return uint32(v), true
}

// --- keys list ---

func cmdKeysList(a *app, args []string) int {
	fs := a.flags("keys list", `sidecrypt keys list [--json] [--no-verify]

Lists every key version: its state, whether it is the primary (the one
that seals new values), the KEK version that wraps it, its seal budget
(values sealed so far across every sidecar, of the per-version limit),
and its fingerprint. Keys without a cryptoperiod are warned about.

Each record's integrity is checked with the HSM's record key, so the HSM
(or the software provider's passphrase) is needed. A record that fails is
named on stderr and the command exits 1. --no-verify reads the records
as they are, without the HSM, marked UNVERIFIED: for an HSM outage.`+envHelp)
	asJSON := fs.Bool("json", false, "print {\"keys\": [...]} as JSON")
	noVerify := fs.Bool("no-verify", false, "read the records without checking their integrity (no HSM needed)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "keys list takes no arguments")
	}
	if *noVerify {
		cfg, err := a.config()
		if err != nil {
			return a.fail(err)
		}
		st, err := openStore(a.ctx, cfg)
		if err != nil {
			return a.fail(err)
		}
		defer st.Close()
		keys, err := st.List(a.ctx)
		if err != nil {
			return a.fail(err)
		}
		fmt.Fprintln(a.stderr, "UNVERIFIED: these records were read without checking their integrity (--no-verify); do not act on them without 'sidecrypt keys verify'")
		return a.printKeys(keys, nil, 0, *asJSON, nil)
	}
	// An empty keystore needs no HSM to say so (nor a KEK file yet).
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	st, err := openStore(a.ctx, cfg)
	if err != nil {
		return a.fail(err)
	}
	raw, err := st.List(a.ctx)
	st.Close()
	if err != nil {
		return a.fail(err)
	}
	if len(raw) == 0 {
		return a.printKeys(nil, nil, 0, *asJSON, nil)
	}
	return a.withSession(false, func(s *keysSession) error {
		keys, lerr := s.m.List(s.ctx)
		if keys == nil && lerr != nil {
			return lerr
		}
		us, uerr := s.m.Usages(s.ctx, keys)
		if code := a.printKeys(keys, us, s.m.SealLimit(), *asJSON, errors.Join(lerr, uerr)); code != exitOK {
			return errors.New("some keystore records failed their integrity check (above); they are not used. Restore them from a backup (docs/KEYS.md, \"Record integrity\")")
		}
		return nil
	})
}

// printKeys prints keys as a table or JSON; bad names the records that
// failed their check, printed on stderr. It returns exitFail when any did.
func (a *app) printKeys(keys []*keystore.Key, us map[string]keystore.Usage, limit uint64, asJSON bool, bad error) int {
	code := exitOK
	if bad != nil {
		for _, line := range strings.Split(bad.Error(), "\n") {
			fmt.Fprintf(a.stderr, "INTEGRITY FAILURE: %s\n", line)
		}
		code = exitFail
	}
	if asJSON {
		out := struct {
			Keys []keystore.KeyView `json:"keys"`
		}{Keys: []keystore.KeyView{}}
		for _, k := range keys {
			if us != nil {
				out.Keys = append(out.Keys, k.ViewWithSeals(us, limit))
			} else {
				out.Keys = append(out.Keys, k.View())
			}
		}
		if c := a.printJSON(out); c != exitOK {
			return c
		}
		return code
	}
	if len(keys) == 0 {
		if code == exitOK {
			fmt.Fprintln(a.stdout, "no keys yet; create one with: sidecrypt keys create NAME")
		}
		return code
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTATE\tPRIMARY\tKEK\tCRYPTOPERIOD\tCREATED\tFINGERPRINT\tSEALED\tNOTE")
	var noPeriod []string
	for _, k := range keys {
		if k.Cryptoperiod == 0 && k.Primary != 0 {
			noPeriod = append(noPeriod, k.Name)
		}
		for _, v := range k.Versions {
			primary, kek, sealed := "", "-", "-"
			if v.Version == k.Primary {
				primary = "*"
			}
			if v.KEKVersion != 0 {
				kek = "v" + strconv.FormatUint(uint64(v.KEKVersion), 10)
			}
			if us != nil && (v.State == keystore.StateActive || v.State == keystore.StatePreActive) {
				u := keystore.UsageOf(us, k.Name, v.Version, limit)
				sealed = fmt.Sprintf("%s/%s", formatCount(u.Reserved), formatCount(limit))
			}
			note := v.Reason
			if v.State == keystore.StateCompromised && v.OverrideUntil.After(time.Now()) {
				note = strings.TrimSpace("override until " + formatTime(v.OverrideUntil) + " " + note)
			}
			fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, v.Version, v.State, primary, kek,
				formatPeriod(k.Cryptoperiod), formatTime(v.Created), v.Fingerprint, sealed, note)
		}
	}
	tw.Flush()
	for _, n := range noPeriod {
		fmt.Fprintf(a.stderr, "warning: key %s has no cryptoperiod: only its seal limit rotates it; give it one (NIST SP 800-57: e.g. 90d for random-mode keys) with 'sidecrypt keys cryptoperiod %[1]s 90d', unless it is deterministic-only and must keep its tokens comparable\n", n)
	}
	return code
}

// formatCount prints a count with a binary unit when it is round: 2^30 is
// "1Gi".
func formatCount(n uint64) string {
	for _, u := range []struct {
		suffix string
		size   uint64
	}{{"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatUint(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

func (a *app) printJSON(v any) int {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return a.fail(err)
	}
	return exitOK
}

// --- lifecycle ---

func cmdKeysCreate(a *app, args []string) int {
	fs := a.flags("keys create", `sidecrypt keys create NAME [--cryptoperiod 90d] [--pre-active]

Creates key NAME with version 1, generated from the system CSPRNG and stored
only wrapped by the HSM's current KEK. Version 1 is active and primary at
once, unless --pre-active (then activate it with 'keys activate').
The cryptoperiod defaults to SIDECRYPT_DEFAULT_CRYPTOPERIOD (90 days);
--cryptoperiod 0 means no scheduled rotation, for a deterministic-only key
whose tokens must stay comparable (its seal limit still rotates it).
With the software provider, the KEK file is created on first use.`+envHelp)
	period := fs.String("cryptoperiod", "", "how long a version seals before scheduled rotation: 90d, 12w, 720h; 0 for never (default SIDECRYPT_DEFAULT_CRYPTOPERIOD, 90d)")
	preActive := fs.Bool("pre-active", false, "create version 1 pre-active (usable only after 'keys activate')")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	name, ok := a.oneName(fs, pos)
	if !ok {
		return exitUsage
	}
	cp, err := parseCryptoperiod(*period)
	if err != nil {
		return a.usageError(fs, "--cryptoperiod: "+err.Error())
	}
	return a.withSession(true, func(s *keysSession) error {
		if strings.TrimSpace(*period) == "" {
			cp = s.cfg.DefaultCryptoperiod
		}
		if cp == 0 {
			fmt.Fprintf(a.stderr, "warning: %s has no cryptoperiod: only its seal limit will rotate it\n", name)
		}
		k, err := s.m.Create(s.ctx, name, cp, *preActive)
		if err != nil {
			return err
		}
		v := k.Versions[0]
		fmt.Fprintf(a.stdout, "created %s v1 (%s, KEK v%d, fingerprint %s)\n", k.Name, v.State, v.KEKVersion, v.Fingerprint)
		return nil
	})
}

func cmdKeysActivate(a *app, args []string) int {
	fs := a.flags("keys activate", `sidecrypt keys activate NAME --version N

Moves a pre-active version to active and makes it the primary; the previous
primary, if any, is deactivated (it keeps decrypting).`+envHelp)
	ver := fs.Uint("version", 0, "the version to activate")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	name, ok := a.oneName(fs, pos)
	if !ok {
		return exitUsage
	}
	v, ok := a.versionFlag(fs, *ver)
	if !ok {
		return exitUsage
	}
	return a.withSession(false, func(s *keysSession) error {
		if _, err := s.m.Activate(s.ctx, name, v); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "activated %s v%d; it is the primary\n", name, v)
		return nil
	})
}

func cmdKeysCryptoperiod(a *app, args []string) int {
	fs := a.flags("keys cryptoperiod", `sidecrypt keys cryptoperiod NAME PERIOD

Sets how long a primary version of NAME seals before the background
scheduler of a running sidecar rotates it: 90d, 2160h; 0 for none (only its
seal limit and operators rotate it). A primary already older than the new
period is rotated by the scheduler's next pass. The change is audited.`+envHelp)
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 2 {
		fmt.Fprintln(a.stderr, "sidecrypt keys cryptoperiod: want NAME and PERIOD (e.g. 90d, or 0 for none)")
		fs.Usage()
		return exitUsage
	}
	name := pos[0]
	period, err := parseCryptoperiod(pos[1])
	if err != nil {
		fmt.Fprintf(a.stderr, "sidecrypt keys cryptoperiod: %v\n", err)
		return exitUsage
	}
	return a.withSession(false, func(s *keysSession) error {
		if _, err := s.m.SetCryptoperiod(s.ctx, name, period); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "key %s: cryptoperiod %s\n", name, formatPeriod(period))
		return nil
	})
}

func cmdKeysRotate(a *app, args []string) int {
	fs := a.flags("keys rotate", `sidecrypt keys rotate NAME

Adds a new version of NAME and makes it the primary: new values are sealed
under it. The previous primary is deactivated and keeps decrypting. Running
sidecars pick the new version up within a second.`+envHelp)
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	name, ok := a.oneName(fs, pos)
	if !ok {
		return exitUsage
	}
	// A key to rotate exists only under a KEK: without one there is
	// nothing to rotate, and making the first KEK here would do so
	// silently on a command that then fails.
	return a.withSession(false, func(s *keysSession) error {
		before, err := s.m.Get(s.ctx, name)
		if err != nil {
			return err
		}
		k, err := s.m.Rotate(s.ctx, name, before.Primary)
		if err != nil {
			return err
		}
		if before.Primary != 0 && k.Lookup(before.Primary) != nil {
			fmt.Fprintf(a.stdout, "rotated %s: v%d is primary; v%d is %s and still decrypts\n", name, k.Primary, before.Primary, k.Lookup(before.Primary).State)
		} else {
			fmt.Fprintf(a.stdout, "rotated %s: v%d is primary\n", name, k.Primary)
		}
		return nil
	})
}

func cmdKeysRevoke(a *app, args []string) int {
	fs := a.flags("keys revoke", `sidecrypt keys revoke NAME --version N [--compromised] --reason TEXT

Takes a version out of use. Without --compromised it becomes deactivated:
it no longer seals, but still decrypts. With --compromised it decrypts
nothing until an explicit, audited 'keys override'. Revoking the primary
leaves the key without one: sealing under it fails (closed) until
'keys rotate'. Running sidecars drop the version from their caches within
a second.`+envHelp)
	ver := fs.Uint("version", 0, "the version to revoke")
	compromised := fs.Bool("compromised", false, "mark the version compromised instead of deactivated")
	reason := fs.String("reason", "", "why (required; goes to the audit log)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	name, ok := a.oneName(fs, pos)
	if !ok {
		return exitUsage
	}
	v, ok := a.versionFlag(fs, *ver)
	if !ok {
		return exitUsage
	}
	if strings.TrimSpace(*reason) == "" {
		return a.usageError(fs, "--reason TEXT is required (it goes to the audit log)")
	}
	to := keystore.StateDeactivated
	if *compromised {
		to = keystore.StateCompromised
	}
	return a.withSession(false, func(s *keysSession) error {
		k, err := s.m.Revoke(s.ctx, name, v, to, *reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s v%d is now %s\n", name, v, to)
		if k.Primary == 0 {
			fmt.Fprintf(a.stdout, "%s has no primary version now: sealing under it fails until 'sidecrypt keys rotate %s'\n", name, name)
		}
		return nil
	})
}

func cmdKeysOverride(a *app, args []string) int {
	fs := a.flags("keys override", `sidecrypt keys override NAME --version N --for 1h --reason TEXT

Lets a compromised version decrypt (never encrypt) for a limited time, at
most 7 days, for example to read data out before destroying the key. Every
unwrap under the override is audited. --for 0 ends an override early.`+envHelp)
	ver := fs.Uint("version", 0, "the compromised version")
	forDur := fs.String("for", "", "how long: 30m, 4h, 2d (at most 7d); 0 ends the override")
	reason := fs.String("reason", "", "why (required; goes to the audit log)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	name, ok := a.oneName(fs, pos)
	if !ok {
		return exitUsage
	}
	v, ok := a.versionFlag(fs, *ver)
	if !ok {
		return exitUsage
	}
	if *forDur == "" {
		return a.usageError(fs, "--for DURATION is required")
	}
	d, err := parseCryptoperiod(*forDur)
	if err != nil {
		return a.usageError(fs, "--for: "+err.Error())
	}
	if strings.TrimSpace(*reason) == "" {
		return a.usageError(fs, "--reason TEXT is required (it goes to the audit log)")
	}
	return a.withSession(false, func(s *keysSession) error {
		var until time.Time
		if d > 0 {
			until = time.Now().Add(d)
		}
		if _, err := s.m.Override(s.ctx, name, v, until, *reason); err != nil {
			return err
		}
		if until.IsZero() {
			fmt.Fprintf(a.stdout, "override of %s v%d ended\n", name, v)
		} else {
			fmt.Fprintf(a.stdout, "%s v%d may decrypt until %s (audited)\n", name, v, formatTime(until))
		}
		return nil
	})
}

// stdinIsTerminal reports whether r is an interactive terminal (not
// merely a character device: /dev/null is one too). A variable so that
// tests can pretend.
var stdinIsTerminal = func(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func cmdKeysDestroy(a *app, args []string) int {
	fs := a.flags("keys destroy", `sidecrypt keys destroy NAME --version N [--yes] [--reason TEXT]

Erases a version's wrapped key material from the keystore. Every value
sealed under that version becomes unreadable for good (crypto-shredding);
the version's metadata stays. Only a version that no longer encrypts may be
destroyed (revoke it first). It first shows how many values the last store
sweeps found still sealed under the version ('sidecrypt sweep', 'keys
status'): destroy a version whose count is 0, unless crypto-shredding them
is the point. Asks you to type the key name unless --yes;
without a terminal, --yes is required. Backups taken before the destroy
still hold the key: destroy them too for the erasure to be complete.`+envHelp)
	ver := fs.Uint("version", 0, "the version to destroy")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	reason := fs.String("reason", "", "why (goes to the audit log)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	name, ok := a.oneName(fs, pos)
	if !ok {
		return exitUsage
	}
	v, ok := a.versionFlag(fs, *ver)
	if !ok {
		return exitUsage
	}
	if !*yes && !stdinIsTerminal(a.stdin) {
		return a.fail(fmt.Errorf("refusing to destroy %s v%d without confirmation: standard input is not a terminal; pass --yes to confirm from a script", name, v))
	}
	return a.withSession(false, func(s *keysSession) error {
		// What the store sweep last counted under the version (keys_sweep.go).
		states, serr := loadSweeps(s.ctx, s.m)
		sc := sweptCountOf(states, serr, name, v)
		describeSwept(a.stderr, sc, name, v)
		if !*yes {
			fmt.Fprintf(a.stderr, "Destroying %s v%d erases its key material for good: every value sealed under it\nbecomes unreadable. Type the key name (%s) to confirm: ", name, v, name)
			line, err := bufio.NewReader(a.stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if strings.TrimSpace(line) != name {
				return fmt.Errorf("confirmation did not match %q: nothing was destroyed", name)
			}
		} else if sc.Values > 0 {
			fmt.Fprintf(a.stderr, "--yes: destroying %s v%d with %d value(s) still under it\n", name, v, sc.Values)
		}
		if _, err := s.m.Destroy(s.ctx, name, v, *reason); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "destroyed %s v%d: its key material is erased and its values can no longer be read\n", name, v)
		return nil
	})
}

// --- rewrap ---

// progress prints the progress of a long key operation (re-wrap, backup,
// restore) on stderr: at most about once a second, and always at the end.
type progress struct {
	w     io.Writer
	label string // "rewrap" when empty
	start time.Time
	last  time.Time
	now   func() time.Time
}

// newProgress starts a progress display for the operation label.
func (a *app) newProgress(label string) *progress {
	now := time.Now()
	return &progress{w: a.stderr, label: label, start: now, now: time.Now}
}

func (p *progress) update(done, total int) {
	now := p.now()
	if done < total && now.Sub(p.last) < time.Second {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	rateStr, left := "-", "-"
	if elapsed > 0 && done > 0 {
		r := float64(done) / elapsed.Seconds()
		rateStr = fmt.Sprintf("%.1f/s", r)
		left = (time.Duration(float64(total-done)/r*float64(time.Second)) + time.Second/2).Truncate(time.Second).String()
	}
	pct := 100
	if total > 0 {
		pct = done * 100 / total
	}
	label := p.label
	if label == "" {
		label = "rewrap"
	}
	if done == 0 && total > 0 {
		return // the start says nothing yet; the first item will
	}
	fmt.Fprintf(p.w, "%s: %d/%d (%d%%)  rate %s  remaining %s\n", label, done, total, pct, rateStr, left)
}

func cmdKeysRewrap(a *app, args []string) int {
	fs := a.flags("keys rewrap", `sidecrypt keys rewrap [--rate N]

Re-wraps every data key version that is wrapped under an older KEK, so that
it is under the current one (after 'sidecrypt kek rotate'). Each new copy is
unwrapped back and compared before the record is switched; the old copy is
replaced only by one known to open. Safe to interrupt and run again, and to
run while 'sidecrypt serve' is running. Progress goes to stderr.`+envHelp)
	rateFlag := fs.Float64("rate", -1, "versions per second, to spare the HSM; 0 for no limit (default SIDECRYPT_REWRAP_RATE)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "keys rewrap takes no arguments")
	}
	return a.withSession(false, func(s *keysSession) error {
		r := *rateFlag
		if r < 0 {
			r = s.cfg.RewrapRate
		}
		opts := keystore.RewrapOptions{}
		if r > 0 {
			opts.Limiter = rate.NewLimiter(rate.Limit(r), 1)
		}
		now := time.Now()
		p := &progress{w: a.stderr, start: now, now: time.Now}
		opts.Progress = p.update
		res, err := s.m.Rewrap(s.ctx, opts)
		fmt.Fprintf(a.stdout, "re-wrapped %d of %d key version(s) under KEK v%d (%d already done elsewhere, %d failed)\n",
			res.Rewrapped, res.Total, res.KEKVersion, res.Skipped, res.Failed)
		if err != nil {
			return err
		}
		if r, rerr := s.m.Retirable(s.ctx); rerr == nil {
			for _, v := range r {
				fmt.Fprintf(a.stdout, "KEK v%d wraps no data key any more: 'sidecrypt kek retire --version %d' retires it\n", v, v)
			}
		}
		return nil
	})
}

// --- backup, restore, recovery keys ---

// writeNewFile writes data to path atomically (temporary file, fsync,
// rename) with the given mode, refusing to replace an existing file.
func writeNewFile(path string, data []byte, mode os.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s already exists; choose another name (nothing was written)", path)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Link rather than rename, so that a file created meanwhile under
	// the same name is not replaced.
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func cmdKeysRecoveryKeygen(a *app, args []string) int {
	fs := a.flags("keys recovery-keygen", `sidecrypt keys recovery-keygen --out FILE

Makes a recovery key pair for 'keys backup' (HPKE, ML-KEM-768 + X25519).
The private key goes to FILE (mode 0600), the public key to FILE.pub and to
standard output. Keep the private key offline, away from the keystore and
the HSM (see docs/KEYS.md): whoever holds it and a backup holds every key.`)
	out := fs.String("out", "", "where to write the private key (must not exist)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 || *out == "" {
		return a.usageError(fs, "--out FILE is required, and nothing else")
	}
	id, err := keystore.GenerateRecoveryKey()
	if err != nil {
		return a.fail(err)
	}
	priv, err := id.MarshalText()
	if err != nil {
		return a.fail(err)
	}
	defer clear(priv)
	pub, _ := id.Recipient().MarshalText()
	if err := writeNewFile(*out+".pub", pub, 0o644); err != nil {
		return a.fail(err)
	}
	if err := writeNewFile(*out, priv, 0o600); err != nil {
		os.Remove(*out + ".pub")
		return a.fail(err)
	}
	fmt.Fprintf(a.stderr, "wrote the private key to %s and the public key to %s.pub (fingerprint %s)\n", *out, *out, id.Recipient().Fingerprint())
	a.stdout.Write(pub)
	return exitOK
}

// readRecipient takes an armored public key, or the name of a file holding
// one.
func readRecipient(arg string) (*keystore.RecoveryRecipient, error) {
	text := []byte(arg)
	if !strings.Contains(arg, "-----BEGIN") {
		b, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("--recipient: %w", err)
		}
		text = b
	}
	return keystore.ParseRecoveryRecipient(text)
}

func cmdKeysBackup(a *app, args []string) int {
	fs := a.flags("keys backup", `sidecrypt keys backup --out FILE --recipient PUBKEY

Writes every key, with each data key version that still has material sealed
to the recovery public key PUBKEY (a file from 'keys recovery-keygen', or
the armored text itself), to FILE (mode 0600). The backup opens only with
the recovery private key; it does not need this HSM, so it can restore keys
into a new one. It is signed by this HSM's backup signing key, which restore
checks before anything else: keep its public half ('keys backup-signer')
with the recovery public key. It is all or nothing: if any record fails its
integrity check or any key cannot be unwrapped, nothing is written.`+envHelp)
	out := fs.String("out", "", "the backup file to write (must not exist)")
	rcptArg := fs.String("recipient", "", "recovery public key: a file, or the armored text")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 || *out == "" || *rcptArg == "" {
		return a.usageError(fs, "--out FILE and --recipient PUBKEY are required")
	}
	rcpt, err := readRecipient(*rcptArg)
	if err != nil {
		return a.fail(err)
	}
	if _, err := os.Lstat(*out); err == nil {
		return a.fail(fmt.Errorf("%s already exists; choose another name (nothing was written)", *out))
	}
	return a.withSession(false, func(s *keysSession) error {
		var buf strings.Builder
		res, err := s.m.Backup(keystore.WithProgress(s.ctx, a.newProgress("backup").update), &buf, rcpt)
		if err != nil {
			return err
		}
		if err := writeNewFile(*out, []byte(buf.String()), 0o600); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "backed up %d key(s), %d version(s) with material (%d destroyed, metadata only) to %s, sealed to recovery key %s, signed by %s\n",
			res.Keys, res.Versions, res.Destroyed, *out, res.Recipient, res.Signer)
		return nil
	})
}

// signerList collects --signer flags.
type signerList []*keystore.BackupSigner

func (l *signerList) String() string { return "" }
func (l *signerList) Set(v string) error {
	text, err := os.ReadFile(v)
	if err != nil {
		return err
	}
	s, err := keystore.ParseBackupSigner(text)
	if err != nil {
		return err
	}
	*l = append(*l, s)
	return nil
}

func cmdKeysRestore(a *app, args []string) int {
	fs := a.flags("keys restore", `sidecrypt keys restore FILE --identity KEYFILE [--signer PEM]... [--force] [--yes]

Restores the keys in backup FILE into this keystore. First the backup's
signature is checked, before anything else is read: against --signer (the
old HSM's public key from 'keys backup-signer', when restoring into a new
HSM), or against this HSM's own signing key. Then each data key is opened
with the recovery private key KEYFILE and checked against its fingerprint.

Then every difference from this keystore is shown: keys and versions
added, states moved forward, material replaced, primaries changed. A
restore never moves a version back in its lifecycle (a version revoked
here stays revoked; a compromised one is never made primary) and never
brings back a version destroyed here: such a backup is refused. A version
that exists here with other material, or a record that failed its
integrity check, is refused unless --force.

It asks before applying; --yes applies without asking (scripts), and
without a terminal --yes is required. New keys are wrapped under this
HSM's current KEK. Running it again is harmless.`+envHelp)
	identity := fs.String("identity", "", "the recovery private key file")
	var signers signerList
	fs.Var(&signers, "signer", "a trusted backup signer public key file (repeatable; default: this HSM's own)")
	force := fs.Bool("force", false, "replace versions that exist here with different material, and records that failed their integrity check")
	yes := fs.Bool("yes", false, "apply without asking")
	allowUnsigned := fs.Bool("allow-unsigned", false, "accept an unsigned backup from before backups were signed (only for a file whose history you know)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || *identity == "" {
		return a.usageError(fs, "name one backup FILE, and --identity KEYFILE")
	}
	if !*yes && !stdinIsTerminal(a.stdin) {
		return a.fail(errors.New("refusing to restore without confirmation: standard input is not a terminal; review the changes with a terminal, or pass --yes from a script"))
	}
	idText, err := os.ReadFile(*identity)
	if err != nil {
		return a.fail(fmt.Errorf("--identity: %w", err))
	}
	id, err := keystore.ParseRecoveryIdentity(idText)
	clear(idText)
	if err != nil {
		return a.fail(err)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return a.fail(err)
	}
	defer f.Close()
	opts := keystore.RestoreOptions{Force: *force, Signers: signers, AllowUnsigned: *allowUnsigned}
	return a.withSession(true, func(s *keysSession) error {
		b, err := s.m.OpenBackup(s.ctx, f, id, opts)
		if err != nil {
			return err
		}
		defer b.Close()
		if b.Signer != "" {
			fmt.Fprintf(a.stdout, "backup of %s, signed by %s (verified), sealed to recovery key %s\n", formatTime(b.Created), b.Signer, b.Recipient)
		} else {
			fmt.Fprintf(a.stdout, "UNSIGNED backup of %s (--allow-unsigned), sealed to recovery key %s\n", formatTime(b.Created), b.Recipient)
		}
		plan, err := s.m.PlanRestore(s.ctx, b, opts)
		if err != nil {
			return err
		}
		for _, c := range plan.Changes {
			fmt.Fprintf(a.stdout, "  change: %s\n", c)
		}
		for _, n := range plan.Notes {
			fmt.Fprintf(a.stdout, "  kept:   %s\n", n)
		}
		for _, r := range plan.Refusals {
			fmt.Fprintf(a.stdout, "  REFUSED: %s\n", r)
		}
		if len(plan.Refusals) > 0 {
			_, err := s.m.ApplyRestore(s.ctx, plan) // refuses, and audits the refusal
			return err
		}
		if len(plan.Changes) == 0 {
			fmt.Fprintf(a.stdout, "nothing to change: %d version(s) already present\n", plan.Unchanged)
			return nil
		}
		if !*yes {
			fmt.Fprintf(a.stderr, "Apply these %d change(s) to this keystore? Type 'restore' to confirm: ", len(plan.Changes))
			line, err := bufio.NewReader(a.stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if strings.TrimSpace(line) != "restore" {
				return errors.New("not confirmed: nothing was restored")
			}
		}
		res, err := s.m.ApplyRestore(keystore.WithProgress(s.ctx, a.newProgress("restore").update), plan)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "restored %d version(s) of %d key(s); %d replaced, %d already present\n", res.Restored, res.Keys, res.Replaced, res.Unchanged)
		return nil
	})
}

// --- kek ---

func cmdKEKList(a *app, args []string) int {
	fs := a.flags("kek list", `sidecrypt kek list [--json]

Lists the HSM's KEK versions: which is current, how many data key versions
each still wraps, and which may be retired.`+envHelp)
	asJSON := fs.Bool("json", false, "print {\"provider\": ..., \"keks\": [...]} as JSON")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "kek list takes no arguments")
	}
	sess, err := a.session(false)
	switch {
	case errors.Is(err, hsm.ErrNoKEK):
		// A fresh token or no key file: nothing to list, which is not
		// a failure, unless the keystore holds keys (then the settings
		// point at the wrong provider).
		if n, serr := a.storedKeys(); serr != nil || n > 0 {
			return a.fail(noKEKButKeys(err, n, serr))
		}
		if *asJSON {
			fmt.Fprintln(a.stdout, `{"keks": []}`)
		} else {
			fmt.Fprintln(a.stdout, "no KEK yet: 'sidecrypt kek rotate' or 'sidecrypt keys create NAME' makes the first")
		}
		return exitOK
	case err != nil:
		return a.fail(err)
	}
	return a.inSession(sess, func(s *keysSession) error {
		st, err := s.m.KEKs(s.ctx)
		if err != nil {
			return err
		}
		desc := s.provider.Describe()
		if *asJSON {
			if st == nil {
				st = []keystore.KEKStatus{}
			}
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				Provider hsm.Description      `json:"provider"`
				KEKs     []keystore.KEKStatus `json:"keks"`
			}{desc, st})
		}
		where := desc.File
		switch desc.Kind {
		case "pkcs11":
			where = "token " + desc.Token + ", module " + desc.Module
		case "awskms":
			where = "region " + desc.Region + ", " + desc.Object + "-vN"
			if desc.Endpoint != "" {
				where += ", endpoint " + desc.Endpoint
			}
		}
		fmt.Fprintf(a.stdout, "provider: %s (%s)", desc.Kind, where)
		if desc.Warning != "" {
			fmt.Fprintf(a.stdout, " -- %s", desc.Warning)
		}
		fmt.Fprintln(a.stdout)
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tSTATE\tDEKS\tRETIRABLE\tCREATED\tLABEL")
		for _, k := range st {
			retirable := ""
			if k.Retirable {
				retirable = "yes"
			}
			fmt.Fprintf(tw, "v%d\t%s\t%d\t%s\t%s\t%s\n", k.Version, k.State, k.DEKs, retirable, formatTime(k.Created), k.Label)
		}
		return tw.Flush()
	})
}

// storedKeys counts the keys in the keystore, without the HSM.
func (a *app) storedKeys() (int, error) {
	cfg, err := a.config()
	if err != nil {
		return 0, err
	}
	st, err := openStore(a.ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	keys, err := st.List(a.ctx)
	return len(keys), err
}

// noKEKButKeys explains a provider without a KEK next to a keystore that
// holds keys: SIDECRYPT_HSM or SIDECRYPT_KEK_FILE names the wrong one.
func noKEKButKeys(noKEK error, n int, storeErr error) error {
	if storeErr != nil {
		return errors.Join(noKEK, storeErr)
	}
	return fmt.Errorf("%w; yet the keystore holds %d key(s) wrapped under a KEK: SIDECRYPT_HSM or SIDECRYPT_KEK_FILE probably names the wrong provider", noKEK, n)
}

func cmdKEKRotate(a *app, args []string) int {
	fs := a.flags("kek rotate", `sidecrypt kek rotate

Creates a new KEK version inside the HSM and makes it current: data keys
created from now on are wrapped under it. Existing data keys stay under
their old KEK, which keeps unwrapping, until 'sidecrypt keys rewrap' moves
them.`+envHelp)
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "kek rotate takes no arguments")
	}
	// On a provider without any KEK (a fresh token, no key file), the
	// rotation that makes sense is the first version.
	sess, err := a.session(false)
	switch {
	case errors.Is(err, hsm.ErrNoKEK):
		// Making a first KEK beside a keystore full of keys wrapped
		// under another one would only hide the real mistake.
		if n, serr := a.storedKeys(); serr != nil || n > 0 {
			return a.fail(noKEKButKeys(err, n, serr))
		}
		return a.withSession(true, func(s *keysSession) error {
			v, err := s.provider.CurrentKEK(s.ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "KEK v%d is now current (the first: there was none)\n", v)
			return nil
		})
	case err != nil:
		return a.fail(err)
	}
	return a.inSession(sess, func(s *keysSession) error {
		v, err := s.m.RotateKEK(s.ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "KEK v%d is now current\n", v)
		if _, pending, err := s.m.RewrapPending(s.ctx); err == nil && pending > 0 {
			fmt.Fprintf(a.stdout, "%d data key version(s) are still wrapped under older KEKs: run 'sidecrypt keys rewrap'\n", pending)
		}
		return nil
	})
}

func cmdKEKRetire(a *app, args []string) int {
	fs := a.flags("kek retire", `sidecrypt kek retire --version N

Retires an old KEK version in the HSM: it no longer wraps or unwraps.
Refused while any data key version is still wrapped under it (run
'sidecrypt keys rewrap' first) and for the current version.`+envHelp)
	ver := fs.Uint("version", 0, "the KEK version to retire")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "kek retire takes only --version N")
	}
	v, ok := a.versionFlag(fs, *ver)
	if !ok {
		return exitUsage
	}
	return a.withSession(false, func(s *keysSession) error {
		if err := s.m.RetireKEK(s.ctx, v); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "KEK v%d retired\n", v)
		return nil
	})
}
