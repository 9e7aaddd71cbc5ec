package fieldcrypt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Issue 12, item 6: a document of N distinct made-up token headers costs
// at most Limits.MaxKeyVersions keyring lookups, and each token O(1).

func TestKeyVersionBoundDecrypt(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		lim, want int
	}{
		{0, DefaultMaxKeyVersions},
		{5, 5},
		{100, 100},
	} {
		t.Run(fmt.Sprint(tt.lim), func(t *testing.T) {
			kr := &countingKeyring{Keyring: testKeyring(t)}
			d := NewDecryptor(PolicyFunc(func(string) (Action, Masker) { return ActionOpen, nil }), Limits{MaxKeyVersions: tt.lim})
			const n = 1000
			doc := fakeTokenDoc(n)
			out, rep, err := d.DecryptBytes(ctx, doc, kr, nil)
			if err != nil || string(out) != string(doc) {
				t.Fatalf("the fake tokens were not left as they are: %v", err)
			}
			if kr.opens != tt.want {
				t.Errorf("%d distinct versions caused %d keyring lookups, want %d", n, kr.opens, tt.want)
			}
			var unknown, bounded int
			for _, f := range rep.Failures {
				switch {
				case errors.Is(f.Err, ErrUnknownKey):
					unknown++
				case errors.Is(f.Err, ErrTooManyKeys):
					bounded++
					if f.Key != "pii" || f.Version == 0 || !strings.HasPrefix(f.Path, "$[") {
						t.Errorf("failure does not say where and which key: %+v", f)
					}
				}
			}
			if unknown != tt.want || bounded != n-tt.want {
				t.Errorf("failures: %d unknown key, %d past the bound; want %d and %d", unknown, bounded, tt.want, n-tt.want)
			}
			if _, _, err := d.DecryptBytes(ctx, doc, kr, &CallOptions{Strict: true}); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("strict: %v", err)
			}
		})
	}
}

// Key versions met before the bound keep opening after it: the bound
// limits lookups, not tokens. A real token of a version first met past the
// bound is left and reported, never opened.
func TestKeyVersionBoundKeepsKnownKeys(t *testing.T) {
	ctx := context.Background()
	kr := &countingKeyring{Keyring: testKeyring(t)}
	k1, _ := kr.OpenKey(ctx, "pii", 1)
	k2, _ := kr.OpenKey(ctx, "pii", 2)
	kr.opens = 0
	t1, _ := SealString(k1, ModeRandom, "first")
	t2, _ := SealString(k2, ModeRandom, "late")
	fake := string(fakeTokenDoc(10))
	doc := `{"a":"` + string(t1) + `","fake":` + fake + `,"b":"` + string(t1) + `","c":"` + string(t2) + `"}`
	d := NewDecryptor(PolicyFunc(func(string) (Action, Masker) { return ActionOpen, nil }), Limits{MaxKeyVersions: 4})
	out, rep, err := d.DecryptBytes(ctx, []byte(doc), kr, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":"first","fake":` + fake + `,"b":"first","c":"` + string(t2) + `"}`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	if kr.opens != 4 {
		t.Errorf("%d lookups, want 4", kr.opens)
	}
	last := rep.Failures[len(rep.Failures)-1]
	if last.Path != "$.c" || last.Version != 2 || !errors.Is(last.Err, ErrTooManyKeys) {
		t.Errorf("last failure %+v", last)
	}
	if strings.Contains(last.Err.Error(), "late") {
		t.Errorf("error shows content: %v", last.Err)
	}
}

// Encrypt fails closed: a request that puts more distinct key versions in
// protected fields than the bound is refused, and the keyring sees at most
// the bound.
func TestKeyVersionBoundEncrypt(t *testing.T) {
	ctx := context.Background()
	kr := &countingKeyring{Keyring: testKeyring(t)}
	e := newEnc(t, "$[*] pii random")
	out, _, err := e.EncryptBytes(ctx, fakeTokenDoc(DefaultMaxKeyVersions), kr, nil)
	if err != nil || kr.opens != DefaultMaxKeyVersions || strings.Count(string(out), TokenPrefix) != DefaultMaxKeyVersions {
		t.Fatalf("at the bound: %d lookups, %v", kr.opens, err)
	}
	kr.opens = 0
	out, _, err = e.EncryptBytes(ctx, fakeTokenDoc(1000), kr, nil)
	var pe *PathError
	if out != nil || !errors.Is(err, ErrTooManyKeys) || !errors.As(err, &pe) || pe.Path != fmt.Sprintf("$[%d]", DefaultMaxKeyVersions) {
		t.Errorf("past the bound: %v", err)
	}
	if kr.opens != DefaultMaxKeyVersions {
		t.Errorf("%d lookups, want %d", kr.opens, DefaultMaxKeyVersions)
	}
}

