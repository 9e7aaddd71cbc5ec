package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// EtcdOptions configure an EtcdStore. Zero values take the defaults shown.
type EtcdOptions struct {
	// Prefix is where the records live: <Prefix>/keys/<name>. Default
	// DefaultEtcdPrefix ("/sidecrypt").
	Prefix string
	// RequestTimeout bounds each read and write. Default 5s. An operation
	// that cannot finish in time fails with ErrUnavailable.
	RequestTimeout time.Duration
	// PingTimeout bounds Ping. Default 1s.
	PingTimeout time.Duration
	// RetryInterval is the first pause before Watch re-establishes a lost
	// watch; it doubles up to 5s. Default 200ms.
	RetryInterval time.Duration
	// Logger receives watch interruptions and resyncs; nil discards them.
	Logger *slog.Logger
}

func (o *EtcdOptions) defaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultEtcdPrefix
	}
	o.Prefix = "/" + strings.Trim(o.Prefix, "/")
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = time.Second
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// EtcdStore is the Store that several sidecars share: one JSON record per
// key under <prefix>/keys/<name> in etcd. See the package documentation,
// "The etcd store".
type EtcdStore struct {
	cli      *clientv3.Client
	ownsCli  bool
	opts     EtcdOptions
	keysPath string // <prefix>/keys/
	metaPath string // <prefix>/meta/
}

// NewEtcdStore returns a Store over cli, which the caller keeps and closes
// after the store.
func NewEtcdStore(cli *clientv3.Client, opts EtcdOptions) *EtcdStore {
	opts.defaults()
	return &EtcdStore{cli: cli, opts: opts, keysPath: opts.Prefix + "/keys/", metaPath: opts.Prefix + "/meta/"}
}

// OpenEtcd opens the store that an etcd:// or etcds:// URL names, with TLS
// from files (SIDECRYPT_ETCD_*). The URL's path, if any, overrides
// opts.Prefix. It does not wait for etcd: a sidecar may start while etcd
// is down, and reports not-ready until it is back. Close closes the client.
func OpenEtcd(rawURL string, files EtcdTLS, opts EtcdOptions) (*EtcdStore, error) {
	u, err := ParseEtcdURL(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Path != "" || opts.Prefix == "" {
		opts.Prefix = u.Prefix()
	}
	cli, err := NewEtcdClient(u, files)
	if err != nil {
		return nil, err
	}
	s := NewEtcdStore(cli, opts)
	s.ownsCli = true
	return s, nil
}

// Client returns the etcd client, for leader election and the rules
// source that share its connection.
func (s *EtcdStore) Client() *clientv3.Client { return s.cli }

// Prefix returns the store's prefix, e.g. "/sidecrypt".
func (s *EtcdStore) Prefix() string { return s.opts.Prefix }

// keyPath is the etcd key of a record.
func (s *EtcdStore) keyPath(name string) string { return s.keysPath + name }

// reachable fails fast while every connection to etcd is down: the etcd
// client waits for a connection until the deadline (gRPC WaitForReady), which
// would hold each request on a cache miss for RequestTimeout during an
// outage. It is only a shortcut: a call that passes it still has its
// timeout.
func (s *EtcdStore) reachable(op string) error {
	if conn := s.cli.ActiveConnection(); conn != nil && conn.GetState() == connectivity.TransientFailure {
		return fmt.Errorf("keystore: %w: etcd %s: no connection to any endpoint of %s", ErrUnavailable, op, strings.Join(s.cli.Endpoints(), ","))
	}
	return nil
}

// opErr classifies an etcd error: the caller's own cancellation stays
// what it is; a timeout, a lost connection or a cluster without a leader
// is ErrUnavailable; anything else (a refused request) is reported as is.
func (s *EtcdStore) opErr(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("keystore: etcd %s: %w", op, cerr)
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition,
		codes.ResourceExhausted, codes.OutOfRange, codes.Unimplemented, codes.AlreadyExists, codes.NotFound:
		return fmt.Errorf("keystore: etcd %s: %w", op, err)
	}
	return fmt.Errorf("keystore: %w: etcd %s: %v", ErrUnavailable, op, err)
}

