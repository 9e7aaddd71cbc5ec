package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/config"
)

func cmdAudit(a *app, args []string) int {
	return a.dispatch("sidecrypt audit", []command{
		{"verify", "check every entry's MAC and place in the chain, the checkpoint file and the witness", cmdAuditVerify},
		{"tail", "print the last events of the audit log; -f follows it", cmdAuditTail},
	}, args)
}

// witnessFlag is --witness (use SIDECRYPT_AUDIT_WITNESS) or
// --witness=SPEC.
type witnessFlag struct {
	set  bool
	spec string
}

func (w *witnessFlag) String() string   { return w.spec }
func (w *witnessFlag) IsBoolFlag() bool { return true }
func (w *witnessFlag) Set(v string) error {
	w.set = true
	if v != "true" {
		w.spec = v
	}
	if v == "false" {
		w.set, w.spec = false, ""
	}
	return nil
}

func cmdAuditVerify(a *app, args []string) int {
	fs := a.flags("audit verify", `sidecrypt audit verify [FILE] [--witness[=SPEC]] [--json] [--no-mac]

Checks the audit log (FILE, default SIDECRYPT_AUDIT_LOG): every entry's
place in the chain (gap-free seq, prev), every entry's MAC under the HSM's
audit key (so the same SIDECRYPT_HSM settings as serve are needed), and
FILE.checkpoint, the head signed by the HSM, which must exist for a
non-empty log and name an entry the log holds.

--witness also checks every head the witness saw (SIDECRYPT_AUDIT_WITNESS,
or --witness=file:PATH, e.g. an export of the syslog witness): a log rolled
back together with its checkpoint file lacks the later heads.

Lines that sidecrypt found appended by someone else were moved aside and
recorded (audit.tampering); they are listed as incidents. Logs written
before the keyed chain (format version 1) verify with their own, weaker,
checks.

Exits 0 when the log is intact and records no tampering, 1 otherwise.`)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	noMAC := fs.Bool("no-mac", false, "check the structure only, without the HSM (cannot tell a rewritten log from a genuine one)")
	var witness witnessFlag
	fs.Var(&witness, "witness", "check the heads a witness saw: alone, SIDECRYPT_AUDIT_WITNESS; or =file:PATH or =etcd")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	path := cfg.AuditLog
	if len(pos) > 1 {
		return a.usageError(fs, "at most one FILE")
	}
	if len(pos) == 1 {
		path = pos[0]
	}
	opts := audit.VerifyOptions{}
	if witness.set {
		spec := witness.spec
		if spec == "" {
			spec = cfg.AuditWitness
		}
		r, closeW, err := a.witnessReader(cfg, spec)
		if err != nil {
			return a.fail(err)
		}
		defer closeW()
		opts.Witness = r
	}
	if !*noMAC {
		p, err := hsm.Open(a.ctx, cfg.HSM, hsm.Options{
			PIN: cfg.HSMPIN.Reveal(), Passphrase: cfg.MasterPassphrase.Reveal(),
			KEKFile: cfg.KEKFile, Logger: a.quietLogger(cfg),
		})
		if err != nil {
			return a.fail(fmt.Errorf("audit verify: the MACs need the HSM (or pass --no-mac): %w", err))
		}
		defer p.Close()
		opts.Signer = p
	}
	res, err := audit.VerifyFile(a.ctx, path, opts)
	if err != nil {
		return a.fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			File string `json:"file"`
			audit.Result
			Clean bool `json:"clean"`
		}{path, res, res.Clean()})
	} else {
		printVerify(a.stdout, path, res)
	}
	if !res.Clean() {
		return exitFail
	}
	return exitOK
}

