package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"
)

// Domain separation: every MAC computed for the audit log starts with one
// of these, so that no MAC of one kind can stand in for another (an entry
// MAC for a checkpoint signature, an epoch key for either).
const (
	entryContext = "sidecrypt audit entry v2\n"
	epochContext = "sidecrypt audit epoch key v2\n"
	headContext  = "sidecrypt audit head v2\n"
)

const (
	// formatV2 is the keyed chain (this version); formatV1 the hash chain
	// with MAC'd checkpoints that sidecrypt wrote before it.
	formatV1 = 1
	formatV2 = 2
	// macTextLen is an HMAC-SHA256 in unpadded base64url.
	macTextLen = 43
	// macSuffixLen is len(`,"mac":"` + 43 characters + `"}`).
	macSuffixLen = 8 + macTextLen + 2
	// epochIDLen is 12 random bytes in unpadded base64url: 96 bits make
	// two processes picking the same epoch id negligible.
	epochIDLen = 16
)

var v2Prefix = []byte(`{"v":2,`)

// Entry is one parsed line of either format.
type Entry struct {
	Seq uint64 `json:"seq"`
	Event
	// Format is 2 for a keyed-chain line, 1 for a line of the older hash
	// chain.
	Format int `json:"format"`
	// Epoch names the key that MACs a version 2 line (see doc.go).
	Epoch string `json:"epoch,omitempty"`
	// Prev links to the line before: its MAC (version 2) or hash
	// (version 1).
	Prev string `json:"prev"`
	Hash string `json:"hash,omitempty"` // version 1 only
	MAC  string `json:"mac,omitempty"`  // version 2 only
}

// link is what the next line's prev must name.
func (e *Entry) link() string {
	if e.Format == formatV2 {
		return e.MAC
	}
	return e.Hash
}

// lineV2 is the on-disk field order of a version 2 line, up to (not
// including) its MAC, which encodeLine appends.
type lineV2 struct {
	V       int               `json:"v"`
	Seq     uint64            `json:"seq"`
	Time    string            `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	Key     string            `json:"key,omitempty"`
	Version uint32            `json:"version,omitempty"`
	Rules   string            `json:"rules,omitempty"`
	Outcome string            `json:"outcome"`
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	Epoch   string            `json:"epoch"`
	Prev    string            `json:"prev"`
}

// entryMAC is HMAC-SHA256 under an epoch key of the line's bytes up to
// its MAC field. Those bytes include prev, the MAC of the line before, so
// each MAC covers the whole chain before it.
func entryMAC(key, body []byte) []byte {
	return entryMACWith(hmac.New(sha256.New, key), body)
}

// entryMACWith computes entryMAC with m, an HMAC under the epoch key that
// the writer keeps for the epoch (a new one per line costs more than the
// MAC itself).
func entryMACWith(m hash.Hash, body []byte) []byte {
	m.Reset()
	m.Write([]byte(entryContext))
	m.Write(body)
	return m.Sum(nil)
}

// encodeLine renders one event as a version 2 line ending in its MAC and
// "\n", and returns the MAC's text (the next line's prev).
func encodeLine(seq uint64, e Event, epoch string, key []byte, prev string) (b []byte, mac string, err error) {
	return encodeLineWith(seq, e, epoch, hmac.New(sha256.New, key), prev)
}

// encodeLineWith is encodeLine with the epoch's HMAC (see entryMACWith).
func encodeLineWith(seq uint64, e Event, epoch string, m hash.Hash, prev string) (b []byte, mac string, err error) {
	body, err := json.Marshal(lineV2{
		V: formatV2, Seq: seq, Time: e.Time.UTC().Format(time.RFC3339Nano), Actor: e.Actor, Action: e.Action,
		Key: e.Key, Version: e.Version, Rules: e.Rules, Outcome: e.Outcome, Reason: e.Reason,
		Details: e.Details, Epoch: epoch, Prev: prev,
	})
	if err != nil {
		return nil, "", fmt.Errorf("audit: encode: %w", err)
	}
	mac = base64.RawURLEncoding.EncodeToString(entryMACWith(m, body))
	out := make([]byte, 0, len(body)+macSuffixLen+1)
	out = append(out, body[:len(body)-1]...)
	out = append(out, `,"mac":"`...)
	out = append(out, mac...)
	out = append(out, "\"}\n"...)
	return out, mac, nil
}

// parsed is a line with what is needed to authenticate it.
type parsed struct {
	Entry
	// body is what the MAC covers (version 2).
	body []byte
}

