package main

// `kek escrow list|rotate|retire`: the KEK versions of the keystore's
// escrow provider (SIDECRYPT_HSM_ESCROW), which wraps every data key a
// second time. Like keys.go, thin wrappers around keystore.Manager.

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/sidecrypt/sidecrypt/hsm"
	"github.com/sidecrypt/sidecrypt/keystore"
)

func cmdKEKEscrow(a *app, args []string) int {
	return a.dispatch("sidecrypt kek escrow", []command{
		{"list", "list the escrow provider's KEK versions and how many escrow copies each wraps", cmdKEKEscrowList},
		{"rotate", "create a new KEK version in the escrow provider; the re-wrap moves the escrow copies", cmdKEKEscrowRotate},
		{"retire", "retire an escrow KEK version that no escrow copy uses any more", cmdKEKEscrowRetire},
	}, args)
}

// escrowSession opens a key session and checks that it has an escrow.
func (a *app) escrowSession() (*keysSession, error) {
	s, err := a.session(false)
	if err != nil {
		return nil, err
	}
	if s.escrow == nil {
		s.Close()
		return nil, errors.New("no escrow provider is configured (SIDECRYPT_HSM_ESCROW): see docs/KEK.md, \"Two wraps per data key\"")
	}
	return s, nil
}

func cmdKEKEscrowList(a *app, args []string) int {
	fs := a.flags("kek escrow list", `sidecrypt kek escrow list [--json]

Lists the escrow provider's KEK versions: which is current, how many escrow
copies of data keys each still wraps, and which may be retired.`+envHelp)
	asJSON := fs.Bool("json", false, "print {\"provider\": ..., \"keks\": [...]} as JSON")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "kek escrow list takes no arguments")
	}
	s, err := a.escrowSession()
	if err != nil {
		return a.fail(err)
	}
	return a.inSession(s, func(s *keysSession) error {
		st, err := s.m.EscrowKEKs(s.ctx)
		if err != nil {
			return err
		}
		if st == nil {
			st = []keystore.KEKStatus{}
		}
		desc := s.escrow.Describe()
		if *asJSON {
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				Provider hsm.Description      `json:"provider"`
				KEKs     []keystore.KEKStatus `json:"keks"`
			}{desc, st})
		}
		fmt.Fprintf(a.stdout, "escrow provider: %s\n", desc.ID())
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tSTATE\tCOPIES\tRETIRABLE\tCREATED\tLABEL")
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

func cmdKEKEscrowRotate(a *app, args []string) int {
	fs := a.flags("kek escrow rotate", `sidecrypt kek escrow rotate

Creates a new KEK version in the escrow provider. Escrow copies made from
now on are under it; 'sidecrypt keys rewrap' (or a running serve's
re-wrap) moves the existing ones.`+envHelp)
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "kek escrow rotate takes no arguments")
	}
	s, err := a.escrowSession()
	if err != nil {
		return a.fail(err)
	}
	return a.inSession(s, func(s *keysSession) error {
		v, err := s.m.RotateEscrowKEK(s.ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "escrow KEK v%d is now current; 'sidecrypt keys rewrap' moves the escrow copies under it\n", v)
		return nil
	})
}

func cmdKEKEscrowRetire(a *app, args []string) int {
	fs := a.flags("kek escrow retire", `sidecrypt kek escrow retire --version N

Retires an old KEK version of the escrow provider. Refused while any escrow
copy is still under it (run 'sidecrypt keys rewrap' first) and for the
current version.`+envHelp)
	ver := fs.Uint("version", 0, "the escrow KEK version to retire")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "kek escrow retire takes only --version N")
	}
	v, ok := a.versionFlag(fs, *ver)
	if !ok {
		return exitUsage
	}
	s, err := a.escrowSession()
	if err != nil {
		return a.fail(err)
	}
	return a.inSession(s, func(s *keysSession) error {
		if err := s.m.RetireEscrowKEK(s.ctx, v); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "escrow KEK v%d retired\n", v)
		return nil
	})
}