// decodeEtcd turns one etcd value into a Key with its revision, and the
// key's Version and CreateRevision as Writes and Incarnation: etcd sets
// both itself, so a client that writes an old value again cannot make it
// look unwritten.
func decodeEtcd(name string, kv *mvccpb.KeyValue) (*Key, error) {
	var k Key
	if err := json.Unmarshal(kv.Value, &k); err != nil {
		return nil, fmt.Errorf("keystore: key %q: corrupt record in etcd: %v", name, err)
	}
	if k.Name != name {
		return nil, fmt.Errorf("keystore: key %q: corrupt record in etcd: it names key %q", name, k.Name)
	}
	k.Revision, k.Writes, k.Incarnation = kv.ModRevision, uint64(kv.Version), kv.CreateRevision
	return &k, nil
}

// Get implements Store. The read is linearizable: a sidecar never reads a
// record older than a write that finished before the read began, so a
// revoke that returned is seen by every later Get, on any sidecar.
func (s *EtcdStore) Get(ctx context.Context, name string) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !fieldcrypt.ValidKeyName(name) {
		return nil, fmt.Errorf("keystore: key %q: %w", name, ErrNotFound)
	}
	if err := s.reachable("get"); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.keyPath(name))
	if err != nil {
		return nil, s.opErr(ctx, fmt.Sprintf("get %q", name), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("keystore: key %q: %w", name, ErrNotFound)
	}
	return decodeEtcd(name, resp.Kvs[0])
}

// List implements Store.
func (s *EtcdStore) List(ctx context.Context) ([]*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.reachable("list"); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.keysPath, clientv3.WithPrefix())
	if err != nil {
		return nil, s.opErr(ctx, "list", err)
	}
	keys := make([]*Key, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k, err := decodeEtcd(strings.TrimPrefix(string(kv.Key), s.keysPath), kv)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, nil
}

// Put implements Store with one etcd transaction: the record is written
// only if its ModRevision is still k.Revision (or, for a new key, if it
// has never been created), so of two sidecars that read the same revision
// exactly one writes. The new Revision is the transaction's revision,
// which etcd gives the written key as its ModRevision.
func (s *EtcdStore) Put(ctx context.Context, k *Key) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if k == nil || !fieldcrypt.ValidKeyName(k.Name) {
		name := ""
		if k != nil {
			name = k.Name
		}
		return nil, fmt.Errorf("keystore: invalid key name %q (1-64 of a-z, 0-9, '-', '_', starting with a letter)", name)
	}
	b, err := json.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("keystore: key %q: encode: %w", k.Name, err)
	}
	if err := s.reachable("put"); err != nil {
		return nil, err
	}
	path := s.keyPath(k.Name)
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	rev, writes, inc, err := s.casPut(ctx, rctx, path, k.Revision, b, fmt.Sprintf("key %q", k.Name))
	if err != nil {
		return nil, err
	}
	out := cloneKey(k)
	out.Revision, out.Writes, out.Incarnation = rev, writes, inc
	return out, nil
}