// parseLine parses one line (without its newline) of either format. A
// version 1 line's hash is checked here (it needs no key); a version 2
// line's MAC is checked by authenticate, which has the keys.
func parseLine(b []byte) (parsed, error) {
	if bytes.HasPrefix(b, v2Prefix) {
		return parseV2(b)
	}
	e, err := parseV1(b)
	return parsed{Entry: e}, err
}

func parseV2(b []byte) (parsed, error) {
	var p parsed
	if len(b) < macSuffixLen+len(v2Prefix) || !bytes.HasPrefix(b[len(b)-macSuffixLen:], []byte(`,"mac":"`)) || !bytes.HasSuffix(b, []byte(`"}`)) {
		return p, errors.New("line does not end with its MAC field")
	}
	var l struct {
		lineV2
		MAC string `json:"mac"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return p, fmt.Errorf("not a valid audit line: %w", err)
	}
	if dec.More() {
		return p, errors.New("not a valid audit line: data after the object")
	}
	if l.V != formatV2 || len(l.MAC) != macTextLen {
		return p, errors.New("not a valid version 2 audit line")
	}
	if len(l.Epoch) != epochIDLen {
		return p, errors.New("not a valid version 2 audit line: bad epoch")
	}
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return p, fmt.Errorf("bad time: %w", err)
	}
	body := make([]byte, 0, len(b)-macSuffixLen+1)
	body = append(body, b[:len(b)-macSuffixLen]...)
	body = append(body, '}')
	p = parsed{
		Entry: Entry{
			Seq: l.Seq, Format: formatV2, Epoch: l.Epoch, Prev: l.Prev, MAC: l.MAC,
			Event: Event{Time: t, Actor: l.Actor, Action: l.Action, Key: l.Key, Version: l.Version,
				Rules: l.Rules, Outcome: l.Outcome, Reason: l.Reason, Details: l.Details},
		},
		body: body,
	}
	return p, nil
}

// newEpochID returns a fresh random epoch name.
func newEpochID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("audit: epoch id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// keyring derives and caches epoch keys: HMAC-SHA256 under the HSM's
// audit key of the epoch's name. The keys exist only in memory; anyone
// who wants one must ask the HSM.
type keyring struct {
	signer Signer
	mu     sync.Mutex
	keys   map[string][]byte
}

// maxCachedEpochs bounds the cache; a verifier meets one epoch per
// process that wrote and per EpochEvery, far fewer in practice.
const maxCachedEpochs = 4096

func newKeyring(s Signer) *keyring { return &keyring{signer: s, keys: map[string][]byte{}} }

func (k *keyring) key(ctx context.Context, epoch string) ([]byte, error) {
	k.mu.Lock()
	key, ok := k.keys[epoch]
	k.mu.Unlock()
	if ok {
		return key, nil
	}
	key, err := k.signer.AuditMAC(ctx, []byte(epochContext+epoch))
	if err != nil {
		return nil, &hsmError{fmt.Errorf("audit: derive the key of epoch %s with the HSM: %w", epoch, err)}
	}
	k.mu.Lock()
	if len(k.keys) >= maxCachedEpochs {
		k.zeroLocked()
	}
	k.keys[epoch] = key
	k.mu.Unlock()
	return key, nil
}

// forget drops one epoch's key.
func (k *keyring) forget(epoch string) {
	k.mu.Lock()
	if key, ok := k.keys[epoch]; ok {
		clear(key)
		delete(k.keys, epoch)
	}
	k.mu.Unlock()
}

// zero forgets every key.
func (k *keyring) zero() {
	k.mu.Lock()
	k.zeroLocked()
	k.mu.Unlock()
}

func (k *keyring) zeroLocked() {
	for e, key := range k.keys {
		clear(key)
		delete(k.keys, e)
	}
}

// checkMAC reports whether a version 2 line's MAC is right.
func (k *keyring) checkMAC(ctx context.Context, p *parsed) error {
	key, err := k.key(ctx, p.Epoch)
	if err != nil {
		return err
	}
	got, err := base64.RawURLEncoding.DecodeString(p.MAC)
	if err != nil {
		return errMACMismatch
	}
	if !hmac.Equal(got, entryMAC(key, p.body)) {
		return errMACMismatch
	}
	return nil
}

var errMACMismatch = errors.New("MAC does not match: the line was not written by sidecrypt with this HSM's audit key, or was edited")

// --- version 1 (read only) ---

const (
	zeroHash          = "0000000000000000000000000000000000000000000000000000000000000000"
	checkpointAction  = "audit.checkpoint"
	checkpointContext = "sidecrypt audit checkpoint v1\n"
)

// lineV1 is the on-disk field order of a version 1 line.
type lineV1 struct {
	Seq     uint64            `json:"seq"`
	Time    string            `json:"time"`
	Actor   string            `json:"actor"`
	Action  string            `json:"action"`
	Key     string            `json:"key,omitempty"`
	Version uint32            `json:"version,omitempty"`
	Rules   string            `json:"rules,omitempty"`
	Outcome string            `json:"outcome"`
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
	Prev    string            `json:"prev"`
}

// hashSuffixLen is len(`,"hash":"` + 64 hex + `"}`).
const hashSuffixLen = 9 + 64 + 2

// encodeLineV1 renders a version 1 line. sidecrypt no longer writes them;
// tests use it to build old logs and forgeries.
func encodeLineV1(seq uint64, e Event, prev string) (b []byte, hash string, err error) {
	body, err := json.Marshal(lineV1{
		Seq: seq, Time: e.Time.UTC().Format(time.RFC3339Nano), Actor: e.Actor, Action: e.Action,
		Key: e.Key, Version: e.Version, Rules: e.Rules, Outcome: e.Outcome, Reason: e.Reason,
		Details: e.Details, Prev: prev,
	})
	if err != nil {
		return nil, "", fmt.Errorf("audit: encode: %w", err)
	}
	sum := sha256.Sum256(body)
	hash = hex.EncodeToString(sum[:])
	out := make([]byte, 0, len(body)+len(hash)+12)
	out = append(out, body[:len(body)-1]...)
	out = append(out, `,"hash":"`...)
	out = append(out, hash...)
	out = append(out, "\"}\n"...)
	return out, hash, nil
}

