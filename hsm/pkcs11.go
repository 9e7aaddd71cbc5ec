//go:build cgo && !nopkcs11

package hsm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// kekKeyLen is the KEK size: AES-256.
const kekKeyLen = 32

// auditKeyLen is the HMAC-SHA256 audit key size (RFC 2104: at least the
// hash output length).
const auditKeyLen = 32

// CKA_ID layout of a KEK object, written by RotateKEK and RetireKEK:
//
//	byte 0      layout version (1)
//	bytes 1-4   KEK version, big-endian
//	bytes 5-12  creation time, Unix seconds, big-endian
//	bytes 13-20 retirement time, Unix seconds, big-endian (only once retired)
//
// The label carries the version too ("<object>-v<N>"); the two must agree.
// Times live here rather than in CKA_START_DATE/CKA_END_DATE because
// SoftHSM2 2.6 fails C_GetAttributeValue on date attributes, and dates
// have only day precision anyway.
const (
	kekIDLayout     = 1
	kekIDLen        = 13
	kekIDRetiredLen = 21
)

func encodeKEKID(version uint32, created, retired time.Time) []byte {
	id := make([]byte, kekIDLen, kekIDRetiredLen)
	id[0] = kekIDLayout
	binary.BigEndian.PutUint32(id[1:5], version)
	binary.BigEndian.PutUint64(id[5:13], uint64(created.Unix()))
	if !retired.IsZero() {
		id = binary.BigEndian.AppendUint64(id, uint64(retired.Unix()))
	}
	return id
}

// decodeKEKID parses a CKA_ID written by encodeKEKID.
func decodeKEKID(id []byte) (version uint32, created, retired time.Time, ok bool) {
	if (len(id) != kekIDLen && len(id) != kekIDRetiredLen) || id[0] != kekIDLayout {
		return 0, time.Time{}, time.Time{}, false
	}
	version = binary.BigEndian.Uint32(id[1:5])
	created = time.Unix(int64(binary.BigEndian.Uint64(id[5:13])), 0).UTC()
	if len(id) == kekIDRetiredLen {
		retired = time.Unix(int64(binary.BigEndian.Uint64(id[13:21])), 0).UTC()
	}
	return version, created, retired, true
}

// parseKEKLabel returns N from "<object>-v<N>".
func parseKEKLabel(object, label string) (uint32, bool) {
	digits, ok := strings.CutPrefix(label, object+"-v")
	if !ok || digits == "" || digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint32(n), true
}

func kekLabel(object string, v uint32) string { return fmt.Sprintf("%s-v%d", object, v) }

// p11KEK is one KEK version found on the token.
type p11KEK struct {
	version uint32
	label   string
	// handles are the usable objects with this label: one, normally.
	// Two sidecars rotating at the same moment can each create the same
	// version; both objects are kept, Unwrap tries each (the RFC 5649
	// integrity check tells which one wrapped a key), and Wrap refuses
	// the version until a later rotation moves past it, so nothing
	// wrapped under either object is ever lost.
	handles []pkcs11.ObjectHandle
	created time.Time
	retired time.Time
	// unusable says why objects with this label were refused (one is
	// extractable, not AES-256, or has a CKA_ID for another version).
	unusable string
}

func (k *p11KEK) duplicated() bool { return len(k.handles) > 1 }

// pkcs11Provider keeps KEKs as non-extractable AES-256 objects on a token.
type pkcs11Provider struct {
	cfg  pkcs11Config
	mod  *module
	pin  string // kept to log in again after the token or library restarts
	log  *slog.Logger
	mech []*pkcs11.Mechanism
	pool sessionPool

	// stateMu guards what is cached about the token, valid for module
	// generation stateGen only.
	stateMu   sync.Mutex
	stateGen  uint64
	slot      uint
	token     string // label of the token found
	scanned   bool
	keks      map[uint32]*p11KEK
	current   uint32
	audit     pkcs11.ObjectHandle
	haveAudit bool
	// records are the record MAC keys, smallest CKA_ID first: new MACs
	// use the first, verification accepts any (see secretKeys).
	records     []pkcs11.ObjectHandle
	haveRecords bool
	// signPriv and signPub are the backup signing key pair.
	signPriv, signPubH pkcs11.ObjectHandle
	signPub            *ecdsa.PublicKey
	haveSign           bool

	rotateMu sync.Mutex
	closed   atomic.Bool
}

