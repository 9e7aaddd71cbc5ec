package main

// The admin and approvals commands: the principals file (made here,
// read by serve), and the calls that act on a running sidecar through
// its admin API, over the Unix socket by default.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/admin"
	"github.com/sidecrypt/sidecrypt/internal/config"
)

func cmdAdmin(a *app, args []string) int {
	return a.dispatch("sidecrypt admin", []command{
		{"token", "make or revoke a principal's API token: create, revoke", cmdAdminToken},
		{"principals", "list the principals file: names, roles, credentials", cmdAdminPrincipals},
		{"whoami", "ask the running sidecar who you are to it", cmdAdminWhoami},
		{"call", "call the running sidecar's admin API: METHOD PATH [BODY]", cmdAdminCall},
	}, args)
}

func cmdAdminToken(a *app, args []string) int {
	return a.dispatch("sidecrypt admin token", []command{
		{"create", "add a principal with roles and a new token (printed once), or rotate its token", cmdAdminTokenCreate},
		{"revoke", "remove a principal's token", cmdAdminTokenRevoke},
	}, args)
}

// adminHelp is appended to the usage of commands that call the API.
const adminHelp = `
The running sidecar is reached on its Unix socket (SIDECRYPT_ADMIN_SOCKET,
default admin.sock next to the keystore), where your uid is your
credential, or over TCP with SIDECRYPT_ADMIN_URL and a token in
SIDECRYPT_ADMIN_CLIENT_TOKEN(_FILE) or a client certificate
(SIDECRYPT_ADMIN_CLIENT_CERT/_KEY). A token on the socket acts as its
principal instead of your uid's. See docs/OPERATIONS.md, "Access model".`

// roleList collects --role flags (repeated or comma-separated).
type roleList []admin.Role

func (r *roleList) String() string {
	s := make([]string, len(*r))
	for i, x := range *r {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func (r *roleList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		role, err := admin.ParseRole(part)
		if err != nil {
			return err
		}
		*r = append(*r, role)
	}
	return nil
}

func (a *app) tokensFile(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	cfg, err := a.config()
	if err != nil {
		return "", err
	}
	if cfg.AdminTokensFile == "" {
		return "", errors.New("no principals file: set SIDECRYPT_ADMIN_TOKENS_FILE or pass --file")
	}
	return cfg.AdminTokensFile, nil
}

func cmdAdminTokenCreate(a *app, args []string) int {
	fs := a.flags("admin token create", `sidecrypt admin token create NAME --role ROLE [--role ROLE] [--file FILE]
       sidecrypt admin token create NAME --rotate [--file FILE]

Adds principal NAME with the given roles (operator, compliance, auditor,
security-officer) and a new API token to the principals file
(SIDECRYPT_ADMIN_TOKENS_FILE, created with mode 0600 if absent), or with
--rotate gives an existing principal a new token (the old one stops
working). The token has 256 random bits; the file keeps only its Argon2id
hash. The token is printed once, on standard output: hand it to NAME, for
SIDECRYPT_ADMIN_CLIENT_TOKEN_FILE. A running sidecar picks the change up
within a second.`)
	var roles roleList
	fs.Var(&roles, "role", "a role for the new principal (repeat, or comma-separate)")
	file := fs.String("file", "", "the principals file (default SIDECRYPT_ADMIN_TOKENS_FILE)")
	rotate := fs.Bool("rotate", false, "replace the token of an existing principal")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one principal")
	}
	if !*rotate && len(roles) == 0 {
		return a.usageError(fs, "give at least one --role (operator, compliance, auditor, security-officer)")
	}
	path, err := a.tokensFile(*file)
	if err != nil {
		return a.fail(err)
	}
	token, err := admin.CreateToken(path, pos[0], roles, *rotate)
	if err != nil {
		return a.fail(err)
	}
	what := "added principal " + pos[0] + " (" + roles.String() + ")"
	if *rotate {
		what = "gave principal " + pos[0] + " a new token (the old one no longer works)"
	}
	fmt.Fprintf(a.stderr, "%s in %s. The token follows, shown this once: store it where only %s can read it.\n", what, path, pos[0])
	fmt.Fprintln(a.stdout, token)
	return exitOK
}

func cmdAdminTokenRevoke(a *app, args []string) int {
	fs := a.flags("admin token revoke", `sidecrypt admin token revoke NAME [--file FILE]

Removes principal NAME's token from the principals file; a principal left
without any credential (uid, certificate) is removed. A running sidecar
stops accepting the token within about a minute.`)
	file := fs.String("file", "", "the principals file (default SIDECRYPT_ADMIN_TOKENS_FILE)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one principal")
	}
	path, err := a.tokensFile(*file)
	if err != nil {
		return a.fail(err)
	}
	if err := admin.RevokeToken(path, pos[0]); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stdout, "revoked the token of %s in %s\n", pos[0], path)
	return exitOK
}