// casPut writes value at path if its ModRevision is still rev (0: if it
// does not exist), in one transaction, and returns the new revision and
// the key's Version and CreateRevision after the write.
func (s *EtcdStore) casPut(ctx, rctx context.Context, path string, rev int64, value []byte, what string) (int64, uint64, int64, error) {
	cond := clientv3.Compare(clientv3.ModRevision(path), "=", rev)
	if rev == 0 {
		cond = clientv3.Compare(clientv3.CreateRevision(path), "=", 0)
	}
	resp, err := s.cli.Txn(rctx).If(cond).Then(clientv3.OpPut(path, string(value), clientv3.WithPrevKV())).Else(clientv3.OpGet(path)).Commit()
	if err != nil {
		// A write whose outcome is unknown (the connection broke after
		// sending) is ErrUnavailable; the caller's retry re-reads the
		// record and sees whether it went through.
		return 0, 0, 0, s.opErr(ctx, "put "+what, err)
	}
	if !resp.Succeeded {
		var stored int64
		if rr := resp.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			stored = rr.Kvs[0].ModRevision
		}
		if rev == 0 {
			return 0, 0, 0, fmt.Errorf("keystore: %s: %w", what, ErrExists)
		}
		return 0, 0, 0, fmt.Errorf("keystore: %s: %w (have %d, stored %d)", what, ErrConflict, rev, stored)
	}
	newRev := resp.Header.Revision
	writes, inc := uint64(1), newRev
	if pr := resp.Responses[0].GetResponsePut(); pr != nil && pr.PrevKv != nil {
		writes, inc = uint64(pr.PrevKv.Version)+1, pr.PrevKv.CreateRevision
	}
	return newRev, writes, inc, nil
}

// GetMeta implements Store: <prefix>/meta/<id>, read linearizably.
func (s *EtcdStore) GetMeta(ctx context.Context, id string) (*Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !ValidMetaID(id) {
		return nil, fmt.Errorf("keystore: record %q: %w", id, ErrNotFound)
	}
	if err := s.reachable("get"); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.metaPath+id)
	if err != nil {
		return nil, s.opErr(ctx, fmt.Sprintf("get record %q", id), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("keystore: record %q: %w", id, ErrNotFound)
	}
	kv := resp.Kvs[0]
	return &Meta{ID: id, Value: kv.Value, Revision: kv.ModRevision, Writes: uint64(kv.Version), Incarnation: kv.CreateRevision}, nil
}

// PutMeta implements Store with the same transaction as Put.
func (s *EtcdStore) PutMeta(ctx context.Context, m *Meta) (*Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m == nil || !ValidMetaID(m.ID) {
		return nil, errors.New("keystore: invalid record id")
	}
	if err := s.reachable("put"); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	rev, writes, inc, err := s.casPut(ctx, rctx, s.metaPath+m.ID, m.Revision, m.Value, fmt.Sprintf("record %q", m.ID))
	if err != nil {
		return nil, err
	}
	return &Meta{ID: m.ID, Value: bytes.Clone(m.Value), Revision: rev, Writes: writes, Incarnation: inc}, nil
}

// ListMeta implements Store.
func (s *EtcdStore) ListMeta(ctx context.Context, prefix string) ([]*Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.reachable("list"); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.metaPath+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.opErr(ctx, "list records", err)
	}
	out := make([]*Meta, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, &Meta{ID: strings.TrimPrefix(string(kv.Key), s.metaPath), Value: kv.Value,
			Revision: kv.ModRevision, Writes: uint64(kv.Version), Incarnation: kv.CreateRevision})
	}
	return out, nil
}

// currentRevision returns etcd's store revision, with a count-only read of
// the keys prefix (no values cross the wire).
func (s *EtcdStore) currentRevision(ctx context.Context) (int64, error) {
	if err := s.reachable("revision"); err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.keysPath, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, s.opErr(ctx, "read revision", err)
	}
	return resp.Header.Revision, nil
}

