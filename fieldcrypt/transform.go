package fieldcrypt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// PathError is the error of a document that could not be transformed. It
// says where (a path in selector syntax and a byte offset into the input)
// and what (Err wraps one of the package's sentinel errors: ErrSyntax,
// ErrTooDeep, ErrInvalidUTF8, ErrDuplicateKey, ErrAuthentication, ...),
// never what the field held.
type PathError struct {
	Path   string // $.docs[3].ssn; for a syntax error the innermost known value
	Offset int64  // byte offset into the input where the problem was seen
	Err    error
}

func (e *PathError) Error() string {
	return "fieldcrypt: " + e.Path + " (byte " + strconv.FormatInt(e.Offset, 10) + "): " +
		strings.TrimPrefix(e.Err.Error(), "fieldcrypt: ")
}

func (e *PathError) Unwrap() error { return e.Err }

var _ error = (*PathError)(nil)

// compiledRule is a FieldRule after NewEncryptor checked it.
type compiledRule struct {
	text        string
	key         int // index into encryptor.keyNames
	mode        Mode
	encryptNull bool
	leaves      bool
	pad         []int // Padding.Buckets, a private copy
	check       func(Type, []byte) error
}

type encryptor struct {
	rules    []compiledRule
	keyNames []string
	auto     *automaton
	lim      Limits
	rand     io.Reader // test hook: nonce source for known-answer vectors
	v1       bool      // test hook: write format 1, for its known-answer vectors
}

// normalize fills in the defaults of lim.
func (lim Limits) normalize() (Limits, error) {
	if lim.MaxDepth < 0 {
		return lim, fmt.Errorf("fieldcrypt: negative MaxDepth %d", lim.MaxDepth)
	}
	if lim.MaxKeyVersions < 0 {
		return lim, fmt.Errorf("fieldcrypt: negative MaxKeyVersions %d", lim.MaxKeyVersions)
	}
	if lim.MaxDepth == 0 {
		lim.MaxDepth = DefaultMaxDepth
	}
	if lim.MaxKeyVersions == 0 {
		lim.MaxKeyVersions = DefaultMaxKeyVersions
	}
	return lim, nil
}

func compileEncryptor(rules []FieldRule, lim Limits) (*encryptor, error) {
	lim, err := lim.normalize()
	if err != nil {
		return nil, err
	}
	e := &encryptor{lim: lim}
	var sels []Selector
	seen := map[string]int{}
	keyIdx := map[string]int{}
	for i, r := range rules {
		if r.Selector.IsZero() {
			return nil, fmt.Errorf("fieldcrypt: rule %d: no selector", i)
		}
		text := r.Selector.String()
		if r.Check != nil {
			if _, ok := seen[text]; ok {
				return nil, fmt.Errorf("fieldcrypt: selector %q has a check and another rule", text)
			}
			seen[text] = len(e.rules)
			e.rules = append(e.rules, compiledRule{text: text, key: -1, check: r.Check})
			sels = append(sels, r.Selector)
			continue
		}
		if !ValidKeyName(r.Key) {
			return nil, fmt.Errorf("fieldcrypt: rule %d (%s): invalid key name %q", i, r.Selector, r.Key)
		}
		if r.Mode != ModeRandom && r.Mode != ModeDeterministic {
			return nil, fmt.Errorf("fieldcrypt: rule %d (%s): invalid mode %d", i, r.Selector, r.Mode)
		}
		if err := r.Pad.Validate(); err != nil {
			return nil, fmt.Errorf("fieldcrypt: rule %d (%s): %w", i, r.Selector, err)
		}
		if j, ok := seen[text]; ok {
			p := e.rules[j]
			if p.check != nil {
				return nil, fmt.Errorf("fieldcrypt: selector %q has a check and another rule", text)
			}
			if e.keyNames[p.key] != r.Key || p.mode != r.Mode || p.encryptNull != r.EncryptNull || p.leaves != r.Leaves || !slices.Equal(p.pad, r.Pad.Buckets) {
				return nil, fmt.Errorf("fieldcrypt: selector %q has two rules: key %q %s and key %q %s",
					text, e.keyNames[p.key], p.mode, r.Key, r.Mode)
			}
			continue // the same rule twice: keep the first
		}
		k, ok := keyIdx[r.Key]
		if !ok {
			k = len(e.keyNames)
			keyIdx[r.Key] = k
			e.keyNames = append(e.keyNames, r.Key)
		}
		seen[text] = len(e.rules)
		e.rules = append(e.rules, compiledRule{text: text, key: k, mode: r.Mode, encryptNull: r.EncryptNull, leaves: r.Leaves,
			pad: slices.Clone(r.Pad.Buckets)})
		sels = append(sels, r.Selector)
	}
	e.auto = compileAutomaton(sels)
	return e, nil
}

func (e *encryptor) run(ctx context.Context, dst io.Writer, src io.Reader, keys Keyring, opt *CallOptions) (Report, error) {
	m := getMachine(ctx, keys, opt)
	defer putMachine(m)
	m.setEncrypt(e, opt)
	return m.runReader(dst, src)
}

func (e *encryptor) runBytes(ctx context.Context, src []byte, keys Keyring, opt *CallOptions) ([]byte, Report, error) {
	m := getMachine(ctx, keys, opt)
	defer putMachine(m)
	m.setEncrypt(e, opt)
	// Tokens are longer than what they replace (about 60 bytes per field
	// plus a third of the value): half again the input covers a bulk body
	// with a protected field every 250 bytes without regrowing the output.
	return m.runBytes(src, len(src)+len(src)/2+512)
}

type decryptor struct {
	policy Policy
	lim    Limits
	// Bound decryptors (NewBoundDecryptor) open a token only where one of
	// rules selects its place and names its key and mode; auto is nil
	// for a decryptor that opens tokens wherever they are.
	auto     *automaton
	rules    []compiledRule
	keyNames []string
}

