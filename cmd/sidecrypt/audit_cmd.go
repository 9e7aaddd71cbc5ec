package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/internal/audit"
)

func cmdAudit(a *app, args []string) int {
	return a.dispatch("sidecrypt audit", []command{
		{"verify", "check the audit log's hash chain, checkpoint MACs and tail", cmdAuditVerify},
		{"tail", "print the last events of the audit log", cmdAuditTail},
	}, args)
}

func cmdAuditVerify(a *app, args []string) int {
	fs := a.flags("audit verify", `sidecrypt audit verify [FILE] [--json] [--no-mac]

Checks the audit log (FILE, default SIDECRYPT_AUDIT_LOG): every line's hash,
the chain of hashes, gap-free sequence numbers, each checkpoint's MAC
(recomputed with the HSM's audit key, so the same SIDECRYPT_HSM settings as
serve are needed), and the log's tail against FILE.checkpoint.

Exits 0 when the log is intact, 1 with the first broken line otherwise.`)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	noMAC := fs.Bool("no-mac", false, "check the chain only, without the HSM (cannot detect a rewritten chain)")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	path := cfg.AuditLog
	if fs.NArg() > 1 {
		return a.usageError(fs, "at most one FILE")
	}
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	}
	var signer audit.Signer
	if !*noMAC {
		p, err := hsm.Open(a.ctx, cfg.HSM, hsm.Options{
			PIN: cfg.HSMPIN.Reveal(), Passphrase: cfg.MasterPassphrase.Reveal(),
			KEKFile: cfg.KEKFile, Logger: a.quietLogger(cfg),
		})
		if err != nil {
			return a.fail(fmt.Errorf("audit verify: the checkpoint MACs need the HSM (or pass --no-mac): %w", err))
		}
		defer p.Close()
		signer = p
	}
	res, err := audit.VerifyFile(a.ctx, path, audit.VerifyOptions{Signer: signer})
	if err != nil {
		return a.fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			File string `json:"file"`
			audit.Result
		}{path, res})
	} else {
		if res.OK {
			fmt.Fprintf(a.stdout, "%s: OK\n", path)
		} else {
			fmt.Fprintf(a.stdout, "%s: BROKEN at %s\n", path, res.Problem)
		}
		macs := "MACs checked"
		if !res.MACsChecked {
			macs = "MACs NOT checked (--no-mac)"
		}
		fmt.Fprintf(a.stdout, "  entries:         %d\n  checkpoints:     %d (%s)\n  unsigned tail:   %d entries after the last checkpoint\n  checkpoint file: %s\n",
			res.Entries, res.Checkpoints, macs, res.UnsignedTail, res.CheckpointFile)
	}
	if !res.OK {
		return exitFail
	}
	return exitOK
}

func cmdAuditTail(a *app, args []string) int {
	fs := a.flags("audit tail", `sidecrypt audit tail [FILE] [-n 20] [--json]

Prints the last events of the audit log (FILE, default SIDECRYPT_AUDIT_LOG),
oldest first. It does not verify the chain; use 'sidecrypt audit verify'.`)
	n := fs.Int("n", 20, "number of events")
	asJSON := fs.Bool("json", false, "print JSON lines as stored")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	path := cfg.AuditLog
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	} else if fs.NArg() > 1 {
		return a.usageError(fs, "at most one FILE")
	}
	if *n < 1 {
		return a.usageError(fs, "-n must be at least 1")
	}
	entries, err := audit.Tail(path, *n)
	if err != nil {
		return a.fail(err)
	}
	for _, e := range entries {
		if *asJSON {
			b, _ := json.Marshal(e)
			fmt.Fprintf(a.stdout, "%s\n", b)
			continue
		}
		var what []string
		if e.Key != "" {
			what = append(what, fmt.Sprintf("key=%s", e.Key))
		}
		if e.Version != 0 {
			what = append(what, fmt.Sprintf("v%d", e.Version))
		}
		if e.Rules != "" {
			what = append(what, "rules="+e.Rules)
		}
		if e.Reason != "" {
			what = append(what, fmt.Sprintf("reason=%q", e.Reason))
		}
		fmt.Fprintf(a.stdout, "%6d  %s  %-18s %-16s %-7s %s\n", e.Seq, e.Time.Local().Format(time.DateTime), e.Action, e.Actor, e.Outcome, strings.Join(what, " "))
	}
	return exitOK
}