// openPKCS11 loads the module, finds the token, logs in and finds (or,
// with opts.Create, generates) the KEK versions.
func openPKCS11(ctx context.Context, cfg pkcs11Config, opts Options, log *slog.Logger) (Provider, error) {
	prefix := fmt.Sprintf("hsm: pkcs11: open (module %q, token %q)", cfg.ModulePath, cfg.Token)
	pin := opts.PIN
	switch {
	case pin != "":
	case cfg.PINSource != "":
		var err error
		if pin, err = readPINFile(cfg.PINSource); err != nil {
			return nil, err
		}
	case cfg.hasPINValue:
		pin = cfg.pinValue
		log.Warn("hsm: pkcs11 URI carries the PIN in pin-value; anyone who can read the configuration or the process environment can read it. Use SIDECRYPT_HSM_PIN (or _FILE) or pin-source instead",
			"module", cfg.ModulePath, "token", cfg.Token)
	default:
		return nil, fmt.Errorf("%s: no PIN: set SIDECRYPT_HSM_PIN or the URI's pin-source: %w", prefix, ErrConfig)
	}
	if _, err := os.Stat(cfg.ModulePath); err != nil {
		return nil, fmt.Errorf("%s: %w: module file: %v", prefix, ErrUnavailable, err)
	}
	mod, err := acquireModule(cfg.ModulePath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix, err)
	}
	p := &pkcs11Provider{
		cfg:  cfg,
		mod:  mod,
		pin:  pin,
		log:  log,
		mech: []*pkcs11.Mechanism{pkcs11.NewMechanism(cfg.Mechanism.code, nil)},
		pool: newSessionPool(cfg.MaxSessions),
	}
	err = p.do(ctx, "open", func(s *session) error {
		if err := p.checkMechanism(); err != nil {
			return err
		}
		p.stateMu.Lock()
		defer p.stateMu.Unlock()
		if err := p.scan(s); err != nil {
			return err
		}
		if len(p.keks) == 0 {
			if !opts.Create {
				return fmt.Errorf("%w: %w: the token has no KEK labelled %q", ErrUnavailable, ErrNoKEK, kekLabel(cfg.Object, 1))
			}
			if _, err := p.generateKEK(s, 1); err != nil {
				return err
			}
			log.Info("hsm: pkcs11 provider generated the first KEK version", "token", p.token, "label", kekLabel(cfg.Object, 1))
		}
		if k := p.keks[p.current]; len(k.handles) == 0 {
			return fmt.Errorf("%w: current KEK %q: %s", ErrUnavailable, k.label, k.unusable)
		}
		return nil
	})
	if err != nil {
		p.Close()
		return nil, err
	}
	log.Info("hsm: pkcs11 provider ready", "module", cfg.ModulePath, "token", p.token, "object", cfg.Object,
		"kek_version", p.current, "wrap_mechanism", cfg.Mechanism.name, "max_sessions", cfg.MaxSessions)
	return p, nil
}

// checkMechanism fails early, with a message that says what to change,
// when the token lacks the configured wrap mechanism.
func (p *pkcs11Provider) checkMechanism() error {
	info, err := p.mod.ctx.GetMechanismInfo(p.slot, p.mech)
	if isRV(err, pkcs11.CKR_MECHANISM_INVALID) {
		return fmt.Errorf("%w: the token does not support wrap-mechanism=%s (mechanism 0x%X); see docs/KEK.md for vendor mechanism codes", ErrConfig, p.cfg.Mechanism.name, p.cfg.Mechanism.code)
	}
	if err != nil {
		return err
	}
	if info.Flags&(pkcs11.CKF_WRAP|pkcs11.CKF_UNWRAP) != pkcs11.CKF_WRAP|pkcs11.CKF_UNWRAP {
		return fmt.Errorf("%w: the token's mechanism 0x%X (wrap-mechanism=%s) does not allow both wrap and unwrap", ErrConfig, p.cfg.Mechanism.code, p.cfg.Mechanism.name)
	}
	return nil
}

// do runs fn on a pooled, logged-in session, and recovers once from a
// lost session, a restarted library or removed device, or a stale object
// handle. Every error it returns wraps a sentinel and names op and the
// token.
func (p *pkcs11Provider) do(ctx context.Context, op string, fn func(s *session) error) error {
	if p.closed.Load() {
		return p.fail(op, fmt.Errorf("%w: provider is closed", ErrUnavailable))
	}
	var err error
	fresh := false
	// Each kind of trouble is recovered from once; they can come in a
	// row (a logout closes the sessions and also invalidates the handles
	// of private objects).
	retried := map[errClass]int{}
	for {
		var gen uint64
		gen, err = p.attempt(ctx, fresh, fn)
		class := classify(err)
		if class == classOK {
			return nil
		}
		limit := 1
		if class == classTransient {
			limit = 3
		}
		if class == classFinal || retried[class] >= limit {
			return p.fail(op, err)
		}
		retried[class]++
		switch class {
		case classTransient:
			// A file store mid-write settles within milliseconds.
			time.Sleep(time.Duration(retried[class]*retried[class]) * 2 * time.Millisecond)
		case classSession:
			// The likely causes (C_CloseAllSessions, a logout, a token
			// reset) end every session, so retry on a new one.
			fresh = true
		case classModule:
			p.log.Warn("hsm: pkcs11 library or token went away; re-initialising", "op", op, "module", p.cfg.ModulePath, "token", p.cfg.Token, "error", err)
			if rerr := p.mod.reinit(gen); rerr != nil {
				return p.fail(op, fmt.Errorf("%w: re-initialising the module: %v (after %v)", ErrUnavailable, rerr, err))
			}
		case classHandle:
			p.forgetObjects()
		}
	}
}

// forgetObjects drops cached object handles so the next use finds the
// objects again.
func (p *pkcs11Provider) forgetObjects() {
	p.stateMu.Lock()
	p.scanned, p.haveAudit, p.haveRecords, p.haveSign = false, false, false, false
	p.stateMu.Unlock()
}