func newDecryptor(p Policy, lim Limits) *decryptor {
	// NewDecryptor returns no error: out-of-range limits mean the defaults.
	lim.MaxDepth, lim.MaxKeyVersions = max(lim.MaxDepth, 0), max(lim.MaxKeyVersions, 0)
	lim, _ = lim.normalize()
	return &decryptor{policy: p, lim: lim}
}

func (d *decryptor) run(ctx context.Context, dst io.Writer, src io.Reader, keys Keyring, opt *CallOptions) (Report, error) {
	m := getMachine(ctx, keys, opt)
	defer putMachine(m)
	m.setDecrypt(d, opt)
	return m.runReader(dst, src)
}

func (d *decryptor) runBytes(ctx context.Context, src []byte, keys Keyring, opt *CallOptions) ([]byte, Report, error) {
	m := getMachine(ctx, keys, opt)
	defer putMachine(m)
	m.setDecrypt(d, opt)
	return m.runBytes(src, len(src)+512)
}

// frame is one open object or array.
type frame struct {
	obj      bool
	elem     bool  // a member or element has started: the path includes it
	keyTrunc bool  // the member name was too long to keep whole
	stOff    int32 // the automaton states for this container's children
	stLen    int32
	index    int   // array: the current element's index
	keyOff   int32 // this frame's current member name, raw, in machine.keys
	keyLen   int32
	trackOff int32 // this frame's entries in machine.tracked
	mapped   bool  // this frame's entries are also in machine.trackMap
	// leaf is the rule (index) whose Leaves selection this container is
	// inside: every scalar in it is sealed under that rule. -1 otherwise.
	leaf int32
}

// trackSlot keys machine.trackMap: a tracked name's hash in one frame.
type trackSlot struct {
	depth int32
	hash  uint64
}

// trackSeed keys the hash of tracked member names. Only hashes are kept
// (8 bytes a name, whatever its length); with a secret per-process seed no
// one can construct two names that collide, and a chance collision
// (probability about n^2/2^65 for n names in one object) would refuse a
// document, never let one through.
var trackSeed = maphash.MakeSeed()

// openEntry is one key version looked up in a call, found or not.
type openEntry struct {
	name    string
	version uint32
	key     *DataKey
	err     error
	used    int32 // index of its KeyUse in the report, or -1
}

type policyEntry struct {
	name   string
	action Action
	masker Masker
}

const (
	// lookupLinear: up to this many key versions (or key names, for the
	// policy) a call finds its cache entries by a linear scan, which for
	// the usual 1 to 4 keys is faster than hashing and allocates nothing;
	// past it, an index map takes over, so that a document of N distinct
	// made-up token headers costs O(N), not O(N^2).
	lookupLinear = 8

	// maxPolicyCache bounds the key names whose policy one call keeps.
	// Names past it are asked of the Policy each time: the names cost no
	// keystore access, and a document of made-up names must not grow the
	// cache without bound.
	maxPolicyCache = 1024
)

// machine is the state of one Encrypt or Decrypt call. Machines are pooled,
// so that a call allocates a fixed number of times, whatever the document.
type machine struct {
	s   scanner
	enc *encryptor
	dec *decryptor
	// auto is the automaton of the call's selectors: the encryptor's, or
	// a bound decryptor's; nil for a decryptor that opens anywhere.
	auto *automaton
	// tokens is the request's token policy (WithTokenPolicy): what this
	// sidecar reveals of each key. nil: tokens are not bound to fields.
	tokens Policy
	// tokScan: every string of the document is looked at for tokens,
	// not only those the rules select (encrypt with a token policy, on a
	// document that may hold tokens).
	tokScan bool
	ctx     context.Context
	keys    Keyring
	opt     CallOptions

	maxDepth  int
	frames    []frame
	arena     []int32 // automaton states, per level
	pendMatch int32   // rule that selects the value about to be scanned, or -1
	step      stepper
	names     []byte   // current member names (raw), per level, for paths
	keyDec    []byte   // decoded member name
	tracked   []uint64 // hashes of the member names of open frames
	trackMap  map[trackSlot]struct{}
	z         sealer
	plain     []byte // decrypt: opened plaintext handed to a Masker

	sealKeys    []*DataKey
	sealErrs    []error
	sealUsed    []int32 // per seal key: index of its KeyUse in the report, or -1
	openCache   []openEntry
	openIndex   map[string]int32 // name || version (4 bytes BE) -> openCache index, past lookupLinear entries
	openScratch []byte           // an openIndex key being looked up
	maxKeys     int              // Limits.MaxKeyVersions of this call
	policyCache []policyEntry
	policyIndex map[string]int32 // name -> policyCache index, past lookupLinear entries
	report      Report

	rbuf     []byte // reader mode window
	rbufUsed int    // how much of rbuf held input
	wbufUsed int    // how much of wbuf held output
	wbuf     []byte // reader mode output
}

const (
	readBufSize = 32 << 10
	// maxPooledBuf: buffers that grew past this (a huge value was held)
	// are dropped rather than kept alive in the pool.
	maxPooledBuf = 1 << 20
	// maxPathName bounds a member name kept for error paths.
	maxPathName = 256
)

var machinePool = sync.Pool{New: func() any { return new(machine) }}

func getMachine(ctx context.Context, keys Keyring, opt *CallOptions) *machine {
	m := machinePool.Get().(*machine)
	m.prepare(ctx, keys, opt)
	return m
}

func putMachine(m *machine) {
	m.reset()
	machinePool.Put(m)
}

// prepare readies m for one call.
func (m *machine) prepare(ctx context.Context, keys Keyring, opt *CallOptions) {
	m.ctx, m.keys = ctx, keys
	m.tokens = TokenPolicyFrom(ctx)
	if opt != nil {
		m.opt = *opt
	} else {
		m.opt = CallOptions{}
	}
	m.s.ctx = ctx
	m.s.flush = m.opt.Flush
}

