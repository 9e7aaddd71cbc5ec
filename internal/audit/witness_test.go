package audit

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// TestEtcdWitness: heads kept in etcd (the keystore's cluster when it is
// etcd) catch a rollback; an older head never replaces a newer one.
func TestEtcdWitness(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	w := EtcdWitness{Client: cli, Prefix: "/sc/audit-heads"}

	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{Witness: w})
	record(t, l, 2)
	l.Close()
	snapLog, _ := os.ReadFile(path)
	snapCP, _ := os.ReadFile(path + ".checkpoint")
	l = open(t, path, Options{Witness: w})
	record(t, l, 2)
	l.Close()

	ctx := context.Background()
	res, err := VerifyFile(ctx, path, VerifyOptions{Signer: testSigner, Witness: w})
	if err != nil || !res.Clean() || !strings.Contains(res.Witness, "latest seq 4") {
		t.Fatalf("%+v %v %v", res, res.Problem, err)
	}
	heads, _ := w.Heads(ctx, res.LogID)
	// An older head published late (two processes on one log) is not
	// written over the newer one.
	old := heads[0]
	old.Seq = 1
	if err := w.Publish(ctx, old); err != nil {
		t.Fatal(err)
	}
	if again, _ := w.Heads(ctx, res.LogID); len(again) != 1 || again[0].Seq != 4 {
		t.Fatalf("heads %+v", again)
	}

	os.WriteFile(path, snapLog, 0o600)
	os.WriteFile(path+".checkpoint", snapCP, 0o600)
	res, _ = VerifyFile(ctx, path, VerifyOptions{Signer: testSigner, Witness: w})
	if res.OK || res.Witness != "log rolled back" {
		t.Fatalf("rollback: %+v %v", res, res.Problem)
	}
}

// TestSyslogWitness: heads go to a syslog server; exported, the messages
// are a witness file.
func TestSyslogWitness(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan string, 10)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	w, r, err := ParseWitness("syslog:udp://" + pc.LocalAddr().String())
	if err != nil || r != nil {
		t.Fatalf("%v %v", r, err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l := open(t, path, Options{Witness: w})
	record(t, l, 3)
	l.Close()
	var export strings.Builder
	deadline := time.After(10 * time.Second)
	for !strings.Contains(export.String(), `"seq":3`) {
		select {
		case m := <-got:
			if !strings.Contains(m, "sidecrypt-audit-head {") || !strings.Contains(m, "sidecrypt") {
				t.Fatalf("syslog message %q", m)
			}
			export.WriteString(m + "\n")
		case <-deadline:
			t.Fatalf("no head reached syslog: %q", export.String())
		}
	}
	exported := filepath.Join(t.TempDir(), "syslog-export")
	os.WriteFile(exported, []byte("Nov 25 12:00:00 host other: unrelated line\n"+export.String()), 0o600)
	_, fr, _ := ParseWitness("file:" + exported)
	res, err := VerifyFile(context.Background(), path, VerifyOptions{Signer: testSigner, Witness: fr})
	if err != nil || !res.Clean() {
		t.Fatalf("%+v %v %v", res, res.Problem, err)
	}
}

func TestParseWitness(t *testing.T) {
	for _, bad := range []string{"", "file:", "syslog:http://x", "syslog:udp://", "s3://b", "etcd"} {
		if _, _, err := ParseWitness(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