// parseV1 parses a version 1 line and checks that its hash field matches
// its bytes.
func parseV1(b []byte) (Entry, error) {
	var e Entry
	if len(b) < hashSuffixLen+2 || !bytes.HasPrefix(b[len(b)-hashSuffixLen:], []byte(`,"hash":"`)) || !bytes.HasSuffix(b, []byte(`"}`)) {
		if bytes.HasPrefix(b, []byte(`{"v":`)) {
			return e, errors.New("unknown audit line format version")
		}
		return e, errors.New("line does not end with its hash or MAC field")
	}
	var l struct {
		lineV1
		Hash string `json:"hash"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return e, fmt.Errorf("not a valid audit line: %w", err)
	}
	body := make([]byte, 0, len(b)-hashSuffixLen+1)
	body = append(body, b[:len(b)-hashSuffixLen]...)
	body = append(body, '}')
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != l.Hash {
		return e, errors.New("hash does not match the line's content (the line was edited)")
	}
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return e, fmt.Errorf("bad time: %w", err)
	}
	e = Entry{
		Seq: l.Seq, Format: formatV1, Prev: l.Prev, Hash: l.Hash,
		Event: Event{Time: t, Actor: l.Actor, Action: l.Action, Key: l.Key, Version: l.Version,
			Rules: l.Rules, Outcome: l.Outcome, Reason: l.Reason, Details: l.Details},
	}
	return e, nil
}

func checkpointMessageV1(seq uint64, hash string) []byte {
	return []byte(checkpointContext + fmt.Sprint(seq) + "\n" + hash + "\n")
}

// checkV1MAC checks a version 1 checkpoint MAC.
func checkV1MAC(ctx context.Context, signer Signer, seq uint64, hash, macText string) error {
	if macText == "" {
		return errors.New("is unsigned but an HSM audit key is configured")
	}
	got, err := base64.RawURLEncoding.DecodeString(macText)
	if err != nil {
		return errors.New("MAC is not base64url")
	}
	want, err := signer.AuditMAC(ctx, checkpointMessageV1(seq, hash))
	if err != nil {
		return &hsmError{fmt.Errorf("audit: checkpoint MAC could not be computed: %w", err)}
	}
	if !hmac.Equal(got, want) {
		return errors.New("MAC does not match")
	}
	return nil
}

// isV1Checkpoint reports whether e is a version 1 checkpoint line.
func isV1Checkpoint(e *Entry) bool {
	return e.Format == formatV1 && e.Action == checkpointAction && e.Actor == "audit"
}

// sanitize keeps a reason short and on one line for an audit detail.
func sanitize(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