// reset drops what m held for the call, keeping its reusable buffers.
func (m *machine) reset() {
	m.enc, m.dec, m.ctx, m.keys, m.opt = nil, nil, nil, nil, CallOptions{}
	m.auto, m.tokens, m.tokScan = nil, nil, false
	m.s.buf, m.s.r, m.s.w, m.s.out, m.s.ctx, m.s.flush = nil, nil, nil, nil, nil, nil
	m.z.rand, m.z.v1 = nil, false
	clear(m.sealKeys)
	clear(m.sealErrs)
	m.sealKeys, m.sealErrs, m.sealUsed = m.sealKeys[:0], m.sealErrs[:0], m.sealUsed[:0]
	clear(m.openCache)
	m.openCache = m.openCache[:0]
	clear(m.policyCache)
	m.policyCache = m.policyCache[:0]
	// The index maps exist only after a call met many keys; do not keep
	// their memory for the next one.
	m.openIndex, m.policyIndex = nil, nil
	if cap(m.openCache) > 4*lookupLinear {
		m.openCache = nil
	}
	if cap(m.policyCache) > 4*lookupLinear {
		m.policyCache = nil
	}
	m.report = Report{}
	m.trackMap = nil // rare (wide wildcard objects), and a map never shrinks
	// Buffers that held document bytes are wiped before the machine serves
	// another call: cheap next to the work that filled them.
	clear(m.z.canon[:cap(m.z.canon)])
	clear(m.z.body[:cap(m.z.body)])
	clear(m.plain[:cap(m.plain)])
	clear(m.keyDec[:cap(m.keyDec)])
	clear(m.names[:cap(m.names)])
	clear(m.rbuf[:m.rbufUsed])
	clear(m.wbuf[:m.wbufUsed])
	m.rbufUsed, m.wbufUsed = 0, 0
	if cap(m.rbuf) > maxPooledBuf {
		m.rbuf = nil
	}
	if cap(m.wbuf) > maxPooledBuf {
		m.wbuf = nil
	}
	if cap(m.z.body) > maxPooledBuf || cap(m.z.canon) > maxPooledBuf || cap(m.plain) > maxPooledBuf {
		m.z.body, m.z.canon, m.plain = nil, nil, nil
	}
}

// depthFor is the nesting limit of one call: the compiled limit, or the
// call's own when that is lower.
func depthFor(lim Limits, opt *CallOptions) int {
	if opt != nil && opt.MaxDepth > 0 && opt.MaxDepth < lim.MaxDepth {
		return opt.MaxDepth
	}
	return lim.MaxDepth
}

func (m *machine) setEncrypt(e *encryptor, opt *CallOptions) {
	m.enc = e
	m.auto = e.auto
	// Reading from a stream, the whole document is not there to pre-check.
	m.tokScan = m.tokens != nil
	m.maxDepth = depthFor(e.lim, opt)
	m.maxKeys = e.lim.MaxKeyVersions
	m.step.reset(e.auto)
	m.z.rand, m.z.v1 = e.rand, e.v1
	for range e.keyNames {
		m.sealKeys = append(m.sealKeys, nil)
		m.sealErrs = append(m.sealErrs, nil)
		m.sealUsed = append(m.sealUsed, -1)
	}
}

func (m *machine) setDecrypt(d *decryptor, opt *CallOptions) {
	m.dec = d
	m.auto = d.auto
	if d.auto != nil {
		m.step.reset(d.auto)
	}
	m.maxDepth = depthFor(d.lim, opt)
	m.maxKeys = d.lim.MaxKeyVersions
}

func (m *machine) runBytes(src []byte, outCap int) ([]byte, Report, error) {
	if m.tokScan && !mayHoldTokenSpelling(src) {
		m.tokScan = false
	}
	m.s.initBytes(src)
	m.s.w = nil
	m.s.out = make([]byte, 0, outCap)
	err := m.run()
	if err != nil {
		return nil, Report{}, err
	}
	m.s.out = append(m.s.out, src[m.s.mark:]...)
	out, rep := m.s.out, m.report
	m.s.out = nil
	return out, rep, nil
}

func (m *machine) runReader(dst io.Writer, src io.Reader) (Report, error) {
	if cap(m.rbuf) < readBufSize {
		m.rbuf = make([]byte, readBufSize)
	}
	if cap(m.wbuf) < readBufSize {
		m.wbuf = make([]byte, 0, readBufSize+readBufSize/2)
	}
	m.s.initReader(src, m.rbuf)
	m.s.w, m.s.out = dst, m.wbuf[:0]
	err := m.run()
	m.rbuf, m.rbufUsed = m.s.buf[:cap(m.s.buf)], max(m.s.end, m.s.maxEnd)
	if err == nil {
		// What is left is whitespace after the last value.
		m.s.out = append(m.s.out, m.s.buf[m.s.mark:m.s.end]...)
		m.s.mark = m.s.end
		m.s.wrote = true // the caller's writer gets a final flush
		err = m.s.emit()
		if err != nil {
			err = fmt.Errorf("fieldcrypt: write: %w", err)
		}
	}
	m.wbuf, m.wbufUsed = m.s.out[:0], min(cap(m.s.out), max(len(m.s.out), m.s.outMax))
	if err != nil {
		return Report{}, err
	}
	return m.report, nil
}

// run transforms the input: one value, or a stream of values.
func (m *machine) run() error {
	if m.ctx != nil {
		if err := m.ctx.Err(); err != nil {
			return err
		}
	}
	err := m.values()
	if err == nil {
		return nil
	}
	if m.dec != nil && m.opt.Lenient && isScanError(err) {
		return m.copyRest(err)
	}
	return err
}

