package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/sidecrypt/sidecrypt/keystore"
)

// cmdKeysRecover is `keys recover`: the primary KEK provider is lost, and
// every data key is re-wrapped under a new one from its escrow copy
// (keystore.Manager.Recover; docs/KEK.md, "Two wraps per data key").
func cmdKeysRecover(a *app, args []string) int {
	fs := a.flags("keys recover", `sidecrypt keys recover --from KIND [--dry-run] [--yes] [--trust-unverified] [--allow-loss] [--json]

For when the primary KEK provider is lost (its token wiped, its KMS keys
deleted) and the keystore has an escrow provider that wraps every data key
too (SIDECRYPT_HSM_ESCROW). SIDECRYPT_HSM names the NEW primary (a fresh
token, or new KMS keys: its first KEK is made if it has none); --from names
the kind of the escrow to recover from (awskms or pkcs11, or "escrow"), as
a check that the settings are what you mean.

First everything is checked, and nothing is written if anything fails:
every record against its escrow MAC under the escrow's record key (so
nothing edited while the primary was gone is taken), and every version's
escrow copy, which must open and match its fingerprint. Then each data key
is wrapped under the new primary and every record is sealed again by the
new primary's record key. States, seal counters and notes are kept.

Records without an escrow MAC (written before the escrow was configured
and not re-sealed by a re-wrap since) refuse the recovery unless
--trust-unverified, after you have checked them; versions without an
escrow copy refuse it unless --allow-loss (they stay unreadable: restore
them from a backup). Asks before writing unless --yes; without a
terminal, --yes is required. Running it again after an interruption
finishes the job.

The audit log's checkpoints were keyed by the lost provider: point
SIDECRYPT_AUDIT_LOG at a new file for the recovery and keep the old one.`+envHelp)
	from := fs.String("from", "", "kind of the escrow provider to recover from: awskms, pkcs11 or escrow (required)")
	dryRun := fs.Bool("dry-run", false, "check and show what would be recovered; write nothing")
	yes := fs.Bool("yes", false, "recover without asking")
	trust := fs.Bool("trust-unverified", false, "take records that carry no escrow MAC as they are (check them first)")
	allowLoss := fs.Bool("allow-loss", false, "recover what has an escrow copy and leave versions without one unreadable")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 || *from == "" {
		return a.usageError(fs, "--from KIND is required, and nothing else")
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	if cfg.HSMEscrow == "" {
		return a.fail(errors.New("keys recover: no escrow provider is configured (SIDECRYPT_HSM_ESCROW): there is nothing to recover from; restore from a backup instead ('keys restore')"))
	}
	kind, _, _ := strings.Cut(strings.ToLower(cfg.HSMEscrow), ":")
	if *from != "escrow" && *from != kind {
		return a.fail(fmt.Errorf("keys recover: --from %s, but the escrow provider (SIDECRYPT_HSM_ESCROW) is %s", *from, kind))
	}
	if !*dryRun && !*yes && !stdinIsTerminal(a.stdin) {
		return a.fail(errors.New("refusing to recover without confirmation: standard input is not a terminal; check with --dry-run, then pass --yes from a script"))
	}
	opts := keystore.RecoverOptions{TrustUnverified: *trust, AllowLoss: *allowLoss}
	s, err := a.session(true)
	if err != nil {
		return a.fail(fmt.Errorf("keys recover: %w (if the audit log was keyed by the lost provider, point SIDECRYPT_AUDIT_LOG at a new file and keep the old one)", err))
	}
	err = func() error {
		check := opts
		check.DryRun = true
		plan, err := s.m.Recover(s.ctx, check)
		if !*asJSON || err != nil || *dryRun {
			a.printRecoverPlan(plan, *asJSON)
		}
		if err != nil || *dryRun {
			return err
		}
		if !*yes {
			fmt.Fprintf(a.stderr, "Re-wrap %d version(s) of %d key(s) under the new primary (%s) and re-seal every record? Type 'recover' to confirm: ",
				plan.Versions, plan.Keys, s.provider.Describe().ID())
			line, err := bufio.NewReader(a.stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if strings.TrimSpace(line) != "recover" {
				return errors.New("not confirmed: nothing was recovered")
			}
		}
		res, err := s.m.Recover(s.ctx, opts)
		if *asJSON {
			if code := a.printJSON(res); code != exitOK && err == nil {
				err = errors.New("could not print the result")
			}
			return err
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "recovered %d version(s) of %d key(s) from %s under %s; %d record(s) re-sealed\n",
			res.Versions, res.Keys, res.From, s.provider.Describe().ID(), res.Records)
		fmt.Fprintln(a.stdout, "next: 'sidecrypt keys verify', then a new backup ('keys backup') and the new backup signer ('keys backup-signer')")
		return nil
	}()
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return a.fail(err)
	}
	return exitOK
}

// printRecoverPlan shows what a recovery found.
func (a *app) printRecoverPlan(p keystore.RecoverResult, asJSON bool) {
	if asJSON {
		a.printJSON(p)
		return
	}
	fmt.Fprintf(a.stdout, "recovery from %s: %d key(s), %d version(s) with an escrow copy that opens\n", p.From, p.Keys, p.Versions)
	for _, u := range p.Unverified {
		fmt.Fprintf(a.stdout, "  UNVERIFIED (no escrow MAC): %s\n", u)
	}
	for _, l := range p.Lost {
		fmt.Fprintf(a.stdout, "  NO ESCROW COPY: %s\n", l)
	}
	for _, r := range p.Refusals {
		fmt.Fprintf(a.stdout, "  REFUSED: %s\n", r)
	}
}
