package admin

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/argon2"
	"gopkg.in/yaml.v3"
)

// Role is what a principal may do through the admin API. Each endpoint
// names the roles that may call it (see routes); a principal holds one or
// more.
type Role string

// The roles (docs/OPERATIONS.md, "Access model").
const (
	// RoleOperator runs the keys: create, rotate, activate, revoke,
	// re-wrap, KEK rotation and retirement, profiles.
	RoleOperator Role = "operator"
	// RoleCompliance owns the rules: validate, diff, put.
	RoleCompliance Role = "compliance"
	// RoleAuditor reads: the audit log and its verification, and the
	// inventory (keys, KEKs, rules) that every role reads.
	RoleAuditor Role = "auditor"
	// RoleSecurityOfficer may destroy key versions and let compromised
	// ones decrypt (override), each under dual control.
	RoleSecurityOfficer Role = "security-officer"
)

// AllRoles lists every role, in the order the documentation gives them.
var AllRoles = []Role{RoleOperator, RoleCompliance, RoleAuditor, RoleSecurityOfficer}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.TrimSpace(s))
	if !slices.Contains(AllRoles, r) {
		return "", fmt.Errorf("unknown role %q (roles: operator, compliance, auditor, security-officer)", s)
	}
	return r, nil
}

// Principal is an authenticated caller of the admin API.
type Principal struct {
	Name  string `json:"principal"`
	Roles []Role `json:"roles"`
	// Method says how the caller proved who it is: "socket" (the Unix
	// socket's peer credentials), "token", "certificate", or
	// "legacy-token" (SIDECRYPT_ADMIN_TOKEN).
	Method string `json:"method"`
	// UID is the peer's user id on the Unix socket; -1 otherwise.
	UID int `json:"uid"`
}

// Has reports whether p holds role r.
func (p *Principal) Has(r Role) bool { return slices.Contains(p.Roles, r) }

// Actor is p's name in the audit log.
func (p *Principal) Actor() string { return "admin:" + p.Name }

// LegacyPrincipal is the one principal of SIDECRYPT_ADMIN_TOKEN.
const LegacyPrincipal = "admin"

// principalEntry is one principal in SIDECRYPT_ADMIN_TOKENS_FILE.
type principalEntry struct {
	Principal string `yaml:"principal"`
	Roles     []Role `yaml:"roles,flow"`
	// TokenID is the public half of a token (sct_<id>_<secret>), which
	// says whose hash to check; TokenHash is the Argon2id hash of the
	// whole token.
	TokenID   string `yaml:"token_id,omitempty"`
	TokenHash string `yaml:"token_hash,omitempty"`
	// UID maps a Unix user calling through the socket to this principal.
	UID *int `yaml:"uid,omitempty"`
	// CertNames map a client certificate (its CN, or any DNS, email or
	// URI SAN) to this principal, for mTLS on the TCP listener.
	CertNames []string `yaml:"cert_names,omitempty,flow"`
	Created   string   `yaml:"created,omitempty"`
}

type principalsDoc struct {
	Version    int              `yaml:"version"`
	Principals []principalEntry `yaml:"principals"`
}

// Directory is a parsed principals file: who may call the admin API, how
// they prove it, and with which roles. It is immutable once built.
type Directory struct {
	byName  map[string]*principalEntry
	byToken map[string]*principalEntry
	byUID   map[int]*principalEntry
	byCert  map[string]*principalEntry
}

var principalName = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)

