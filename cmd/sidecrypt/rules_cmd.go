package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/rules"
)

// cmdRules runs `sidecrypt rules <lint|test|diff|report|convert|push>`.
func cmdRules(a *app, args []string) int {
	return a.dispatch("sidecrypt rules", []command{
		{"lint", "check rule files: every error and warning with FILE:LINE:COL", cmdRulesLint},
		{"test", "dry-run a request through a rule file with throw-away keys", cmdRulesTest},
		{"diff", "show what a new rule file changes in protection, for review", cmdRulesDiff},
		{"report", "write the data-protection inventory of a rule file (Markdown or HTML)", cmdRulesReport},
		{"convert", "write the version 2 equivalent of a version 1 rule file", cmdRulesConvert},
		{"push", "validate a rule file and store it in etcd for every sidecar", cmdRulesPush},
	}, args)
}

// loadRules compiles a rule file for a command that needs a valid one. It
// prints each diagnostic once (warnings only when withWarnings), and for
// a file it refuses one line that says so; ok is false then.
func (a *app) loadRules(file string, withWarnings bool) (*rules.Plan, bool) {
	plan, diags, err := rules.LoadFile(file)
	for _, d := range diags {
		if withWarnings || d.IsError() {
			fmt.Fprintln(a.stderr, d)
		}
	}
	if err != nil {
		if errors.Is(err, rules.ErrInvalid) {
			errs, _ := rules.CountDiagnostics(diags)
			fmt.Fprintf(a.stderr, "sidecrypt: %s: %d %s: refused\n", file, errs, plural(errs, "error", "errors"))
		} else {
			fmt.Fprintf(a.stderr, "sidecrypt: %v\n", err)
		}
		return nil, false
	}
	return plan, true
}

func cmdRulesLint(a *app, args []string) int {
	fs := a.flags("rules lint", `sidecrypt rules lint [--json] [--strict] [--plan] [--keys] FILE...

Checks rule files and lists every problem, each as FILE:LINE:COL: severity:
message, with a hint where one helps. Exit status: 0 when no file has an
error (warnings are printed but allowed, unless --strict), 1 otherwise,
2 on a usage error.

--keys also checks each key the rules seal with in the keystore that the
SIDECRYPT_KEYSTORE, SIDECRYPT_HSM and related settings name (as 'sidecrypt
keys list' does): a key that does not exist or has no active primary, and a
key without a cryptoperiod, is a warning.`)
	asJSON := fs.Bool("json", false, "print the diagnostics as a JSON array of {file,line,col,severity,message,hint}")
	strict := fs.Bool("strict", false, "treat warnings as errors (exit 1)")
	showPlan := fs.Bool("plan", false, "print the compiled plan of each valid file")
	withKeys := fs.Bool("keys", false, "also check the keys the rules seal with in the keystore (exists, has a primary, has a cryptoperiod)")
	files, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(files) == 0 {
		fmt.Fprintln(a.stderr, "sidecrypt rules lint: name at least one rule file")
		fs.Usage()
		return exitUsage
	}
	var ks *keysSession
	if *withKeys {
		var err error
		if ks, err = a.session(false); err != nil {
			return a.fail(fmt.Errorf("rules lint --keys: %w", err))
		}
		defer ks.Close()
	}
	all := []rules.Diagnostic{}
	failed := false
	var out strings.Builder
	for _, file := range files {
		plan, diags, err := rules.LoadFile(file)
		if err != nil && !errors.Is(err, rules.ErrInvalid) {
			// Unreadable: one whole-file error.
			diags = []rules.Diagnostic{{File: file, Severity: rules.SeverityError, Message: strings.TrimPrefix(err.Error(), "rules: ")}}
		}
		if ks != nil && plan != nil {
			for _, w := range ruleKeyWarnings(ks.ctx, ks.m, plan) {
				msg := fmt.Sprintf("key %s (%s): %s", w.key, w.where, w.msg)
				if w.err != nil {
					msg += ": " + w.err.Error()
				}
				diags = append(diags, rules.Diagnostic{File: file, Severity: rules.SeverityWarning, Message: msg, Hint: w.fix})
			}
		}
		all = append(all, diags...)
		errs, warns := rules.CountDiagnostics(diags)
		if errs > 0 || *strict && warns > 0 {
			failed = true
		}
		if *asJSON {
			continue
		}
		for _, d := range diags {
			out.WriteString(d.String())
			out.WriteByte('\n')
		}
		switch {
		case errs > 0:
			fmt.Fprintf(&out, "%s: %d %s, %d %s: refused\n", file, errs, plural(errs, "error", "errors"), warns, plural(warns, "warning", "warnings"))
		case warns > 0 && *strict:
			fmt.Fprintf(&out, "%s: 0 errors, %d %s: failed (--strict treats warnings as errors)\n", file, warns, plural(warns, "warning", "warnings"))
		case warns > 0:
			fmt.Fprintf(&out, "%s: ok, %d %s\n", file, warns, plural(warns, "warning", "warnings"))
		default:
			fmt.Fprintf(&out, "%s: ok\n", file)
		}
		if *showPlan && plan != nil {
			out.WriteString(plan.Describe())
		}
	}
	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			return a.fail(err)
		}
	} else {
		io.WriteString(a.stdout, out.String())
	}
	if failed {
		return exitFail
	}
	return exitOK
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// maxTestBody bounds a sample body read by `rules test`.
const maxTestBody = 16 << 20