// fail prefixes err with the operation and token, and turns a bare
// PKCS#11 return value into ErrUnavailable.
func (p *pkcs11Provider) fail(op string, err error) error {
	token := p.cfg.Token
	if token == "" {
		token = p.token
	}
	var rv pkcs11.Error
	if errors.As(err, &rv) && !isSentinel(err) {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return fmt.Errorf("hsm: pkcs11: %s (token %q, module %q): %w", op, token, p.cfg.ModulePath, err)
}

// attempt runs fn once. The module's read lock is held throughout, so a
// re-initialisation waits for it and the generation cannot change under
// it.
func (p *pkcs11Provider) attempt(ctx context.Context, fresh bool, fn func(s *session) error) (uint64, error) {
	m := p.mod
	m.mu.RLock()
	defer m.mu.RUnlock()
	gen := m.gen
	if !m.initialized {
		return gen, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)
	}
	if err := p.syncState(gen); err != nil {
		return gen, err
	}
	if err := p.pool.acquire(ctx); err != nil {
		return gen, err
	}
	var s *session
	if !fresh {
		s = p.pool.popIdle(gen)
	}
	if s == nil {
		var err error
		if s, err = p.openSession(gen); err != nil {
			p.pool.releaseSlot()
			return gen, err
		}
	}
	err := fn(s)
	switch classify(err) {
	case classSession, classModule:
		// The handle is dead; do not close it (its number may be reused).
	default:
		if s.tainted {
			_ = m.ctx.CloseSession(s.h)
		} else {
			p.pool.pushIdle(s)
		}
	}
	p.pool.releaseSlot()
	return gen, err
}

// syncState finds the token again after the library was (re)initialised:
// slot numbers and object handles do not survive C_Finalize.
func (p *pkcs11Provider) syncState(gen uint64) error {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if p.stateGen == gen {
		return nil
	}
	slot, label, err := p.findToken()
	if err != nil {
		return err
	}
	p.slot, p.token, p.stateGen = slot, label, gen
	p.scanned, p.haveAudit, p.haveRecords, p.haveSign, p.keks = false, false, false, false, nil
	return nil
}

// findToken returns the one slot whose token matches the URI.
func (p *pkcs11Provider) findToken() (uint, string, error) {
	c := p.mod.ctx
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, "", err
	}
	type match struct {
		slot uint
		info pkcs11.TokenInfo
	}
	var found []match
	var present []string
	for _, slot := range slots {
		info, err := c.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		present = append(present, info.Label)
		if p.cfg.HasSlotID && slot != p.cfg.SlotID ||
			p.cfg.Token != "" && info.Label != p.cfg.Token ||
			p.cfg.Serial != "" && info.SerialNumber != p.cfg.Serial ||
			p.cfg.Manufacturer != "" && info.ManufacturerID != p.cfg.Manufacturer ||
			p.cfg.Model != "" && info.Model != p.cfg.Model {
			continue
		}
		found = append(found, match{slot, info})
	}
	switch {
	case len(found) == 0:
		return 0, "", fmt.Errorf("%w: no token matches %s in module %q (tokens present: %q)", ErrUnavailable, p.selector(), p.cfg.ModulePath, present)
	case len(found) > 1:
		return 0, "", fmt.Errorf("%w: %d tokens match %s; add serial= or slot-id= to the URI", ErrConfig, len(found), p.selector())
	}
	info := found[0].info
	switch {
	case info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0:
		return 0, "", fmt.Errorf("%w: token %q is not initialised", ErrUnavailable, info.Label)
	case info.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0:
		return 0, "", fmt.Errorf("%w: token %q: the user PIN is locked after too many wrong PINs; the token's security officer must unlock it", ErrUnavailable, info.Label)
	}
	return found[0].slot, info.Label, nil
}

func (p *pkcs11Provider) selector() string {
	var parts []string
	if p.cfg.Token != "" {
		parts = append(parts, "token="+strconv.Quote(p.cfg.Token))
	}
	if p.cfg.Serial != "" {
		parts = append(parts, "serial="+strconv.Quote(p.cfg.Serial))
	}
	if p.cfg.Manufacturer != "" {
		parts = append(parts, "manufacturer="+strconv.Quote(p.cfg.Manufacturer))
	}
	if p.cfg.Model != "" {
		parts = append(parts, "model="+strconv.Quote(p.cfg.Model))
	}
	if p.cfg.HasSlotID {
		parts = append(parts, fmt.Sprintf("slot-id=%d", p.cfg.SlotID))
	}
	return strings.Join(parts, " ")
}

// openSession opens a read-write session and logs in when the token is
// not logged in yet. Login state belongs to the application and token,
// not the session: only the first session logs in, and a session opened
// after every other one was closed logs in again.
func (p *pkcs11Provider) openSession(gen uint64) (*session, error) {
	c := p.mod.ctx
	h, err := c.OpenSession(p.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, err
	}
	info, err := c.GetSessionInfo(h)
	if err != nil {
		_ = c.CloseSession(h)
		return nil, err
	}
	if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
		err := c.Login(h, pkcs11.CKU_USER, p.pin)
		if err != nil && !isRV(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
			_ = c.CloseSession(h)
			return nil, loginError(p.token, err)
		}
		// The login had been lost (every session closed): tokens may
		// renumber private objects on the new login.
		p.forgetObjects()
	}
	return &session{h: h, gen: gen}, nil
}

// loginError explains a failed C_Login without the PIN.
func loginError(token string, err error) error {
	switch {
	case isRV(err, pkcs11.CKR_PIN_INCORRECT):
		return fmt.Errorf("%w: login to token %q failed: wrong PIN (CKR_PIN_INCORRECT); tokens lock the PIN after a few failures, check SIDECRYPT_HSM_PIN before retrying", ErrUnavailable, token)
	case isRV(err, pkcs11.CKR_PIN_LOCKED):
		return fmt.Errorf("%w: token %q: the user PIN is locked after too many wrong PINs (CKR_PIN_LOCKED); the token's security officer must unlock it", ErrUnavailable, token)
	case isRV(err, pkcs11.CKR_PIN_EXPIRED):
		return fmt.Errorf("%w: token %q: the user PIN has expired (CKR_PIN_EXPIRED); set a new one with the vendor's tools", ErrUnavailable, token)
	case isRV(err, pkcs11.CKR_PIN_LEN_RANGE), isRV(err, pkcs11.CKR_PIN_INVALID):
		return fmt.Errorf("%w: token %q rejects the PIN's length or characters", ErrUnavailable, token)
	case classify(err) != classFinal:
		return err // let do() recover
	}
	return fmt.Errorf("%w: login to token %q: %v", ErrUnavailable, token, err)
}

