package kdf

import (
	"context"
	"testing"
)

func TestParams(t *testing.T) {
	if err := Recommended.Check(); err != nil {
		t.Fatalf("Recommended fails its own check: %v", err)
	}
	if Recommended.Weaker() {
		t.Error("Recommended reports itself weaker than Recommended")
	}
	for _, p := range []Params{
		{Time: 0, MemoryKiB: 64, Threads: 1},
		{Time: MaxTime + 1, MemoryKiB: 64, Threads: 1},
		{Time: 1, MemoryKiB: 64, Threads: 0},
		{Time: 1, MemoryKiB: 7, Threads: 1},
		{Time: 1, MemoryKiB: 16, Threads: 4},
		{Time: 1, MemoryKiB: MaxMemoryKiB + 1, Threads: 1},
	} {
		if p.Check() == nil {
			t.Errorf("%+v passes Check", p)
		}
	}
	cheap := Params{Time: 1, MemoryKiB: 64, Threads: 1}
	if !cheap.Weaker() {
		t.Errorf("%+v not reported weaker", cheap)
	}
	if got := FromContext(context.Background()); got != Recommended {
		t.Errorf("FromContext(plain) = %+v; want Recommended", got)
	}
	if got := FromContext(WithParams(context.Background(), cheap)); got != cheap {
		t.Errorf("FromContext(WithParams) = %+v", got)
	}
}