// Watch implements Store with an etcd watch on <prefix>/keys/. It does not
// fail when etcd is unreachable: the returned channel stays open until ctx
// ends, and the watch is re-established whenever it is lost, without
// losing a change:
//
//   - etcd's client resumes a watch whose connection broke from the last
//     revision it delivered, so changes made meanwhile (a revoke during a
//     partition) arrive on reconnect;
//   - a watch this loop has to start again resumes from the last revision
//     it saw;
//   - if that revision has been compacted away, or no revision was known
//     yet (etcd was down when Watch was called), the loop lists every key
//     and reports each one, so that a key cache purges everything that may
//     have changed (a resync).
func (s *EtcdStore) Watch(ctx context.Context) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Learn the revision now, so that a change made right after Watch
	// returns is reported. If etcd is down, the loop resyncs instead.
	last, err := s.currentRevision(ctx)
	if err != nil {
		s.opts.Logger.Warn("keystore: etcd unreachable as the key watch starts; it resyncs when etcd answers", "err", err)
		last = 0
	}
	ch := make(chan Event, 64)
	go s.watchLoop(ctx, ch, last)
	return ch, nil
}

func (s *EtcdStore) watchLoop(ctx context.Context, ch chan<- Event, last int64) {
	defer close(ch)
	send := func(name string) bool {
		select {
		case ch <- Event{Name: name}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pause := s.opts.RetryInterval
	wait := func() bool {
		t := time.NewTimer(pause)
		defer t.Stop()
		pause = min(2*pause, 5*time.Second)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		if last == 0 {
			rev, names, err := s.resync(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.opts.Logger.Debug("keystore: etcd watch resync failed; retrying", "err", err)
				}
				if !wait() {
					return
				}
				continue
			}
			s.opts.Logger.Info("keystore: etcd key watch resynced: every key is reported changed", "revision", rev, "keys", len(names))
			for _, n := range names {
				if !send(n) {
					return
				}
			}
			last = rev
		}
		// WithRequireLeader ends the watch when its member loses the
		// cluster's leader (a partitioned member would otherwise keep a
		// quiet watch open forever); the loop then starts one elsewhere.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.keysPath, clientv3.WithPrefix(), clientv3.WithRev(last+1), clientv3.WithProgressNotify())
		lost := ""
		for resp := range wch {
			if resp.CompactRevision != 0 {
				lost = fmt.Sprintf("revision %d was compacted (oldest kept %d)", last+1, resp.CompactRevision)
				last = 0
				break
			}
			if err := resp.Err(); err != nil {
				lost = err.Error()
				break
			}
			for _, ev := range resp.Events {
				if !send(strings.TrimPrefix(string(ev.Kv.Key), s.keysPath)) {
					cancel()
					return
				}
				last = max(last, ev.Kv.ModRevision)
			}
			if resp.IsProgressNotify() && len(resp.Events) == 0 {
				// Nothing under the prefix up to here: resuming after this
				// revision loses nothing and is less likely to meet a
				// compaction.
				last = max(last, resp.Header.Revision)
			}
			pause = s.opts.RetryInterval
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if lost == "" {
			lost = "watch channel closed"
		}
		s.opts.Logger.Warn("keystore: etcd key watch lost; re-establishing", "reason", lost, "resume_revision", last+1)
		if !wait() {
			return
		}
	}
}

// resync lists every key and returns the revision the list was read at.
func (s *EtcdStore) resync(ctx context.Context) (int64, []string, error) {
	if err := s.reachable("resync"); err != nil {
		return 0, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.keysPath, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, nil, s.opErr(ctx, "resync", err)
	}
	names := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		names = append(names, strings.TrimPrefix(string(kv.Key), s.keysPath))
	}
	return resp.Header.Revision, names, nil
}

// Ping implements Store: a linearizable count-only read, which needs a
// connection and a cluster with a leader, bounded by PingTimeout.
func (s *EtcdStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.reachable("ping"); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingTimeout)
	defer cancel()
	if _, err := s.cli.Get(pctx, s.keysPath, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(1)); err != nil {
		return s.opErr(ctx, "ping", err)
	}
	return nil
}

// Close implements Store: it closes the client if OpenEtcd made it.
func (s *EtcdStore) Close() error {
	if !s.ownsCli {
		return nil
	}
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("keystore: close etcd client: %w", err)
	}
	return nil
}

var _ Store = (*EtcdStore)(nil)