func cmdRulesTest(a *app, args []string) int {
	fs := a.flags("rules test", `sidecrypt rules test FILE --method POST --path /db/_bulk_docs [--host H] [--query 'email=a@b'] [--body FILE|-] [--explain] [--response]

Dry-runs one request through a rule file, with throw-away random keys
(nothing touches the keystore or the HSM), and prints the request as the
datastore would receive it. Random-mode tokens differ on every run.

Version 2 files: the datastore's profile classifies the request as the
proxy does; a refusal is shown with its status, code and message.
--explain names the collection and endpoint, each value sealed (its path,
the field rule, key and mode), and every field rule of the collection
that selected nothing in this sample. Version 1 files: --explain names the
route that matched and what happened to each field; a request that no
route matches passes through unchanged.

--response also runs the decrypt side on that output and prints what the
application would see (masked keys masked, keys it may not open left as
tokens). Exit status: 0 when the request would be forwarded, 1 when the
proxy would refuse it (or the file is invalid), 2 on a usage error.`)
	method := fs.String("method", "POST", "HTTP method")
	path := fs.String("path", "", "URL path as sent, percent-escapes included: /clinic/a%2Fb is the document a/b (required)")
	host := fs.String("host", "", "host name, as forward mode sees it (empty: reverse mode)")
	query := fs.String("query", "", "URL query string, e.g. 'email=a@b&limit=10'")
	bodyFile := fs.String("body", "", "file holding the request body, or - for standard input")
	contentType := fs.String("content-type", "application/json", "media type of the body")
	explain := fs.Bool("explain", false, "say which route matched and what happened to each field")
	response := fs.Bool("response", false, "also show what the application gets back when the datastore returns the stored body")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || *path == "" {
		fmt.Fprintln(a.stderr, "sidecrypt rules test: give one rule file and --path")
		fs.Usage()
		return exitUsage
	}
	plan, ok := a.loadRules(pos[0], true)
	if !ok {
		return exitFail
	}
	var body []byte
	var err error
	switch *bodyFile {
	case "":
	case "-":
		body, err = io.ReadAll(io.LimitReader(a.stdin, maxTestBody+1))
	default:
		var f *os.File
		if f, err = os.Open(*bodyFile); err == nil {
			body, err = io.ReadAll(io.LimitReader(f, maxTestBody+1))
			f.Close()
		}
	}
	if err != nil {
		return a.fail(fmt.Errorf("read body: %w", err))
	}
	if len(body) > maxTestBody {
		return a.fail(fmt.Errorf("body larger than %d bytes", maxTestBody))
	}
	ring, err := throwAwayKeys(plan)
	if err != nil {
		return a.fail(err)
	}
	dr := dryRun{a: a, plan: plan, ring: ring, explain: *explain, response: *response,
		sections: *explain || *response || *query != ""}
	if plan.Profile != nil {
		return dr.runV2(a.ctx, v2Request{method: *method, path: *path, host: *host, rawQuery: *query, contentType: *contentType}, body)
	}
	req := rules.Request{Method: strings.ToUpper(*method), Host: *host, Path: *path, ContentType: *contentType}
	return dr.run(a.ctx, req, *query, body)
}

