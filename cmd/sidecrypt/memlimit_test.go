package main

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(v), 0o644)
		return p
	}
	for _, tc := range []struct {
		content string
		want    int64
		ok      bool
	}{
		{"268435456\n", 256 << 20, true},
		{"max\n", 0, false},
		{"9223372036854771712\n", 0, false}, // cgroup v1 unlimited
		{"garbage", 0, false},
	} {
		got, _, ok := containerMemoryLimit([]string{filepath.Join(dir, "missing"), write("memory.max", tc.content)})
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %d %v", tc.content, got, ok)
		}
	}
	if _, _, ok := containerMemoryLimit([]string{filepath.Join(dir, "none")}); ok {
		t.Error("no file, yet a limit")
	}
}

// TestSettleHeap: garbage from start-up (the software provider's 64 MiB
// KDF) no longer sets the heap goal once settleHeap has run.
func TestSettleHeap(t *testing.T) {
	goal := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = byte(i)
	}
	runtime.GC() // collects while big is live, as the first collection after the KDF can
	runtime.KeepAlive(big)
	before := goal()
	if before < 64<<20 {
		t.Fatalf("heap goal %d MiB with 64 MiB live; the test would prove nothing", before>>20)
	}
	big = nil
	settleHeap()
	// Without those 64 MiB live, the goal falls by at least as much
	// (by 64 MiB times 1+GOGC/100), whatever else the process holds.
	if after := goal(); after+64<<20 > before {
		t.Fatalf("heap goal %d MiB before settleHeap, %d MiB after: the start-up garbage still counts", before>>20, after>>20)
	}
}