// findObjects returns every object matching tmpl.
func (p *pkcs11Provider) findObjects(s *session, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	c := p.mod.ctx
	if err := c.FindObjectsInit(s.h, tmpl); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := c.FindObjects(s.h, 64)
		if err != nil {
			_ = c.FindObjectsFinal(s.h)
			return nil, err
		}
		all = append(all, hs...)
		if len(hs) < 64 {
			break
		}
	}
	return all, c.FindObjectsFinal(s.h)
}

func attrBool(a *pkcs11.Attribute) bool { return len(a.Value) > 0 && a.Value[0] != 0 }

// attrUlong decodes a CK_ULONG, which the library returns in host order.
func attrUlong(a *pkcs11.Attribute) uint64 {
	switch len(a.Value) {
	case 8:
		return binary.NativeEndian.Uint64(a.Value)
	case 4:
		return uint64(binary.NativeEndian.Uint32(a.Value))
	}
	return 0
}

// scan lists the KEK versions on the token. Called with stateMu held.
func (p *pkcs11Provider) scan(s *session) error {
	c := p.mod.ctx
	hs, err := p.findObjects(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	})
	if err != nil {
		return err
	}
	keks := map[uint32]*p11KEK{}
	var current uint32
	for _, h := range hs {
		attrs, err := c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		})
		if classify(err) == classHandle {
			continue // deleted since FindObjects
		}
		if err != nil {
			return err
		}
		label := string(attrs[0].Value)
		v, ok := parseKEKLabel(p.cfg.Object, label)
		if !ok {
			continue
		}
		k := keks[v]
		if k == nil {
			k = &p11KEK{version: v, label: label}
			keks[v] = k
			current = max(current, v)
		}
		var created, retired time.Time
		unusable := ""
		if idv, cr, rt, ok := decodeKEKID(attrs[1].Value); ok && idv == v {
			created, retired = cr, rt
		} else if len(attrs[1].Value) > 0 {
			unusable = "its CKA_ID does not encode the version in its label"
		}
		if !attrBool(attrs[2]) && retired.IsZero() {
			// Retired by another tool, or by a token that kept no time.
			retired = time.Unix(0, 0).UTC()
		}
		switch {
		case !attrBool(attrs[3]) || attrBool(attrs[4]):
			unusable = "it is not CKA_SENSITIVE or is CKA_EXTRACTABLE, so its value could leave the token; sidecrypt refuses to use it"
		case attrUlong(attrs[5]) != kekKeyLen:
			unusable = fmt.Sprintf("it is a %d-byte AES key; KEKs are AES-256", attrUlong(attrs[5]))
		}
		if unusable != "" {
			k.unusable = unusable
			continue
		}
		k.handles = append(k.handles, h)
		if k.created.IsZero() || !created.IsZero() && created.Before(k.created) {
			k.created = created
		}
		if !retired.IsZero() && (k.retired.IsZero() || retired.Before(k.retired)) {
			k.retired = retired
		}
	}
	for _, k := range keks {
		if len(k.handles) > 0 {
			k.unusable = "" // the refused object is ignored; a good one exists
		}
	}
	p.keks, p.current, p.scanned = keks, current, true
	return nil
}

// kekTemplate lists the attributes of a KEK: a private AES-256 token
// object that never leaves the token in any form (sensitive, not
// extractable), usable only to wrap and unwrap keys. Encrypt, decrypt,
// sign and verify are off so the KEK cannot be turned into an oracle for
// anything but key wrapping.
func kekTemplate(label string, id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, kekKeyLen),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, true), // RetireKEK clears CKA_WRAP/CKA_UNWRAP
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// generateKEK makes version v inside the token. Called with stateMu held.
func (p *pkcs11Provider) generateKEK(s *session, v uint32) (*p11KEK, error) {
	now := time.Now().UTC().Truncate(time.Second)
	label := kekLabel(p.cfg.Object, v)
	h, err := p.mod.ctx.GenerateKey(s.h,
		[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
		kekTemplate(label, encodeKEKID(v, now, time.Time{})))
	if err != nil {
		return nil, err
	}
	k := &p11KEK{version: v, handles: []pkcs11.ObjectHandle{h}, label: label, created: now}
	if p.keks == nil {
		p.keks = map[uint32]*p11KEK{}
	}
	p.keks[v] = k
	p.current = max(p.current, v)
	return k, nil
}

// kek returns a usable KEK version, rescanning the token once when the
// version is unknown (another sidecar may have rotated).
func (p *pkcs11Provider) kek(s *session, v uint32) (p11KEK, error) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if !p.scanned || p.keks[v] == nil {
		if err := p.scan(s); err != nil {
			return p11KEK{}, err
		}
	}
	k := p.keks[v]
	switch {
	case k == nil:
		return p11KEK{}, fmt.Errorf("%w: v%d", ErrUnknownKEK, v)
	case len(k.handles) == 0:
		return p11KEK{}, fmt.Errorf("%w: KEK %q: %s", ErrUnavailable, k.label, k.unusable)
	case !k.retired.IsZero():
		return p11KEK{}, fmt.Errorf("%w: v%d", ErrKEKRetired, v)
	}
	return *k, nil
}

