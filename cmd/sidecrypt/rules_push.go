package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/rules"
)

// pushTimeout bounds the whole of `rules push` against etcd.
const pushTimeout = 15 * time.Second

func cmdRulesPush(a *app, args []string) int {
	fs := a.flags("rules push", `sidecrypt rules push [--to etcd://HOST:2379/KEY] [--dry-run] FILE

Validates the rule file FILE and stores it in etcd, where every sidecar
started with SIDECRYPT_RULES=etcd://.../KEY watches it: each loads it
within moments, validated again and swapped in atomically (an invalid one
is refused and the last good rules stay). Before storing, it prints what
the new file changes in protection against the rules stored now (as
'rules diff' does), for the reviewer. The store is a compare-and-swap: if
someone else pushed in between, nothing is written; review and push again.

--to defaults to SIDECRYPT_RULES; a URL without hosts (etcd:///KEY) uses
SIDECRYPT_KEYSTORE's etcd. TLS: etcds:// or SIDECRYPT_ETCD_CA/CERT/KEY.
Exit status: 0 when stored (or already stored), 1 when the file is invalid
or the push failed, 2 on a usage error.`)
	to := fs.String("to", "", "etcd URL of the stored rules (default SIDECRYPT_RULES)")
	dryRun := fs.Bool("dry-run", false, "validate and show the changes, store nothing")
	files, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(files) != 1 {
		return a.usageError(fs, "give one rule file")
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	if *to != "" {
		cfg.Rules = *to
	}
	if !rules.IsEtcdRules(cfg.Rules) {
		return a.usageError(fs, "rules push stores rules in etcd: set SIDECRYPT_RULES=etcd://HOST:2379/KEY or give --to")
	}

	// Validate locally first: nothing invalid ever reaches etcd.
	data, err := readPushFile(files[0])
	if err != nil {
		return a.fail(err)
	}
	plan, diags, err := rules.Compile(files[0], data)
	for _, d := range diags {
		fmt.Fprintln(a.stderr, d)
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "sidecrypt: %s is invalid: refused, nothing was stored\n", files[0])
		return exitFail
	}

	cli, key, closeCli, err := etcdRulesClient(cfg, nil)
	if err != nil {
		return a.fail(err)
	}
	defer closeCli()
	ctx, cancel := context.WithTimeout(a.ctx, pushTimeout)
	defer cancel()
	old, rev, err := rules.ReadEtcdRules(ctx, cli, key)
	if err != nil {
		return a.fail(err)
	}
	summary := "initial push"
	switch {
	case old == nil:
		fmt.Fprintf(a.stdout, "No rules are stored at %s yet: this is the first push.\n", key)
	case rules.HashBytes(old) == plan.Hash:
		fmt.Fprintf(a.stdout, "The rules at %s are already this file (%s): nothing to do.\n", key, plan.Hash)
		return exitOK
	default:
		oldPlan, _, cerr := rules.Compile("etcd:"+key, old)
		if cerr != nil {
			summary = "replaces stored rules that do not validate"
			fmt.Fprintf(a.stdout, "The rules stored at %s do not validate (sidecars keep their last good rules); this push replaces them.\n", key)
			break
		}
		d := rules.Compare(oldPlan, plan)
		summary = d.Summary()
		if err := d.WriteText(a.stdout); err != nil {
			return a.fail(err)
		}
	}
	if *dryRun {
		fmt.Fprintln(a.stdout, "Dry run: nothing was stored.")
		return exitOK
	}

	// Who changed the rules goes to the audit log before the change is
	// made; a push that cannot be audited is not made (every sidecar also
	// audits the reload it causes, with the diff).
	log, closeLog, err := a.openAuditLog(cfg)
	if err != nil {
		return a.fail(fmt.Errorf("rules push: the audit log is needed to record who changed the rules: %w", err))
	}
	defer closeLog()
	actx := audit.WithActor(ctx, cliActor())
	ev := audit.Event{Action: "rules.push", Rules: plan.Hash, Details: map[string]string{
		"to": key, "new_hash": plan.Hash, "diff": summary,
	}}
	if old != nil {
		ev.Details["old_hash"] = rules.HashBytes(old)
	}
	newRev, err := rules.PushEtcdRules(ctx, cli, key, data, rev)
	if err != nil {
		ev.Outcome, ev.Reason = "error", err.Error()
		_ = log.Record(actx, ev)
		if errors.Is(err, rules.ErrRulesChanged) {
			return a.fail(fmt.Errorf("%w (someone pushed at the same time); run the push again to review the new changes", err))
		}
		return a.fail(err)
	}
	ev.Details["etcd_revision"] = fmt.Sprint(newRev)
	if err := log.Record(actx, ev); err != nil {
		return a.fail(fmt.Errorf("rules %s were stored at %s, but the audit event could not be written: %w", plan.Hash, key, err))
	}
	fmt.Fprintf(a.stdout, "Stored rules %s at %s (etcd revision %d); every sidecar watching it loads them now.\n", plan.Hash, key, newRev)
	return exitOK
}

// readPushFile reads a rule file, refusing one larger than any sidecar
// would load.
func readPushFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, rules.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > rules.MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, rules.MaxFileSize)
	}
	return data, nil
}
