// Package election picks one sidecar, among all those sharing an etcd
// keystore, to do the background key work (rotation at the end of a
// cryptoperiod, KEK rotation, re-wrap), so that it is done once and not by
// every sidecar at the same time.
//
// It is etcd's own leader election (go.etcd.io/etcd/client/v3/concurrency)
// on the key prefix <keystore prefix>/leader: each sidecar holds a session
// (an etcd lease with a TTL of a few seconds, kept alive by the client) and
// campaigns; the candidate whose key has the lowest creation revision leads.
//
// # Losing leadership
//
// A leader stops being one at once when:
//
//   - its session ends (the client saw the lease expire or be revoked);
//   - its lease may have expired on the server although the client has not
//     noticed yet: leadership is only trusted until the last keep-alive
//     answer plus the TTL, less a safety margin (Options.Margin), so that a
//     sidecar cut off from etcd stops before another can be elected;
//   - its context ends (shutdown), when it also resigns, so that another
//     sidecar takes over without waiting for the lease to expire.
//
// The work function's context is cancelled at that moment, and Leader
// reports false. The sidecar then campaigns again.
//
// # Why a lost or doubled leader is harmless
//
// Election bounds duplicated work; it is not what keeps keys safe. Every
// write the work makes is a compare-and-swap on the key's revision, a
// rotation names the primary it expects (two rotations make one version),
// and the re-wrap job recomputes its work list from the store and verifies
// each new wrapped copy before switching the record. If the leader dies in
// the middle of a re-wrap, the next leader simply finds the versions that
// are left and finishes them.
package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Options configure an Elector. Zero values take the defaults shown.
type Options struct {
	// Prefix is the election's key prefix; required, normally
	// "<keystore prefix>/leader".
	Prefix string
	// TTL is the session lease's time to live, in whole seconds. A leader
	// that dies without resigning is replaced about TTL later. Default 5.
	TTL int
	// Margin is taken off the lease's remaining time before leadership is
	// no longer trusted, to cover the keep-alive round trip and clock
	// rates. Default 1s (must be less than TTL).
	Margin time.Duration
	// ID identifies this candidate in etcd and in logs. Default
	// "<hostname>/<pid>".
	ID string
	// RetryInterval is the pause after a failed session or campaign
	// (etcd unreachable). Default 500ms.
	RetryInterval time.Duration
	// Logger receives elections and losses; nil discards them.
	Logger *slog.Logger
}

// Elector campaigns for leadership and runs work while it leads.
type Elector struct {
	cli  *clientv3.Client
	opts Options

	leader     atomic.Bool
	validUntil atomic.Int64 // unix nanoseconds; leadership is not trusted after it

	mu     sync.Mutex
	status Status
}

// Status describes the elector, for logs and the admin API.
type Status struct {
	ID     string    `json:"id"`
	Leader bool      `json:"leader"`
	Since  time.Time `json:"since,omitzero"` // start of the current term
	Terms  int       `json:"terms"`          // terms won since start
}

// New returns an Elector on cli. It does nothing until Run.
func New(cli *clientv3.Client, opts Options) (*Elector, error) {
	if cli == nil || opts.Prefix == "" {
		return nil, errors.New("election: a client and a key prefix are required")
	}
	if opts.TTL <= 0 {
		opts.TTL = 5
	}
	if opts.Margin <= 0 {
		opts.Margin = time.Second
	}
	if opts.Margin >= time.Duration(opts.TTL)*time.Second {
		return nil, fmt.Errorf("election: margin %v must be shorter than the lease TTL %ds", opts.Margin, opts.TTL)
	}
	if opts.ID == "" {
		host, _ := os.Hostname()
		opts.ID = host + "/" + strconv.Itoa(os.Getpid())
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Elector{cli: cli, opts: opts, status: Status{ID: opts.ID}}, nil
}

// Leader reports whether this candidate leads now. It is what
// scheduler.Options.Leader calls before each round.
func (e *Elector) Leader() bool {
	return e.leader.Load() && time.Now().UnixNano() < e.validUntil.Load()
}

// Status returns the elector's state.
func (e *Elector) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.status
	st.Leader = e.Leader()
	return st
}

// Run campaigns until ctx ends. Each time it is elected it calls work with
// a context that is cancelled as soon as leadership is lost, and waits for
// work to return before campaigning again. work should run until its
// context ends; if it returns early, it is called again after
// RetryInterval for as long as the term lasts. Run returns nil when ctx
// ends.
func (e *Elector) Run(ctx context.Context, work func(ctx context.Context)) error {
	pause := e.opts.RetryInterval
	for ctx.Err() == nil {
		err := e.term(ctx, work)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.opts.Logger.Warn("election: campaign interrupted; trying again", "id", e.opts.ID, "err", err, "in", pause)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		// Back off while etcd stays away; a term that ran resets it.
		if err != nil {
			pause = min(2*pause, 5*time.Second)
		} else {
			pause = e.opts.RetryInterval
		}
	}
	return nil
}

