//go:build cgo && !nopkcs11

package hsm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/miekg/pkcs11"
)

// module is one loaded PKCS#11 library, shared by every provider in this
// process that names the same file. Cryptoki state (C_Initialize, the
// login) belongs to the process, not to a caller, so two providers must
// not each initialise and finalise it.
type module struct {
	path string
	ctx  *pkcs11.Ctx

	// mu is held for reading around every call into the library and for
	// writing while it is finalised and initialised again, so no call runs
	// against a half-initialised library, and every session handle is
	// tagged with the generation it was opened in.
	mu          sync.RWMutex
	gen         uint64 // incremented by each successful C_Initialize
	initialized bool

	refs int // providers holding the module; guarded by modules
}

var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

// acquireModule loads (once per process) and initialises the library.
// The library stays loaded after the last release: unloading and
// reloading vendor libraries with dlclose is a known source of crashes
// (atexit handlers, OpenSSL state), and costs nothing to avoid.
func acquireModule(path string) (*module, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS#11 module %q: %v", ErrUnavailable, path, err)
	}
	modules.Lock()
	defer modules.Unlock()
	m := modules.m[real]
	if m == nil {
		ctx := pkcs11.New(real)
		if ctx == nil {
			return nil, fmt.Errorf("%w: cannot load PKCS#11 module %q (not a PKCS#11 library, wrong architecture, or a dependency is missing)", ErrUnavailable, path)
		}
		m = &module{path: real, ctx: ctx}
		modules.m[real] = m
	}
	if m.refs == 0 {
		m.mu.Lock()
		err := m.initialize()
		m.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("%w: C_Initialize of PKCS#11 module %q: %v", ErrUnavailable, path, err)
		}
	}
	m.refs++
	return m, nil
}

// initialize runs C_Initialize. Called with m.mu held for writing. A
// library already initialised by other code in this process is accepted.
func (m *module) initialize() error {
	err := m.ctx.Initialize()
	if err != nil && !isRV(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		m.initialized = false
		return err
	}
	m.initialized = true
	m.gen++
	return nil
}

// release drops one reference; the last one finalises the library, which
// closes every session and logs out. SoftHSM2 reads its token directory
// at C_Initialize only, so finalising also lets a later Open see tokens
// created in the meantime.
func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initialized {
		_ = m.ctx.Finalize()
		m.initialized = false
	}
}

// reinit finalises and initialises the library again after it reported
// that it was finalised, or that the device or token went away. seen is
// the generation the failing call ran in: when another caller has already
// re-initialised since, nothing is done.
func (m *module) reinit(seen uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen != seen && m.initialized {
		return nil
	}
	_ = m.ctx.Finalize()
	m.initialized = false
	return m.initialize()
}

func isRV(err error, rv uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// errClass says how do() reacts to an error from the library.
type errClass int

const (
	classOK        errClass = iota
	classFinal              // return it
	classSession            // the session is gone: drop it, retry once on a new one
	classModule             // the library or device is gone: re-initialise, retry once
	classHandle             // a cached object handle is stale: rescan, retry once
	classTransient          // the token hiccuped: retry once as it is
)

func classify(err error) errClass {
	if err == nil {
		return classOK
	}
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return classFinal
	}
	switch uint(rv) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_USER_NOT_LOGGED_IN:
		return classSession
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
		pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_SLOT_ID_INVALID, pkcs11.CKR_TOKEN_NOT_RECOGNIZED:
		return classModule
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID,
		pkcs11.CKR_WRAPPING_KEY_HANDLE_INVALID, pkcs11.CKR_UNWRAPPING_KEY_HANDLE_INVALID:
		return classHandle
	case pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED:
		// SoftHSM2's file store answers this, now and then, while another
		// thread writes objects to the same token.
		return classTransient
	}
	return classFinal
}

// session is one PKCS#11 session, used by one goroutine at a time.
type session struct {
	h   pkcs11.SessionHandle
	gen uint64
	// tainted marks a session that may still hold a session object with
	// key material (a failed C_DestroyObject): it is closed, not reused,
	// because closing a session destroys its session objects.
	tainted bool
}

// sessionPool bounds the sessions in use and keeps idle ones for reuse.
// PKCS#11 sessions must not be used by two threads at once; the pool
// hands each to one caller at a time.
type sessionPool struct {
	sem  chan struct{} // one slot per session in use
	done chan struct{} // closed by Close
	mu   sync.Mutex
	idle []*session
}

func newSessionPool(n int) sessionPool {
	return sessionPool{sem: make(chan struct{}, n), done: make(chan struct{})}
}

// acquire waits for a free slot.
func (sp *sessionPool) acquire(ctx context.Context) error {
	select {
	case <-sp.done:
		return fmt.Errorf("%w: provider is closed", ErrUnavailable)
	default:
	}
	select {
	case sp.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for a PKCS#11 session: %w", ErrUnavailable, ctx.Err())
	case <-sp.done:
		return fmt.Errorf("%w: provider is closed", ErrUnavailable)
	}
	select {
	case <-sp.done:
		<-sp.sem
		return fmt.Errorf("%w: provider is closed", ErrUnavailable)
	default:
		return nil
	}
}

func (sp *sessionPool) releaseSlot() { <-sp.sem }

// popIdle returns an idle session of generation gen, silently dropping
// sessions of older generations: their handles died with the old
// C_Initialize, and closing them could close another caller's session
// that reuses the number.
func (sp *sessionPool) popIdle(gen uint64) *session {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for len(sp.idle) > 0 {
		s := sp.idle[len(sp.idle)-1]
		sp.idle = sp.idle[:len(sp.idle)-1]
		if s.gen == gen {
			return s
		}
	}
	return nil
}

func (sp *sessionPool) pushIdle(s *session) {
	sp.mu.Lock()
	sp.idle = append(sp.idle, s)
	sp.mu.Unlock()
}

func (sp *sessionPool) takeAllIdle() []*session {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	all := sp.idle
	sp.idle = nil
	return all
}
