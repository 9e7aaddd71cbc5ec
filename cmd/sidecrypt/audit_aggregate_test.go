package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/audit"
	"github.com/sidecrypt/sidecrypt/keystore/keystoretest"
)

// TestOpenFailuresAggregated: a thousand responses with tokens that do not
// open write two audit lines (two fsyncs) per route, not a thousand; the
// second says how many responses and tokens it stands for. Other events
// pass through.
func TestOpenFailuresAggregated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	log, err := audit.Open(path, audit.Options{Signer: keystoretest.NewFakeKEK()})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	a := newOpenFailureAggregator(log, time.Hour)
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		ev := audit.Event{Actor: "proxy", Action: "response.open_failed", Rules: "sha256:x", Outcome: "error",
			Details: map[string]string{"route": "clinic", "failures": "3", "keys": "pii v" + strconv.Itoa(i+2)}}
		if err := a.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Record(ctx, audit.Event{Actor: "proxy", Action: "request.refused", Outcome: "denied"}); err != nil {
		t.Fatal(err)
	}
	count := func() int { b, _ := os.ReadFile(path); return bytes.Count(b, []byte("\n")) }
	if n := count(); n != 2 {
		t.Fatalf("%d audit lines before the window ends, want the first open failure and the refusal", n)
	}
	a.Flush()
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], `"aggregated":"999"`) || !strings.Contains(lines[2], `"failures":"2997"`) {
		t.Fatalf("after the window:\n%s", b)
	}
}
