package admin

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// TestTokenCheckLeavesNoHeapGoal: verifying a token with the production
// Argon2id parameters (19 MiB) does not leave the heap goal set by that
// memory (see checkTokenHash).
func TestTokenCheckLeavesNoHeapGoal(t *testing.T) {
	goal := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	enc, err := hashToken("sct_abc_secret", argonParams)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC() // hashToken ran Argon2id too; start from what is live
	before := goal()
	if !checkTokenHash("sct_abc_secret", enc) {
		t.Fatal("the right token does not verify")
	}
	if after := goal(); after > before+8<<20 {
		t.Fatalf("heap goal %d MiB before the check, %d MiB after: Argon2id's memory still counts", before>>20, after>>20)
	}
}