// ParsePrincipals parses and checks a principals file.
func ParsePrincipals(data []byte) (*Directory, error) {
	var doc principalsDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("admin: principals file: %w", err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("admin: principals file: version must be 1, not %d", doc.Version)
	}
	d := &Directory{byName: map[string]*principalEntry{}, byToken: map[string]*principalEntry{}, byUID: map[int]*principalEntry{}, byCert: map[string]*principalEntry{}}
	var errs []error
	for i := range doc.Principals {
		e := &doc.Principals[i]
		where := fmt.Sprintf("principal %d (%q)", i+1, e.Principal)
		if !principalName.MatchString(e.Principal) {
			errs = append(errs, fmt.Errorf("%s: a name is 1 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit", where))
		}
		if e.Principal == LegacyPrincipal {
			errs = append(errs, fmt.Errorf("%s: %q is reserved for SIDECRYPT_ADMIN_TOKEN", where, LegacyPrincipal))
		}
		if d.byName[e.Principal] != nil {
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
		}
		d.byName[e.Principal] = e
		if len(e.Roles) == 0 {
			errs = append(errs, fmt.Errorf("%s: no roles", where))
		}
		for _, r := range e.Roles {
			if _, err := ParseRole(string(r)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
			}
		}
		if e.TokenID == "" && e.UID == nil && len(e.CertNames) == 0 {
			errs = append(errs, fmt.Errorf("%s: no credential (token_id and token_hash, uid, or cert_names)", where))
		}
		if (e.TokenID == "") != (e.TokenHash == "") {
			errs = append(errs, fmt.Errorf("%s: token_id and token_hash go together (make them with 'sidecrypt admin token create')", where))
		}
		if e.TokenID != "" {
			if _, err := parsePHC(e.TokenHash); err != nil {
				errs = append(errs, fmt.Errorf("%s: token_hash: %w", where, err))
			}
			if d.byToken[e.TokenID] != nil {
				errs = append(errs, fmt.Errorf("%s: token_id %s is used twice", where, e.TokenID))
			}
			d.byToken[e.TokenID] = e
		}
		if e.UID != nil {
			if *e.UID < 0 {
				errs = append(errs, fmt.Errorf("%s: uid must be >= 0", where))
			}
			if d.byUID[*e.UID] != nil {
				errs = append(errs, fmt.Errorf("%s: uid %d is mapped twice", where, *e.UID))
			}
			d.byUID[*e.UID] = e
		}
		for _, n := range e.CertNames {
			if n == "" || d.byCert[n] != nil {
				errs = append(errs, fmt.Errorf("%s: certificate name %q is empty or mapped twice", where, n))
			}
			d.byCert[n] = e
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("admin: principals file: %w", err)
	}
	return d, nil
}

// Len is the number of principals.
func (d *Directory) Len() int { return len(d.byName) }

// Names lists the principals with their roles and credential kinds, for
// `sidecrypt admin principals` and the start-up log.
func (d *Directory) Names() []string {
	var out []string
	for name, e := range d.byName {
		var creds []string
		if e.TokenID != "" {
			creds = append(creds, "token "+e.TokenID)
		}
		if e.UID != nil {
			creds = append(creds, "uid "+strconv.Itoa(*e.UID))
		}
		for _, c := range e.CertNames {
			creds = append(creds, "cert "+c)
		}
		roles := make([]string, len(e.Roles))
		for i, r := range e.Roles {
			roles[i] = string(r)
		}
		out = append(out, fmt.Sprintf("%s\t%s\t%s", name, strings.Join(roles, ","), strings.Join(creds, ", ")))
	}
	slices.Sort(out)
	return out
}

func (e *principalEntry) principal(method string, uid int) *Principal {
	return &Principal{Name: e.Principal, Roles: slices.Clone(e.Roles), Method: method, UID: uid}
}

// --- tokens ---

// Tokens are "sct_" + a 12-hex-digit id + "_" + 32 random bytes in
// base64url: 256 bits that no one guesses. The id is not secret; it says
// which hash to check, so that one request costs one Argon2id, not one
// per principal.
const tokenPrefix = "sct_"

// Argon2id parameters for token hashes: the OWASP minimum (19 MiB, two
// passes). The tokens have 256 bits of entropy, so the hash is not what
// keeps them from being guessed; it keeps the file from being a fast
// oracle for a token someone chose by hand. Verified tokens are cached
// in memory (tokenCacheTTL), so the cost is paid once per token and
// minute, not per request.
var argonParams = phc{Time: 2, Memory: 19 * 1024, Threads: 1}

type phc struct {
	Time, Memory uint32
	Threads      uint8
	Salt, Hash   []byte
}

func (p phc) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.Memory, p.Time, p.Threads, b64.EncodeToString(p.Salt), b64.EncodeToString(p.Hash))
}

