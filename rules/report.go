package rules

import (
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sidecrypt/sidecrypt/datastore"
	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Report formats.
const (
	ReportMarkdown = "md"
	ReportHTML     = "html"
)

// ReportOptions adjust WriteReport.
type ReportOptions struct {
	// Format is ReportMarkdown (the default) or ReportHTML.
	Format string
	// Now is the generation time shown in the report; zero means now.
	Now time.Time
}

// WriteReport writes the data-protection inventory of the plan, the
// document an auditor asks for: per collection, every protected field
// with its key, mode, null handling, what this sidecar shows of it, tags
// and owner; attachments and design-document policy; the server-wide
// operations allowed; which keys this sidecar opens or masks; and what
// is refused, from the profile's own coverage table where it has one. A
// version 1 file gets the same per route. The file's hash and the
// generation time identify what was reviewed.
//
// The HTML page is self-contained (inline CSS, no scripts, no external
// resources); every text from the rule file is escaped.
func (p *Plan) WriteReport(w io.Writer, opt ReportOptions) error {
	inv := p.inventory(opt.Now)
	switch opt.Format {
	case "", ReportMarkdown:
		_, err := io.WriteString(w, inv.markdown())
		return err
	case ReportHTML:
		return reportHTML.Execute(w, inv)
	}
	return fmt.Errorf("rules: unknown report format %q (want md or html)", opt.Format)
}

// inventory is what the report shows, independent of its format.
type inventory struct {
	Source, Hash, Generated string
	Version                 int
	Datastore               string
	Hosts                   string
	Collections             []invCollection
	Routes                  []invRoute
	Keys                    []invKey
	AllowedOps, RefusedOps  []string
	Unmatched               string // version 1: what happens outside the routes
}

type invCollection struct {
	Name        string
	Line        int
	Fields      []invField
	Attachments invPolicy
	DesignDocs  invPolicy
	// Policies: the datastore has attachments and design documents
	// (CouchDB); the other profiles have neither, and their reports do
	// not show the two policies.
	Policies bool
	Views    []invView
	Coverage []datastore.Coverage // from the profile; nil when it has none
	Refused  []string             // when it has none: from the policies
}

type invPolicy struct {
	Value string // refuse or allow
	Means string
	Open  bool // allow: shown as an exception
}

type invField struct {
	Name, Where, Key, Mode, Searchable, Nulls, Shown, Tags, Owner string
	Line                                                          int
}

type invView struct{ Name, Key string }

type invRoute struct {
	Name, Methods, Paths, Hosts, ContentTypes string
	Line                                      int
	Fields                                    []invField
	Query                                     []invField
}

type invKey struct {
	Name, UsedBy, Shown string
	Opened, Masked      bool
}

// shown says what a response of this sidecar shows of a key's values.
func (p *Plan) shown(key string) string {
	_, s := reveal(p, key)
	switch s {
	case "opened":
		return "opened (clear text)"
	case "left as a token":
		return "token (not opened)"
	}
	return s
}

func (p *Plan) inventory(now time.Time) *inventory {
	if now.IsZero() {
		now = time.Now()
	}
	inv := &inventory{Source: p.Source, Hash: p.Hash, Generated: now.UTC().Format(time.RFC3339), Version: max(p.Version, 1)}
	usedBy := map[string][]string{}
	addUse := func(key, what string) {
		if !slices.Contains(usedBy[key], what) {
			usedBy[key] = append(usedBy[key], what)
		}
	}
	if s := p.Schema; s != nil {
		inv.Datastore = s.Datastore
		inv.Hosts = listOr(s.Hosts, "any (reverse mode: the one upstream; forward mode: every host)")
		if len(s.Hosts) > 0 {
			inv.Hosts = strings.Join(s.Hosts, ", ")
		}
		ops, _ := datastore.Operations(s.Datastore)
		for _, op := range ops {
			if s.Allows(op) {
				inv.AllowedOps = append(inv.AllowedOps, op)
			} else {
				inv.RefusedOps = append(inv.RefusedOps, op)
			}
		}
		describer, _ := p.Profile.(datastore.Describer)
		for _, c := range s.Collections {
			ic := invCollection{Name: c.Name, Line: c.Line,
				Attachments: invPolicy{Value: c.Attachments.String(), Open: c.Attachments == datastore.PolicyAllow},
				DesignDocs:  invPolicy{Value: c.DesignDocs.String(), Open: c.DesignDocs == datastore.PolicyAllow},
				Policies:    s.Datastore != "elasticsearch" && s.Datastore != "rest"}
			ic.Attachments.Means = "refused: a document with attachments, or an attachment, is not forwarded"
			if ic.Attachments.Open {
				ic.Attachments.Means = "allowed: attachments pass opaque and UNPROTECTED (the sidecar cannot see into them)"
			}
			ic.DesignDocs.Means = "refused: design documents carry code that runs inside the datastore"
			if ic.DesignDocs.Open {
				ic.DesignDocs.Means = "allowed: design documents (code that runs inside the datastore) may be written"
			}
			for _, f := range c.Fields {
				where := "exactly this path (arrays included)"
				if f.AnyDepth {
					where = "any depth"
				}
				nulls := "left as null"
				if f.EncryptNull {
					nulls = "encrypted"
				}
				mode := f.Mode.String()
				if !f.Pad.IsZero() {
					mode += ", padded to " + f.Pad.String() + " bytes"
				}
				ic.Fields = append(ic.Fields, invField{Name: f.Name, Where: where, Key: f.Key, Mode: mode,
					Searchable: yesNo(f.Searchable), Nulls: nulls, Shown: p.shown(f.Key), Tags: strings.Join(f.Tags, ", "), Owner: f.Owner, Line: f.Line})
				addUse(f.Key, c.Name+": "+f.Name)
			}
			for _, v := range sortedViews(c) {
				ic.Views = append(ic.Views, invView{Name: v, Key: describeViewKey(c.Views[v])})
			}
			if describer != nil {
				ic.Coverage = describer.Coverage(c)
			} else {
				if !ic.Attachments.Open {
					ic.Refused = append(ic.Refused, "attachments (standalone and inline)")
				}
				if !ic.DesignDocs.Open {
					ic.Refused = append(ic.Refused, "design documents, and the code they carry (update handlers, rewrites)")
				}
				ic.Refused = append(ic.Refused, "every request the "+s.Datastore+" profile does not know to be safe (deny by default)")
			}
			inv.Collections = append(inv.Collections, ic)
		}
	} else {
		for _, r := range p.Routes {
			ir := invRoute{Name: r.Name, Line: r.Line, Methods: listOr(r.Methods, "none (matches nothing)"), Paths: listOr(r.Paths, "none (matches nothing)"),
				Hosts: listOr(r.Hosts, "any"), ContentTypes: strings.Join(r.ContentTypes, ", ")}
			for _, f := range r.Fields {
				nulls := "left as null"
				if f.EncryptNull {
					nulls = "encrypted"
				}
				where := "this selector"
				if f.Leaves {
					where = "this selector, each value inside on its own"
				}
				ir.Fields = append(ir.Fields, invField{Name: f.Selector.String(), Where: where, Key: f.Key, Mode: f.Mode.String(),
					Searchable: yesNo(f.Mode == fieldcrypt.ModeDeterministic), Nulls: nulls, Shown: p.shown(f.Key), Line: r.Line})
				addUse(f.Key, "route "+r.Name+": "+f.Selector.String())
			}
			for _, q := range r.Query {
				ir.Query = append(ir.Query, invField{Name: q.Param, Key: q.Key, Mode: q.Mode.String(), Searchable: yesNo(q.Mode == fieldcrypt.ModeDeterministic), Shown: p.shown(q.Key), Line: r.Line})
				addUse(q.Key, "route "+r.Name+": query "+q.Param)
			}
			inv.Routes = append(inv.Routes, ir)
		}
		inv.Unmatched = "Version 1: a request that no route matches is forwarded unchanged, and a route protects only the fields its selectors name (there is no deny by default)."
	}
	keys := append(slices.Clone(p.DecryptKeys), p.MaskKeys...)
	for k := range usedBy {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		lvl, _ := reveal(p, k)
		inv.Keys = append(inv.Keys, invKey{Name: k, UsedBy: listOr(usedBy[k], "no rule in this file (tokens written elsewhere)"),
			Shown: p.shown(k), Opened: lvl == 4, Masked: lvl > 0 && lvl < 4})
		if u := usedBy[k]; len(u) > 0 {
			inv.Keys[len(inv.Keys)-1].UsedBy = strings.Join(u, "; ")
		}
	}
	return inv
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// mdText escapes text for a Markdown paragraph or table cell.
func mdText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\', '`', '*', '_', '[', ']', '<', '>', '#', '|', '!', '~', '&':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n', '\r':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdCode writes s as a Markdown code span, safe in a table cell.
func mdCode(s string) string {
	if s == "" {
		return ""
	}
	s = strings.NewReplacer("|", "\\|", "\n", " ", "\r", " ").Replace(s)
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") || len(fence) > 1 {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

func (inv *inventory) markdown() string {
	var b strings.Builder
	b.WriteString("# Data-protection inventory\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| Rule file | %s |\n", mdCode(inv.Source))
	fmt.Fprintf(&b, "| File hash | %s |\n", mdCode(inv.Hash))
	fmt.Fprintf(&b, "| Generated | %s |\n", inv.Generated)
	fmt.Fprintf(&b, "| Rule file version | %d |\n", inv.Version)
	if inv.Datastore != "" {
		fmt.Fprintf(&b, "| Datastore | %s |\n", mdText(inv.Datastore))
		fmt.Fprintf(&b, "| Datastore hosts | %s |\n", mdText(inv.Hosts))
		fmt.Fprintf(&b, "| Server-wide operations allowed | %s |\n", mdText(joinOr(inv.AllowedOps, "none")))
		fmt.Fprintf(&b, "| Server-wide operations refused | %s |\n", mdText(joinOr(inv.RefusedOps, "none")))
	}
	b.WriteString("\nField values are sealed with AES-256-GCM (random: equal values give different tokens) or AES-SIV (deterministic, for searchable fields: equal values give equal tokens, so the datastore can match them and sees which records share a value).\n")
	for _, c := range inv.Collections {
		fmt.Fprintf(&b, "\n## Collection %s\n\n", mdCode(c.Name))
		fmt.Fprintf(&b, "Rule file line %d.\n\n", c.Line)
		if len(c.Fields) == 0 {
			b.WriteString("No protected fields.\n\n")
		} else {
			b.WriteString("| Field | Applies at | Key | Mode | Searchable | Nulls | This sidecar shows | Tags | Owner | Line |\n|---|---|---|---|---|---|---|---|---|---|\n")
			for _, f := range c.Fields {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", mdCode(f.Name), f.Where, mdCode(f.Key), f.Mode, f.Searchable, f.Nulls, mdText(f.Shown), mdText(f.Tags), mdText(f.Owner), f.Line)
			}
			b.WriteByte('\n')
		}
		if c.Policies {
			fmt.Fprintf(&b, "- Attachments: **%s**: %s\n", c.Attachments.Value, c.Attachments.Means)
			fmt.Fprintf(&b, "- Design documents: **%s**: %s\n", c.DesignDocs.Value, c.DesignDocs.Means)
		}
		for _, v := range c.Views {
			fmt.Fprintf(&b, "- View %s: key %s\n", mdCode(v.Name), mdCode(v.Key))
		}
		if c.Coverage != nil {
			b.WriteString("\nWhat the sidecar does with each kind of request to this collection:\n\n| Endpoint | Requests | Treatment | Why |\n|---|---|---|---|\n")
			for _, cv := range c.Coverage {
				t := mdText(cv.Treatment)
				if cv.Refused {
					t = "**REFUSED**: " + t
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdCode(cv.Endpoint), mdCode(cv.Request), t, mdText(cv.Why))
			}
		} else {
			b.WriteString("\nRefused (403, nothing forwarded):\n\n")
			for _, r := range c.Refused {
				fmt.Fprintf(&b, "- %s\n", mdText(r))
			}
		}
	}
	for _, r := range inv.Routes {
		fmt.Fprintf(&b, "\n## Route %s\n\n", mdCode(r.Name))
		fmt.Fprintf(&b, "Rule file line %d. Methods %s; paths %s; hosts %s; body types %s.\n\n", r.Line, mdCode(r.Methods), mdCode(r.Paths), mdCode(r.Hosts), mdCode(r.ContentTypes))
		if len(r.Fields) > 0 {
			b.WriteString("| Body field | Applies at | Key | Mode | Searchable | Nulls | This sidecar shows |\n|---|---|---|---|---|---|---|\n")
			for _, f := range r.Fields {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", mdCode(f.Name), f.Where, mdCode(f.Key), f.Mode, f.Searchable, f.Nulls, mdText(f.Shown))
			}
			b.WriteByte('\n')
		}
		if len(r.Query) > 0 {
			b.WriteString("| Query parameter | Key | Mode | This sidecar shows |\n|---|---|---|---|\n")
			for _, q := range r.Query {
				fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdCode(q.Name), mdCode(q.Key), q.Mode, mdText(q.Shown))
			}
			b.WriteByte('\n')
		}
		if len(r.Fields) == 0 && len(r.Query) == 0 {
			b.WriteString("Protects nothing: the requests it matches pass through unchanged.\n")
		}
	}
	if inv.Unmatched != "" {
		fmt.Fprintf(&b, "\n%s\n", inv.Unmatched)
	}
	b.WriteString("\n## Keys\n\n| Key | Used by | This sidecar shows |\n|---|---|---|\n")
	for _, k := range inv.Keys {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", mdCode(k.Name), mdText(k.UsedBy), mdText(k.Shown))
	}
	if len(inv.Keys) == 0 {
		b.WriteString("| (none) | | |\n")
	}
	b.WriteString("\nA key this sidecar does not open or mask stays a token in every response it serves.\n")
	return b.String()
}

var reportHTML = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Data-protection inventory: {{.Source}}</title>
<style>
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1b1f24;max-width:1200px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.8em 0}
th,td{border:1px solid #d0d7de;padding:.3em .55em;text-align:left;vertical-align:top}
th{background:#f3f5f7}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em;background:#f3f5f7;padding:0 .25em;border-radius:3px}
table.meta th{width:16em}
.refused{background:#fff1f0}
.refused td.treatment{font-weight:600;color:#a40e26}
.open{background:#fff8e1}
.badge{display:inline-block;padding:0 .45em;border-radius:.7em;font-size:.85em;font-weight:600}
.badge.refuse{background:#e6f4ea;color:#1e6a32}
.badge.allow{background:#fdecea;color:#a40e26}
.note{color:#57606a}
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}}
</style>
</head>
<body>
<h1>Data-protection inventory</h1>
<table class="meta">
<tr><th>Rule file</th><td><code id="source">{{.Source}}</code></td></tr>
<tr><th>File hash</th><td><code id="hash">{{.Hash}}</code></td></tr>
<tr><th>Generated</th><td id="generated">{{.Generated}}</td></tr>
<tr><th>Rule file version</th><td>{{.Version}}</td></tr>
{{- if .Datastore}}
<tr><th>Datastore</th><td id="datastore">{{.Datastore}}</td></tr>
<tr><th>Datastore hosts</th><td>{{.Hosts}}</td></tr>
<tr><th>Server-wide operations allowed</th><td id="allowed-ops">{{range $i, $o := .AllowedOps}}{{if $i}}, {{end}}<code>{{$o}}</code>{{else}}none{{end}}</td></tr>
<tr><th>Server-wide operations refused</th><td id="refused-ops">{{range $i, $o := .RefusedOps}}{{if $i}}, {{end}}<code>{{$o}}</code>{{else}}none{{end}}</td></tr>
{{- end}}
</table>
<p class="note">Field values are sealed with AES-256-GCM (random: equal values give different tokens) or AES-SIV (deterministic, for searchable fields: equal values give equal tokens, so the datastore can match them and sees which records share a value).</p>
{{- range .Collections}}
<section class="collection" data-collection="{{.Name}}">
<h2>Collection <code>{{.Name}}</code></h2>
<p class="note">Rule file line {{.Line}}.</p>
{{- if .Fields}}
<table class="fields">
<thead><tr><th>Field</th><th>Applies at</th><th>Key</th><th>Mode</th><th>Searchable</th><th>Nulls</th><th>This sidecar shows</th><th>Tags</th><th>Owner</th><th>Line</th></tr></thead>
<tbody>
{{- range .Fields}}
<tr class="field"><td class="name"><code>{{.Name}}</code></td><td>{{.Where}}</td><td class="key"><code>{{.Key}}</code></td><td class="mode">{{.Mode}}</td><td>{{.Searchable}}</td><td>{{.Nulls}}</td><td>{{.Shown}}</td><td>{{.Tags}}</td><td>{{.Owner}}</td><td>{{.Line}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>No protected fields.</p>
{{- end}}
<ul class="policies">
{{if .Policies}}<li class="{{if .Attachments.Open}}open{{end}}">Attachments: <span class="badge {{.Attachments.Value}}">{{.Attachments.Value}}</span> {{.Attachments.Means}}</li>
<li class="{{if .DesignDocs.Open}}open{{end}}">Design documents: <span class="badge {{.DesignDocs.Value}}">{{.DesignDocs.Value}}</span> {{.DesignDocs.Means}}</li>{{end}}
{{- range .Views}}
<li>View <code>{{.Name}}</code>: key <code>{{.Key}}</code></li>
{{- end}}
</ul>
{{- if .Coverage}}
<p>What the sidecar does with each kind of request to this collection:</p>
<table class="coverage">
<thead><tr><th>Endpoint</th><th>Requests</th><th>Treatment</th><th>Why</th></tr></thead>
<tbody>
{{- range .Coverage}}
<tr class="{{if .Refused}}refused{{end}}"><td><code>{{.Endpoint}}</code></td><td><code>{{.Request}}</code></td><td class="treatment">{{if .Refused}}REFUSED: {{end}}{{.Treatment}}</td><td>{{.Why}}</td></tr>
{{- end}}
</tbody>
</table>
{{- else}}
<p>Refused (403, nothing forwarded):</p>
<ul class="refused-list">
{{- range .Refused}}
<li class="refused">{{.}}</li>
{{- end}}
</ul>
{{- end}}
</section>
{{- end}}
{{- range .Routes}}
<section class="route" data-route="{{.Name}}">
<h2>Route <code>{{.Name}}</code></h2>
<p class="note">Rule file line {{.Line}}. Methods <code>{{.Methods}}</code>; paths <code>{{.Paths}}</code>; hosts <code>{{.Hosts}}</code>; body types <code>{{.ContentTypes}}</code>.</p>
{{- if .Fields}}
<table class="fields">
<thead><tr><th>Body field</th><th>Applies at</th><th>Key</th><th>Mode</th><th>Searchable</th><th>Nulls</th><th>This sidecar shows</th></tr></thead>
<tbody>
{{- range .Fields}}
<tr class="field"><td class="name"><code>{{.Name}}</code></td><td>{{.Where}}</td><td class="key"><code>{{.Key}}</code></td><td class="mode">{{.Mode}}</td><td>{{.Searchable}}</td><td>{{.Nulls}}</td><td>{{.Shown}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
{{- if .Query}}
<table class="query">
<thead><tr><th>Query parameter</th><th>Key</th><th>Mode</th><th>This sidecar shows</th></tr></thead>
<tbody>
{{- range .Query}}
<tr><td><code>{{.Name}}</code></td><td><code>{{.Key}}</code></td><td>{{.Mode}}</td><td>{{.Shown}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
{{- if and (not .Fields) (not .Query)}}
<p>Protects nothing: the requests it matches pass through unchanged.</p>
{{- end}}
</section>
{{- end}}
{{- if .Unmatched}}
<p class="note" id="unmatched">{{.Unmatched}}</p>
{{- end}}
<section id="keys">
<h2>Keys</h2>
<table class="keys">
<thead><tr><th>Key</th><th>Used by</th><th>This sidecar shows</th></tr></thead>
<tbody>
{{- range .Keys}}
<tr class="{{if .Opened}}open{{end}}"><td><code>{{.Name}}</code></td><td>{{.UsedBy}}</td><td>{{.Shown}}</td></tr>
{{- else}}
<tr><td colspan="3">none</td></tr>
{{- end}}
</tbody>
</table>
<p class="note">A key this sidecar does not open or mask stays a token in every response it serves.</p>
</section>
</body>
</html>
`))
