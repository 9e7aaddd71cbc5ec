package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"log/syslog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A witness keeps the heads of a log somewhere its host's users cannot
// rewrite: another machine's etcd, a syslog server, a file on other
// storage. A rollback of the log and FILE.checkpoint together (both
// replaced by older authentic copies) leaves the log without the later
// heads the witness saw; `sidecrypt audit verify --witness` reports it.

// Witness receives heads.
type Witness interface {
	Publish(ctx context.Context, h Head) error
}

// WitnessReader returns the heads a witness saw of one log (named by
// Head.Log), in any order.
type WitnessReader interface {
	Heads(ctx context.Context, log string) ([]Head, error)
}

// headMarker starts a head in a syslog message, so that heads can be
// found in an exported syslog file among other lines.
const headMarker = "sidecrypt-audit-head "

// FileWitness appends each head as one JSON line to a file, for storage
// that the log's writers cannot rewrite (another host's mount, a file
// with the append-only attribute: chattr +a).
type FileWitness struct{ Path string }

// Publish implements Witness.
func (w FileWitness) Publish(_ context.Context, h Head) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(w.Path), 0o700); err != nil {
		return fmt.Errorf("audit: witness: %w", err)
	}
	f, err := os.OpenFile(w.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: witness: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: witness %s: %w", w.Path, err)
	}
	return nil
}

// Heads implements WitnessReader. The file may also be an export of
// syslog: lines that carry a head after "sidecrypt-audit-head " count,
// others are skipped.
func (w FileWitness) Heads(_ context.Context, log string) ([]Head, error) {
	f, err := os.Open(w.Path)
	if err != nil {
		return nil, fmt.Errorf("audit: witness: %w", err)
	}
	defer f.Close()
	var out []Head
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for sc.Scan() {
		b := sc.Bytes()
		if i := bytes.Index(b, []byte(headMarker)); i >= 0 {
			b = b[i+len(headMarker):]
		}
		var h Head
		if json.Unmarshal(bytes.TrimSpace(b), &h) != nil || h.V != formatV2 || h.Log != log {
			continue
		}
		out = append(out, h)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit: witness %s: %w", w.Path, err)
	}
	return out, nil
}

// SyslogWitness sends each head to syslog (facility authpriv, tag
// sidecrypt), locally or to a remote server. Syslog cannot be read back:
// to verify, export the messages to a file and pass it to
// `audit verify --witness=file:EXPORT`.
type SyslogWitness struct {
	Network, Addr string // both empty: the local syslog daemon
	mu            sync.Mutex
	w             *syslog.Writer
}

// Publish implements Witness.
func (s *SyslogWitness) Publish(_ context.Context, h Head) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		if s.w, err = syslog.Dial(s.Network, s.Addr, syslog.LOG_INFO|syslog.LOG_AUTHPRIV, "sidecrypt"); err != nil {
			return fmt.Errorf("audit: witness syslog: %w", err)
		}
	}
	if err := s.w.Info(headMarker + string(b)); err != nil {
		s.w.Close()
		s.w = nil
		return fmt.Errorf("audit: witness syslog: %w", err)
	}
	return nil
}

// Close closes the connection.
func (s *SyslogWitness) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return nil
	}
	err := s.w.Close()
	s.w = nil
	return err
}

// EtcdWitness keeps the latest head of each log under Prefix + "/" + log
// in etcd. etcd's revision history keeps the earlier ones until
// compaction; the latest is what a rollback check needs.
type EtcdWitness struct {
	Client *clientv3.Client
	Prefix string // e.g. "/sidecrypt/audit-heads"
}

func (w EtcdWitness) key(log string) string { return strings.TrimSuffix(w.Prefix, "/") + "/" + log }

