// Package scheduler runs sidecrypt's background key work inside `serve`:
//
//   - rotation: a key whose primary version has outlived the key's
//     cryptoperiod gets a new primary version; the old one is deactivated
//     and keeps decrypting (keystore.Manager.Rotate);
//   - KEK rotation on the KEK's own cryptoperiod, when one is set;
//   - re-wrap: whenever data key versions are wrapped under an older KEK
//     version (after `sidecrypt kek rotate`, or the scheduler's own KEK
//     rotation), they are re-wrapped under the current one, paced by a rate
//     limiter so that the HSM stays available to the request path. Each new
//     wrapped copy is unwrapped back and compared before the record is
//     switched (keystore.Manager.Rewrap), and the work list is recomputed
//     from the store every time, so a crash or kill -9 at any point loses
//     nothing: the next run simply finds what is left.
//   - when no data key uses an old KEK version any more, it is reported as
//     retirable (log line and metric); retiring is an operator decision
//     (`sidecrypt kek retire`).
//
// The loop runs once at start, then on a ticker, stops on ctx.Done, and
// recovers and logs panics. With several sidecars sharing a keystore, only
// the elected leader does this work (Options.Leader).
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore"
)

// Manager is what the scheduler needs of keystore.Manager.
type Manager interface {
	List(ctx context.Context) ([]*keystore.Key, error)
	Rotate(ctx context.Context, name string, expectPrimary uint32) (*keystore.Key, error)
	RewrapPending(ctx context.Context) (current uint32, pending int, err error)
	Rewrap(ctx context.Context, opts keystore.RewrapOptions) (keystore.RewrapResult, error)
	KEKs(ctx context.Context) ([]keystore.KEKStatus, error)
	RotateKEK(ctx context.Context) (uint32, error)
}

// Hooks let the metrics layer follow the scheduler. Every field may be nil.
type Hooks struct {
	Rotated        func(key, trigger string)
	RewrapProgress func(done, total int)
	RewrapVersion  func(ok bool) // one per re-wrapped (ok) or failed version
	Retirable      func(n int)
}

// Options configure a Scheduler.
type Options struct {
	// Interval between checks. Default 30s.
	Interval time.Duration
	// RewrapRate is the most data key versions re-wrapped per second.
	// Default 20.
	RewrapRate float64
	// KEKCryptoperiod rotates the KEK when its current version is older;
	// zero means only on demand (`sidecrypt kek rotate`).
	KEKCryptoperiod time.Duration
	// Leader reports whether this process may do the work now; nil means
	// always (a single sidecar).
	Leader func() bool
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now    func() time.Time
	Logger *slog.Logger
	Hooks  Hooks
}

// Scheduler is the background key worker.
type Scheduler struct {
	m    Manager
	opts Options
	log  *slog.Logger

	lim     *rate.Limiter
	kick    chan struct{}
	mu      sync.Mutex
	status  RewrapStatus
	running bool
}

