package main

// Commands for record integrity and backup signing: keys verify, keys
// seal-records, keys backup-signer. Like keys.go, thin wrappers around
// keystore.Manager.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

func cmdKeysVerify(a *app, args []string) int {
	fs := a.flags("keys verify", `sidecrypt keys verify

Checks the integrity of every keystore record: each key record, the head
record and each seal counter must carry a MAC by this HSM's record key,
sit at the generation the store says it was written at, and agree with
the head record (no version revoked or destroyed there may be anything
less here). Prints OK, or each record that fails, and exits 1 then.
Records that fail are never used: requests that need them get 503.
Restore them from a backup (docs/KEYS.md, "Record integrity"). With an
escrow provider (SIDECRYPT_HSM_ESCROW), it also says how many versions
have an escrow copy and how many records an escrow MAC: what a recovery
from the escrow would find (docs/KEK.md).`+envHelp)
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "keys verify takes no arguments")
	}
	return a.withSession(false, func(s *keysSession) error {
		n, err := s.m.Verify(s.ctx)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(a.stdout, "FAIL: %s\n", line)
			}
			return errors.New("keystore records failed their integrity check (above)")
		}
		fmt.Fprintf(a.stdout, "OK: %d key record(s), the head record and the seal counters verify under the HSM's record key\n", n)
		// Each key's generation, to compare with the last one the audit
		// log recorded (docs/KEYS.md, "Record integrity").
		keys, err := s.m.List(s.ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			fmt.Fprintf(a.stdout, "%s: generation %d\n", k.Name, k.Seal.Generation)
		}
		if s.escrow == nil {
			return nil
		}
		// What a recovery from the escrow would find (docs/KEK.md).
		c, err := s.m.EscrowCoverage(s.ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "escrow %s: %d of %d version(s) have an escrow copy; %d record(s) lack an escrow MAC\n",
			c.Provider, c.Covered, c.Versions, c.UnsealedRecords)
		for _, m := range c.Missing {
			fmt.Fprintf(a.stdout, "  no escrow copy: %s\n", m)
		}
		if len(c.Missing) > 0 || c.UnsealedRecords > 0 {
			fmt.Fprintln(a.stdout, "  'sidecrypt keys rewrap' (or any running serve's re-wrap) adds them once the escrow answers")
		}
		return nil
	})
}

func cmdKeysSealRecords(a *app, args []string) int {
	fs := a.flags("keys seal-records", `sidecrypt keys seal-records [--yes]

One-time migration of a keystore written before record integrity. Its
records carry no MAC, so sidecrypt refuses them ("carries no integrity
seal"). This command shows every unsealed key, version and state, checks
that each wrapped key unwraps and matches its fingerprint, and, once you
confirm that the list is what you expect (nobody else could have written
the keystore), seals them with the HSM's record key. Audited
(key.seal-records). A record that was sealed once and lost its seal is
refused: restore that one from a backup. Without a terminal --yes is
required.`+envHelp)
	yes := fs.Bool("yes", false, "seal without asking")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "keys seal-records takes no arguments")
	}
	if !*yes && !stdinIsTerminal(a.stdin) {
		return a.fail(errors.New("refusing to seal records without confirmation: standard input is not a terminal; pass --yes from a script"))
	}
	return a.withSession(false, func(s *keysSession) error {
		un, err := s.m.UnsealedKeys(s.ctx)
		if err != nil {
			return err
		}
		if len(un) == 0 {
			fmt.Fprintln(a.stdout, "every record is sealed already; nothing to do")
			return nil
		}
		fmt.Fprintln(a.stdout, "unsealed records (NOT verified: check that this is your keystore as you left it):")
		for _, k := range un {
			fmt.Fprintf(a.stdout, "  %s: primary v%d, cryptoperiod %s\n", k.Name, k.Primary, formatPeriod(k.Cryptoperiod))
			for _, v := range k.Versions {
				fmt.Fprintf(a.stdout, "    v%d %s fingerprint %s\n", v.Version, v.State, v.Fingerprint)
			}
		}
		if !*yes {
			fmt.Fprintf(a.stderr, "Seal these %d record(s) as they are? Type 'seal' to confirm: ", len(un))
			line, err := bufio.NewReader(a.stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if strings.TrimSpace(line) != "seal" {
				return errors.New("not confirmed: nothing was sealed")
			}
		}
		sealed, err := s.m.SealRecords(s.ctx)
		for _, n := range sealed {
			fmt.Fprintf(a.stdout, "sealed %s\n", n)
		}
		return err
	})
}

func cmdKeysBackupSigner(a *app, args []string) int {
	fs := a.flags("keys backup-signer", `sidecrypt keys backup-signer [--out FILE]

Prints the public half of this HSM's backup signing key (ECDSA P-256; the
private half never leaves the HSM or the software provider's sealed file),
as a PEM block with its fingerprint. Keep it with the recovery public key:
a restore into a new HSM needs it ('keys restore --signer FILE') to trust
the backups this one signed.`+envHelp)
	out := fs.String("out", "", "also write it to FILE (must not exist)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "keys backup-signer takes only --out FILE")
	}
	return a.withSession(true, func(s *keysSession) error {
		signer, err := s.m.BackupSigner(s.ctx)
		if err != nil {
			return err
		}
		text, _ := signer.MarshalText()
		if *out != "" {
			if err := writeNewFile(*out, text, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "wrote the backup signer %s to %s\n", signer.Fingerprint(), *out)
		}
		_, err = a.stdout.Write(text)
		return err
	})
}
