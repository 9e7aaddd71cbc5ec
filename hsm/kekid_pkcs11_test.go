//go:build cgo && !nopkcs11

package hsm

import (
	"testing"
	"time"
)

func FuzzKEKID(f *testing.F) {
	f.Add(uint32(1), int64(1700000000), int64(0), []byte{1, 0, 0, 0, 1})
	f.Add(uint32(7), int64(1700000000), int64(1700000100), []byte(nil))
	f.Fuzz(func(t *testing.T, v uint32, created, retired int64, raw []byte) {
		decodeKEKID(raw) // must not panic on anything a token returns
		c := time.Unix(created, 0).UTC()
		var r time.Time
		if retired > 0 {
			r = time.Unix(retired, 0).UTC()
		}
		gv, gc, gr, ok := decodeKEKID(encodeKEKID(v, c, r))
		if !ok || gv != v || !gc.Equal(c) || !gr.Equal(r) {
			t.Fatalf("round trip of (%d, %v, %v) = (%d, %v, %v, %v)", v, c, r, gv, gc, gr, ok)
		}
	})
}

func TestParseKEKLabel(t *testing.T) {
	for label, want := range map[string]uint32{
		"kek-v1": 1, "kek-v42": 42, "kek-v4294967295": 4294967295,
		"kek-v0": 0, "kek-v01": 0, "kek-v": 0, "kek-v-1": 0, "kek-v4294967296": 0,
		"kek-audit": 0, "kekx-v1": 0, "kek-v1x": 0, "other-v1": 0,
	} {
		got, ok := parseKEKLabel("kek", label)
		if got != want || ok != (want != 0) {
			t.Errorf("parseKEKLabel(%q) = %d, %v; want %d", label, got, ok, want)
		}
	}
}
