package hsm

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultObject is the KEK label prefix used when the URI has no object
// attribute: versions are labelled "sidecrypt-kek-v1", "sidecrypt-kek-v2",
// and the audit key "sidecrypt-kek-audit".
const DefaultObject = "sidecrypt-kek"

// DefaultMaxSessions bounds the PKCS#11 session pool when the URI has no
// max-sessions attribute. Eight covers the proxy's concurrency on small
// hosts; tokens limit sessions per application, so it is not unbounded.
const DefaultMaxSessions = 8

// maxPINFile bounds what pin-source may read: a PIN is short, and a
// misconfigured path (a log, a device) must not be slurped.
const maxPINFile = 4096

// wrapMechanism is one way of asking a token for AES key wrapping.
type wrapMechanism struct {
	name      string // the URI's wrap-mechanism value
	code      uint   // PKCS#11 mechanism type
	algorithm string // Wrapped.Mechanism
}

// wrapMechanisms are the values of the wrap-mechanism query attribute.
// SoftHSM2 implements RFC 5649 under CKM_AES_KEY_WRAP_PAD (0x210A), which
// PKCS#11 2.40 names for PKCS#7 padding followed by RFC 3394; PKCS#11 3.0
// added CKM_AES_KEY_WRAP_KWP (0x210B) for RFC 5649. docs/KEK.md lists which
// vendor uses which.
var wrapMechanisms = []wrapMechanism{
	{name: "kwp", code: 0x210A, algorithm: MechanismKWP},
	{name: "kwp-v3", code: 0x210B, algorithm: MechanismKWP},
	{name: "kw", code: 0x2109, algorithm: MechanismKW},
}

// pkcs11Config is a parsed RFC 7512 URI. It never holds the PIN itself;
// pinValue is kept only so that Open can use (and warn about) it.
type pkcs11Config struct {
	// Token selection (RFC 7512 path attributes); empty means any.
	Token        string
	Serial       string
	Manufacturer string
	Model        string
	SlotID       uint
	HasSlotID    bool

	Object      string // KEK label prefix
	ModulePath  string
	PINSource   string // file path, from pin-source
	pinValue    string
	hasPINValue bool
	Mechanism   wrapMechanism
	MaxSessions int
}

// configErr builds an ErrConfig error naming the attribute. It never
// includes the attribute's value when that value may be the PIN.
func configErr(format string, args ...any) error {
	return fmt.Errorf("hsm: pkcs11 URI: %s: %w", fmt.Sprintf(format, args...), ErrConfig)
}

