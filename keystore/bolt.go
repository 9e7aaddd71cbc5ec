package keystore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
)

// Bucket names inside the bbolt file. They are part of the file format.
var (
	bucketKeys = []byte("sidecrypt-keys") // name -> JSON record (see record)
	bucketGens = []byte("sidecrypt-gens") // name -> generation of its last Put (uint64 BE)
	bucketMeta = []byte("sidecrypt-meta") // "format", "generation", "incarnation"
	// bucketRecords holds the Meta records (Store.GetMeta): id -> JSON
	// metaRecord. Files made before it existed gain it on open.
	bucketRecords = []byte("sidecrypt-records")

	metaFormat     = []byte("format")
	metaGeneration = []byte("generation")
	// metaIncarnation counts record creations, keys and Meta records
	// alike; each new record takes the next value as its Incarnation.
	metaIncarnation = []byte("incarnation")
)

// boltFormat is the file format version written into the meta bucket. An
// older binary refuses a newer file rather than misreading it.
const boltFormat = "1"

// record is what the file holds for one key: the key plus the store's own
// bookkeeping, which Key keeps out of its JSON (Revision is json:"-").
type record struct {
	Revision   int64  `json:"revision"`
	Generation uint64 `json:"generation"`
	// Incarnation identifies the record's creation (Key.Incarnation);
	// zero for records created before it was kept.
	Incarnation int64 `json:"incarnation,omitempty"`
	Key         *Key  `json:"key"`
}

// metaRecord is what the file holds for one Meta record.
type metaRecord struct {
	Revision    int64  `json:"revision"`
	Incarnation int64  `json:"incarnation"`
	Value       []byte `json:"value"`
}

// BoltOptions configure OpenBolt. The zero value is ready to use.
type BoltOptions struct {
	// LockTimeout bounds the wait for the file lock that another process
	// (or another Store on the same file) holds. Default 5s. Past it the
	// operation fails with ErrUnavailable.
	LockTimeout time.Duration
	// PollInterval is how often Watch looks for changes. Default 250ms.
	PollInterval time.Duration
}

// BoltStore is the embedded Store: one bbolt file.
//
// The file is opened for each operation and closed right after it, instead
// of once for the life of the Store, because bbolt holds an flock for as
// long as a DB is open: a long-lived `sidecrypt serve` would otherwise lock
// out `sidecrypt keys revoke` in another process. Reads take a shared lock,
// writes an exclusive one. Opening a small file costs tens of
// microseconds (BenchmarkBoltGet in bolt_test.go; docs/BENCHMARKS.md),
// which is nothing next to the key cache misses that read the store.
type BoltStore struct {
	path string
	opts BoltOptions

	// mu orders this Store's own operations, so that goroutines of one
	// process queue on a mutex instead of polling bbolt's flock (which
	// retries every 50ms). Other processes still meet at the flock.
	mu sync.RWMutex
}

// OpenBolt opens the bbolt key store at path, creating it (mode 0600, its
// directory 0700) when absent. It refuses a file that others may read.
func OpenBolt(path string, opts BoltOptions) (*BoltStore, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if path == "" {
		return nil, errors.New("keystore: no keystore file given (SIDECRYPT_KEYSTORE)")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("keystore: create directory for %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil {
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("keystore: %s has mode %04o, which lets other users read wrapped keys; run chmod 600 on it", path, st.Mode().Perm())
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keystore: %w: %v", ErrUnavailable, err)
	}
	s := &BoltStore{path: path, opts: opts}
	// Create the buckets (and the file) once, so that read-only opens,
	// which cannot create anything, always find them.
	err := s.update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch f := meta.Get(metaFormat); {
		case f == nil:
			if err := meta.Put(metaFormat, []byte(boltFormat)); err != nil {
				return err
			}
		case string(f) != boltFormat:
			return fmt.Errorf("keystore: %s has format %q; this binary reads format %q", path, f, boltFormat)
		}
		if _, err := tx.CreateBucketIfNotExists(bucketKeys); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketRecords); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketGens)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Path returns the store's file.
func (s *BoltStore) Path() string { return s.path }

// open opens the file for one operation. A lock held past LockTimeout, or
// a file that cannot be opened, is ErrUnavailable.
func (s *BoltStore) open(readOnly bool) (*bolt.DB, error) {
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: s.opts.LockTimeout, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("keystore: %w: %s is locked by another process for more than %v", ErrUnavailable, s.path, s.opts.LockTimeout)
		}
		return nil, fmt.Errorf("keystore: %w: open %s: %v", ErrUnavailable, s.path, err)
	}
	return db, nil
}

func (s *BoltStore) view(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	db, err := s.open(true)
	if err != nil {
		return err
	}
	err = db.View(fn)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("keystore: close %s: %w", s.path, cerr)
	}
	return err
}

