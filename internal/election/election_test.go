package election_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/internal/election"
	"github.com/sidecrypt/sidecrypt/internal/scheduler"
	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// client opens an etcd client on hosts, closed when the test ends.
func client(t *testing.T, hosts string) *clientv3.Client {
	t.Helper()
	u, err := keystore.ParseEtcdURL("etcd://" + hosts)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := keystore.NewEtcdClient(u, keystore.EtcdTLS{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// workers counts work functions running at once across candidates.
type workers struct {
	running, most atomic.Int32
	started       sync.Map // candidate id -> number of terms started
}

func (w *workers) work(id string) func(ctx context.Context) {
	return func(ctx context.Context) {
		n := w.running.Add(1)
		for {
			m := w.most.Load()
			if n <= m || w.most.CompareAndSwap(m, n) {
				break
			}
		}
		v, _ := w.started.LoadOrStore(id, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		<-ctx.Done()
		w.running.Add(-1)
	}
}

func (w *workers) terms(id string) int32 {
	v, ok := w.started.Load(id)
	if !ok {
		return 0
	}
	return v.(*atomic.Int32).Load()
}

type candidate struct {
	id     string
	el     *election.Elector
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func startCandidate(t *testing.T, hosts, prefix, id string, w *workers) *candidate {
	t.Helper()
	cli := client(t, hosts)
	el, err := election.New(cli, election.Options{Prefix: prefix, TTL: 2, Margin: 500 * time.Millisecond, ID: id, RetryInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{id: id, el: el, cli: cli, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		_ = el.Run(ctx, w.work(id))
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaderOf waits for exactly one leader among cs and returns it.
func leaderOf(t *testing.T, cs ...*candidate) *candidate {
	t.Helper()
	var leader *candidate
	eventually(t, "one leader", func() bool {
		leader = nil
		n := 0
		for _, c := range cs {
			if c.el.Leader() {
				leader, n = c, n+1
			}
		}
		return n == 1
	})
	return leader
}

func TestNewRefusesBadOptions(t *testing.T) {
	tests := []struct {
		name string
		cli  *clientv3.Client
		opts election.Options
	}{
		{"no client", nil, election.Options{Prefix: "/p"}},
		{"no prefix", &clientv3.Client{}, election.Options{}},
		{"margin past TTL", &clientv3.Client{}, election.Options{Prefix: "/p", TTL: 1, Margin: 2 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := election.New(tc.cli, tc.opts); err == nil {
				t.Fatal("New accepted bad options")
			}
		})
	}
}

func TestElectionHandover(t *testing.T) {
	e := testenv.StartEtcd(t)
	w := &workers{}
	const prefix = "/handover/leader"
	var cs []*candidate
	for i := 0; i < 3; i++ {
		cs = append(cs, startCandidate(t, e.Hosts(), prefix, fmt.Sprintf("sidecar-%d", i), w))
	}
	ctx := context.Background()

	// 1. One leader, and it is the one etcd names.
	first := leaderOf(t, cs...)
	eventually(t, "the leader's work runs", func() bool { return w.terms(first.id) == 1 })
	if id, err := election.CurrentLeader(ctx, first.cli, prefix); err != nil || id != first.id {
		t.Fatalf("CurrentLeader = %q, %v; want %q", id, err, first.id)
	}
	if st := first.el.Status(); !st.Leader || st.Terms != 1 || st.ID != first.id {
		t.Fatalf("leader status %+v", st)
	}

	// 2. A graceful stop resigns: another takes over.
	first.stop()
	if first.el.Leader() {
		t.Fatal("a stopped elector still says it leads")
	}
	var rest []*candidate
	for _, c := range cs {
		if c != first {
			rest = append(rest, c)
		}
	}
	second := leaderOf(t, rest...)

	// 3. A leader whose process dies (its connection to etcd closes, no
	// resignation) is replaced once its lease expires.
	second.cli.Close()
	var third *candidate
	for _, c := range rest {
		if c != second {
			third = c
		}
	}
	eventually(t, "the last candidate leads after the dead leader's lease expires", func() bool {
		return third.el.Leader() && w.terms(third.id) == 1
	})
	if second.el.Leader() {
		t.Fatal("a leader whose connection closed still says it leads")
	}
	if m := w.most.Load(); m != 1 {
		t.Fatalf("%d work functions ran at once; want 1", m)
	}
	if _, err := election.CurrentLeader(ctx, client(t, e.Hosts()), "/nobody"); err != election.ErrNoLeader {
		t.Fatalf("CurrentLeader of an empty election: %v", err)
	}
}

// TestLeaderCutOffStepsDown: a leader partitioned from etcd stops its work
// before another candidate can be elected (its lease is only trusted until
// the last renewal plus the TTL, less the margin), and rejoins as a
// follower when the partition heals.
func TestLeaderCutOffStepsDown(t *testing.T) {
	e := testenv.StartEtcd(t)
	w := &workers{}
	const prefix = "/partition/leader"
	proxy := testenv.StartTCPProxy(t, e.Hosts())
	cut := startCandidate(t, proxy.Addr, prefix, "behind-proxy", w)
	leaderOf(t, cut)
	other := startCandidate(t, e.Hosts(), prefix, "direct", w)
	if leaderOf(t, cut, other) != cut {
		t.Fatal("the first candidate lost leadership to a later one")
	}
	proxy.Cut()
	eventually(t, "the other candidate leads", func() bool { return other.el.Leader() && w.terms("direct") == 1 })
	if cut.el.Leader() {
		t.Fatal("a partitioned leader still says it leads")
	}
	if m := w.most.Load(); m != 1 {
		t.Fatalf("%d work functions ran at once across the partition; want 1", m)
	}
	proxy.Heal()
	// The healed candidate campaigns again and waits behind the leader.
	time.Sleep(500 * time.Millisecond)
	if leaderOf(t, cut, other) != other {
		t.Fatal("leadership moved back after the partition healed")
	}
}

// TestFailoverDuringRewrap: the leader of two sidecars dies in the middle
// of a paced re-wrap; the other is elected, recomputes the work list from
// the store and finishes it; every data key still unwraps, under the
// current KEK.
func TestFailoverDuringRewrap(t *testing.T) {
	ctx := audit.WithActor(context.Background(), "test")
	e := testenv.StartEtcd(t)
	const prefix = "/failover"
	kek := keystoretest.NewFakeKEK()

	type sidecar struct {
		id    string
		cli   *clientv3.Client
		m     *keystore.Manager
		el    *election.Elector
		stop  context.CancelFunc
		done  chan struct{}
		terms atomic.Int32
	}
	start := func(id string) *sidecar {
		s := &sidecar{id: id, cli: client(t, e.Hosts()), done: make(chan struct{})}
		store := keystore.NewEtcdStore(s.cli, keystore.EtcdOptions{Prefix: prefix})
		var err error
		if s.m, err = keystore.NewManager(keystore.Config{Store: store, KEK: kek}); err != nil {
			t.Fatal(err)
		}
		if s.el, err = election.New(s.cli, election.Options{Prefix: prefix + "/leader", TTL: 2, Margin: 500 * time.Millisecond, ID: id, RetryInterval: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		// 15 versions a second: the job takes a few seconds, long enough
		// to kill the leader in the middle.
		sched := scheduler.New(s.m, scheduler.Options{Interval: 100 * time.Millisecond, RewrapRate: 15, Leader: s.el.Leader})
		rctx, cancel := context.WithCancel(context.Background())
		s.stop = cancel
		go func() {
			defer close(s.done)
			_ = s.el.Run(rctx, func(ctx context.Context) { s.terms.Add(1); _ = sched.Run(ctx) })
		}()
		t.Cleanup(func() { cancel(); <-s.done })
		return s
	}

	// The keys exist before the sidecars start.
	setup, err := keystore.NewManager(keystore.Config{Store: keystore.NewEtcdStore(client(t, e.Hosts()), keystore.EtcdOptions{Prefix: prefix}), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 40
	for i := 0; i < keys; i++ {
		if _, err := setup.Create(ctx, fmt.Sprintf("k%02d", i), 0, false); err != nil {
			t.Fatal(err)
		}
	}
	a, b := start("a"), start("b")
	var leader, follower *sidecar
	eventually(t, "a leader", func() bool {
		switch {
		case a.el.Leader():
			leader, follower = a, b
		case b.el.Leader():
			leader, follower = b, a
		}
		return leader != nil
	})
	if _, err := kek.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until the leader is part-way through.
	eventually(t, "re-wrap under way", func() bool {
		_, pending, err := setup.RewrapPending(ctx)
		return err == nil && pending > 0 && pending <= keys-8
	})
	_, pendingAtKill, _ := setup.RewrapPending(ctx)
	// Kill the leader: its connection goes, it cannot resign.
	leader.cli.Close()
	leader.stop()
	<-leader.done
	t.Logf("leader %s killed with %d of %d versions left to re-wrap", leader.id, pendingAtKill, keys)

	eventually(t, "the follower is elected and finishes the re-wrap", func() bool {
		_, pending, err := setup.RewrapPending(ctx)
		return err == nil && pending == 0
	})
	if follower.terms.Load() == 0 {
		t.Fatal("the follower never led, yet the job finished")
	}
	if pendingAtKill == 0 {
		t.Fatal("the leader finished before it was killed; the test proved nothing")
	}
	current, err := kek.CurrentKEK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := follower.m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		for _, v := range k.Versions {
			if v.KEKVersion != current {
				t.Fatalf("%s v%d still under KEK v%d", k.Name, v.Version, v.KEKVersion)
			}
			dek, err := follower.m.Unwrap(ctx, k.Name, v.Version)
			if err != nil {
				t.Fatalf("%s v%d does not unwrap after the failover: %v", k.Name, v.Version, err)
			}
			clear(dek)
		}
	}
}