// parsePKCS11URI parses an RFC 7512 URI with sidecrypt's extensions
// (wrap-mechanism, max-sessions). Unknown attributes are refused rather
// than ignored: a typo in a security setting must not silently fall back
// to a default.
func parsePKCS11URI(s string) (pkcs11Config, error) {
	const scheme = "pkcs11:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return pkcs11Config{}, configErr("must start with %q", scheme)
	}
	rest := s[len(scheme):]
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return pkcs11Config{}, configErr("a fragment (#...) is not allowed")
	}
	pathPart, queryPart, hasQuery := strings.Cut(rest, "?")
	c := pkcs11Config{Object: DefaultObject, Mechanism: wrapMechanisms[0], MaxSessions: DefaultMaxSessions}
	seen := map[string]bool{}

	if pathPart != "" {
		for attr := range strings.SplitSeq(pathPart, ";") {
			name, value, err := splitAttr(attr, "path")
			if err != nil {
				return pkcs11Config{}, err
			}
			if seen[name] {
				return pkcs11Config{}, configErr("path attribute %q appears twice", name)
			}
			seen[name] = true
			switch name {
			case "token":
				c.Token = value
			case "serial":
				c.Serial = value
			case "manufacturer":
				c.Manufacturer = value
			case "model":
				c.Model = value
			case "slot-id":
				n, err := strconv.ParseUint(value, 10, 0)
				if err != nil {
					return pkcs11Config{}, configErr("slot-id %q is not a decimal number", value)
				}
				c.SlotID, c.HasSlotID = uint(n), true
			case "object":
				if err := checkObject(value); err != nil {
					return pkcs11Config{}, err
				}
				c.Object = value
			case "type":
				if value != "secret-key" {
					return pkcs11Config{}, configErr("type %q: KEKs are secret keys (type=secret-key)", value)
				}
			case "id":
				return pkcs11Config{}, configErr("path attribute \"id\" is not supported: sidecrypt sets CKA_ID itself; select KEKs with object=")
			default:
				return pkcs11Config{}, configErr("unknown path attribute %q (supported: token, serial, manufacturer, model, slot-id, object, type)", name)
			}
		}
	}
	if hasQuery {
		if queryPart == "" {
			return pkcs11Config{}, configErr("empty query after '?'")
		}
		for attr := range strings.SplitSeq(queryPart, "&") {
			name, value, err := splitAttr(attr, "query")
			if err != nil {
				return pkcs11Config{}, err
			}
			if seen["?"+name] {
				return pkcs11Config{}, configErr("query attribute %q appears twice", name)
			}
			seen["?"+name] = true
			switch name {
			case "module-path":
				if !filepath.IsAbs(value) {
					return pkcs11Config{}, configErr("module-path %q must be an absolute path to the vendor's PKCS#11 library", value)
				}
				c.ModulePath = filepath.Clean(value)
			case "module-name":
				return pkcs11Config{}, configErr("module-name is not supported: give the library's absolute path in module-path")
			case "pin-source":
				p, err := pinSourcePath(value)
				if err != nil {
					return pkcs11Config{}, err
				}
				c.PINSource = p
			case "pin-value":
				c.pinValue, c.hasPINValue = value, true
			case "wrap-mechanism":
				i := slices.IndexFunc(wrapMechanisms, func(m wrapMechanism) bool { return m.name == value })
				if i < 0 {
					return pkcs11Config{}, configErr("wrap-mechanism %q: want kwp (CKM_AES_KEY_WRAP_PAD 0x210A, the default), kwp-v3 (CKM_AES_KEY_WRAP_KWP 0x210B) or kw (CKM_AES_KEY_WRAP 0x2109)", value)
				}
				c.Mechanism = wrapMechanisms[i]
			case "max-sessions":
				n, err := strconv.Atoi(value)
				if err != nil || n < 1 || n > 1024 {
					return pkcs11Config{}, configErr("max-sessions %q: want a number from 1 to 1024", value)
				}
				c.MaxSessions = n
			default:
				return pkcs11Config{}, configErr("unknown query attribute %q (supported: module-path, pin-source, pin-value, wrap-mechanism, max-sessions)", name)
			}
		}
	}
	if c.PINSource != "" && c.hasPINValue {
		return pkcs11Config{}, configErr("pin-source and pin-value are mutually exclusive")
	}
	if c.ModulePath == "" {
		return pkcs11Config{}, configErr("module-path is required (the vendor's PKCS#11 library, e.g. module-path=/usr/lib/softhsm/libsofthsm2.so)")
	}
	if c.Token == "" && c.Serial == "" && !c.HasSlotID {
		return pkcs11Config{}, configErr("name the token with token=, serial= or slot-id=")
	}
	return c, nil
}

// splitAttr splits one name=value attribute and percent-decodes the value.
// RFC 7512 values are percent-encoded; '+' is a literal plus, not a space.
func splitAttr(attr, where string) (name, value string, err error) {
	if attr == "" {
		return "", "", configErr("empty %s attribute (stray ';' or '&')", where)
	}
	name, raw, ok := strings.Cut(attr, "=")
	if !ok {
		return "", "", configErr("a %s attribute has no '=' (want name=value)", where)
	}
	if name == "" || strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}) >= 0 {
		// The name may be a garbled secret; do not echo it.
		return "", "", configErr("malformed %s attribute name", where)
	}
	value, err = url.PathUnescape(raw)
	if err != nil {
		// Never echo the raw value: it may be a mistyped pin-value.
		return "", "", configErr("%s attribute %q: bad percent-encoding", where, name)
	}
	return name, value, nil
}