func (s *BoltStore) update(fn func(tx *bolt.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, err := s.open(false)
	if err != nil {
		return err
	}
	// bbolt's Update commits with fdatasync before returning (NoSync is
	// off): once Put returns, the record survives a crash or power loss.
	err = db.Update(fn)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("keystore: close %s: %w", s.path, cerr)
	}
	return err
}

func decodeRecord(name string, b []byte) (*Key, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil || r.Key == nil {
		return nil, fmt.Errorf("keystore: key %q: corrupt record: %v", name, err)
	}
	r.Key.Revision = r.Revision
	r.Key.Writes = uint64(r.Revision)
	r.Key.Incarnation = r.Incarnation
	return r.Key, nil
}

// nextIncarnation takes the next creation number from the meta bucket.
func nextIncarnation(meta *bolt.Bucket) (int64, error) {
	n := int64(1)
	if b := meta.Get(metaIncarnation); len(b) == 8 {
		n = int64(binary.BigEndian.Uint64(b)) + 1
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return n, meta.Put(metaIncarnation, b[:])
}

// Get implements Store.
func (s *BoltStore) Get(ctx context.Context, name string) (*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var k *Key
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys).Get([]byte(name))
		if b == nil {
			return fmt.Errorf("keystore: key %q: %w", name, ErrNotFound)
		}
		var err error
		k, err = decodeRecord(name, b)
		return err
	})
	return k, err
}

// List implements Store.
func (s *BoltStore) List(ctx context.Context) ([]*Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var keys []*Key
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(name, b []byte) error {
			k, err := decodeRecord(string(name), b)
			if err != nil {
				return err
			}
			keys = append(keys, k)
			return nil
		})
	})
	// bbolt iterates in byte order already; sort anyway so that the
	// contract does not rest on an implementation detail.
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys, err
}

// Put implements Store.
func (s *BoltStore) Put(ctx context.Context, k *Key) (*Key, error) {
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
	var out *Key
	err := s.update(func(tx *bolt.Tx) error {
		keys, gens, meta := tx.Bucket(bucketKeys), tx.Bucket(bucketGens), tx.Bucket(bucketMeta)
		if keys == nil || gens == nil || meta == nil {
			return fmt.Errorf("keystore: %w: %s is not a sidecrypt keystore (any more)", ErrUnavailable, s.path)
		}
		var stored, inc int64
		if old := keys.Get([]byte(k.Name)); old != nil {
			prev, err := decodeRecord(k.Name, old)
			if err != nil {
				return err
			}
			stored, inc = prev.Revision, prev.Incarnation
			if k.Revision == 0 {
				return fmt.Errorf("keystore: key %q: %w", k.Name, ErrExists)
			}
		}
		if k.Revision != stored {
			return fmt.Errorf("keystore: key %q: %w (have %d, stored %d)", k.Name, ErrConflict, k.Revision, stored)
		}
		gen := uint64(1)
		if g := meta.Get(metaGeneration); len(g) == 8 {
			gen = binary.BigEndian.Uint64(g) + 1
		}
		if stored == 0 {
			var err error
			if inc, err = nextIncarnation(meta); err != nil {
				return err
			}
		}
		cp := *k
		cp.Revision = stored + 1
		cp.Writes, cp.Incarnation = uint64(cp.Revision), inc
		b, err := json.Marshal(record{Revision: cp.Revision, Generation: gen, Incarnation: inc, Key: &cp})
		if err != nil {
			return fmt.Errorf("keystore: key %q: encode: %w", k.Name, err)
		}
		var g [8]byte
		binary.BigEndian.PutUint64(g[:], gen)
		if err := keys.Put([]byte(k.Name), b); err != nil {
			return err
		}
		if err := gens.Put([]byte(k.Name), g[:]); err != nil {
			return err
		}
		if err := meta.Put(metaGeneration, g[:]); err != nil {
			return err
		}
		out = &cp
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Hand back a deep copy, so that the caller's later edits to slices
	// cannot alias what it passed in.
	return cloneKey(out), nil
}

// GetMeta implements Store.
func (s *BoltStore) GetMeta(ctx context.Context, id string) (*Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var m *Meta
	err := s.view(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		if recs == nil {
			return fmt.Errorf("keystore: record %q: %w", id, ErrNotFound)
		}
		b := recs.Get([]byte(id))
		if b == nil {
			return fmt.Errorf("keystore: record %q: %w", id, ErrNotFound)
		}
		var err error
		m, err = decodeMeta(id, b)
		return err
	})
	return m, err
}

func decodeMeta(id string, b []byte) (*Meta, error) {
	var r metaRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("keystore: record %q: corrupt: %v", id, err)
	}
	return &Meta{ID: id, Value: r.Value, Revision: r.Revision, Writes: uint64(r.Revision), Incarnation: r.Incarnation}, nil
}