func (m *machine) values() error {
	for n := 0; ; n++ {
		if !m.s.skipWS() {
			if err := m.ioErr(); err != nil {
				return err
			}
			if n == 0 && !m.opt.Stream {
				return m.fail(errEmpty)
			}
			return nil
		}
		if n > 0 && !m.opt.Stream {
			return m.fail(errAfterTop)
		}
		first := m.s.buf[m.s.pos]
		if err := m.value(); err != nil {
			return err
		}
		if !m.opt.Stream {
			continue
		}
		if typ := typeOf(first); typ == TypeNumber || typ == TypeBool || typ == TypeNull {
			// "1 2" is two numbers but "12" is one: scalars need a gap.
			if c, ok := m.s.peek(); ok && c != ' ' && c != '\n' && c != '\r' && c != '\t' {
				return m.fail(errNeedSpace)
			}
		}
		// Each value of a stream reaches the client as soon as it is done.
		m.s.out = append(m.s.out, m.s.buf[m.s.mark:m.s.pos]...)
		m.s.mark = m.s.pos
		if err := m.s.emit(); err != nil {
			return fmt.Errorf("fieldcrypt: write: %w", err)
		}
	}
}

// copyRest is the lenient end of a decryption that met malformed input:
// everything not yet written goes out unchanged.
func (m *machine) copyRest(cause error) error {
	var pe *PathError
	f := Failure{Err: cause}
	if errors.As(cause, &pe) {
		f.Path = pe.Path
	}
	m.report.Failures = append(m.report.Failures, f)
	s := &m.s
	s.hold = -1
	s.out = append(s.out, s.buf[s.mark:s.end]...)
	s.mark, s.pos = s.end, s.end
	if s.r == nil {
		return nil
	}
	if err := s.emit(); err != nil {
		return fmt.Errorf("fieldcrypt: write: %w", err)
	}
	if !s.eof {
		if _, err := io.Copy(s.w, s.r); err != nil {
			return fmt.Errorf("fieldcrypt: copy: %w", err)
		}
		s.wrote = true
	}
	return nil
}

func (m *machine) ioErr() error {
	if err := m.s.ioErr; err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("fieldcrypt: %w", err)
	}
	return nil
}

// fail wraps a scan error with where it happened. A read error that cut
// the input short is reported as itself, not as a syntax error.
func (m *machine) fail(err error) error {
	if ioe := m.ioErr(); ioe != nil {
		return ioe
	}
	if pe, ok := err.(*PathError); ok {
		return pe
	}
	return &PathError{Path: m.path(), Offset: m.s.offset(), Err: err}
}

const (
	stValue = iota
	stKey
	stAfter
)

// value transforms one top-level value.
func (m *machine) value() error {
	s := &m.s
	m.frames = m.frames[:0]
	m.arena = m.arena[:0]
	m.names = m.names[:0]
	m.tracked = m.tracked[:0]
	if len(m.trackMap) > 0 { // left over only after an error
		clear(m.trackMap)
	}
	m.pendMatch = -1
	if m.auto != nil {
		m.arena = append(m.arena, m.auto.roots...)
	}
	st := stValue
	for {
		switch st {
		case stValue:
			if !s.skipWS() {
				return m.fail(errUnexpectedEnd)
			}
			c := s.buf[s.pos]
			leaf := int32(-1)
			if m.pendMatch >= 0 && m.dec != nil {
				// A bound decryptor at a protected field's place: a
				// token there is opened (if its key and mode are the
				// field's); a container is not a token, and nothing
				// inside a protected value is a place of its own.
				var err error
				if c == '"' {
					err = m.decryptString()
				} else if c == '{' || c == '[' {
					err = s.skipValue(len(m.frames), m.maxDepth)
				} else {
					_, err = s.scanScalar(c)
				}
				if err != nil {
					return m.fail(err)
				}
				st = stAfter
				continue
			}
			if m.pendMatch >= 0 {
				if (c == '{' || c == '[') && m.enc.rules[m.pendMatch].leaves {
					// Keep the container; seal each scalar inside.
					leaf = m.pendMatch
				} else {
					if err := m.captureAndSeal(c); err != nil {
						return err
					}
					st = stAfter
					continue
				}
			}
			if c == '{' || c == '[' {
				if len(m.frames)+1 > m.maxDepth {
					return m.fail(errTooDeepDetail)
				}
				pendOff := m.pendOff()
				pendLen := len(m.arena) - pendOff
				if m.auto != nil && pendLen == 0 && leaf < 0 && !m.tokScan {
					// No selector reaches inside: validate and pass
					// through (a bound decryptor has nothing to open in
					// there either).
					if err := s.skipValue(len(m.frames), m.maxDepth); err != nil {
						return m.fail(err)
					}
					st = stAfter
					continue
				}
				m.frames = append(m.frames, frame{
					obj:      c == '{',
					stOff:    int32(pendOff),
					stLen:    int32(pendLen),
					keyOff:   int32(len(m.names)),
					trackOff: int32(len(m.tracked)),
					leaf:     leaf,
				})
				s.pos++
				if !s.skipWS() {
					return m.fail(errUnexpectedEnd)
				}
				d := s.buf[s.pos]
				if c == '{' && d == '}' || c == '[' && d == ']' {
					s.pos++
					m.pop()
					st = stAfter
					continue
				}
				if c == '{' {
					st = stKey
					continue
				}
				m.element(0)
				continue
			}
			var err error
			switch {
			case c == '"' && m.dec != nil && m.dec.auto == nil:
				err = m.decryptString()
			case c == '"' && m.tokScan:
				err = m.looseString()
			default:
				_, err = s.scanScalar(c)
			}
			if err != nil {
				return m.fail(err)
			}
			st = stAfter

		case stKey:
			if err := m.member(); err != nil {
				return err
			}
			st = stValue

		case stAfter:
			if len(m.frames) == 0 {
				return nil
			}
			f := &m.frames[len(m.frames)-1]
			if !s.skipWS() {
				return m.fail(errUnexpectedEnd)
			}
			c := s.buf[s.pos]
			switch {
			case c == ',':
				s.pos++
				if f.obj {
					if !s.skipWS() {
						return m.fail(errUnexpectedEnd)
					}
					st = stKey
				} else {
					m.element(f.index + 1)
					st = stValue
				}
			case f.obj && c == '}', !f.obj && c == ']':
				s.pos++
				m.pop()
			case f.obj:
				return m.fail(errExpectedObjEnd)
			default:
				return m.fail(errExpectedArrEnd)
			}
		}
	}
}

