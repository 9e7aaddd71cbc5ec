package main

import (
	"os"
	"path/filepath"
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
