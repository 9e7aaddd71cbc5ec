package loadtest

import (
	"os"
	"strings"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    procStat
		wantErr bool
	}{
		{"plain", "1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0", procStat{pgrp: 1234, ticks: 300}, false},
		// A command name may hold spaces and parentheses.
		{"odd name", "77 (a) b (c) R 1 70 70 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", procStat{pgrp: 70, ticks: 10}, false},
		{"short", "1 (x) S 1 2", procStat{}, true},
		{"no parens", "1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14", procStat{}, true},
		{"not numbers", "1 (x) S 1 a 3 4 5 6 7 8 9 10 b c 13 14", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.line))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseProcStat = %+v, %v; want %+v (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCPUSecondsOfThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	before, err := cpuSeconds(os.Getpid(), false)
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the counter moves by at least one tick.
	x := 0
	for after := before; after == before; after, _ = cpuSeconds(os.Getpid(), false) {
		for i := range 1_000_000 {
			x += i
		}
	}
	_ = x
	if _, err := cpuSeconds(1<<30, false); err == nil {
		t.Error("a process that does not exist has CPU time")
	}
	if ticksPerSecond() <= 0 {
		t.Error("clock ticks per second not positive")
	}
}

func TestTailBuffer(t *testing.T) {
	var tb tailBuffer
	tb.Write([]byte(strings.Repeat("x", tailMax)))
	tb.Write([]byte("\nlast line\n"))
	if got := tb.Tail(20); got != "last line" {
		t.Fatalf("Tail = %q", got)
	}
	if len(tb.b) > tailMax {
		t.Fatalf("buffer grew to %d", len(tb.b))
	}
}