// pendOff is where the states of the value about to be scanned start: right
// after the states of the innermost open container.
func (m *machine) pendOff() int {
	if len(m.frames) == 0 {
		if m.auto != nil {
			return 0
		}
		return len(m.arena)
	}
	f := &m.frames[len(m.frames)-1]
	return int(f.stOff + f.stLen)
}

func (m *machine) pop() {
	f := &m.frames[len(m.frames)-1]
	m.arena = m.arena[:f.stOff]
	m.names = m.names[:f.keyOff]
	if f.mapped {
		depth := int32(len(m.frames))
		for _, h := range m.tracked[f.trackOff:] {
			delete(m.trackMap, trackSlot{depth, h})
		}
	}
	m.tracked = m.tracked[:f.trackOff]
	m.frames = m.frames[:len(m.frames)-1]
	m.pendMatch = -1
}

// element starts array element i of the innermost frame.
func (m *machine) element(i int) {
	f := &m.frames[len(m.frames)-1]
	f.elem, f.index = true, i
	if m.auto == nil {
		return
	}
	if f.leaf >= 0 {
		m.pendMatch = f.leaf
		return
	}
	off := int(f.stOff + f.stLen)
	states := m.arena[f.stOff:off]
	m.arena, m.pendMatch, _ = m.step.next(m.arena[:off], states, nil, false, i, true)
}

// member scans an object member's name and the colon after it, and works
// out what applies to its value.
func (m *machine) member() error {
	s := &m.s
	f := &m.frames[len(m.frames)-1]
	f.elem = false
	if s.buf[s.pos] != '"' {
		return m.fail(errExpectedKey)
	}
	// Hold the name in the window to read it whole; a name longer than
	// any selector could match is let go, so that it streams.
	s.hold, s.holdDropped = s.pos, false
	s.holdCap = 64 << 10
	if m.auto != nil && 6*m.auto.maxName+2 > s.holdCap {
		s.holdCap = 6*m.auto.maxName + 2
	}
	escaped, err := s.scanString()
	start := s.hold
	s.hold, s.holdCap = -1, 0
	if err != nil {
		return m.fail(err)
	}
	var raw []byte
	dropped := s.holdDropped
	if !dropped {
		raw = s.buf[start+1 : s.pos-1]
	}
	m.names = append(m.names[:f.keyOff], raw[:min(len(raw), maxPathName)]...)
	f.keyLen = int32(len(m.names)) - f.keyOff
	f.keyTrunc = dropped || len(raw) > maxPathName
	f.elem = true

	if m.auto != nil {
		name := raw
		if escaped && !dropped {
			m.keyDec = decodeString(m.keyDec[:0], raw)
			name = m.keyDec
		}
		var advanced bool
		if f.leaf >= 0 {
			// Inside a Leaves selection every member is protected, so a
			// duplicate name is the same parser-differential risk.
			m.pendMatch, advanced = f.leaf, true
		} else {
			off := int(f.stOff + f.stLen)
			m.arena, m.pendMatch, advanced = m.step.next(m.arena[:off], m.arena[f.stOff:off], name, !dropped, 0, false)
		}
		if advanced && !dropped && m.enc != nil {
			if m.duplicate(f, name) {
				return m.fail(&detailError{ErrDuplicateKey, "a selector applies to this member, which appears twice"})
			}
		}
	}

	if !s.skipWS() {
		return m.fail(errUnexpectedEnd)
	}
	if s.buf[s.pos] != ':' {
		return m.fail(errExpectedColon)
	}
	s.pos++
	return nil
}

// duplicate records name among the tracked members of f and reports
// whether it was there already. Objects where selectors advance on every
// member (a wildcard) may track many names: past a handful, a map keeps the
// check linear.
func (m *machine) duplicate(f *frame, name []byte) bool {
	const linear = 32
	h := maphash.Bytes(trackSeed, name)
	seen := m.tracked[f.trackOff:]
	depth := int32(len(m.frames))
	if !f.mapped && len(seen) >= linear {
		if m.trackMap == nil {
			m.trackMap = make(map[trackSlot]struct{})
		}
		for _, t := range seen {
			m.trackMap[trackSlot{depth, t}] = struct{}{}
		}
		f.mapped = true
	}
	if f.mapped {
		if _, dup := m.trackMap[trackSlot{depth, h}]; dup {
			return true
		}
		m.trackMap[trackSlot{depth, h}] = struct{}{}
	} else {
		for _, t := range seen {
			if t == h {
				return true
			}
		}
	}
	m.tracked = append(m.tracked, h)
	return false
}