// wrapKEK returns the current KEK for wrapping. A current version that
// exists twice (a rotation collided) is rescanned once, since the
// colliding rotation moves on to the next version.
func (p *pkcs11Provider) wrapKEK(s *session) (p11KEK, error) {
	for try := 0; ; try++ {
		v, err := p.currentVersion(s)
		if err != nil {
			return p11KEK{}, err
		}
		k, err := p.kek(s, v)
		if err != nil || !k.duplicated() {
			return k, err
		}
		if try == 1 {
			return p11KEK{}, fmt.Errorf("%w: two KEK objects are labelled %q (two rotations collided); run `sidecrypt kek rotate` once more", ErrUnavailable, k.label)
		}
		p.forgetObjects()
	}
}

func (p *pkcs11Provider) currentVersion(s *session) (uint32, error) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if !p.scanned {
		if err := p.scan(s); err != nil {
			return 0, err
		}
	}
	if p.current == 0 {
		return 0, fmt.Errorf("%w: no KEK on the token", ErrUnknownKEK)
	}
	return p.current, nil
}

// Wrap wraps dek with C_WrapKey. The DEK has to become a token object for
// that: it is created as a session object (gone when the session closes),
// sensitive and extractable, wrapped, and destroyed. RFC 5649 and RFC 3394
// take no associated data, so b is not bound to the bytes (see Binding;
// the keystore's record MAC binds them).
func (p *pkcs11Provider) Wrap(ctx context.Context, dek []byte, b Binding) (Wrapped, error) {
	if err := checkDEKLen(len(dek)); err != nil {
		return Wrapped{}, p.fail("wrap", err)
	}
	var out Wrapped
	err := p.do(ctx, "wrap", func(s *session) error {
		k, err := p.wrapKEK(s)
		if err != nil {
			return err
		}
		v := k.version
		c := p.mod.ctx
		obj, err := c.CreateObject(s.h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, dek),
		})
		if err != nil {
			return err
		}
		wrapped, werr := c.WrapKey(s.h, p.mech, k.handles[0], obj)
		if derr := c.DestroyObject(s.h, obj); derr != nil {
			s.tainted = true
		}
		if isRV(werr, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED) {
			return fmt.Errorf("%w: v%d (the token refuses to wrap with it)", ErrKEKRetired, v)
		}
		if werr != nil {
			return werr
		}
		out = Wrapped{KEKVersion: v, Mechanism: p.cfg.Mechanism.algorithm, Bytes: wrapped}
		return nil
	})
	if err != nil {
		return Wrapped{}, err
	}
	return out, nil
}

// unwrapFailures are what tokens return when a wrapped key fails its
// integrity check. SoftHSM2 returns CKR_GENERAL_ERROR for a failed RFC
// 5649 check, so that code counts as tampering here: a wrapped key is
// data from the keystore, and calling it corrupt is the fail-closed
// reading.
var unwrapFailures = []uint{
	pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE,
	pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
	pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE, pkcs11.CKR_GENERAL_ERROR,
}

func isUnwrapFailure(err error) bool {
	return err != nil && slices.ContainsFunc(unwrapFailures, func(rv uint) bool { return isRV(err, rv) })
}