// checkObject validates the KEK label prefix.
func checkObject(o string) error {
	if o == "" {
		return configErr("object must not be empty")
	}
	if len(o) > 64 {
		return configErr("object is %d bytes; at most 64", len(o))
	}
	for _, r := range o {
		if r < 0x20 || r == 0x7f {
			return configErr("object contains a control character")
		}
	}
	return nil
}

// pinSourcePath accepts pin-source as a file: URI (file:/path,
// file:///path) or an absolute path, as RFC 7512 section 2.3 allows.
func pinSourcePath(v string) (string, error) {
	p := v
	if rest, ok := strings.CutPrefix(v, "file:"); ok {
		p = rest
		if h, ok := strings.CutPrefix(rest, "//"); ok {
			// file://host/path: only the local host is meaningful.
			host, path, _ := strings.Cut(h, "/")
			if host != "" && host != "localhost" {
				return "", configErr("pin-source: file URI names host %q; only local files are supported", host)
			}
			p = "/" + path
		}
	} else if strings.Contains(v, ":") && !strings.HasPrefix(v, "/") {
		return "", configErr("pin-source: only file: URIs and absolute paths are supported")
	}
	if !filepath.IsAbs(p) {
		return "", configErr("pin-source %q must be an absolute path", p)
	}
	return filepath.Clean(p), nil
}

// readPINFile reads a PIN from pin-source, dropping one trailing newline
// (files written with echo have one; a PIN never ends in one).
func readPINFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hsm: pkcs11: read pin-source %q: %w: %v", path, ErrConfig, err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
	defer clear(buf)
	if err != nil {
		return "", fmt.Errorf("hsm: pkcs11: read pin-source %q: %w: %v", path, ErrConfig, err)
	}
	n := len(buf)
	if n > maxPINFile {
		return "", fmt.Errorf("hsm: pkcs11: pin-source %q is larger than %d bytes: %w", path, maxPINFile, ErrConfig)
	}
	pin := strings.TrimSuffix(strings.TrimSuffix(string(buf[:n]), "\n"), "\r")
	if pin == "" {
		return "", fmt.Errorf("hsm: pkcs11: pin-source %q is empty: %w", path, ErrConfig)
	}
	return pin, nil
}

// String renders the configuration as a URI with the PIN left out, for
// Describe and logs. Parsing the result gives the same configuration,
// without pin-value.
func (c pkcs11Config) String() string {
	var path []string
	add := func(name, v string) { path = append(path, name+"="+escapeAttr(v)) }
	if c.Token != "" {
		add("token", c.Token)
	}
	if c.Serial != "" {
		add("serial", c.Serial)
	}
	if c.Manufacturer != "" {
		add("manufacturer", c.Manufacturer)
	}
	if c.Model != "" {
		add("model", c.Model)
	}
	if c.HasSlotID {
		add("slot-id", strconv.FormatUint(uint64(c.SlotID), 10))
	}
	add("object", c.Object)
	q := []string{"module-path=" + escapeAttr(c.ModulePath)}
	if c.PINSource != "" {
		q = append(q, "pin-source="+escapeAttr(c.PINSource))
	}
	if c.hasPINValue {
		q = append(q, "pin-value=REDACTED")
	}
	q = append(q, "wrap-mechanism="+c.Mechanism.name)
	if c.MaxSessions != DefaultMaxSessions {
		q = append(q, "max-sessions="+strconv.Itoa(c.MaxSessions))
	}
	return "pkcs11:" + strings.Join(path, ";") + "?" + strings.Join(q, "&")
}

// escapeAttr percent-encodes everything outside RFC 7512's unreserved
// set and the few characters it allows unescaped in values.
func escapeAttr(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		ch := v[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			ch == '-', ch == '.', ch == '_', ch == '~', ch == '/', ch == ':':
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}
