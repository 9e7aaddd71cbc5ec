package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sidecrypt/sidecrypt/rules"
)

func cmdRulesReport(a *app, args []string) int {
	fs := a.flags("rules report", `sidecrypt rules report FILE [--format md|html] [-o OUT]

Writes the data-protection inventory of rule file FILE, the document an
auditor asks for: per collection, every protected field with its key,
mode, whether it is searchable, what happens to nulls, what this sidecar
shows of it (opened, masked, left as a token), its tags and owner; the
attachments and design-document policies; the server-wide operations
allowed; which keys this sidecar opens or masks; and what is refused.
The file's hash and the generation time identify what was reviewed.
--format html writes one self-contained page (no scripts, no external
resources). Version 1 files are reported route by route.
Exit status: 0 when written, 1 when the file is invalid or cannot be
written, 2 on a usage error.`)
	format := fs.String("format", rules.ReportMarkdown, "md (Markdown) or html")
	out := fs.String("o", "", "write to this file instead of standard output")
	files, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(files) != 1 {
		return a.usageError(fs, "give one rule file")
	}
	if *format != rules.ReportMarkdown && *format != rules.ReportHTML {
		return a.usageError(fs, fmt.Sprintf("--format is md or html, not %q", *format))
	}
	plan, ok := a.loadRules(files[0], false)
	if !ok {
		return exitFail
	}
	if *out == "" {
		if err := plan.WriteReport(a.stdout, rules.ReportOptions{Format: *format}); err != nil {
			return a.fail(err)
		}
		return exitOK
	}
	// Written next to its final name and renamed, so that a reader never
	// sees half a report.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".report-*")
	if err != nil {
		return a.fail(err)
	}
	defer os.Remove(tmp.Name())
	if err := plan.WriteReport(tmp, rules.ReportOptions{Format: *format}); err != nil {
		tmp.Close()
		return a.fail(err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return a.fail(err)
	}
	if err := tmp.Close(); err != nil {
		return a.fail(err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stderr, "wrote %s (rules %s)\n", *out, plan.Hash)
	return exitOK
}

func cmdRulesConvert(a *app, args []string) int {
	fs := a.flags("rules convert", `sidecrypt rules convert V1FILE > rules-v2.yaml

Writes the version 2 equivalent of the version 1 rule file V1FILE to
standard output, for CouchDB: each route's databases from its paths, each
selector as the field name that protects at least what it protected
("$.ssn" and "$.docs[*].ssn" become ssn, which version 2 protects at any
depth; "$.card.number" becomes card.number), deterministic as searchable.
Everything it cannot carry (paths that are not CouchDB paths, query
parameter rules, hosts, content types, a field under two keys, ...) is
listed on standard error and as comments at the top of the output; so is
what it carries more widely. Review both, then lint the result.
Exit status: 0 when everything was carried, 1 when something was not,
2 on a usage error or when V1FILE is invalid or already version 2.`)
	files, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(files) != 1 {
		return a.usageError(fs, "give one version 1 rule file")
	}
	plan, ok := a.loadRules(files[0], false)
	if !ok {
		return exitUsage
	}
	conv, err := rules.Convert(plan, rules.ConvertOptions{})
	if errors.Is(err, rules.ErrNotVersion1) {
		fmt.Fprintf(a.stderr, "sidecrypt: %s is already version 2: nothing to convert\n", files[0])
		return exitUsage
	}
	if err != nil {
		return a.fail(err)
	}
	if _, err := a.stdout.Write(conv.YAML); err != nil {
		return a.fail(err)
	}
	lost := 0
	for _, n := range conv.Notes {
		kind := "carried differently"
		if n.Lost {
			kind = "NOT CARRIED"
			lost++
		}
		where := ""
		if n.Route != "" {
			where = "route " + n.Route + ": "
		}
		fmt.Fprintf(a.stderr, "%s:%d: %s: %s%s\n", files[0], n.Line, kind, where, n.Message)
	}
	if lost > 0 {
		fmt.Fprintf(a.stderr, "sidecrypt: %d %s of %s could not be carried into version 2; the output does not do %s\n", lost, plural(lost, "thing", "things"), files[0], plural(lost, "it", "them"))
		return exitFail
	}
	return exitOK
}