// Many distinct key names: each asked of the Policy once per call (up to
// the cache bound), the machine's caches do not outlive the call, and a
// later call on the same machine starts afresh.
func TestManyKeyNames(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	asked := map[string]int{}
	pol := PolicyFunc(func(key string) (Action, Masker) { asked[key]++; return ActionLeave, nil })
	var b strings.Builder
	b.WriteByte('[')
	k, _ := kr.SealKey(ctx, "pii")
	for i := range 3000 {
		name := fmt.Sprintf("k%d", i%1500)
		kk, _ := NewDataKey(name, 1, make([]byte, DataKeySize))
		tok, _ := SealString(kk, ModeRandom, "x")
		fmt.Fprintf(&b, `"%s",`, tok)
	}
	tok, _ := SealString(k, ModeRandom, "x")
	fmt.Fprintf(&b, `"%s"]`, tok)
	doc := []byte(b.String())
	m := new(machine)
	m.prepare(ctx, kr, nil)
	m.setDecrypt(newDecryptor(pol, Limits{}), nil)
	if _, _, err := m.runBytes(doc, len(doc)); err != nil {
		t.Fatal(err)
	}
	if len(m.policyCache) != maxPolicyCache || m.policyIndex == nil {
		t.Errorf("policy cache %d entries, index %v", len(m.policyCache), m.policyIndex != nil)
	}
	for name, n := range asked {
		var i int
		fmt.Sscanf(name, "k%d", &i)
		if want := 1 + b2i(i >= maxPolicyCache); n != want {
			t.Errorf("policy asked %d times for %s, want %d", n, name, want)
			break
		}
	}
	m.reset()
	if m.policyIndex != nil || m.openIndex != nil || len(m.policyCache) != 0 {
		t.Error("reset kept the call's caches")
	}
	m.prepare(ctx, kr, nil)
	m.setDecrypt(openAll.impl, nil)
	out, rep, err := m.runBytes([]byte(`["`+string(tok)+`"]`), 64)
	if err != nil || string(out) != `["x"]` || fmt.Sprint(rep.Keys) != "[{pii 2 1}]" {
		t.Errorf("next call: %s %v %v", out, rep.Keys, err)
	}
}

// Past lookupLinear key versions the index takes over; lookups and
// counts stay right across the switch.
func TestOpenIndexSwitch(t *testing.T) {
	ctx := context.Background()
	var keys []*DataKey
	for v := range uint32(3 * lookupLinear) {
		keys = append(keys, testKey(t, "pii", v+1))
	}
	kr := &countingKeyring{Keyring: NewStaticKeyring(keys...)}
	var b strings.Builder
	b.WriteByte('[')
	for round := range 3 {
		for _, k := range keys {
			tok, _ := SealString(k, ModeRandom, fmt.Sprint(k.Version()))
			if round > 0 || k != keys[0] {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"%s"`, tok)
		}
	}
	b.WriteByte(']')
	out, rep, err := openAll.DecryptBytes(ctx, []byte(b.String()), kr, &CallOptions{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if kr.opens != len(keys) || len(rep.Keys) != len(keys) {
		t.Errorf("%d lookups, %d keys reported, want %d", kr.opens, len(rep.Keys), len(keys))
	}
	for i, u := range rep.Keys {
		if u.Version != uint32(i+1) || u.Fields != 3 {
			t.Errorf("Report.Keys[%d] = %+v", i, u)
		}
	}
	if !strings.HasPrefix(string(out), `["1","2","3",`) {
		t.Errorf("output %.40s", out)
	}
}

// The common case stays allocation-free per token: a document with a few
// keys costs the same allocations for 10 tokens as for 1000.
func TestDecryptAllocationsFewKeys(t *testing.T) {
	ctx := context.Background()
	kr := testKeyring(t)
	k1, _ := kr.OpenKey(ctx, "pii", 1)
	k2, _ := kr.OpenKey(ctx, "pii", 2)
	k3, _ := kr.OpenKey(ctx, "contact", 1)
	doc := func(n int) []byte {
		var b strings.Builder
		b.WriteByte('[')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			tok, _ := SealString([]*DataKey{k1, k2, k3}[i%3], ModeRandom, "value")
			fmt.Fprintf(&b, `"%s"`, tok)
		}
		b.WriteByte(']')
		return []byte(b.String())
	}
	m := new(machine)
	allocs := func(d []byte) float64 {
		return testing.AllocsPerRun(10, func() {
			m.prepare(ctx, kr, nil)
			m.setDecrypt(openAll.impl, nil)
			if _, _, err := m.runBytes(d, 2*len(d)); err != nil {
				t.Fatal(err)
			}
			m.reset()
		})
	}
	small, large := allocs(doc(10)), allocs(doc(1000))
	if large > small {
		t.Errorf("allocations grow with the number of tokens: %.0f for 10, %.0f for 1000", small, large)
	}
}