// term runs one session: campaign, lead until the session or ctx ends.
func (e *Elector) term(ctx context.Context, work func(ctx context.Context)) error {
	// The lease is granted here, with a timeout, rather than by
	// NewSession: the etcd client waits for a connection as long as its
	// context allows, and the session's context must outlive ctx so that
	// a shutdown can still resign.
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	lease, err := e.cli.Grant(gctx, int64(e.opts.TTL))
	gcancel()
	if err != nil {
		return fmt.Errorf("election: grant lease: %w", err)
	}
	sess, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(e.opts.TTL))
	if err != nil {
		e.revoke(lease.ID)
		return fmt.Errorf("election: open session: %w", err)
	}
	// Our own keep-alive stream on the session's lease tells us how long
	// the server will keep it (Leader's deadline).
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := e.cli.KeepAlive(kctx, sess.Lease())
	if err != nil {
		e.closeSession(sess)
		return fmt.Errorf("election: keep lease alive: %w", err)
	}
	e.extend(e.opts.TTL)
	var kaDone atomic.Bool
	go func() {
		for resp := range ka {
			e.extend(int(resp.TTL))
		}
		kaDone.Store(true)
	}()

	el := concurrency.NewElection(sess, e.opts.Prefix)
	// Campaign until elected; give up when the session ends (etcd lost)
	// or ctx ends.
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-cctx.Done():
		}
		ccancel()
	}()
	err = el.Campaign(cctx, e.opts.ID)
	ccancel()
	if err != nil {
		e.closeSession(sess)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("election: campaign: %w", err)
	}
	if !e.stillOurs(ctx, sess, el) {
		e.closeSession(sess)
		return errors.New("election: elected on a session that has ended")
	}

	e.mu.Lock()
	e.status.Since, e.status.Terms = time.Now(), e.status.Terms+1
	e.mu.Unlock()
	e.leader.Store(true)
	e.opts.Logger.Info("election: this sidecar is now the leader and runs the background key work", "id", e.opts.ID, "key", el.Key())

	wctx, wcancel := context.WithCancel(ctx)
	workDone := make(chan struct{})
	go func() {
		defer close(workDone)
		for wctx.Err() == nil {
			work(wctx)
			select {
			case <-wctx.Done():
			case <-time.After(e.opts.RetryInterval):
			}
		}
	}()

	// Watch for the end of the term: session over, lease past its
	// trusted deadline, or shutdown.
	reason := ""
	tick := time.NewTicker(100 * time.Millisecond)
	for reason == "" {
		select {
		case <-sess.Done():
			reason = "session ended (lease expired or revoked)"
		case <-ctx.Done():
			reason = "shutting down"
		case <-tick.C:
			if !e.Leader() {
				reason = "lease not renewed in time (etcd unreachable?)"
			} else if kaDone.Load() {
				reason = "lease keep-alive stopped"
			}
		}
	}
	tick.Stop()
	e.leader.Store(false)
	wcancel()
	<-workDone
	e.opts.Logger.Warn("election: no longer the leader; background key work stopped", "id", e.opts.ID, "reason", reason)
	if ctx.Err() != nil {
		// Hand over at once: resign and revoke the lease instead of
		// letting it expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = el.Resign(rctx)
		cancel()
	}
	e.closeSession(sess)
	return nil
}

// stillOurs checks, after Campaign returned, that the session is alive and
// our key still exists: Campaign can return once the keys ahead of ours
// are gone even if our own lease expired meanwhile.
func (e *Elector) stillOurs(ctx context.Context, sess *concurrency.Session, el *concurrency.Election) bool {
	select {
	case <-sess.Done():
		return false
	default:
	}
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := e.cli.Get(gctx, el.Key())
	return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == el.Rev() && clientv3.LeaseID(resp.Kvs[0].Lease) == sess.Lease()
}

// extend trusts leadership until ttl seconds from now, less the margin.
func (e *Elector) extend(ttl int) {
	if ttl <= 0 {
		e.validUntil.Store(0)
		return
	}
	e.validUntil.Store(time.Now().Add(time.Duration(ttl)*time.Second - e.opts.Margin).UnixNano())
}

// closeSession ends the session and gives its lease back, so that another
// candidate need not wait for it to expire. If etcd cannot be reached the
// lease simply expires.
func (e *Elector) closeSession(sess *concurrency.Session) {
	sess.Orphan()
	e.revoke(sess.Lease())
}

func (e *Elector) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = e.cli.Revoke(ctx, id)
}

// ErrNoLeader is returned by CurrentLeader when no candidate leads.
var ErrNoLeader = errors.New("election: no leader")

// CurrentLeader returns the ID of the candidate that leads the election
// on prefix now (the one whose key was created first), or ErrNoLeader.
func CurrentLeader(ctx context.Context, cli *clientv3.Client, prefix string) (string, error) {
	resp, err := cli.Get(ctx, prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("election: read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNoLeader
	}
	return string(resp.Kvs[0].Value), nil
}
