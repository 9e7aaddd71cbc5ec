package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/audit"
)

// ErrRulesChanged is returned by PushEtcdRules when the stored rule file
// changed between reading it (to show the diff) and writing the new one:
// nothing was written; read, review and push again.
var ErrRulesChanged = errors.New("rules: the rules stored in etcd changed since they were read; nothing was written")

// ReadEtcdRules returns the rule file stored at key and its etcd
// ModRevision; (nil, 0, nil) when none is stored.
func ReadEtcdRules(ctx context.Context, cli *clientv3.Client, key string) ([]byte, int64, error) {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("rules: read etcd key %q: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	kv := resp.Kvs[0]
	if len(kv.Value) > MaxFileSize {
		return nil, 0, fmt.Errorf("rules: etcd key %q: larger than %d bytes", key, MaxFileSize)
	}
	return kv.Value, kv.ModRevision, nil
}

// PushEtcdRules validates data (a rule file) and stores it at key, but
// only if the stored one is still at revision expect (0: none stored),
// so that two operators pushing at once cannot silently overwrite each
// other. An invalid file is refused with an *Error (errors.Is ErrInvalid)
// and nothing is written. It returns the new revision.
func PushEtcdRules(ctx context.Context, cli *clientv3.Client, key string, data []byte, expect int64) (int64, error) {
	if err := validateForStore(key, data); err != nil {
		return 0, err
	}
	cond := clientv3.Compare(clientv3.ModRevision(key), "=", expect)
	if expect == 0 {
		cond = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	resp, err := cli.Txn(ctx).If(cond).Then(clientv3.OpPut(key, string(data))).Commit()
	if err != nil {
		return 0, fmt.Errorf("rules: store at etcd key %q: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, ErrRulesChanged
	}
	return resp.Header.Revision, nil
}

// validateForStore refuses what no sidecar would load.
func validateForStore(key string, data []byte) error {
	if len(data) > MaxFileSize {
		return fmt.Errorf("rules: rule file is larger than %d bytes", MaxFileSize)
	}
	_, _, err := Compile("etcd:"+key, data)
	return err
}

// EtcdSourceOptions configure NewEtcdSource. The zero value is usable
// apart from the required client and key.
type EtcdSourceOptions struct {
	// Logger, Recorder, Hooks and Stats are as for FileSourceOptions.
	Logger   *slog.Logger
	Recorder audit.Recorder
	Hooks    Hooks
	Stats    *Stats
	// RequestTimeout bounds each read. Default 5s.
	RequestTimeout time.Duration
	// RetryInterval is the first pause before a lost watch is
	// re-established; it doubles up to 5s. Default 200ms.
	RetryInterval time.Duration
}

// EtcdSource is a Source whose rule file is stored in etcd, under one key
// that every sidecar of a deployment watches: `sidecrypt rules push`
// (or the admin API's PUT /v1/rules) validates and stores a file once, and
// every sidecar loads it within moments.
//
// It behaves like FileSource, with which it shares the loading code: a
// change is parsed, validated and swapped in atomically; an invalid one
// (which only a write that bypassed validation can store) is refused, the
// last good plan stays in force, and the refusal is logged, counted
// (Hooks.Refused, Status.Failures) and audited. A deleted key is refused
// the same way. While etcd is unreachable the plan in force stays; when
// the watch comes back the stored file is read again, so a change made
// meanwhile is not missed.
type EtcdSource struct {
	cli  *clientv3.Client
	key  string
	opt  EtcdSourceOptions
	core *FileSource // keep-last-good state; its path is the display name
	rev  atomic.Int64
}

// NewEtcdSource reads the rule file stored at key and returns a source
// serving it. No stored file, an invalid one, or etcd unreachable is an
// error: a proxy must not start without its rules.
func NewEtcdSource(ctx context.Context, cli *clientv3.Client, key string, opt EtcdSourceOptions) (*EtcdSource, error) {
	if cli == nil || key == "" {
		return nil, errors.New("rules: an etcd client and key are required")
	}
	if opt.RequestTimeout <= 0 {
		opt.RequestTimeout = 5 * time.Second
	}
	if opt.RetryInterval <= 0 {
		opt.RetryInterval = 200 * time.Millisecond
	}
	core := &FileSource{path: "etcd:" + key, opt: FileSourceOptions{Logger: opt.Logger, Recorder: opt.Recorder, Hooks: opt.Hooks, Stats: opt.Stats}, stats: opt.Stats, log: opt.Logger}
	if core.stats == nil {
		core.stats = &Stats{}
	}
	if core.log == nil {
		core.log = slog.New(slog.DiscardHandler)
	}
	s := &EtcdSource{cli: cli, key: key, opt: opt, core: core}
	rctx, cancel := context.WithTimeout(ctx, opt.RequestTimeout)
	defer cancel()
	data, rev, err := ReadEtcdRules(rctx, cli, key)
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, fmt.Errorf("rules: no rule file is stored at etcd key %q; store one with `sidecrypt rules push FILE`", key)
	}
	if err := core.load(ctx, data, "start"); err != nil {
		return nil, err
	}
	s.rev.Store(rev)
	return s, nil
}

// Current returns the plan in force, with FileSource.Current's contract.
func (s *EtcdSource) Current() *Plan { return s.core.Current() }

// Key returns the etcd key the rules are stored at.
func (s *EtcdSource) Key() string { return s.key }

// Name is how logs and audit events name this source: "etcd:<key>".
func (s *EtcdSource) Name() string { return s.core.path }

// Status returns counters and the state of the last load.
func (s *EtcdSource) Status() Status { return s.core.Status() }

// Stats returns the counters shared by the plans this source compiled.
func (s *EtcdSource) Stats() *Stats { return s.core.Stats() }

// Reload reads the stored rule file and, if it changed, puts it in force
// (SIGHUP, and the admin API after a PUT). A missing, unreadable or invalid
// file is refused, and returned, while the last good plan stays.
func (s *EtcdSource) Reload(ctx context.Context) error {
	return s.fetch(ctx, "reload")
}

func (s *EtcdSource) fetch(ctx context.Context, trigger string) error {
	rctx, cancel := context.WithTimeout(ctx, s.opt.RequestTimeout)
	defer cancel()
	data, rev, err := ReadEtcdRules(rctx, s.cli, s.key)
	if err == nil && data == nil {
		err = fmt.Errorf("rules: etcd key %q holds no rule file (deleted?); keeping the last good rules", s.key)
	}
	if err != nil {
		s.refuse(ctx, err, trigger)
		return err
	}
	s.rev.Store(rev)
	return s.core.load(ctx, data, trigger)
}

func (s *EtcdSource) refuse(ctx context.Context, err error, trigger string) {
	s.core.mu.Lock()
	defer s.core.mu.Unlock()
	s.core.refuse(ctx, err, trigger)
}

// WriteRules validates data and stores it (admin.RulesWriter), whatever is
// stored now; every sidecar's watch then loads it. Invalid data is refused
// with an *Error and nothing is written. The API calls Reload next, which
// applies it here at once.
func (s *EtcdSource) WriteRules(ctx context.Context, data []byte) error {
	if err := validateForStore(s.key, data); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opt.RequestTimeout)
	defer cancel()
	if _, err := s.cli.Put(rctx, s.key, string(data)); err != nil {
		return fmt.Errorf("rules: store at etcd key %q: %w", s.key, err)
	}
	return nil
}

// Run watches the key until ctx ends and loads every change. A lost watch
// is re-established (after a pause that grows to 5s while etcd stays
// away), and each time it is, the stored file is read again first, so a
// change made while the watch was down is applied. Panics are recovered
// and logged; Run keeps going. It returns nil when ctx ends.
func (s *EtcdSource) Run(ctx context.Context) error {
	if audit.ActorFrom(ctx) == "unknown" {
		ctx = audit.WithActor(ctx, "proxy:rules-watcher")
	}
	pause := s.opt.RetryInterval
	caughtUp := true // NewSource just read the key
	for ctx.Err() == nil {
		if !caughtUp {
			if err := s.catchUp(ctx); err != nil {
				if !sleepCtx(ctx, &pause) {
					return nil
				}
				continue
			}
			caughtUp = true
		}
		reason := s.watchOnce(ctx, &pause)
		if ctx.Err() != nil {
			return nil
		}
		s.core.log.Warn("rules: etcd watch lost; re-establishing", "source", s.Name(), "reason", reason)
		caughtUp = false
		if !sleepCtx(ctx, &pause) {
			return nil
		}
	}
	return nil
}

// catchUp reads the stored file after a watch gap and applies it. Only
// etcd being unreachable is retried; a refused file was already reported.
func (s *EtcdSource) catchUp(ctx context.Context) (err error) {
	defer s.recoverPanic()
	rctx, cancel := context.WithTimeout(ctx, s.opt.RequestTimeout)
	defer cancel()
	data, rev, err := ReadEtcdRules(rctx, s.cli, s.key)
	if err != nil {
		return err
	}
	if data == nil {
		s.refuse(ctx, fmt.Errorf("rules: etcd key %q holds no rule file (deleted?); keeping the last good rules", s.key), "watch")
	} else {
		_ = s.core.load(ctx, data, "watch")
	}
	s.rev.Store(rev)
	return nil
}

// watchOnce follows the key from the last revision seen until the watch
// ends, and says why it ended.
func (s *EtcdSource) watchOnce(ctx context.Context, pause *time.Duration) string {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.cli.Watch(wctx, s.key, clientv3.WithRev(s.rev.Load()+1)) {
		if resp.CompactRevision != 0 {
			return fmt.Sprintf("revision %d was compacted", s.rev.Load()+1)
		}
		if err := resp.Err(); err != nil {
			return err.Error()
		}
		*pause = s.opt.RetryInterval
		if n := len(resp.Events); n > 0 {
			// Only the last state of the key matters.
			s.apply(ctx, resp.Events[n-1])
		}
	}
	return "watch channel closed"
}

func (s *EtcdSource) apply(ctx context.Context, ev *clientv3.Event) {
	defer s.recoverPanic()
	s.rev.Store(ev.Kv.ModRevision)
	if ev.Type == clientv3.EventTypeDelete {
		s.refuse(ctx, fmt.Errorf("rules: etcd key %q was deleted; keeping the last good rules", s.key), "watch")
		return
	}
	if len(ev.Kv.Value) > MaxFileSize {
		s.refuse(ctx, fmt.Errorf("rules: etcd key %q: larger than %d bytes", s.key, MaxFileSize), "watch")
		return
	}
	_ = s.core.load(ctx, ev.Kv.Value, "watch")
}

func (s *EtcdSource) recoverPanic() {
	if r := recover(); r != nil {
		s.core.log.Error("rules: etcd watcher panic recovered", "source", s.Name(), "panic", fmt.Sprint(r))
	}
}

// sleepCtx waits *pause (then doubles it, up to 5s) or until ctx ends.
func sleepCtx(ctx context.Context, pause *time.Duration) bool {
	t := time.NewTimer(*pause)
	defer t.Stop()
	*pause = min(2**pause, 5*time.Second)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// IsEtcdRules reports whether a SIDECRYPT_RULES value names etcd.
func IsEtcdRules(s string) bool {
	return strings.HasPrefix(s, "etcd://") || strings.HasPrefix(s, "etcds://")
}

var _ Source = (*EtcdSource)(nil)