// Unwrap unwraps w into a session object that is not sensitive, reads its
// value and destroys it. The DEK must come out of the token: fieldcrypt
// runs AES-SIV and AES-GCM in this process, at memory speed, for every
// field; the KEK never leaves.
func (p *pkcs11Provider) Unwrap(ctx context.Context, w Wrapped, b Binding) ([]byte, error) {
	op := fmt.Sprintf("unwrap under KEK v%d", w.KEKVersion)
	if w.Mechanism != p.cfg.Mechanism.algorithm {
		return nil, p.fail(op, fmt.Errorf("%w: mechanism %q; this provider uses %q", ErrUnwrap, w.Mechanism, p.cfg.Mechanism.algorithm))
	}
	if n := len(w.Bytes); n < MinDEKLen+8 || n > MaxDEKLen+16 || n%8 != 0 {
		return nil, p.fail(op, fmt.Errorf("%w: wrapped key of %d bytes", ErrUnwrap, n))
	}
	var dek []byte
	err := p.do(ctx, op, func(s *session) error {
		k, err := p.kek(s, w.KEKVersion)
		if err != nil {
			return err
		}
		c := p.mod.ctx
		var obj pkcs11.ObjectHandle
		for _, h := range k.handles {
			for range 2 {
				obj, err = c.UnwrapKey(s.h, p.mech, h, w.Bytes, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
					pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
					pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
					pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
					pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
					pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
				})
				// SoftHSM2 answers both a failed integrity check and a
				// passing hiccup of its file store with CKR_GENERAL_ERROR:
				// look twice before calling the wrapped key corrupt.
				if !isRV(err, pkcs11.CKR_GENERAL_ERROR) {
					break
				}
			}
			if !isUnwrapFailure(err) {
				break // done, or a failure that another object would not fix
			}
		}
		switch {
		case isRV(err, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED):
			return fmt.Errorf("%w: v%d (the token refuses to unwrap with it)", ErrKEKRetired, w.KEKVersion)
		case isUnwrapFailure(err):
			return fmt.Errorf("%w (%v)", ErrUnwrap, err)
		case err != nil:
			return err
		}
		attrs, err := c.GetAttributeValue(s.h, obj, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if derr := c.DestroyObject(s.h, obj); derr != nil {
			s.tainted = true
		}
		if err != nil {
			return err
		}
		dek = attrs[0].Value
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(dek) < MinDEKLen {
		clear(dek)
		return nil, p.fail(op, fmt.Errorf("%w: unwrapped key is %d bytes", ErrUnwrap, len(dek)))
	}
	return dek, nil
}

func (p *pkcs11Provider) CurrentKEK(ctx context.Context) (uint32, error) {
	var v uint32
	err := p.do(ctx, "current KEK", func(s *session) error {
		p.stateMu.Lock()
		// Rescan: a rotation by another sidecar must become visible here,
		// since the re-wrap job compares this with each record's version.
		p.scanned = false
		p.stateMu.Unlock()
		var err error
		v, err = p.currentVersion(s)
		return err
	})
	return v, err
}

// RotateKEK generates the next version. When another sidecar generated
// the same version at the same moment (both objects exist; see p11KEK),
// it backs off and then either adopts a version the other process made
// since, or makes the next one itself.
func (p *pkcs11Provider) RotateKEK(ctx context.Context) (uint32, error) {
	p.rotateMu.Lock()
	defer p.rotateMu.Unlock()
	var v uint32
	err := p.do(ctx, "rotate KEK", func(s *session) error {
		p.stateMu.Lock()
		defer p.stateMu.Unlock()
		collided := uint32(0)
		for try := range 5 {
			if try > 0 {
				// Back off a random while: the other rotation, or ours, then
				// runs alone.
				time.Sleep(time.Duration(20+mathrand.IntN(180)) * time.Millisecond)
			}
			if err := p.scan(s); err != nil {
				return err
			}
			if k := p.keks[p.current]; collided != 0 && p.current > collided && len(k.handles) == 1 {
				v = p.current // the other process rotated past the collision
				return nil
			}
			next := p.current + 1
			if _, err := p.generateKEK(s, next); err != nil {
				return err
			}
			if err := p.scan(s); err != nil {
				return err
			}
			if k := p.keks[next]; k != nil && len(k.handles) == 1 {
				v = next
				return nil
			}
			collided = next
			p.log.Warn("hsm: another process created the same KEK version at the same moment; keeping both objects and rotating again",
				"token", p.token, "label", kekLabel(p.cfg.Object, next))
		}
		return fmt.Errorf("%w: five rotations in a row collided with another process rotating the same token", ErrUnavailable)
	})
	if err != nil {
		return 0, err
	}
	p.log.Info("hsm: pkcs11 provider rotated KEK", "token", p.token, "label", kekLabel(p.cfg.Object, v))
	return v, nil
}

// retireRefusals are what a token returns when it will not change
// CKA_WRAP/CKA_UNWRAP on an existing key.
var retireRefusals = []uint{
	pkcs11.CKR_ATTRIBUTE_READ_ONLY, pkcs11.CKR_ACTION_PROHIBITED, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID,
	pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_TEMPLATE_INCONSISTENT,
}

// RetireKEK clears CKA_WRAP and CKA_UNWRAP, so the token itself refuses
// the KEK from then on, and records the time in CKA_ID. A token that will
// not change CKA_UNWRAP gets only the CKA_ID marker, which sidecrypt
// honours but the token does not (logged as a warning).
func (p *pkcs11Provider) RetireKEK(ctx context.Context, version uint32) error {
	p.rotateMu.Lock()
	defer p.rotateMu.Unlock()
	return p.do(ctx, fmt.Sprintf("retire KEK v%d", version), func(s *session) error {
		p.stateMu.Lock()
		defer p.stateMu.Unlock()
		if err := p.scan(s); err != nil {
			return err
		}
		k := p.keks[version]
		switch {
		case k == nil:
			return fmt.Errorf("%w: v%d", ErrUnknownKEK, version)
		case version == p.current:
			return fmt.Errorf("%w: v%d is the current KEK version; rotate first", ErrInvalidArgument, version)
		case !k.retired.IsZero():
			return nil
		}
		now := time.Now().UTC().Truncate(time.Second)
		id := encodeKEKID(version, k.created, now)
		c := p.mod.ctx
		for _, h := range k.handles {
			err := c.SetAttributeValue(s.h, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
				pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			})
			if err != nil && slices.ContainsFunc(retireRefusals, func(rv uint) bool { return isRV(err, rv) }) {
				if err2 := c.SetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err2 != nil {
					return fmt.Errorf("%w: the token refuses to change KEK %q (%v, then %v)", ErrUnavailable, k.label, err, err2)
				}
				p.log.Warn("hsm: the token does not allow clearing CKA_UNWRAP; KEK is retired by its CKA_ID marker, which sidecrypt honours but other software using the token would not",
					"token", p.token, "label", k.label)
				err = nil
			}
			if err != nil {
				return err
			}
		}
		k.retired = now
		return nil
	})
}

func (p *pkcs11Provider) KEKs(ctx context.Context) ([]KEKInfo, error) {
	var out []KEKInfo
	err := p.do(ctx, "list KEKs", func(s *session) error {
		p.stateMu.Lock()
		defer p.stateMu.Unlock()
		if err := p.scan(s); err != nil {
			return err
		}
		out = out[:0]
		for v, k := range p.keks {
			state := "active"
			switch {
			case !k.retired.IsZero():
				state = "retired"
			case v == p.current:
				state = "current"
			}
			out = append(out, KEKInfo{Version: v, State: state, Created: k.created, Retired: k.retired, Label: k.label})
		}
		slices.SortFunc(out, func(a, b KEKInfo) int { return cmp.Compare(a.Version, b.Version) })
		return nil
	})
	return out, err
}

// secretKeys finds or creates the HMAC keys labelled "<object>-<suffix>":
// generic secrets that can only sign and verify and never leave the
// token. It returns them sorted by CKA_ID. If two processes race to create
// the key, both objects exist; every process uses the one with the
// smallest CKA_ID from then on, and verification accepts a MAC from any
// of them, so nothing MAC'd in the race is lost. Called with stateMu held.
func (p *pkcs11Provider) secretKeys(s *session, suffix string) ([]pkcs11.ObjectHandle, error) {
	c := p.mod.ctx
	label := p.cfg.Object + "-" + suffix
	find := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	hs, err := p.findObjects(s, find)
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		_, err := c.GenerateKey(s.h,
			[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, auditKeyLen),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
				pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
				pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
				pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
				pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
				pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
				pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
				pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			})
		if err != nil {
			return nil, err
		}
		p.log.Info("hsm: pkcs11 provider created a MAC key", "token", p.token, "label", label)
		if hs, err = p.findObjects(s, find); err != nil {
			return nil, err
		}
	}
	type keyed struct {
		h  pkcs11.ObjectHandle
		id []byte
	}
	var ks []keyed
	for _, h := range hs {
		attrs, err := c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		})
		if err != nil {
			return nil, err
		}
		if !attrBool(attrs[1]) || attrBool(attrs[2]) {
			return nil, fmt.Errorf("%w: MAC key %q is extractable or not sensitive; sidecrypt refuses to use it", ErrUnavailable, label)
		}
		ks = append(ks, keyed{h, attrs[0].Value})
	}
	slices.SortFunc(ks, func(a, b keyed) int { return bytes.Compare(a.id, b.id) })
	out := make([]pkcs11.ObjectHandle, len(ks))
	for i, k := range ks {
		out[i] = k.h
	}
	return out, nil
}