// throwAwayKeys makes version 1 of every key the plan names, from fresh
// random material, so that a dry run seals and opens like the real thing
// without any real key.
func throwAwayKeys(plan *rules.Plan) (*fieldcrypt.StaticKeyring, error) {
	var names []string
	for _, r := range plan.Routes {
		names = append(names, r.Keys...)
	}
	if plan.Schema != nil {
		for _, c := range plan.Schema.Collections {
			names = append(names, c.Keys()...)
		}
	}
	names = append(names, plan.DecryptKeys...)
	names = append(names, plan.MaskKeys...)
	slices.Sort(names)
	names = slices.Compact(names)
	var keys []*fieldcrypt.DataKey
	material := make([]byte, fieldcrypt.DataKeySize)
	defer clear(material)
	for _, n := range names {
		if _, err := rand.Read(material); err != nil {
			return nil, err
		}
		k, err := fieldcrypt.NewDataKey(n, 1, material)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return fieldcrypt.NewStaticKeyring(keys...), nil
}

type dryRun struct {
	a        *app
	plan     *rules.Plan
	ring     fieldcrypt.Keyring
	explain  bool
	response bool
	sections bool // print headed sections rather than the bare body
}

func (d *dryRun) run(ctx context.Context, req rules.Request, rawQuery string, body []byte) int {
	w := d.a.stdout
	// Routes are matched on the path as the datastore reads it, as the
	// proxy does (see v1RoutePath).
	rp, empty, ok := v1RoutePath(req.Path)
	if !ok {
		return d.refuseV2(400, "bad_path", "request path contains . or .. segments (also percent-encoded), or a malformed escape")
	}
	shown := req.Path
	req.Path = rp
	route := d.plan.Match(req)
	if route != nil && empty {
		return d.refuseV2(400, "bad_path", "request path has an empty segment (//) on a protected route: the datastore may read it differently")
	}
	req.Path = shown
	target := req.Method + " " + req.Path
	if req.Host != "" {
		target = req.Method + " " + req.Host + req.Path
	}
	if route == nil {
		msg := fmt.Sprintf("no route matches %s: the request passes through unchanged", target)
		if d.sections {
			fmt.Fprintf(w, "route: none (%s)\n", msg)
			if rawQuery != "" {
				fmt.Fprintf(w, "query (as the datastore receives it): %s\n", rawQuery)
			}
			fmt.Fprintln(w, "body (as the datastore receives it):")
		} else {
			fmt.Fprintln(d.a.stderr, msg)
		}
		d.writeBody(body)
		if d.response {
			return d.showResponse(ctx, body)
		}
		return exitOK
	}
	if d.sections {
		fmt.Fprintf(w, "route: %s (%s:%d) for %s\n", route.Name, d.plan.Source, route.Line, target)
	}
	var events []string
	onField := func(prefix string) func(fieldcrypt.FieldEvent) {
		return func(ev fieldcrypt.FieldEvent) {
			if ev.Version == 0 {
				// Nothing was sealed (a null under nulls: leave).
				events = append(events, fmt.Sprintf("  %s%-28s key %s, %s: %s", prefix, ev.Path, ev.Key, ev.Mode, ev.Action))
				return
			}
			events = append(events, fmt.Sprintf("  %s%-28s key %s v%d, %s: %s", prefix, ev.Path, ev.Key, ev.Version, ev.Mode, ev.Action))
		}
	}

	// Query parameters.
	newQuery, qevents, err := d.rewriteQuery(ctx, route, rawQuery)
	if err != nil {
		return d.refuse(503, err)
	}
	events = append(events, qevents...)

	// Body.
	stored := body
	if route.HasBodyRules() && len(body) > 0 {
		if !route.AcceptsContentType(req.ContentType) {
			return d.refuse(415, fmt.Errorf("route %s encrypts body fields and accepts only %s, not %q", route.Name, strings.Join(route.ContentTypes, ", "), req.ContentType))
		}
		var opt *fieldcrypt.CallOptions
		if d.explain {
			opt = &fieldcrypt.CallOptions{OnField: onField("")}
		}
		stored, _, err = route.Body.EncryptBytes(ctx, body, d.ring, opt)
		if err != nil {
			return d.refuse(400, err)
		}
	}
	if d.explain {
		fmt.Fprintln(w, "fields:")
		if len(events) == 0 {
			fmt.Fprintln(w, "  (none of the protected fields occur in this request)")
		}
		for _, e := range events {
			fmt.Fprintln(w, e)
		}
	}
	if d.sections {
		if rawQuery != "" {
			fmt.Fprintf(w, "query (as the datastore receives it): %s\n", newQuery)
		}
		fmt.Fprintln(w, "body (as the datastore receives it):")
	}
	d.writeBody(stored)
	if d.response {
		return d.showResponse(ctx, stored)
	}
	return exitOK
}

// writeBody prints a body; in sectioned output an empty one is named, so
// that the reader does not look for a missing line.
func (d *dryRun) writeBody(b []byte) {
	if len(b) == 0 && d.sections {
		fmt.Fprintln(d.a.stdout, "(empty)")
		return
	}
	d.a.stdout.Write(withNewline(b))
}

// rewriteQuery seals the values of protected query parameters, keeping the
// order and spelling of everything else.
func (d *dryRun) rewriteQuery(ctx context.Context, route *rules.Route, raw string) (string, []string, error) {
	if raw == "" || !route.HasQueryRules() {
		return raw, nil, nil
	}
	var events []string
	parts := strings.Split(raw, "&")
	for i, part := range parts {
		name, value, _ := strings.Cut(part, "=")
		uname, err := url.QueryUnescape(name)
		if err != nil {
			return "", nil, fmt.Errorf("query parameter %d: %w", i+1, err)
		}
		q, ok := route.QueryRule(uname)
		if !ok {
			continue
		}
		v, err := url.QueryUnescape(value)
		if err != nil {
			return "", nil, fmt.Errorf("query parameter %q: %w", uname, err)
		}
		k, err := d.ring.SealKey(ctx, q.Key)
		if err != nil {
			return "", nil, err
		}
		tok, err := fieldcrypt.SealString(k, q.Mode, v)
		if err != nil {
			return "", nil, fmt.Errorf("query parameter %q: %w", uname, err)
		}
		parts[i] = name + "=" + url.QueryEscape(string(tok))
		events = append(events, fmt.Sprintf("  query %-22s key %s v%d, %s: encrypted", uname, k.Name(), k.Version(), q.Mode))
	}
	return strings.Join(parts, "&"), events, nil
}

func (d *dryRun) showResponse(ctx context.Context, stored []byte) int {
	w := d.a.stdout
	var events []string
	opt := &fieldcrypt.CallOptions{Lenient: true}
	if d.explain {
		opt.OnField = func(ev fieldcrypt.FieldEvent) {
			events = append(events, fmt.Sprintf("  %-28s key %s v%d: %s", ev.Path, ev.Key, ev.Version, ev.Action))
		}
	}
	out := stored
	if len(bytes.TrimSpace(stored)) > 0 {
		var err error
		out, _, err = d.plan.Decryptor.DecryptBytes(ctx, stored, d.ring, opt)
		if err != nil {
			return d.a.fail(fmt.Errorf("decrypt: %w", err))
		}
	}
	if d.explain {
		fmt.Fprintln(w, "response fields:")
		if len(events) == 0 {
			fmt.Fprintln(w, "  (no tokens in the response)")
		}
		for _, e := range events {
			fmt.Fprintln(w, e)
		}
	}
	fmt.Fprintln(w, "response (as the application sees it):")
	d.writeBody(out)
	return exitOK
}

// refuse reports what the proxy would answer instead of forwarding.
func (d *dryRun) refuse(status int, err error) int {
	fmt.Fprintf(d.a.stdout, "refused: the proxy would answer %d and forward nothing: %v\n", status, err)
	return exitFail
}

func withNewline(b []byte) []byte {
	if len(b) == 0 || b[len(b)-1] == '\n' {
		return b
	}
	return append(b[:len(b):len(b)], '\n')
}

func cmdRulesDiff(a *app, args []string) int {
	fs := a.flags("rules diff", `sidecrypt rules diff [--json] OLD NEW

Shows what replacing rule file OLD by NEW changes in protection, in words a
reviewer signs off: collections and routes added or removed, fields newly
protected, fields NO LONGER protected, rules removed whose fields other
rules still protect (decided, not guessed), key or mode changes (existing
data keeps its old tokens), attachments, design documents and server-wide
operations allowed or refused, hosts, views, and decrypt/mask policy. The
files may be of either version. Lines marked "!" need explicit attention.
Exit status, as with diff(1): 0 when protection is the same, 1 when it
differs, 2 when a file is invalid or unreadable or on a usage error.`)
	asJSON := fs.Bool("json", false, "print the changes as JSON")
	files, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(files) != 2 {
		fmt.Fprintln(a.stderr, "sidecrypt rules diff: give the old and the new rule file")
		fs.Usage()
		return exitUsage
	}
	var plans [2]*rules.Plan
	for i, f := range files {
		p, ok := a.loadRules(f, false)
		if !ok {
			return exitUsage
		}
		plans[i] = p
	}
	d := rules.Compare(plans[0], plans[1])
	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if d.Changes == nil {
			d.Changes = []rules.Change{}
		}
		if err := enc.Encode(d); err != nil {
			fmt.Fprintf(a.stderr, "sidecrypt: %v\n", err)
			return exitUsage
		}
	} else if err := d.WriteText(a.stdout); err != nil {
		fmt.Fprintf(a.stderr, "sidecrypt: %v\n", err)
		return exitUsage
	}
	if d.Empty() {
		return exitOK
	}
	return exitFail
}