// PutMeta implements Store.
func (s *BoltStore) PutMeta(ctx context.Context, m *Meta) (*Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m == nil || !ValidMetaID(m.ID) {
		return nil, errors.New("keystore: invalid record id")
	}
	var out *Meta
	err := s.update(func(tx *bolt.Tx) error {
		recs, meta := tx.Bucket(bucketRecords), tx.Bucket(bucketMeta)
		if recs == nil || meta == nil {
			return fmt.Errorf("keystore: %w: %s is not a sidecrypt keystore (any more)", ErrUnavailable, s.path)
		}
		var stored, inc int64
		if old := recs.Get([]byte(m.ID)); old != nil {
			prev, err := decodeMeta(m.ID, old)
			if err != nil {
				return err
			}
			stored, inc = prev.Revision, prev.Incarnation
			if m.Revision == 0 {
				return fmt.Errorf("keystore: record %q: %w", m.ID, ErrExists)
			}
		}
		if m.Revision != stored {
			return fmt.Errorf("keystore: record %q: %w (have %d, stored %d)", m.ID, ErrConflict, m.Revision, stored)
		}
		if stored == 0 {
			var err error
			if inc, err = nextIncarnation(meta); err != nil {
				return err
			}
		}
		r := metaRecord{Revision: stored + 1, Incarnation: inc, Value: m.Value}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := recs.Put([]byte(m.ID), b); err != nil {
			return err
		}
		out = &Meta{ID: m.ID, Value: bytes.Clone(m.Value), Revision: r.Revision, Writes: uint64(r.Revision), Incarnation: inc}
		return nil
	})
	return out, err
}

// ListMeta implements Store.
func (s *BoltStore) ListMeta(ctx context.Context, prefix string) ([]*Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*Meta
	err := s.view(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		if recs == nil {
			return nil
		}
		c := recs.Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			m, err := decodeMeta(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// generation reads the store-wide change counter.
func (s *BoltStore) generation() (uint64, error) {
	var gen uint64
	err := s.view(func(tx *bolt.Tx) error {
		if g := tx.Bucket(bucketMeta).Get(metaGeneration); len(g) == 8 {
			gen = binary.BigEndian.Uint64(g)
		}
		return nil
	})
	return gen, err
}

// changedSince returns the names Put after generation since, and the
// current generation.
func (s *BoltStore) changedSince(since uint64) ([]string, uint64, error) {
	var names []string
	var gen uint64
	err := s.view(func(tx *bolt.Tx) error {
		if g := tx.Bucket(bucketMeta).Get(metaGeneration); len(g) == 8 {
			gen = binary.BigEndian.Uint64(g)
		}
		if gen == since {
			return nil
		}
		return tx.Bucket(bucketGens).ForEach(func(name, g []byte) error {
			if len(g) == 8 && binary.BigEndian.Uint64(g) > since {
				names = append(names, string(name))
			}
			return nil
		})
	})
	return names, gen, err
}

// Watch implements Store. It polls the file's change counter every
// PollInterval, in this process or any other, and reports the names whose
// records changed. A poll that finds the file locked or unreadable is
// retried at the next tick; the channel closes when ctx is done.
func (s *BoltStore) Watch(ctx context.Context) (<-chan Event, error) {
	last, err := s.generation()
	if err != nil {
		return nil, err
	}
	ch := make(chan Event, 64)
	go func() {
		defer close(ch)
		t := time.NewTicker(s.opts.PollInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			names, gen, err := s.changedSince(last)
			if err != nil {
				continue
			}
			for _, n := range names {
				select {
				case ch <- Event{Name: n}:
				case <-ctx.Done():
					return
				}
			}
			last = gen
		}
	}()
	return ch, nil
}

// Ping implements Store: it opens the file and checks its buckets.
func (s *BoltStore) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketKeys) == nil || tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("keystore: %w: %s is not a sidecrypt keystore", ErrUnavailable, s.path)
		}
		return nil
	})
}

// Close implements Store. The file is not held open between operations,
// so there is nothing to release; Close exists for the interface.
func (s *BoltStore) Close() error { return nil }

// cloneKey returns a deep copy of k.
func cloneKey(k *Key) *Key {
	if k == nil {
		return nil
	}
	cp := *k
	cp.Versions = make([]Version, len(k.Versions))
	for i, v := range k.Versions {
		v.Wrapped = append([]byte(nil), v.Wrapped...)
		if len(v.Wrapped) == 0 {
			v.Wrapped = nil
		}
		cp.Versions[i] = v
	}
	return &cp
}

var _ Store = (*BoltStore)(nil)