// auditKey returns the audit HMAC key "<object>-audit". Called with
// stateMu held.
func (p *pkcs11Provider) auditKey(s *session) (pkcs11.ObjectHandle, error) {
	if p.haveAudit {
		return p.audit, nil
	}
	hs, err := p.secretKeys(s, "audit")
	if err != nil {
		return 0, err
	}
	p.audit, p.haveAudit = hs[0], true
	return hs[0], nil
}

// recordKeys returns the record MAC keys "<object>-records". Called with
// stateMu held.
func (p *pkcs11Provider) recordKeys(s *session) ([]pkcs11.ObjectHandle, error) {
	if p.haveRecords {
		return p.records, nil
	}
	hs, err := p.secretKeys(s, "records")
	if err != nil {
		return nil, err
	}
	p.records, p.haveRecords = hs, true
	return hs, nil
}

func (p *pkcs11Provider) RecordMAC(ctx context.Context, msg []byte) ([]byte, error) {
	var mac []byte
	err := p.do(ctx, "record MAC", func(s *session) error {
		p.stateMu.Lock()
		hs, err := p.recordKeys(s)
		p.stateMu.Unlock()
		if err != nil {
			return err
		}
		c := p.mod.ctx
		if err := c.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, hs[0]); err != nil {
			return err
		}
		mac, err = c.Sign(s.h, msg)
		return err
	})
	return mac, err
}

// VerifyRecordMAC checks mac with C_Verify under each record key (one,
// unless two processes created it at once).
func (p *pkcs11Provider) VerifyRecordMAC(ctx context.Context, msg, mac []byte) error {
	if len(mac) != RecordMACSize {
		return p.fail("verify record MAC", fmt.Errorf("%w: MAC of %d bytes", ErrRecordMAC, len(mac)))
	}
	return p.do(ctx, "verify record MAC", func(s *session) error {
		p.stateMu.Lock()
		hs, err := p.recordKeys(s)
		p.stateMu.Unlock()
		if err != nil {
			return err
		}
		c := p.mod.ctx
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}
		for _, h := range hs {
			if err := c.VerifyInit(s.h, mech, h); err != nil {
				return err
			}
			err := c.Verify(s.h, msg, mac)
			if err == nil {
				return nil
			}
			if !isRV(err, pkcs11.CKR_SIGNATURE_INVALID) && !isRV(err, pkcs11.CKR_SIGNATURE_LEN_RANGE) {
				return err
			}
		}
		return ErrRecordMAC
	})
}