// captureAndSeal scans the value that a rule selects, holding it whole in
// the window, and writes its token instead.
func (m *machine) captureAndSeal(c byte) error {
	s := &m.s
	rule := &m.enc.rules[m.pendMatch]
	typ := typeOf(c)
	if typ == 0 {
		return m.fail(errExpectedValue)
	}
	s.hold = s.pos
	var escaped bool
	var err error
	if typ == TypeObject || typ == TypeArray {
		err = s.skipValue(len(m.frames), m.maxDepth)
	} else {
		escaped, err = s.scanScalar(c)
	}
	start, end := s.hold, s.pos
	s.hold = -1
	if err != nil {
		return m.fail(err)
	}
	text := s.buf[start:end]

	if rule.check != nil {
		if err := rule.check(typ, text); err != nil {
			return &PathError{Path: m.path(), Offset: s.base + int64(start), Err: fmt.Errorf("%w: %w", ErrFieldRefused, err)}
		}
		return nil
	}
	if typ == TypeNull && !rule.encryptNull {
		m.event(rule, nil, typ, "left")
		return nil
	}
	if typ == TypeString && m.tokens != nil {
		k, err := m.boundToken(rule, text[1:len(text)-1], escaped)
		if err != nil {
			return &PathError{Path: m.path(), Offset: s.base + int64(start), Err: err}
		}
		if k != nil {
			m.report.Tokens++
			m.event(rule, k, typ, "already-token")
			return nil
		}
	} else if typ == TypeString && !escaped && len(text) > len(TokenPrefix)+2 && tokenFormat(text[1:]) != 0 {
		k, err := m.existingToken(text[1 : len(text)-1])
		if err != nil {
			return &PathError{Path: m.path(), Offset: s.base + int64(start), Err: err}
		}
		if k != nil {
			m.report.Tokens++
			m.event(rule, k, typ, "already-token")
			return nil
		}
	}
	k, err := m.sealKey(rule.key)
	if err != nil {
		return &PathError{Path: m.path(), Offset: s.base + int64(start), Err: err}
	}
	pt := m.z.sealPlaintext(rule.mode, typ, text, escaped)
	out := append(s.out, s.buf[s.mark:start]...)
	n := len(out)
	out = append(out, '"')
	out, err = m.z.seal(out, k, rule.mode, typ, pt, rule.pad)
	if err != nil {
		s.out = out[:n]
		return &PathError{Path: m.path(), Offset: s.base + int64(start), Err: fmt.Errorf("key %s: %w", k, err)}
	}
	s.out = append(out, '"')
	s.mark = end
	m.use(k, &m.sealUsed[rule.key])
	m.event(rule, k, typ, "encrypted")
	return nil
}

// existingToken reports the key under which content (a string value's
// text) opens as a token, or nil. Anything that does not open is treated
// as plaintext and encrypted: a client cannot smuggle plaintext past a rule
// by making it look like a token. The one error is a document that names
// more key versions than the call may look up: it is refused (fail closed)
// rather than sealed or passed on unchecked.
func (m *machine) existingToken(content []byte) (*DataKey, error) {
	p, buf, err := decodeToken(m.z.body, content)
	m.z.body = buf
	if err != nil {
		return nil, nil
	}
	e := m.openKey(p.name, p.version)
	if e == nil {
		return nil, errTooManyKeys
	}
	if e.err != nil {
		return nil, nil
	}
	m.plain, _, err = m.z.openParsed(m.plain[:0], e.key, &p)
	clear(m.plain)
	if err != nil {
		return nil, nil
	}
	return e.key, nil
}

// boundToken decides about a string that a request puts where rule seals,
// under the call's token policy (WithTokenPolicy, docs/FORMAT.md §7). It
// returns the key to keep the string as the token it is, nil to seal it as
// data, or ErrTokenNotAllowed. content is the string's text between the
// quotes, escaped as written.
//
// Kept is only a token of this very field (its key and mode, spelled
// without escapes) that this sidecar does not open, and that opens: the
// application saw it as a token (a key it may not open) or the sidecar put
// it back itself (a masked value written back), and it round-trips. A
// token of a key this sidecar opens or masks anywhere else never comes
// from an application that only ever sees plaintext and masks: it is
// refused. Anything else that looks like a token is sealed as data, so it
// comes back as the text it was, never opened.
func (m *machine) boundToken(rule *compiledRule, content []byte, escaped bool) (*DataKey, error) {
	text := content
	if escaped {
		m.keyDec = decodeString(m.keyDec[:0], content)
		text = m.keyDec
	}
	if len(text) < len(TokenPrefix) || tokenFormat(text) == 0 {
		return nil, nil
	}
	p, buf, err := decodeToken(m.z.body, text)
	m.z.body = buf
	if err != nil {
		return nil, nil
	}
	pe := m.policy(p.name)
	own := !escaped && pe.name == m.enc.keyNames[rule.key] && p.mode == rule.mode
	switch {
	case pe.action == ActionOpen:
		return nil, errTokenNotAllowed
	case pe.action == ActionMask && !own:
		return nil, errTokenNotAllowed
	case !own:
		return nil, nil
	}
	e := m.openKey(p.name, p.version)
	if e == nil {
		return nil, errTooManyKeys
	}
	if e.err != nil {
		return nil, nil
	}
	m.plain, _, err = m.z.openParsed(m.plain[:0], e.key, &p)
	clear(m.plain)
	if err != nil {
		return nil, nil
	}
	return e.key, nil
}

// looseString scans a string no rule selects, in a request under a token
// policy: a token of a key this sidecar opens or masks is refused there,
// however it is spelled; any other string passes as it is.
func (m *machine) looseString() error {
	s := &m.s
	s.hold = s.pos
	escaped, err := s.scanString()
	start, end := s.hold, s.pos
	s.hold = -1
	if err != nil {
		return err
	}
	text := s.buf[start+1 : end-1]
	if escaped {
		m.keyDec = decodeString(m.keyDec[:0], text)
		text = m.keyDec
	}
	if len(text) < len(TokenPrefix) || tokenFormat(text) == 0 {
		return nil
	}
	p, buf, err := decodeToken(m.z.body, text)
	m.z.body = buf
	if err != nil {
		return nil
	}
	if pe := m.policy(p.name); pe.action == ActionOpen || pe.action == ActionMask {
		return &PathError{Path: m.path(), Offset: s.base + int64(start), Err: errTokenNotAllowed}
	}
	return nil
}

// mayHoldTokenSpelling reports whether doc could hold a string that is a
// token once its escapes are decoded: a raw "sc1." or "sc2.", or any \u
// escape (the short escapes \n, \/ ... spell none of "sc", the digits and
// ".", so a token spelled with escapes has a \u in it).
func mayHoldTokenSpelling(doc []byte) bool {
	return MayHoldTokens(doc) || bytes.Contains(doc, []byte(`\u`))
}

var errTokenNotAllowed = &detailError{ErrTokenNotAllowed, "a token of a key this sidecar reveals, where this sidecar would not have put it"}

// errTooManyKeys: the call met more distinct key versions than it may
// look up (Limits.MaxKeyVersions).
var errTooManyKeys = &detailError{ErrTooManyKeys, "the key version is past Limits.MaxKeyVersions distinct versions in this document, and was not looked up"}