// RewrapStatus is the state of the re-wrap job, for the admin API.
type RewrapStatus struct {
	Running    bool      `json:"running"`
	KEKVersion uint32    `json:"kek_version"`
	Done       int       `json:"done"`
	Total      int       `json:"total"`
	Failed     int       `json:"failed"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	// Rate is versions per second over the current (or last) run.
	Rate float64 `json:"rate"`
	// Remaining is the estimated time left, from the rate.
	Remaining time.Duration `json:"remaining"`
	LastError string        `json:"last_error,omitempty"`
	Retirable []uint32      `json:"retirable_kek_versions,omitempty"`
}

// New returns a scheduler over m.
func New(m Manager, opts Options) *Scheduler {
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.RewrapRate <= 0 {
		opts.RewrapRate = 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Leader == nil {
		opts.Leader = func() bool { return true }
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	return &Scheduler{
		m: m, opts: opts, log: lg,
		lim:  rate.NewLimiter(rate.Limit(opts.RewrapRate), 1),
		kick: make(chan struct{}, 1),
	}
}

// Run checks once at start, then every Interval (or at once after
// Trigger), until ctx ends. Errors are logged, never fatal.
func (s *Scheduler) Run(ctx context.Context) error {
	ctx = audit.WithActor(ctx, "scheduler")
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		s.safeRunOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

// Trigger asks Run to check now (e.g. after an admin KEK rotation).
func (s *Scheduler) Trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Status returns the re-wrap job's state.
func (s *Scheduler) Status() RewrapStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Running = s.running
	return st
}

func (s *Scheduler) safeRunOnce(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("scheduler: panic recovered; the next check runs on schedule", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	if err := s.RunOnce(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("scheduler: check failed", "err", err)
	}
}

// RunOnce does one round: rotations that are due, then the re-wrap job if
// anything is wrapped under an old KEK. It returns when the round is done.
func (s *Scheduler) RunOnce(ctx context.Context) error {
	if !s.opts.Leader() {
		return nil
	}
	ctx = audit.WithActor(ctx, "scheduler")
	var errs []error
	if err := s.rotateDue(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.rotateKEKDue(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.rewrap(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// rotateDue rotates every key whose primary has outlived its cryptoperiod.
// Keys whose records fail their integrity check are left out by List (and
// reported); the others are still rotated on time.
func (s *Scheduler) rotateDue(ctx context.Context) error {
	keys, err := s.m.List(ctx)
	if keys == nil && err != nil {
		return fmt.Errorf("scheduler: list keys: %w", err)
	}
	now := s.opts.Now()
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("scheduler: list keys: %w", err))
	}
	for _, k := range keys {
		if k.Cryptoperiod <= 0 || k.Primary == 0 {
			continue
		}
		p := k.Lookup(k.Primary)
		if p == nil || p.State != keystore.StateActive {
			continue
		}
		since := p.Activated
		if since.IsZero() {
			since = p.Created
		}
		if now.Before(since.Add(k.Cryptoperiod)) {
			continue
		}
		// expectPrimary: when another sidecar rotated a moment ago, this
		// is a no-op instead of a second new version.
		nk, err := s.m.Rotate(ctx, k.Name, k.Primary)
		if err != nil {
			errs = append(errs, fmt.Errorf("scheduler: rotate %q: %w", k.Name, err))
			continue
		}
		if nk.Primary != k.Primary {
			s.log.Info("scheduler: rotated key at the end of its cryptoperiod", "key", k.Name, "old_version", k.Primary, "new_version", nk.Primary, "cryptoperiod", k.Cryptoperiod)
			if s.opts.Hooks.Rotated != nil {
				s.opts.Hooks.Rotated(k.Name, "schedule")
			}
		}
	}
	return errors.Join(errs...)
}

// rotateKEKDue rotates the KEK when its current version is older than
// KEKCryptoperiod.
func (s *Scheduler) rotateKEKDue(ctx context.Context) error {
	if s.opts.KEKCryptoperiod <= 0 {
		return nil
	}
	keks, err := s.m.KEKs(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: list KEKs: %w", err)
	}
	for _, k := range keks {
		if k.State != "current" {
			continue
		}
		if s.opts.Now().Before(k.Created.Add(s.opts.KEKCryptoperiod)) {
			return nil
		}
		v, err := s.m.RotateKEK(ctx)
		if err != nil {
			return fmt.Errorf("scheduler: rotate KEK: %w", err)
		}
		s.log.Info("scheduler: rotated the KEK at the end of its cryptoperiod; re-wrapping data keys", "old_version", k.Version, "new_version", v)
		return nil
	}
	return nil
}

// rewrap moves every data key version under the current KEK, paced.
func (s *Scheduler) rewrap(ctx context.Context) error {
	current, pending, err := s.m.RewrapPending(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: re-wrap status: %w", err)
	}
	if pending > 0 {
		s.runRewrap(ctx, current, pending)
	}
	return s.reportRetirable(ctx)
}

func (s *Scheduler) runRewrap(ctx context.Context, current uint32, pending int) {
	start := s.opts.Now()
	s.mu.Lock()
	s.running = true
	s.status = RewrapStatus{KEKVersion: current, Total: pending, Started: start}
	s.mu.Unlock()
	s.log.Info("scheduler: re-wrapping data keys under the current KEK", "kek_version", current, "pending", pending, "rate_per_second", s.opts.RewrapRate)

	res, err := s.m.Rewrap(ctx, keystore.RewrapOptions{
		Limiter: s.lim,
		Progress: func(done, total int) {
			s.mu.Lock()
			s.status.Done, s.status.Total = done, total
			s.updateRateLocked()
			s.mu.Unlock()
			if s.opts.Hooks.RewrapProgress != nil {
				s.opts.Hooks.RewrapProgress(done, total)
			}
		},
	})
	s.mu.Lock()
	s.running = false
	s.status.Finished = s.opts.Now()
	s.status.Failed = res.Failed
	s.status.KEKVersion = res.KEKVersion
	s.updateRateLocked()
	s.status.Remaining = 0
	if err != nil {
		s.status.LastError = err.Error()
	}
	s.mu.Unlock()
	if s.opts.Hooks.RewrapVersion != nil {
		for range res.Rewrapped {
			s.opts.Hooks.RewrapVersion(true)
		}
		for range res.Failed {
			s.opts.Hooks.RewrapVersion(false)
		}
	}
	switch {
	case err != nil && ctx.Err() != nil:
		s.log.Info("scheduler: re-wrap interrupted by shutdown; it resumes at the next start", "done", res.Rewrapped, "total", res.Total)
	case err != nil || res.Failed > 0:
		s.log.Error("scheduler: re-wrap incomplete; failed versions keep their old wrapped copy and are retried", "rewrapped", res.Rewrapped, "failed", res.Failed, "err", err)
	default:
		s.log.Info("scheduler: re-wrap done", "kek_version", res.KEKVersion, "rewrapped", res.Rewrapped, "skipped", res.Skipped, "took", s.opts.Now().Sub(start).Round(time.Millisecond))
	}
}

func (s *Scheduler) updateRateLocked() {
	elapsed := s.opts.Now().Sub(s.status.Started).Seconds()
	if elapsed <= 0 || s.status.Done == 0 {
		return
	}
	s.status.Rate = float64(s.status.Done) / elapsed
	left := s.status.Total - s.status.Done
	s.status.Remaining = time.Duration(float64(left) / s.status.Rate * float64(time.Second)).Round(time.Second)
}

func (s *Scheduler) reportRetirable(ctx context.Context) error {
	keks, err := s.m.KEKs(ctx)
	if err != nil {
		return fmt.Errorf("scheduler: list KEKs: %w", err)
	}
	var retirable []uint32
	for _, k := range keks {
		if k.Retirable {
			retirable = append(retirable, k.Version)
		}
	}
	s.mu.Lock()
	changed := fmt.Sprint(s.status.Retirable) != fmt.Sprint(retirable)
	s.status.Retirable = retirable
	s.mu.Unlock()
	if changed && len(retirable) > 0 {
		s.log.Info("scheduler: old KEK versions wrap no data key any more and can be retired with `sidecrypt kek retire --version N`", "versions", fmt.Sprint(retirable))
	}
	if s.opts.Hooks.Retirable != nil {
		s.opts.Hooks.Retirable(len(retirable))
	}
	return nil
}
