package loadtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// LateThreshold is how far after its intended time an open-loop request
// may be sent before it counts as late. Timer wake-up on Linux takes tens
// of microseconds; a millisecond means the generator really fell behind.
const LateThreshold = time.Millisecond

// endpoint is where one target's requests go.
type endpoint struct {
	base   string // http://host:port, no trailing slash
	client *http.Client
}

// newClient returns an HTTP/1.1 keep-alive client for one target, sized
// for conns concurrent requests. It ignores HTTP_PROXY: a load test must
// reach the target it names.
func newClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{
		Transport: tr,
		// A redirect is an answer to report (http_other), not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// round is one measured stretch of load against one target.
type round struct {
	// until ends a closed-loop round (zero: count decides).
	until time.Time
	// count is how many requests to send (0: until decides). In an open
	// loop it is rate × duration.
	count int64
	// concurrency is the number of workers: requests in flight at most.
	concurrency int
	// rate, when positive, makes the loop open: requests are due at
	// start + i/rate whatever the target does.
	rate float64
	// grace is how long an open loop may run past its last due time
	// before requests still waiting count as unsent.
	grace   time.Duration
	timeout time.Duration
}

// sequencer hands out request numbers across rounds, so that every
// target sees the same sequence of requests.
type sequencer struct{ next atomic.Uint64 }

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// send performs one request and classifies the outcome. It returns the
// error kind, or "" for success.
func send(ctx context.Context, ep endpoint, req Request, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, ep.base+req.Path, body)
	if err != nil {
		return ErrTransport
	}
	if req.Body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	resp, err := ep.client.Do(hr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return ErrTimeout
		}
		return ErrTransport
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout
	case err != nil:
		return ErrTransport
	case resp.StatusCode >= 500:
		return ErrHTTP5xx
	case resp.StatusCode >= 400:
		return ErrHTTP4xx
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		return ErrHTTPOther
	case req.check != nil && !req.check(buf.Bytes()):
		return ErrBadAnswer
	}
	return ""
}

// runRound drives one round against ep, building requests with build,
// and records into rec. It returns when the round is over and every
// request it started has finished, or when ctx ends.
func runRound(ctx context.Context, ep endpoint, rd round, seq *sequencer, build func(uint64) Request, rec *Recorder) {
	if rd.rate > 0 {
		runOpen(ctx, ep, rd, seq, build, rec)
		return
	}
	var budget atomic.Int64
	budget.Store(rd.count)
	var wg sync.WaitGroup
	for range rd.concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				if !rd.until.IsZero() && !time.Now().Before(rd.until) {
					return
				}
				if rd.count > 0 && budget.Add(-1) < 0 {
					return
				}
				req := build(seq.next.Add(1) - 1)
				start := time.Now()
				kind := send(ctx, ep, req, rd.timeout)
				if ctx.Err() != nil {
					return // interrupted: not the target's fault
				}
				done := time.Now()
				if kind != "" {
					rec.Failure(kind)
					continue
				}
				rec.Success(done, done.Sub(start), req.Docs)
			}
		})
	}
	wg.Wait()
}

// runOpen is the open loop. Request i is due at start + i/rate, fixed in
// advance and independent of how the target answers. One dispatcher hands
// due times to the workers as they come due; a worker that picks one up
// late (all workers busy behind a slow target) sends at once, and the
// latency counts from the due time, so a stall shows in every request
// that waited behind it (no coordinated omission). Workers bound the
// requests in flight.
//
// The dispatcher sleeps with sleepUntil, not a Go timer: the runtime
// rounds timer waits under a millisecond up to one on Linux, which would
// add most of a millisecond to every latency at the rates where sidecrypt's
// overhead is measured; nanosleep(2) overshoots by tens of microseconds.
func runOpen(ctx context.Context, ep endpoint, rd round, seq *sequencer, build func(uint64) Request, rec *Recorder) {
	interval := float64(time.Second) / rd.rate
	start := time.Now()
	lastDue := start.Add(time.Duration(float64(rd.count-1) * interval))
	hardStop := lastDue.Add(rd.grace)
	// The buffer holds the backlog of due requests; past 64Ki waiting,
	// every one of them is long late and the dispatcher may wait too
	// (due times stay fixed, so latencies stay right).
	due := make(chan time.Time, min(rd.count, 1<<16))
	go func() {
		defer close(due)
		for i := range rd.count {
			d := start.Add(time.Duration(float64(i) * interval))
			if !sleepUntil(ctx, d) {
				return
			}
			select {
			case due <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range rd.concurrency {
		wg.Go(func() {
			for d := range due {
				if ctx.Err() != nil {
					return
				}
				now := time.Now()
				if now.After(hardStop) {
					rec.Failure(ErrNotSentYet)
					continue
				}
				if now.Sub(d) > LateThreshold {
					rec.Late()
				}
				req := build(seq.next.Add(1) - 1)
				kind := send(ctx, ep, req, rd.timeout)
				if ctx.Err() != nil {
					return
				}
				done := time.Now()
				if kind != "" {
					rec.Failure(kind)
					continue
				}
				rec.Success(done, done.Sub(d), req.Docs)
			}
		})
	}
	wg.Wait()
}
