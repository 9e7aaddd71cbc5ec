package main

// What the store sweep counted, for the key commands: `keys destroy`
// shows the values a version still protects before it erases it, and
// `keys status` shows them for every version.

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore/sweep"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// sweptCount is what the last sweeps say of one key version.
type sweptCount struct {
	sweep.VersionCount
	// Known: at least one collection has a finished inventory.
	Known bool `json:"known"`
	// Unfinished: a collection's sweep started after its inventory and
	// has not finished, so its count may be out of date.
	Unfinished bool `json:"unfinished,omitempty"`
	// Problem is why the sweep records could not all be read.
	Problem string `json:"problem,omitempty"`
}

func sweptCountOf(states []*sweep.State, err error, name string, v uint32) sweptCount {
	vc := sweep.CountsFor(states, sweep.KeyVersion{Key: name, Version: v})
	sc := sweptCount{VersionCount: vc, Known: len(vc.Collections) > 0}
	for _, c := range vc.Collections {
		if c.Unfinished {
			sc.Unfinished = true
		}
	}
	if err != nil {
		sc.Problem = err.Error()
	}
	return sc
}

// describeSwept writes what the last sweeps found under name v to w, for
// `keys destroy`.
func describeSwept(w io.Writer, sc sweptCount, name string, v uint32) {
	if sc.Problem != "" {
		fmt.Fprintf(w, "warning: some sweep records could not be read (%s); the count below leaves them out\n", sc.Problem)
	}
	if !sc.Known {
		fmt.Fprintf(w, "No sweep has counted the values sealed under %s v%d: how many it still protects is unknown.\n"+
			"('sidecrypt sweep COLLECTION --dry-run' counts them; docs/KEYS.md, \"Rotating the data, not only the key\".)\n", name, v)
		return
	}
	if sc.Values == 0 {
		fmt.Fprintf(w, "The last sweeps found no value sealed under %s v%d:\n", name, v)
	} else {
		fmt.Fprintf(w, "The last sweeps found %d value(s) still sealed under %s v%d; destroying it makes them unreadable for good (crypto-shredding):\n", sc.Values, name, v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range sc.Collections {
		kind := "sweep"
		if c.DryRun {
			kind = "dry run"
		}
		note := ""
		if c.Unfinished {
			note = "  (a newer sweep is unfinished: the count may be out of date)"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s %s%s\n", c.Collection, c.Values, kind, formatTime(c.Swept), note)
	}
	tw.Flush()
	fmt.Fprintln(w, "Collections never swept are not counted.")
}

// loadSweeps reads every collection's sweep state.
func loadSweeps(ctx context.Context, m *keystore.Manager) ([]*sweep.State, error) {
	return sweep.ListStates(ctx, m)
}

func cmdKeysStatus(a *app, args []string) int {
	fs := a.flags("keys status", `sidecrypt keys status [--json]

Shows every key version with what the store sweep found under it: the
values still sealed under it, summed over each collection's last finished
sweep or dry run ('sidecrypt sweep'), and when each was taken. A version
about to be destroyed should show 0; "unknown" means no sweep has counted
it. Collections never swept are not counted.`+envHelp)
	asJSON := fs.Bool("json", false, "print {\"keys\": [...]} as JSON")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "keys status takes no arguments")
	}
	return a.withSession(false, func(s *keysSession) error {
		keys, lerr := s.m.List(s.ctx)
		if keys == nil && lerr != nil {
			return lerr
		}
		states, serr := loadSweeps(s.ctx, s.m)
		type versionStatus struct {
			Name    string `json:"name"`
			Version uint32 `json:"version"`
			State   string `json:"state"`
			Primary bool   `json:"primary"`
			sweptCount
		}
		out := []versionStatus{}
		for _, k := range keys {
			for _, v := range k.Versions {
				out = append(out, versionStatus{Name: k.Name, Version: v.Version, State: string(v.State), Primary: k.Primary == v.Version,
					sweptCount: sweptCountOf(states, serr, k.Name, v.Version)})
			}
		}
		if *asJSON {
			if c := a.printJSON(map[string]any{"keys": out}); c != exitOK {
				return fmt.Errorf("could not write the output")
			}
		} else {
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tSTATE\tPRIMARY\tVALUES\tLAST SWEPT\tCOLLECTIONS")
			for _, vs := range out {
				primary, values, last := "", "unknown", "-"
				if vs.Primary {
					primary = "*"
				}
				var cols []string
				var newest time.Time
				for _, c := range vs.Collections {
					cols = append(cols, fmt.Sprintf("%s=%d", c.Collection, c.Values))
					if c.Swept.After(newest) {
						newest = c.Swept
					}
				}
				if vs.Known {
					values = fmt.Sprint(vs.Values)
					last = formatTime(newest)
					if vs.Unfinished {
						values += "?"
					}
				}
				fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\t%s\t%s\n", vs.Name, vs.Version, vs.State, primary, values, last, strings.Join(cols, " "))
			}
			tw.Flush()
		}
		if serr != nil {
			fmt.Fprintf(a.stderr, "warning: some sweep records failed their integrity check and are not counted: %v\n", serr)
		}
		return lerr
	})
}