// Publish implements Witness. A head older than the one stored is not
// written over it (two processes share one log and publish in turn).
func (w EtcdWitness) Publish(ctx context.Context, h Head) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	key := w.key(h.Log)
	for range 3 {
		resp, err := w.Client.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("audit: witness etcd: %w", err)
		}
		var rev int64
		if len(resp.Kvs) == 1 {
			var cur Head
			if json.Unmarshal(resp.Kvs[0].Value, &cur) == nil && cur.Seq >= h.Seq {
				return nil
			}
			rev = resp.Kvs[0].ModRevision
		}
		tr, err := w.Client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return fmt.Errorf("audit: witness etcd: %w", err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return errors.New("audit: witness etcd: the head kept changing under concurrent writers")
}

// Heads implements WitnessReader.
func (w EtcdWitness) Heads(ctx context.Context, log string) ([]Head, error) {
	resp, err := w.Client.Get(ctx, w.key(log))
	if err != nil {
		return nil, fmt.Errorf("audit: witness etcd: %w", err)
	}
	var out []Head
	for _, kv := range resp.Kvs {
		var h Head
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return nil, fmt.Errorf("audit: witness etcd %s: %w", kv.Key, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// ParseWitness reads a SIDECRYPT_AUDIT_WITNESS setting that needs no
// etcd client: "file:/path", "syslog:" (local), "syslog:udp://host:514",
// "syslog:tcp://host:514". It returns the witness and, when it can be
// read back, its reader. "etcd" is set up by the caller, which holds the
// keystore's client.
func ParseWitness(spec string) (Witness, WitnessReader, error) {
	kind, rest, _ := strings.Cut(spec, ":")
	switch kind {
	case "file":
		if rest == "" {
			return nil, nil, errors.New("audit: witness file: needs a path (file:/var/lib/witness/audit-heads)")
		}
		w := FileWitness{Path: rest}
		return w, w, nil
	case "syslog":
		if rest == "" {
			return &SyslogWitness{}, nil, nil
		}
		u, err := url.Parse(rest)
		if err != nil || (u.Scheme != "udp" && u.Scheme != "tcp") || u.Host == "" {
			return nil, nil, fmt.Errorf("audit: witness %q: want syslog: or syslog:udp://HOST:PORT or syslog:tcp://HOST:PORT", spec)
		}
		return &SyslogWitness{Network: u.Scheme, Addr: u.Host}, nil, nil
	}
	return nil, nil, fmt.Errorf("audit: witness %q: want file:PATH, syslog:[udp|tcp://HOST:PORT] or etcd", spec)
}

// publisher hands heads to a witness from its own goroutine, so that a
// slow or unreachable witness never delays Record. Only the latest head
// waits; one that was overtaken is dropped (the later one covers it).
type publisher struct {
	w    Witness
	log  *slog.Logger
	ch   chan Head
	done chan struct{}
	once sync.Once
	// failures counts heads the witness did not take (Log.Stats).
	failures atomic.Uint64
}

func newPublisher(w Witness, log *slog.Logger) *publisher {
	p := &publisher{w: w, log: log, ch: make(chan Head, 1), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *publisher) offer(h Head) {
	for {
		select {
		case p.ch <- h:
			return
		default:
		}
		select {
		case <-p.ch:
		default:
		}
	}
}

func (p *publisher) run() {
	defer close(p.done)
	var lastErr time.Time
	for h := range p.ch {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.w.Publish(ctx, h)
		cancel()
		if err != nil {
			p.failures.Add(1)
		}
		if err != nil && time.Since(lastErr) > time.Minute {
			lastErr = time.Now()
			p.log.Error("audit: the witness did not take the log's head; a rollback of the log cannot be detected past the last head it holds", "seq", h.Seq, "err", err)
		}
	}
}

// close publishes what is pending (waiting at most a few seconds) and
// stops.
func (p *publisher) close() {
	p.once.Do(func() {
		close(p.ch)
		select {
		case <-p.done:
		case <-time.After(6 * time.Second):
			p.log.Error("audit: the witness did not answer in time; the last head may not have reached it")
		}
		if c, ok := p.w.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	})
}