// oidP256 is the DER encoding of the P-256 curve's OID (1.2.840.10045.3.1.7),
// the CKA_EC_PARAMS of the backup signing key.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// signingKey finds or generates the backup signing key pair
// "<object>-backup-signing" (ECDSA P-256, the private half sensitive and
// not extractable). As with secretKeys, a race that creates two pairs
// settles on the one with the smallest CKA_ID. Called with stateMu held.
func (p *pkcs11Provider) signingKey(s *session) error {
	if p.haveSign {
		return nil
	}
	c := p.mod.ctx
	label := p.cfg.Object + "-backup-signing"
	find := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	hs, err := p.findObjects(s, find)
	if err != nil {
		return err
	}
	if len(hs) == 0 {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		_, _, err := c.GenerateKeyPair(s.h,
			[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
				pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
				pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
				pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
				pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
				pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
				pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
				pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
				pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
				pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			})
		if err != nil {
			return err
		}
		p.log.Info("hsm: pkcs11 provider created the backup signing key", "token", p.token, "label", label)
		if hs, err = p.findObjects(s, find); err != nil {
			return err
		}
	}
	var best pkcs11.ObjectHandle
	var bestID []byte
	for i, h := range hs {
		attrs, err := c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		})
		if err != nil {
			return err
		}
		if !attrBool(attrs[1]) || attrBool(attrs[2]) {
			return fmt.Errorf("%w: backup signing key %q is extractable or not sensitive; sidecrypt refuses to use it", ErrUnavailable, label)
		}
		if i == 0 || bytes.Compare(attrs[0].Value, bestID) < 0 {
			best, bestID = h, attrs[0].Value
		}
	}
	pubs, err := p.findObjects(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, bestID),
	})
	if err != nil {
		return err
	}
	if len(pubs) != 1 {
		return fmt.Errorf("%w: backup signing key %q: %d public keys with its CKA_ID; want 1", ErrUnavailable, label, len(pubs))
	}
	attrs, err := c.GetAttributeValue(s.h, pubs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return err
	}
	pub, err := parseECPoint(attrs[0].Value)
	if err != nil {
		return fmt.Errorf("%w: backup signing key %q: %v", ErrUnavailable, label, err)
	}
	p.signPriv, p.signPubH, p.signPub, p.haveSign = best, pubs[0], pub, true
	return nil
}

// parseECPoint reads a P-256 CKA_EC_POINT: PKCS#11 says it is the DER
// OCTET STRING around the uncompressed point (0x04 || X || Y); some
// tokens return the bare point.
func parseECPoint(v []byte) (*ecdsa.PublicKey, error) {
	if len(v) == 67 && v[0] == 0x04 && v[1] == 65 {
		v = v[2:]
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), v)
}

func (p *pkcs11Provider) BackupPublicKey(ctx context.Context) (*ecdsa.PublicKey, error) {
	var pub *ecdsa.PublicKey
	err := p.do(ctx, "backup public key", func(s *session) error {
		p.stateMu.Lock()
		defer p.stateMu.Unlock()
		if err := p.signingKey(s); err != nil {
			return err
		}
		cp := *p.signPub
		pub = &cp
		return nil
	})
	return pub, err
}

// SignBackup signs with CKM_ECDSA (the digest is computed outside the
// token, so any token with plain ECDSA will do), and checks the signature
// against the public key before returning it: a signature that would not
// verify at restore is better found now.
func (p *pkcs11Provider) SignBackup(ctx context.Context, digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, p.fail("sign backup", fmt.Errorf("%w: digest of %d bytes; want a SHA-256 digest", ErrInvalidArgument, len(digest)))
	}
	var sig []byte
	err := p.do(ctx, "sign backup", func(s *session) error {
		p.stateMu.Lock()
		err := p.signingKey(s)
		priv, pub := p.signPriv, p.signPub
		p.stateMu.Unlock()
		if err != nil {
			return err
		}
		c := p.mod.ctx
		if err := c.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, priv); err != nil {
			return err
		}
		if sig, err = c.Sign(s.h, digest); err != nil {
			return err
		}
		if len(sig) != BackupSignatureSize || !verifyP1363(pub, digest, sig) {
			return fmt.Errorf("%w: the token's ECDSA signature does not verify under its public key", ErrUnavailable)
		}
		return nil
	})
	return sig, err
}

func (p *pkcs11Provider) AuditMAC(ctx context.Context, msg []byte) ([]byte, error) {
	var mac []byte
	err := p.do(ctx, "audit MAC", func(s *session) error {
		p.stateMu.Lock()
		h, err := p.auditKey(s)
		p.stateMu.Unlock()
		if err != nil {
			return err
		}
		c := p.mod.ctx
		if err := c.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, h); err != nil {
			return err
		}
		mac, err = c.Sign(s.h, msg)
		return err
	})
	return mac, err
}

func (p *pkcs11Provider) Ping(ctx context.Context) error {
	return p.do(ctx, "ping", func(s *session) error {
		info, err := p.mod.ctx.GetSessionInfo(s.h)
		if err != nil {
			return err
		}
		if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
			return pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
		}
		_, err = p.mod.ctx.GetTokenInfo(p.slot)
		return err
	})
}

func (p *pkcs11Provider) Describe() Description {
	d := Description{Kind: "pkcs11", Module: p.cfg.ModulePath, Token: p.cfg.Token, Object: p.cfg.Object}
	if d.Token == "" {
		p.stateMu.Lock()
		d.Token = p.token
		p.stateMu.Unlock()
	}
	if p.cfg.hasPINValue {
		d.Warning = "the PIN is in the configuration URI (pin-value); prefer SIDECRYPT_HSM_PIN or pin-source"
	}
	return d
}

// Close waits for operations in flight, closes the pool's sessions and
// releases the module (finalising it when this was its last user).
func (p *pkcs11Provider) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(p.pool.done)
	for range cap(p.pool.sem) {
		p.pool.sem <- struct{}{}
	}
	m := p.mod
	m.mu.RLock()
	for _, s := range p.pool.takeAllIdle() {
		if m.initialized && s.gen == m.gen {
			_ = m.ctx.CloseSession(s.h)
		}
	}
	m.mu.RUnlock()
	m.release()
	return nil
}

var _ Provider = (*pkcs11Provider)(nil)