func printVerify(w io.Writer, path string, res audit.Result) {
	switch {
	case !res.OK && res.Problem.Line == 0 && res.Problem.Seq == 0:
		fmt.Fprintf(w, "%s: BROKEN: %s\n", path, res.Problem)
	case !res.OK:
		fmt.Fprintf(w, "%s: BROKEN at %s\n", path, res.Problem)
	case len(res.Incidents) > 0:
		fmt.Fprintf(w, "%s: intact, but it records %d TAMPERING incident(s): lines not written by sidecrypt were found and set aside\n", path, len(res.Incidents))
	default:
		fmt.Fprintf(w, "%s: OK\n", path)
	}
	macs := "MACs checked with the HSM's audit key"
	if !res.MACsChecked {
		macs = "MACs NOT checked (--no-mac): a rewritten log would pass"
	}
	fmt.Fprintf(w, "  entries:         %d (%s; %d epoch key(s))\n", res.Entries, macs, res.Epochs)
	if res.V1Entries > 0 {
		fmt.Fprintf(w, "  version 1:       the first %d entries, hash-chained with %d checkpoint(s)", res.V1Entries, res.Checkpoints)
		if res.UnsignedTail > 0 {
			fmt.Fprintf(w, "; %d after the last checkpoint are covered by no MAC", res.UnsignedTail)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  checkpoint file: %s\n  witness:         %s\n", res.CheckpointFile, res.Witness)
	for _, in := range res.Incidents {
		fmt.Fprintf(w, "  ! seq %d at %s: %s (%s lines moved to %s; %s)\n", in.Seq, in.Time.Local().Format(time.DateTime), in.Reason,
			in.Details["lines"], in.Details["moved_to"], in.Details["problem"])
	}
}

// witnessReader opens the witness that spec names, for reading.
func (a *app) witnessReader(cfg config.Config, spec string) (audit.WitnessReader, func(), error) {
	if spec == "" {
		return nil, nil, errors.New("--witness: no witness configured (SIDECRYPT_AUDIT_WITNESS); give --witness=file:PATH")
	}
	if spec == "etcd" {
		cfg.AuditWitness = "etcd"
		if !cfg.KeystoreIsEtcd() {
			return nil, nil, errors.New("--witness=etcd needs SIDECRYPT_KEYSTORE=etcd://...")
		}
		st, err := openStore(a.ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		_, r, err := auditWitness(cfg, st)
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		return r, func() { st.Close() }, nil
	}
	_, r, err := audit.ParseWitness(spec)
	if err != nil {
		return nil, nil, err
	}
	if r == nil {
		return nil, nil, fmt.Errorf("--witness: %s cannot be read back; export the sidecrypt-audit-head messages to a file and give --witness=file:EXPORT", spec)
	}
	return r, func() {}, nil
}

func cmdAuditTail(a *app, args []string) int {
	fs := a.flags("audit tail", `sidecrypt audit tail [FILE] [-n 20] [-f] [--json]

Prints the last events of the audit log (FILE, default SIDECRYPT_AUDIT_LOG),
oldest first, and with -f every event appended after them, like tail -f,
until interrupted. Rule changes show what they changed in protection;
dual-control steps show the request. A line that does not continue the
chain is marked "!" (audit verify says whether it is genuine); a file
truncated or replaced under -f is said so and followed from its start.`)
	n := fs.Int("n", 20, "number of events shown first")
	follow := fs.Bool("f", false, "follow: print events as they are appended")
	asJSON := fs.Bool("json", false, "print JSON lines as stored")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	path := cfg.AuditLog
	if len(pos) == 1 {
		path = pos[0]
	} else if len(pos) > 1 {
		return a.usageError(fs, "at most one FILE")
	}
	if *n < 0 || (*n == 0 && !*follow) {
		return a.usageError(fs, "-n must be at least 1 (or 0 with -f)")
	}
	show := func(ev audit.FollowEvent) error {
		switch {
		case ev.Entry == nil && *asJSON && ev.Line != nil:
			fmt.Fprintf(a.stdout, "%s\n", ev.Line)
		case ev.Entry == nil:
			fmt.Fprintf(a.stdout, "-- %s\n", ev.Note)
		case *asJSON:
			b, _ := json.Marshal(ev.Entry)
			fmt.Fprintf(a.stdout, "%s\n", b)
		default:
			fmt.Fprint(a.stdout, formatEntry(ev.Entry, ev.Broken))
		}
		return nil
	}
	if *follow {
		if err := audit.Follow(a.ctx, path, audit.FollowOptions{Last: *n}, show); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	entries, err := audit.Tail(path, *n)
	if err != nil {
		return a.fail(err)
	}
	for i := range entries {
		_ = show(audit.FollowEvent{Entry: &entries[i]})
	}
	return exitOK
}

// formatEntry renders one entry on one line, and for rule changes and
// dual-control steps a second, indented line that says what they do.
func formatEntry(e *audit.Entry, broken string) string {
	var what []string
	if e.Key != "" {
		what = append(what, "key="+e.Key)
	}
	if e.Version != 0 {
		what = append(what, fmt.Sprintf("v%d", e.Version))
	}
	if e.Rules != "" {
		what = append(what, "rules="+shortHash(e.Rules))
	}
	if e.Reason != "" {
		what = append(what, fmt.Sprintf("reason=%q", e.Reason))
	}
	mark := " "
	if broken != "" {
		mark = "!"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s%6d  %s  %-18s %-22s %-7s %s\n", mark, e.Seq, e.Time.Local().Format(time.DateTime), e.Action, e.Actor, e.Outcome, strings.Join(what, " "))
	d := e.Details
	switch {
	case broken != "":
		fmt.Fprintf(&b, "          ! %s: not in the chain here (run sidecrypt audit verify)\n", broken)
	case strings.HasPrefix(e.Action, "rules.") && d["diff"] != "":
		change := d["diff"]
		if d["old_hash"] != "" {
			change = shortHash(d["old_hash"]) + " -> " + shortHash(d["new_hash"]) + ": " + change
		}
		fmt.Fprintf(&b, "          rules %s\n", change)
	case strings.HasPrefix(e.Action, "rules.") && d["error"] != "":
		fmt.Fprintf(&b, "          refused: %s\n", d["error"])
	case strings.HasPrefix(e.Action, "approval.") && d["id"] != "":
		line := "request " + d["id"] + " (" + d["kind"] + ")"
		if d["summary"] != "" {
			line += ": " + d["summary"]
		}
		if d["requested_by"] != "" {
			line += ", requested by " + d["requested_by"]
		}
		if d["expires"] != "" {
			line += ", needs " + d["required_role"] + " by " + d["expires"]
		}
		fmt.Fprintf(&b, "          %s\n", line)
	case e.Action == "audit.tampering":
		fmt.Fprintf(&b, "          ! %s lines moved to %s: %s\n", d["lines"], d["moved_to"], d["problem"])
	case e.Action == "admin.denied" || e.Action == "admin.call":
		via := d["via"]
		if d["uid"] != "" {
			via += " uid " + d["uid"]
		} else if d["remote"] != "" {
			via += " from " + d["remote"]
		}
		result := d["code"]
		if result == "" {
			result = d["status"]
		}
		fmt.Fprintf(&b, "          %s %s via %s: %s\n", d["method"], d["endpoint"], via, result)
	}
	return b.String()
}

// shortHash shortens "sha256:<64 hex>" for a terminal.
func shortHash(h string) string {
	if rest, ok := strings.CutPrefix(h, "sha256:"); ok && len(rest) > 12 {
		return "sha256:" + rest[:12]
	}
	return h
}
