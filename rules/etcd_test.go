package rules

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

func etcdClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func etcdWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sidecarSource is one sidecar's rule source, running.
type sidecarSource struct {
	src      *EtcdSource
	rec      *recorder
	loaded   atomic.Int32
	refused  atomic.Int32
	lastHash atomic.Value
}

func startEtcdSource(t *testing.T, cli *clientv3.Client, key string) *sidecarSource {
	t.Helper()
	sc := &sidecarSource{rec: &recorder{}}
	src, err := NewEtcdSource(context.Background(), cli, key, EtcdSourceOptions{
		Recorder:      sc.rec,
		RetryInterval: 50 * time.Millisecond,
		Hooks: Hooks{
			Loaded:  func(p *Plan, _ time.Time, _ time.Duration) { sc.loaded.Add(1); sc.lastHash.Store(p.Hash) },
			Refused: func(error) { sc.refused.Add(1) },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sc.src = src
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return sc
}

func TestEtcdSourceEverySidecarFollowsOnePush(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartEtcd(t)
	const key = "/sidecrypt/rules"
	admin := etcdClient(t, e.Hosts())

	if _, err := NewEtcdSource(ctx, admin, key, EtcdSourceOptions{}); err == nil || !strings.Contains(err.Error(), "sidecrypt rules push") {
		t.Fatalf("a source with nothing stored: %v, want a hint to push", err)
	}
	rev, err := PushEtcdRules(ctx, admin, key, []byte(ruleVersion(0)), 0)
	if err != nil {
		t.Fatal(err)
	}
	var sidecars []*sidecarSource
	for i := 0; i < 3; i++ {
		sidecars = append(sidecars, startEtcdSource(t, etcdClient(t, e.Hosts()), key))
	}
	for _, sc := range sidecars {
		if sc.src.Current().Hash != HashBytes([]byte(ruleVersion(0))) {
			t.Fatal("a new source does not serve the stored rules")
		}
	}

	// One push, every sidecar.
	v1 := []byte(ruleVersion(1))
	if _, err := PushEtcdRules(ctx, admin, key, v1, rev); err != nil {
		t.Fatal(err)
	}
	for i, sc := range sidecars {
		etcdWaitFor(t, "sidecar loads the pushed rules", func() bool { return sc.src.Current().Hash == HashBytes(v1) })
		if got := sc.src.Current().Routes[0].Keys; !slices.Contains(got, "pii2") {
			t.Fatalf("sidecar %d: keys %v, want the pushed file's", i, got)
		}
		evs := sc.rec.all()
		last := evs[len(evs)-1]
		if last.Action != "rules.reload" || last.Outcome != "ok" || last.Details["trigger"] != "watch" || last.Details["source"] != "etcd:"+key {
			t.Fatalf("sidecar %d: audit event %+v", i, last)
		}
	}

	// A push from a stale read is refused and writes nothing.
	if _, err := PushEtcdRules(ctx, admin, key, []byte(ruleVersion(3)), rev); !errors.Is(err, ErrRulesChanged) {
		t.Fatalf("push at a stale revision: %v, want ErrRulesChanged", err)
	}
	// An invalid push is refused before anything is written.
	if _, err := PushEtcdRules(ctx, admin, key, []byte("version: 99\n"), 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid push: %v, want ErrInvalid", err)
	}
	if data, _, err := ReadEtcdRules(ctx, admin, key); err != nil || string(data) != string(v1) {
		t.Fatalf("stored rules after refused pushes: %q, %v", data, err)
	}

	// Content that bypassed validation (a raw etcd write) is refused by
	// every sidecar; the last good rules stay, loudly.
	if _, err := admin.Put(ctx, key, "version: 1\nroutes: [{name: broken"); err != nil {
		t.Fatal(err)
	}
	for i, sc := range sidecars {
		etcdWaitFor(t, "sidecar refuses the invalid rules", func() bool { return sc.refused.Load() == 1 })
		st := sc.src.Status()
		if st.Failures != 1 || !errors.Is(st.LastError, ErrInvalid) || sc.src.Current().Hash != HashBytes(v1) {
			t.Fatalf("sidecar %d after an invalid write: %+v, hash %s", i, st, sc.src.Current().Hash)
		}
		evs := sc.rec.all()
		if last := evs[len(evs)-1]; last.Outcome != "error" || last.Rules != HashBytes(v1) {
			t.Fatalf("sidecar %d: refusal audit event %+v", i, last)
		}
	}

	// A deleted key is refused too.
	if _, err := admin.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	for _, sc := range sidecars {
		etcdWaitFor(t, "sidecar refuses the deletion", func() bool { return sc.refused.Load() == 2 })
		if sc.src.Current().Hash != HashBytes(v1) {
			t.Fatal("a deletion changed the rules in force")
		}
		if err := sc.src.Reload(ctx); err == nil || !strings.Contains(err.Error(), "holds no rule file") {
			t.Fatalf("Reload of a deleted key: %v", err)
		}
	}

	// The admin API's writer validates, stores, and Reload applies at once.
	w := sidecars[0].src
	if err := w.WriteRules(ctx, []byte("not: [valid")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("WriteRules of invalid rules: %v", err)
	}
	v2 := []byte(ruleVersion(2))
	if err := w.WriteRules(ctx, v2); err != nil {
		t.Fatal(err)
	}
	if err := w.Reload(ctx); err != nil || w.Current().Hash != HashBytes(v2) {
		t.Fatalf("Reload after WriteRules: %v", err)
	}
	for _, sc := range sidecars {
		etcdWaitFor(t, "every sidecar loads the API's write", func() bool { return sc.src.Current().Hash == HashBytes(v2) })
	}
}

// TestEtcdSourceAcrossPartition: a sidecar cut off from etcd keeps its
// rules, and on reconnect applies what was pushed meanwhile, even when
// etcd has compacted that history away.
func TestEtcdSourceAcrossPartition(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartEtcd(t)
	const key = "/partition/rules"
	admin := etcdClient(t, e.Hosts())
	if _, err := PushEtcdRules(ctx, admin, key, []byte(ruleVersion(0)), 0); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartTCPProxy(t, e.Hosts())
	sc := startEtcdSource(t, etcdClient(t, proxy.Addr), key)

	proxy.Cut()
	var last []byte
	for n := 1; n <= 3; n++ {
		last = []byte(ruleVersion(n))
		resp, err := admin.Put(ctx, key, string(last))
		if err != nil {
			t.Fatal(err)
		}
		if n == 3 {
			if _, err := admin.Compact(ctx, resp.Header.Revision); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	if sc.src.Current().Hash != HashBytes([]byte(ruleVersion(0))) {
		t.Fatal("rules changed through a cut connection")
	}
	proxy.Heal()
	etcdWaitFor(t, "the sidecar applies what was pushed during the partition", func() bool {
		return sc.src.Current().Hash == HashBytes(last)
	})
	if sc.refused.Load() != 0 {
		t.Fatalf("%d refusals across a partition", sc.refused.Load())
	}
}
