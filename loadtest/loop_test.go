package loadtest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func fixedRequest(uint64) Request { return Request{Op: OpRead, Method: "GET", Path: "/x"} }

// TestOpenLoopCountsStallFromDueTime drives a target that stalls once for
// 300ms at 200 requests/s through a single worker. Every request due during
// the stall waits behind it; measured from its due time each of them shows
// the wait. A closed loop (or an open loop timing from the actual send)
// would record only the one slow request: the coordinated-omission error
// this loop exists to avoid. The assertions are lower bounds that follow
// from the stall itself, not from the machine's speed.
func TestOpenLoopCountsStallFromDueTime(t *testing.T) {
	const stall = 300 * time.Millisecond
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 10 {
			time.Sleep(stall)
		}
	}))
	defer srv.Close()
	rec := NewRecorder(time.Now())
	rd := round{count: 200, rate: 200, concurrency: 1, grace: 10 * time.Second, timeout: 10 * time.Second}
	runOpen(context.Background(), endpoint{base: srv.URL, client: newClient(1)}, rd, &sequencer{}, fixedRequest, rec)
	s := rec.snapshot()
	if s.ok != 200 {
		t.Fatalf("sent %d requests, want 200 (errors %v)", s.ok, s.errors)
	}
	if s.latency.Max < stall.Microseconds() {
		t.Errorf("max latency %s, want at least the %v stall", FormatMicros(s.latency.Max), stall)
	}
	// Requests due every 5ms during the stall: about 60 of them were sent
	// late, the k-th after it waited at least stall - k*5ms.
	if s.late < 30 {
		t.Errorf("late = %d, want the ~60 requests due during the stall", s.late)
	}
	// p90 counts from the due time: at least 10% of requests (20) waited
	// behind the stall for over 100ms.
	if s.latency.P90 < (100 * time.Millisecond).Microseconds() {
		t.Errorf("p90 = %s: the stall is hidden (coordinated omission)", FormatMicros(s.latency.P90))
	}
}

// TestOpenLoopUnsentWhenTargetNeverAnswers: with every worker stuck, due
// requests past the grace period are counted, not silently dropped.
func TestOpenLoopUnsentWhenTargetNeverAnswers(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	rec := NewRecorder(time.Now())
	rd := round{count: 50, rate: 100, concurrency: 2, grace: 100 * time.Millisecond, timeout: 700 * time.Millisecond}
	runOpen(context.Background(), endpoint{base: srv.URL, client: newClient(2)}, rd, &sequencer{}, fixedRequest, rec)
	s := rec.snapshot()
	if s.ok != 0 || s.errors[ErrTimeout] < 2 {
		t.Fatalf("ok %d, errors %v: want timeouts", s.ok, s.errors)
	}
	var total int64
	for _, n := range s.errors {
		total += n
	}
	if total != 50 || s.errors[ErrNotSentYet] == 0 {
		t.Fatalf("errors %v: every one of the 50 due requests must be accounted, most as unsent", s.errors)
	}
}

func TestClosedLoopSendsExactCount(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	rec := NewRecorder(time.Now())
	seq := &sequencer{}
	var mu sync.Mutex
	seen := map[uint64]bool{}
	build := func(n uint64) Request {
		mu.Lock()
		seen[n] = true
		mu.Unlock()
		return fixedRequest(n)
	}
	runRound(context.Background(), endpoint{base: srv.URL, client: newClient(8)}, round{count: 333, concurrency: 8, timeout: 5 * time.Second}, seq, build, rec)
	if ok, errs := rec.Counts(); ok != 333 || errs != 0 || calls.Load() != 333 {
		t.Fatalf("ok %d errors %d calls %d, want 333", ok, errs, calls.Load())
	}
	// The sequence continues across rounds, without gaps or repeats.
	runRound(context.Background(), endpoint{base: srv.URL, client: newClient(8)}, round{count: 17, concurrency: 3, timeout: 5 * time.Second}, seq, build, rec)
	for i := range uint64(350) {
		if !seen[i] {
			t.Fatalf("request %d never built", i)
		}
	}
	if len(seen) != 350 {
		t.Fatalf("%d distinct requests, want 350", len(seen))
	}
}

func TestClosedLoopStopsAtDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	rec := NewRecorder(time.Now())
	start := time.Now()
	runRound(context.Background(), endpoint{base: srv.URL, client: newClient(4)}, round{until: start.Add(200 * time.Millisecond), concurrency: 4, timeout: 5 * time.Second}, &sequencer{}, fixedRequest, rec)
	if ok, _ := rec.Counts(); ok == 0 {
		t.Fatal("no request completed")
	}
	// Ctx cancellation ends a round with no deadline at all.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	runRound(ctx, endpoint{base: srv.URL, client: newClient(4)}, round{until: time.Now().Add(time.Hour), concurrency: 4, timeout: 5 * time.Second}, &sequencer{}, fixedRequest, rec)
}

func TestSendClassifiesOutcomes(t *testing.T) {
	mux := http.NewServeMux()
	for path, status := range map[string]int{"/200": 200, "/201": 201, "/302": 302, "/404": 404, "/409": 409, "/503": 503} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if status == 302 {
				w.Header().Set("Location", "/elsewhere-that-is-not-followed")
			}
			w.WriteHeader(status)
			w.Write([]byte(`{"docs":[]}`))
		})
	}
	mux.HandleFunc("/found", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"docs":[{"_id":"a"}]}`)) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { time.Sleep(300 * time.Millisecond) })
	mux.HandleFunc("/hangup", func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ep := endpoint{base: srv.URL, client: newClient(2)}
	dead := endpoint{base: "http://" + closedAddr(t), client: newClient(1)}

	tests := []struct {
		name string
		ep   endpoint
		req  Request
		want string
	}{
		{"200", ep, Request{Method: "GET", Path: "/200"}, ""},
		{"201", ep, Request{Method: "POST", Path: "/201", Body: []byte(`{}`)}, ""},
		{"3xx", ep, Request{Method: "GET", Path: "/302"}, ErrHTTPOther},
		{"404", ep, Request{Method: "GET", Path: "/404"}, ErrHTTP4xx},
		{"409", ep, Request{Method: "GET", Path: "/409"}, ErrHTTP4xx},
		{"503", ep, Request{Method: "GET", Path: "/503"}, ErrHTTP5xx},
		{"query that finds nothing", ep, Request{Method: "POST", Path: "/200", Body: []byte(`{}`), check: foundSome}, ErrBadAnswer},
		{"query that finds", ep, Request{Method: "POST", Path: "/found", Body: []byte(`{}`), check: foundSome}, ""},
		{"timeout", ep, Request{Method: "GET", Path: "/slow"}, ErrTimeout},
		{"connection closed", ep, Request{Method: "GET", Path: "/hangup"}, ErrTransport},
		{"connection refused", dead, Request{Method: "GET", Path: "/"}, ErrTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := send(context.Background(), tt.ep, tt.req, 100*time.Millisecond); got != tt.want {
				t.Errorf("send = %q, want %q", got, tt.want)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