// parsePHC parses an Argon2id PHC string, refusing parameters that would
// let an edited file make every request expensive.
func parsePHC(s string) (phc, error) {
	var p phc
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v=19" {
		return p, errors.New(`want "$argon2id$v=19$m=...,t=...,p=...$salt$hash"`)
	}
	var m, t, par uint64
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &par); err != nil {
		return p, errors.New("bad parameters")
	}
	if m < 8*1024 || m > 256*1024 || t < 1 || t > 10 || par < 1 || par > 8 {
		return p, errors.New("parameters out of range (m 8..256 MiB, t 1..10, p 1..8)")
	}
	p.Memory, p.Time, p.Threads = uint32(m), uint32(t), uint8(par)
	var err error
	if p.Salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(p.Salt) < 16 {
		return p, errors.New("bad salt")
	}
	if p.Hash, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(p.Hash) != 32 {
		return p, errors.New("bad hash")
	}
	return p, nil
}

func hashToken(token string, params phc) (string, error) {
	params.Salt = make([]byte, 16)
	if _, err := rand.Read(params.Salt); err != nil {
		return "", err
	}
	params.Hash = argon2.IDKey([]byte(token), params.Salt, params.Time, params.Memory, params.Threads, 32)
	return params.String(), nil
}

func checkTokenHash(token, encoded string) bool {
	p, err := parsePHC(encoded)
	if err != nil {
		return false
	}
	got := argon2.IDKey([]byte(token), p.Salt, p.Time, p.Memory, p.Threads, 32)
	// Argon2id's memory (19 MiB with argonParams) is garbage now, but a
	// collection that ran during the hash counted it live and set the next
	// heap goal from it: the proxy would then grow into fresh pages, with
	// a page fault every few KiB, until it got there. Collecting now sets
	// the goal from what is really live. Verifications are rare (cached,
	// and one at a time) and cost far more than this collection.
	runtime.GC()
	return subtle.ConstantTimeCompare(got, p.Hash) == 1
}

// NewToken makes a token and its file entry fields.
func newToken(params phc) (token, id, hash string, err error) {
	var idb [6]byte
	var secret [32]byte
	if _, err = rand.Read(idb[:]); err != nil {
		return
	}
	if _, err = rand.Read(secret[:]); err != nil {
		return
	}
	id = hex.EncodeToString(idb[:])
	token = tokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
	hash, err = hashToken(token, params)
	return
}

// tokenID returns the id of a token of ours, or "".
func tokenID(token string) string {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "_")
	if !ok || len(id) != 12 {
		return ""
	}
	return id
}

// --- the file, reloaded when it changes ---

// PrincipalSource is SIDECRYPT_ADMIN_TOKENS_FILE, read at start and again
// whenever it changes (checked at most once a second, when a request
// needs it): `sidecrypt admin token create` takes effect without a
// restart. A file that no longer parses is refused, loudly, and the last
// good one stays.
type PrincipalSource struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	dir     *Directory
	stamp   fileStamp
	checked time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// OpenPrincipals reads the principals file at path.
func OpenPrincipals(path string, log *slog.Logger) (*PrincipalSource, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &PrincipalSource{path: path, log: log}
	d, st, err := loadPrincipals(path, log)
	if err != nil {
		return nil, err
	}
	s.dir, s.stamp, s.checked = d, st, time.Now()
	return s, nil
}

// Current returns the directory in force.
func (s *PrincipalSource) Current() *Directory {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.checked) < time.Second {
		return s.dir
	}
	s.checked = time.Now()
	st, err := stampOf(s.path)
	if err != nil || st == s.stamp {
		if err != nil {
			s.log.Error("admin: principals file unreadable; the last good one stays in force", "file", s.path, "err", err)
		}
		return s.dir
	}
	d, st, err := loadPrincipals(s.path, s.log)
	if err != nil {
		s.log.Error("admin: principals file refused; the last good one stays in force", "file", s.path, "err", err)
		s.stamp = st // refuse once, not once a second
		return s.dir
	}
	s.dir, s.stamp = d, st
	s.log.Info("admin: principals file reloaded", "file", s.path, "principals", d.Len())
	return d
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

// loadPrincipals reads and parses the file, refusing one that others may
// write (whoever can write it can grant themselves every role).
func loadPrincipals(path string, log *slog.Logger) (*Directory, fileStamp, error) {
	st, err := stampOf(path)
	if err != nil {
		return nil, st, fmt.Errorf("admin: SIDECRYPT_ADMIN_TOKENS_FILE: %w", err)
	}
	if err := checkPrivate(path, log); err != nil {
		return nil, st, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, st, fmt.Errorf("admin: SIDECRYPT_ADMIN_TOKENS_FILE: %w", err)
	}
	d, err := ParsePrincipals(data)
	return d, st, err
}

