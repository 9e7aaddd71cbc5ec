package rules

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

const reportRules = `version: 2
datastore: testdb
hosts: ["couch.internal:5984"]
collections:
  - name: clinic
    fields:
      ssn:         {key: pii, tags: [hipaa-identifier], owner: "records team"}
      email:       {key: contact, searchable: true}
      diagnosis:   {key: phi, nulls: encrypt}
      card.number: {key: card, tags: [pci-dss-3.5.1]}
      "<img src=x onerror=alert(1)>": {key: pii, owner: "<b>&amp;</b>"}
    attachments: allow
    views:
      patients/by_email: {key: email}
allow: [replicate]
decrypt:
  keys: [pii, phi, contact]
  mask: {card: last4}
`

var reportTime = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestReportMarkdown(t *testing.T) {
	plan := mustCompile(t, reportRules)
	var b bytes.Buffer
	if err := plan.WriteReport(&b, ReportOptions{Format: ReportMarkdown, Now: reportTime}); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, s := range []string{
		"# Data-protection inventory",
		"| File hash | `" + plan.Hash + "` |",
		"| Generated | 2026-11-25T12:00:00Z |",
		"| Server-wide operations allowed | replicate |",
		"| Server-wide operations refused | config |",
		"## Collection `clinic`",
		"| `ssn` | any depth | `pii` | random | no | left as null | opened (clear text) | hipaa-identifier | records team | 7 |",
		"| `email` | any depth | `contact` | deterministic | yes |",
		"| `diagnosis` | any depth | `phi` | random | no | encrypted |",
		"| `card.number` | exactly this path (arrays included) | `card` | random | no | left as null | masked (last4) | pci-dss-3.5.1 |",
		"\\<b\\>\\&amp;\\</b\\>",
		"- Attachments: **allow**: allowed: attachments pass opaque and UNPROTECTED",
		"- Design documents: **refuse**",
		"- View `patients/by_email`: key `email`",
		"| `testdb.delete` | `DELETE /{db}` | **REFUSED**: refused | deletes \\<everything\\> |",
		"| `card` | clinic: card.number | masked (last4) |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}
	// Names are code spans, where Markdown shows markup as text; other
	// text is escaped.
	if regexp.MustCompile("(^|[^\\\\`])<(img|b>)").MatchString(md) {
		t.Errorf("markdown carries raw HTML from the rule file:\n%s", md)
	}
}

func TestReportFallbackAndVersion1(t *testing.T) {
	plain := mustCompile(t, strings.Replace(reportRules, "datastore: testdb", "datastore: testdb-plain", 1))
	var b bytes.Buffer
	if err := plain.WriteReport(&b, ReportOptions{Now: reportTime}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Refused (403, nothing forwarded):", "- design documents, and the code they carry", "deny by default"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("report without coverage lacks %q:\n%s", s, b.String())
		}
	}
	v1, err := os.ReadFile("testdata/v1/clinic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := mustCompile(t, string(v1)).WriteReport(&b, ReportOptions{Now: reportTime}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## Route `patients-write`", "| `$.docs[*].email` | this selector | `contact` | deterministic | yes |", "no route matches is forwarded unchanged"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("version 1 report lacks %q:\n%s", s, b.String())
		}
	}
}

// TestReportHTMLInChromium opens the HTML report in headless Chromium and
// checks the page it renders: the collection, every field with its key
// and mode, the refused endpoints, and the rule file's text shown as
// text, never as markup.
func TestReportHTMLInChromium(t *testing.T) {
	bin, ok := testenv.LookPath("chromium")
	if !ok {
		testenv.Missing(t, "chromium (headless browser for the report test)", "apt-get install chromium")
	}
	plan := mustCompile(t, reportRules)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	var b bytes.Buffer
	if err := plan.WriteReport(&b, ReportOptions{Format: ReportHTML, Now: reportTime}); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, s := range []string{"http://", "https://", "<script", "<link", "src=\"", "@import"} {
		if strings.Contains(html, s) {
			t.Errorf("the page is not self-contained: it holds %q", s)
		}
	}
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--dump-dom", "file://"+page)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	got := string(dom)
	for _, s := range []string{
		`<h1>Data-protection inventory</h1>`,
		`<section class="collection" data-collection="clinic">`,
		`<code id="hash">` + plan.Hash + `</code>`,
		`<td id="generated">2026-11-25T12:00:00Z</td>`,
		`<td class="name"><code>ssn</code></td>`,
		`<td class="name"><code>card.number</code></td><td>exactly this path (arrays included)</td><td class="key"><code>card</code></td><td class="mode">random</td>`,
		`<td class="name"><code>email</code></td><td>any depth</td><td class="key"><code>contact</code></td><td class="mode">deterministic</td><td>yes</td>`,
		`<tr class="refused"><td><code>testdb.delete</code></td><td><code>DELETE /{db}</code></td><td class="treatment">REFUSED: refused</td><td>deletes &lt;everything&gt;</td></tr>`,
		`<td id="refused-ops"><code>config</code></td>`,
		`<td id="allowed-ops"><code>replicate</code></td>`,
		`<span class="badge allow">allow</span> allowed: attachments pass opaque and UNPROTECTED`,
		`<code>&lt;img src=x onerror=alert(1)&gt;</code>`,
		`&lt;b&gt;&amp;amp;&lt;/b&gt;`,
	} {
		if !strings.Contains(got, s) {
			t.Errorf("rendered page lacks %s", s)
		}
	}
	if strings.Contains(got, "<img") || strings.Contains(got, "<b>") {
		t.Errorf("text from the rule file became markup:\n%s", got)
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", got)
	}
}