// errNoKeyring: a call that needs a key was given no Keyring.
var errNoKeyring = errors.New("fieldcrypt: no keyring")

// sealKey resolves the primary version of key i once per call.
func (m *machine) sealKey(i int) (*DataKey, error) {
	if k := m.sealKeys[i]; k != nil {
		return k, nil
	}
	if err := m.sealErrs[i]; err != nil {
		return nil, err
	}
	name := m.enc.keyNames[i]
	if m.keys == nil {
		return nil, errNoKeyring
	}
	k, err := m.keys.SealKey(m.ctx, name)
	if err == nil && k == nil {
		err = fmt.Errorf("fieldcrypt: %w: %q", ErrUnknownKey, name)
	}
	if err != nil {
		err = fmt.Errorf("key %q: %w", name, err)
		m.sealErrs[i] = err
		return nil, err
	}
	m.sealKeys[i] = k
	return k, nil
}

// openKey resolves a key version once per call (failures too), in O(1),
// and returns its cache entry: the key, or the error of its lookup. It
// returns nil, without asking the keyring, for a version past the call's
// bound on distinct key versions. The entry is valid until the next
// openKey.
func (m *machine) openKey(name []byte, version uint32) *openEntry {
	if m.openIndex == nil {
		for i := range m.openCache {
			e := &m.openCache[i]
			if e.version == version && e.name == string(name) {
				return e
			}
		}
	} else {
		m.openScratch = binary.BigEndian.AppendUint32(append(m.openScratch[:0], name...), version)
		if i, ok := m.openIndex[string(m.openScratch)]; ok {
			return &m.openCache[i]
		}
	}
	if len(m.openCache) >= m.maxKeys {
		return nil
	}
	n := string(name)
	var k *DataKey
	err := errNoKeyring
	if m.keys != nil {
		k, err = m.keys.OpenKey(m.ctx, n, version)
		if err == nil && k == nil {
			err = fmt.Errorf("fieldcrypt: %w: %q v%d", ErrUnknownKey, n, version)
		}
	}
	m.openCache = append(m.openCache, openEntry{name: n, version: version, key: k, err: err, used: -1})
	switch {
	case m.openIndex != nil:
		m.openIndex[string(m.openScratch)] = int32(len(m.openCache) - 1)
	case len(m.openCache) > lookupLinear:
		m.openIndex = make(map[string]int32, 4*lookupLinear)
		for i := range m.openCache {
			e := &m.openCache[i]
			m.openScratch = binary.BigEndian.AppendUint32(append(m.openScratch[:0], e.name...), e.version)
			m.openIndex[string(m.openScratch)] = int32(i)
		}
	}
	return &m.openCache[len(m.openCache)-1]
}

// policy gives what the Policy says for a key name, asking it once per
// name and call, in O(1).
func (m *machine) policy(name []byte) policyEntry {
	if m.policyIndex == nil {
		for i := range m.policyCache {
			if m.policyCache[i].name == string(name) {
				return m.policyCache[i]
			}
		}
	} else if i, ok := m.policyIndex[string(name)]; ok {
		return m.policyCache[i]
	}
	e := policyEntry{name: string(name)}
	pol := m.tokens
	if m.dec != nil {
		pol = m.dec.policy
	}
	if pol != nil {
		e.action, e.masker = pol.Action(e.name)
	}
	if len(m.policyCache) >= maxPolicyCache {
		return e
	}
	m.policyCache = append(m.policyCache, e)
	switch {
	case m.policyIndex != nil:
		m.policyIndex[e.name] = int32(len(m.policyCache) - 1)
	case len(m.policyCache) > lookupLinear:
		m.policyIndex = make(map[string]int32, 4*lookupLinear)
		for i := range m.policyCache {
			m.policyIndex[m.policyCache[i].name] = int32(i)
		}
	}
	return e
}

// use counts one field sealed or opened with k; *slot remembers where k's
// count is in the report (-1: not yet), so counting is O(1).
func (m *machine) use(k *DataKey, slot *int32) {
	if *slot >= 0 {
		m.report.Keys[*slot].Fields++
		return
	}
	*slot = int32(len(m.report.Keys))
	m.report.Keys = append(m.report.Keys, KeyUse{Name: k.name, Version: k.version, Fields: 1})
}

func (m *machine) event(rule *compiledRule, k *DataKey, typ Type, action string) {
	if m.opt.OnField == nil {
		return
	}
	ev := FieldEvent{Path: m.path(), Key: m.enc.keyNames[rule.key], Mode: rule.mode, Type: typ, Action: action}
	if k != nil {
		ev.Key, ev.Version = k.name, k.version
	}
	m.opt.OnField(ev)
}

// decryptString handles a string value in a document being decrypted: a
// token is opened, masked or left as the policy says; any other string
// passes through.
func (m *machine) decryptString() error {
	s := &m.s
	if !s.ensure(1+len(TokenPrefix)) || !looksVersioned(s.buf[s.pos+1:s.pos+1+len(TokenPrefix)]) {
		_, err := s.scanString()
		return err
	}
	if tokenFormat(s.buf[s.pos+1:s.pos+1+len(TokenPrefix)]) == 0xff {
		// "sc3." and the like: a token of a format this version does not
		// know. Not opened, but reported, so that a mixed fleet shows up.
		off := s.offset()
		if _, err := s.scanString(); err != nil {
			return err
		}
		return m.tokenFailure(off, "", 0, 0, 0, errTokVersion)
	}
	// A token is "sc1." or "sc2." and base64url up to the closing quote. Collect it
	// in the window; if anything else turns up, it was not a token after
	// all (but claims to be one: reported, left as it is).
	s.hold = s.pos
	s.pos += 1 + len(TokenPrefix)
	for {
		buf := s.buf[:s.end]
		pos := s.pos
		for pos < len(buf) && b64url[buf[pos]] {
			pos++
		}
		s.pos = pos
		if pos < len(buf) || !s.more() {
			break
		}
	}
	start := s.hold
	s.hold = -1
	if s.pos < s.end && s.buf[s.pos] == '"' {
		s.pos++
		return m.openAt(start, s.pos)
	}
	off := s.base + int64(start)
	if _, err := s.scanStringRest(false); err != nil {
		return err
	}
	return m.tokenFailure(off, "", 0, 0, 0, errTokChars)
}