// checkPrivate refuses a file (or its directory) that users other than
// its owner (and root) may write, and warns when others may read it.
func checkPrivate(path string, log *slog.Logger) error {
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		mode := fi.Mode().Perm()
		sticky := fi.Mode()&fs.ModeSticky != 0
		if mode&0o022 != 0 && !(fi.IsDir() && sticky) {
			return fmt.Errorf("admin: %s is writable by group or others (mode %04o): whoever can write the principals file can grant themselves any role; chmod go-w it", p, mode)
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() && sys.Uid != 0 {
			return fmt.Errorf("admin: %s belongs to uid %d, not to this process (uid %d) or root", p, sys.Uid, os.Geteuid())
		}
		if p == path && mode&0o044 != 0 {
			log.Warn("admin: the principals file is readable by group or others; its token hashes are slow to test, but chmod 0600 it", "file", path)
		}
	}
	return nil
}

// --- editing the file (sidecrypt admin token create/revoke) ---

// CreateToken adds principal name with roles and a new token to the
// principals file at path (created, mode 0600, if absent), or with
// rotate replaces the token of an existing principal. It returns the
// token, which is stored nowhere: it is shown once.
func CreateToken(path, name string, roles []Role, rotate bool) (string, error) {
	return createToken(path, name, roles, rotate, argonParams)
}

func createToken(path, name string, roles []Role, rotate bool, params phc) (string, error) {
	var token string
	err := editPrincipals(path, func(doc *principalsDoc) error {
		var e *principalEntry
		for i := range doc.Principals {
			if doc.Principals[i].Principal == name {
				e = &doc.Principals[i]
			}
		}
		switch {
		case e != nil && !rotate:
			return fmt.Errorf("principal %q exists; --rotate replaces its token", name)
		case e == nil && rotate:
			return fmt.Errorf("no principal %q to rotate", name)
		case e == nil && len(roles) == 0:
			return errors.New("give at least one --role")
		case e != nil && len(roles) > 0:
			return errors.New("--rotate keeps the principal's roles; edit the file to change them")
		}
		if e == nil {
			doc.Principals = append(doc.Principals, principalEntry{Principal: name, Roles: roles})
			e = &doc.Principals[len(doc.Principals)-1]
		}
		var id, hash string
		var err error
		if token, id, hash, err = newToken(params); err != nil {
			return err
		}
		e.TokenID, e.TokenHash, e.Created = id, hash, time.Now().UTC().Format(time.RFC3339)
		return nil
	})
	return token, err
}

// RevokeToken removes principal name's token; a principal left without
// any credential is removed.
func RevokeToken(path, name string) error {
	return editPrincipals(path, func(doc *principalsDoc) error {
		for i := range doc.Principals {
			e := &doc.Principals[i]
			if e.Principal != name {
				continue
			}
			if e.TokenID == "" {
				return fmt.Errorf("principal %q has no token", name)
			}
			e.TokenID, e.TokenHash = "", ""
			if e.UID == nil && len(e.CertNames) == 0 {
				doc.Principals = slices.Delete(doc.Principals, i, i+1)
			}
			return nil
		}
		return fmt.Errorf("no principal %q", name)
	})
}

// editPrincipals reads the file (or starts an empty one), applies edit,
// checks the result parses, and replaces the file atomically. Comments
// are not kept: the file is sidecrypt's.
func editPrincipals(path string, edit func(*principalsDoc) error) error {
	doc := principalsDoc{Version: 1}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("admin: %w", err)
	default:
		if err := checkPrivate(path, slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("admin: %s: %w", path, err)
		}
	}
	if err := edit(&doc); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	out := append([]byte("# sidecrypt admin principals (SIDECRYPT_ADMIN_TOKENS_FILE); see docs/OPERATIONS.md, \"Access model\".\n# Tokens are stored as Argon2id hashes only. Edit roles, uid and cert_names by hand; make tokens\n# with 'sidecrypt admin token create NAME --role ROLE'.\n"), buf.Bytes()...)
	if _, err := ParsePrincipals(out); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if err := writeFileAtomic(path, out, 0o600); err != nil {
		return fmt.Errorf("admin: write %s: %w", path, err)
	}
	return nil
}

// tokenDigest keys the in-memory cache of verified tokens.
func tokenDigest(token string) [32]byte { return sha256.Sum256([]byte(token)) }