func cmdAdminPrincipals(a *app, args []string) int {
	fs := a.flags("admin principals", `sidecrypt admin principals [--file FILE]

Lists the principals file: each principal, its roles and its credentials
(token ids, uids, certificate names; never a token).`)
	file := fs.String("file", "", "the principals file (default SIDECRYPT_ADMIN_TOKENS_FILE)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return a.usageError(fs, "no arguments")
	}
	path, err := a.tokensFile(*file)
	if err != nil {
		return a.fail(err)
	}
	src, err := admin.OpenPrincipals(path, a.quietLogger(config.Config{}))
	if err != nil {
		return a.fail(err)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PRINCIPAL\tROLES\tCREDENTIALS")
	for _, line := range src.Current().Names() {
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	return exitOK
}

// adminClient builds the client the environment describes.
func (a *app) adminClient() (*admin.Client, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	return admin.NewClient(admin.ClientConfig{
		Socket: cfg.AdminSocket, URL: cfg.AdminURL, Token: cfg.AdminClientToken.Reveal(),
		CA: cfg.AdminServerCA, Cert: cfg.AdminClientCert, Key: cfg.AdminClientKey,
	})
}

// apiCall calls the API and decodes a 2xx answer into out; any other
// answer is an error with the API's message.
func (a *app) apiCall(method, path string, body []byte, out any) (int, error) {
	c, err := a.adminClient()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(a.ctx, 2*time.Minute)
	defer cancel()
	status, b, err := c.Do(ctx, method, path, body, "")
	if err != nil {
		return 0, err
	}
	if status/100 != 2 {
		return status, fmt.Errorf("%s %s: %d: %s", method, path, status, admin.ErrorMessage(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return status, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return status, nil
}

func cmdAdminWhoami(a *app, args []string) int {
	fs := a.flags("admin whoami", `sidecrypt admin whoami [--json]

Asks the running sidecar who you are to it: principal, roles, and how you
were recognised.`+adminHelp)
	asJSON := fs.Bool("json", false, "print JSON")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	var p admin.Principal
	if _, err := a.apiCall("GET", "/v1/whoami", nil, &p); err != nil {
		return a.fail(err)
	}
	if *asJSON {
		return a.printJSON(p)
	}
	roles := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		roles[i] = string(r)
	}
	via := p.Method
	if p.UID >= 0 {
		via += fmt.Sprintf(", uid %d", p.UID)
	}
	fmt.Fprintf(a.stdout, "%s (%s) via %s\n", p.Name, strings.Join(roles, ", "), via)
	return exitOK
}

func cmdAdminCall(a *app, args []string) int {
	fs := a.flags("admin call", `sidecrypt admin call METHOD PATH [BODY | @FILE] [--content-type TYPE]

Calls the running sidecar's admin API and prints the answer (JSON). BODY
is sent as is (default Content-Type application/json; rule files may be
sent as application/yaml). Exits 1 unless the answer is 2xx. Examples:

  sidecrypt admin call GET /v1/keys
  sidecrypt admin call POST /v1/keys/pii/versions/1/destroy '{"confirm":"pii","reason":"end of life"}'
  sidecrypt admin call PUT /v1/rules @rules.yaml --content-type application/yaml`+adminHelp)
	ct := fs.String("content-type", "", "Content-Type of the body (default application/json)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) < 2 || len(pos) > 3 {
		return a.usageError(fs, "METHOD PATH [BODY | @FILE]")
	}
	method, path := strings.ToUpper(pos[0]), pos[1]
	if !strings.HasPrefix(path, "/") {
		return a.usageError(fs, "PATH starts with /, e.g. /v1/keys")
	}
	var body []byte
	if len(pos) == 3 {
		body = []byte(pos[2])
		if name, ok := strings.CutPrefix(pos[2], "@"); ok {
			var err error
			if body, err = os.ReadFile(name); err != nil {
				return a.fail(err)
			}
		}
	} else if method != http.MethodGet && method != http.MethodHead {
		body = []byte{}
	}
	c, err := a.adminClient()
	if err != nil {
		return a.fail(err)
	}
	status, b, err := c.Do(a.ctx, method, path, body, *ct)
	if err != nil {
		return a.fail(err)
	}
	a.stdout.Write(b)
	if len(b) > 0 && !bytes.HasSuffix(b, []byte("\n")) {
		fmt.Fprintln(a.stdout)
	}
	if status/100 != 2 {
		fmt.Fprintf(a.stderr, "sidecrypt: %s %s: %d\n", method, path, status)
		return exitFail
	}
	return exitOK
}

// --- approvals ---

func cmdApprovals(a *app, args []string) int {
	return a.dispatch("sidecrypt approvals", []command{
		{"list", "list the requests that wait for a second principal", cmdApprovalsList},
		{"show", "show one request in full (a rule change's diff and file)", cmdApprovalsShow},
		{"approve", "approve a request: it is done at once, as requester and approver", cmdApprovalsApprove},
		{"reject", "reject a request (or withdraw your own)", cmdApprovalsReject},
	}, args)
}

const approvalsHelp = `
Dual control: destroying a key version, an override of a compromised one,
and a rule change that removes or weakens protection or opens a key are
only requests until a second principal, not the requester, with the
required role approves them before they expire (SIDECRYPT_ADMIN_APPROVAL_TTL).`

func cmdApprovalsList(a *app, args []string) int {
	fs := a.flags("approvals list", `sidecrypt approvals list [--json]

Lists the pending requests of the running sidecar.`+approvalsHelp+adminHelp)
	asJSON := fs.Bool("json", false, "print {\"approvals\": [...]} as JSON")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	var out struct {
		Approvals []admin.Approval `json:"approvals"`
	}
	if _, err := a.apiCall("GET", "/v1/approvals", nil, &out); err != nil {
		return a.fail(err)
	}
	if *asJSON {
		return a.printJSON(out)
	}
	if len(out.Approvals) == 0 {
		fmt.Fprintln(a.stdout, "no pending requests")
		return exitOK
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tREQUESTED BY\tNEEDS\tEXPIRES\tWHAT")
	for _, ap := range out.Approvals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ap.ID, ap.Kind, ap.RequestedBy, ap.RequiredRole, ap.ExpiresAt.Local().Format(time.DateTime), ap.Summary)
	}
	tw.Flush()
	return exitOK
}

func cmdApprovalsShow(a *app, args []string) int {
	fs := a.flags("approvals show", `sidecrypt approvals show ID [--json]

Shows one pending request in full: for a rule change, the flagged changes
and the file that approving puts in force.`+adminHelp)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one request ID")
	}
	var ap admin.Approval
	if _, err := a.apiCall("GET", "/v1/approvals/"+pos[0], nil, &ap); err != nil {
		return a.fail(err)
	}
	if *asJSON {
		return a.printJSON(ap)
	}
	fmt.Fprintf(a.stdout, "request %s: %s\n  kind:          %s\n  requested by:  %s at %s\n  needs:         another principal with the role %s\n  expires:       %s\n",
		ap.ID, ap.Summary, ap.Kind, ap.RequestedBy, ap.RequestedAt.Local().Format(time.DateTime), ap.RequiredRole, ap.ExpiresAt.Local().Format(time.DateTime))
	if ap.Reason != "" {
		fmt.Fprintf(a.stdout, "  reason:        %s\n", ap.Reason)
	}
	if ap.BaseHash != "" {
		fmt.Fprintf(a.stdout, "  on top of:     %s\n  new rules:     %s\n", ap.BaseHash, ap.NewHash)
	}
	if len(ap.Changes) > 0 {
		fmt.Fprintln(a.stdout, "\nFlagged changes:")
		for _, c := range ap.Changes {
			fmt.Fprintf(a.stdout, "  ! %s\n", c)
		}
	}
	if ap.Rules != "" {
		fmt.Fprintf(a.stdout, "\nThe rule file approving puts in force:\n%s", ap.Rules)
		if !strings.HasSuffix(ap.Rules, "\n") {
			fmt.Fprintln(a.stdout)
		}
	}
	return exitOK
}

func cmdApprovalsApprove(a *app, args []string) int {
	fs := a.flags("approvals approve", `sidecrypt approvals approve ID [--json]

Approves request ID: the sidecar does it at once, attributed in the audit
log to the requester and you together (admin:REQUESTER+YOU). You must not
be its requester and must hold its required role. Read it first:
'sidecrypt approvals show ID'.`+adminHelp)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one request ID")
	}
	var out struct {
		Approval   admin.Approval `json:"approval"`
		ApprovedBy string         `json:"approved_by"`
		Result     any            `json:"result"`
	}
	if _, err := a.apiCall("POST", "/v1/approvals/"+pos[0]+"/approve", []byte("{}"), &out); err != nil {
		return a.fail(err)
	}
	if *asJSON {
		return a.printJSON(out)
	}
	fmt.Fprintf(a.stdout, "approved and done: %s (requested by %s, approved by %s)\n", out.Approval.Summary, out.Approval.RequestedBy, out.ApprovedBy)
	return exitOK
}

func cmdApprovalsReject(a *app, args []string) int {
	fs := a.flags("approvals reject", `sidecrypt approvals reject ID [--reason TEXT]

Rejects request ID (a principal with its required role), or withdraws it
(its requester). Nothing is done; the audit log records who and why.`+adminHelp)
	reason := fs.String("reason", "", "why (goes to the audit log)")
	pos, code, ok := a.parseInterspersed(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return a.usageError(fs, "name one request ID")
	}
	body, _ := json.Marshal(map[string]string{"reason": *reason})
	var out struct {
		Approval admin.Approval `json:"approval"`
	}
	if _, err := a.apiCall("POST", "/v1/approvals/"+pos[0]+"/reject", body, &out); err != nil {
		return a.fail(err)
	}
	fmt.Fprintf(a.stdout, "rejected: %s (requested by %s); nothing was done\n", out.Approval.Summary, out.Approval.RequestedBy)
	return exitOK
}
