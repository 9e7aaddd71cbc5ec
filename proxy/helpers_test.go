package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/rules"
)

// staticRules is a RuleSource holding one Plan (nil for "no rules").
type staticRules struct{ p atomic.Pointer[rules.Plan] }

func newStaticRules(p *rules.Plan) *staticRules {
	s := &staticRules{}
	s.p.Store(p)
	return s
}

func (s *staticRules) Current() *rules.Plan { return s.p.Load() }

// recorded is one request as the upstream saw it.
type recorded struct {
	Method   string
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte
}

// recorder is an upstream that records every request it receives, then
// hands it to a handler. Tests of refusals assert that it saw nothing.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	h    http.Handler
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	rc.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if rc.h != nil {
		rc.h.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func (rc *recorder) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *recorder) last(t *testing.T) recorded {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		t.Fatal("upstream received no request")
	}
	return rc.reqs[len(rc.reqs)-1]
}

// startUpstream starts a recording upstream on 127.0.0.1.
func startUpstream(t *testing.T, h http.Handler) (*recorder, *url.URL) {
	t.Helper()
	rc := &recorder{h: h}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return rc, u
}

// memAudit records audit events in memory.
type memAudit struct {
	mu     sync.Mutex
	events []audit.Event
}

func (m *memAudit) Record(_ context.Context, e audit.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, e)
	return nil
}

func (m *memAudit) all() []audit.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]audit.Event(nil), m.events...)
}

// memObserver counts observations.
type memObserver struct {
	mu       sync.Mutex
	requests map[string]int // "route|outcome|status"
	refused  map[string]int // "route|code"
	fields   map[string]int // "action|key"
	bytes    map[string]int64
	upstream int
}

func newMemObserver() *memObserver {
	return &memObserver{requests: map[string]int{}, refused: map[string]int{}, fields: map[string]int{}, bytes: map[string]int64{}}
}

func (m *memObserver) Request(route, outcome string, status int, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[route+"|"+outcome+"|"+http.StatusText(status)]++
}

func (m *memObserver) Refused(route, code string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refused[route+"|"+code]++
}

func (m *memObserver) Fields(action, key string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fields[action+"|"+key] += n
}

func (m *memObserver) UpstreamLatency(string, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.upstream++
}

func (m *memObserver) Bytes(route, dir string, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bytes[route+"|"+dir] += n
}

func (m *memObserver) field(action, key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fields[action+"|"+key]
}

func (m *memObserver) refusals(route, code string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refused[route+"|"+code]
}

// logBuffer captures log output so tests can assert what never appears.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testProxy is a proxy served on a loopback listener.
type testProxy struct {
	*Proxy
	URL   *url.URL
	Audit *memAudit
	Obs   *memObserver
	Log   *logBuffer
}

// startProxy builds a proxy from cfg (filling Rules, Keys, Audit, Observer
// and Logger when unset) and serves it on 127.0.0.1 until the test ends.
func startProxy(t testing.TB, cfg Config) *testProxy {
	t.Helper()
	tp := &testProxy{Audit: &memAudit{}, Obs: newMemObserver(), Log: &logBuffer{}}
	if cfg.Rules == nil {
		cfg.Rules = newStaticRules(nil)
	}
	if cfg.Keys == nil {
		cfg.Keys = fieldcrypt.NewStaticKeyring()
	}
	if cfg.Audit == nil {
		cfg.Audit = tp.Audit
	}
	if cfg.Observer == nil {
		cfg.Observer = tp.Obs
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tp.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	if cfg.Engine == "" && cfg.Upstream != nil {
		// SIDECRYPT_TEST_ENGINE=nethttp runs every reverse-mode test of
		// this package on the net/http engine instead of the default
		// (make test does both).
		cfg.Engine = os.Getenv("SIDECRYPT_TEST_ENGINE")
	}
	// Named, so that a test can ask which engine it runs on.
	cfg.Engine = cfg.engine()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tp.Proxy = p
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	tp.URL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	return tp
}

// client returns an HTTP client with its own connection pool, closed at
// the end of the test.
func client(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// do sends a request and returns the status, headers and body.
func do(t testing.TB, c *http.Client, method, u string, hdr http.Header, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return resp.StatusCode, resp.Header, b
}

// errorCode extracts the code of a JSON error body, failing the test if
// the body is not one.
func errorCode(t testing.TB, body []byte) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("not a JSON error body: %q (%v)", body, err)
	}
	return e.Error.Code
}

// failingKeyring fails every lookup with err, as a Keyring does while the
// HSM or key store is unreachable.
type failingKeyring struct{ err error }

func (f failingKeyring) SealKey(context.Context, string) (*fieldcrypt.DataKey, error) {
	return nil, f.err
}

func (f failingKeyring) OpenKey(context.Context, string, uint32) (*fieldcrypt.DataKey, error) {
	return nil, f.err
}

// switchKeyring delegates to a keyring until failing is set.
type switchKeyring struct {
	inner   fieldcrypt.Keyring
	failing atomic.Bool
	err     error
}

func (s *switchKeyring) SealKey(ctx context.Context, name string) (*fieldcrypt.DataKey, error) {
	if s.failing.Load() {
		return nil, s.err
	}
	return s.inner.SealKey(ctx, name)
}

func (s *switchKeyring) OpenKey(ctx context.Context, name string, v uint32) (*fieldcrypt.DataKey, error) {
	if s.failing.Load() {
		return nil, s.err
	}
	return s.inner.OpenKey(ctx, name, v)
}

var errHSMDown = errors.New("test: hsm unreachable")

// plainServer starts an upstream that does not record (for bodies too big
// to keep).
func plainServer(t testing.TB, h http.Handler) *url.URL {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

// newCountingServer starts an upstream that counts the connections it
// accepts.
func newCountingServer(t testing.TB, h http.Handler, conns *atomic.Int32) *url.URL {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func mustListen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// newKey returns a random data key.
func newKey(t testing.TB, name string, version uint32) *fieldcrypt.DataKey {
	t.Helper()
	m := make([]byte, fieldcrypt.DataKeySize)
	if _, err := rand.Read(m); err != nil {
		t.Fatal(err)
	}
	k, err := fieldcrypt.NewDataKey(name, version, m)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testKeyring holds random versions of the keys the tests use.
func testKeyring(t testing.TB) *fieldcrypt.StaticKeyring {
	return fieldcrypt.NewStaticKeyring(newKey(t, "pii", 1), newKey(t, "contact", 1))
}

// openPolicy opens the listed keys and leaves the others.
type openPolicy []string

func (p openPolicy) Action(key string) (fieldcrypt.Action, fieldcrypt.Masker) {
	for _, k := range p {
		if k == key {
			return fieldcrypt.ActionOpen, nil
		}
	}
	return fieldcrypt.ActionLeave, nil
}

// decryptOnlyPlan is a Plan with no routes whose decrypter opens pii and
// contact tokens.
func decryptOnlyPlan(t testing.TB) *rules.Plan {
	return &rules.Plan{
		Hash:        "sha256:test",
		Decryptor:   fieldcrypt.NewDecryptor(openPolicy{"pii", "contact"}, fieldcrypt.Limits{}),
		DecryptKeys: []string{"pii", "contact"},
	}
}