// looksVersioned reports whether b (4 bytes) is a token prefix of some
// format version: "sc", a digit, ".".
func looksVersioned(b []byte) bool {
	return b[0] == 's' && b[1] == 'c' && b[2]-'0' <= 9 && b[3] == '.'
}

// b64url[c] is true for the characters of unpadded base64url.
var b64url = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

// openAt opens (or masks, or leaves) the token string at buf[start:end].
func (m *machine) openAt(start, end int) error {
	s := &m.s
	off := s.base + int64(start)
	p, buf, err := decodeToken(m.z.body, s.buf[start+1:end-1])
	m.z.body = buf
	if err != nil {
		return m.tokenFailure(off, "", 0, 0, 0, err)
	}
	pe := m.policy(p.name)
	if m.dec.auto != nil {
		// A bound decryptor opens a token only at a place of a field
		// sealed under the token's own key and mode: anywhere else it is
		// a value somebody copied there, and stays closed.
		rule := &m.dec.rules[m.pendMatch]
		if pe.name != m.dec.keyNames[rule.key] || p.mode != rule.mode {
			m.report.Misplaced++
			if m.opt.OnField != nil {
				m.decEvent(pe.name, &p, p.typ, "misplaced")
			}
			return nil
		}
	}
	if pe.action != ActionOpen && pe.action != ActionMask {
		if m.opt.OnField != nil {
			m.decEvent(pe.name, &p, p.typ, "left")
		}
		return nil
	}
	ke := m.openKey(p.name, p.version)
	if ke == nil {
		return m.tokenFailure(off, pe.name, p.version, p.mode, p.typ, errTooManyKeys)
	}
	if ke.err != nil {
		return m.tokenFailure(off, pe.name, p.version, p.mode, p.typ, ke.err)
	}
	k := ke.key
	out := append(s.out, s.buf[s.mark:start]...)
	s.out, s.mark = out, start
	n := len(out)
	action := "decrypted"
	var typ Type
	if pe.action == ActionOpen {
		out, typ, err = m.z.openParsed(out, k, &p)
	} else {
		action = "masked"
		m.plain, typ, err = m.z.openParsed(m.plain[:0], k, &p)
		if err == nil {
			if pe.masker == nil {
				err = errors.New("fieldcrypt: no masker for a masked key")
			} else {
				info := TokenInfo{Format: int(p.format), Mode: p.mode, Type: typ, Key: pe.name, KeyVersion: p.version}
				out, err = pe.masker(m.ctx, out, info, m.plain, m.keys)
				if err == nil && (len(out) < n || !m.z.check.validValue(out[n:], typeOf(firstByte(out[n:])))) {
					err = errors.New("fieldcrypt: masker did not write one JSON value")
				}
			}
		}
		clear(m.plain)
	}
	if err != nil {
		if len(out) >= n {
			clear(out[n:])
		}
		s.out = s.out[:n]
		return m.tokenFailure(off, pe.name, p.version, p.mode, p.typ, err)
	}
	s.out, s.mark = out, end
	if pe.action == ActionMask {
		m.report.Masked++
	}
	m.use(k, &ke.used)
	if m.opt.OnField != nil {
		m.decEvent(pe.name, &p, typ, action)
	}
	return nil
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// decEvent reports a token decrypted, masked or left; typ is the opened
// type, or for a token left closed what its header shows (TypeHidden in
// format 2).
func (m *machine) decEvent(name string, p *parsedToken, typ Type, action string) {
	m.opt.OnField(FieldEvent{Path: m.path(), Key: name, Version: p.version, Mode: p.mode, Type: typ, Action: action})
}

// tokenFailure handles a token that cannot be opened: an error in strict
// mode, a Failure in the report otherwise (the token stays as it is).
func (m *machine) tokenFailure(off int64, key string, version uint32, mode Mode, typ Type, err error) error {
	if m.opt.Strict {
		if key != "" {
			err = fmt.Errorf("key %s v%d: %w", key, version, err)
		}
		return &PathError{Path: m.path(), Offset: off, Err: err}
	}
	path := m.path()
	m.report.Failures = append(m.report.Failures, Failure{Path: path, Key: key, Version: version, Err: err})
	if m.opt.OnField != nil {
		m.opt.OnField(FieldEvent{Path: path, Key: key, Version: version, Mode: mode, Type: typ, Action: "failed"})
	}
	return nil
}

// path renders the path of the value being scanned. It is only called for
// errors and OnField, so it may allocate.
func (m *machine) path() string {
	elems := make([]PathElem, 0, len(m.frames))
	for i := range m.frames {
		f := &m.frames[i]
		if !f.elem {
			break
		}
		if !f.obj {
			elems = append(elems, PathElem{Index: f.index, IsIndex: true})
			continue
		}
		raw := m.names[f.keyOff : f.keyOff+f.keyLen]
		if f.keyTrunc {
			raw = raw[:completeEscapes(raw)]
		}
		name := string(decodeString(nil, raw))
		if f.keyTrunc {
			name += "..."
		}
		elems = append(elems, PathElem{Name: name})
	}
	return FormatPath(elems)
}

// completeEscapes returns the length of the longest prefix of raw (string
// text cut at an arbitrary byte) that does not end inside an escape.
func completeEscapes(raw []byte) int {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		need := 2
		if i+1 < len(raw) && raw[i+1] == 'u' {
			need = 6
		}
		if i+need > len(raw) {
			return i
		}
		i += need - 1
	}
	return len(raw)
}
