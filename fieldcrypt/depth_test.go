package fieldcrypt

import (
	"context"
	"errors"
	"testing"
)

// TestCallMaxDepth: a call can lower the compiled nesting limit (the
// proxy's SIDECRYPT_MAX_DEPTH), counting every object and array, and
// brackets inside strings do not count; it cannot raise it.
func TestCallMaxDepth(t *testing.T) {
	kr := testKeyring(t)
	e := newEnc(t, "$.ssn pii random")
	d := openAll
	for _, tc := range []struct {
		in   string
		max  int
		deep bool
	}{
		{`{}`, 1, false},
		{`{"a":[1]}`, 1, true},
		{`{"a":[1]}`, 2, false},
		{`{"a":"[[[[{{{{"}`, 1, false},
		{`{"a":"\"[[["}`, 1, false},
		{`{"a":"\\"}`, 1, false},
		{`[[],[],[[]]]`, 2, true},
		{`[[],[],[[]]]`, 3, false},
		{`{"ssn":"1","x":{"y":{}}}`, 2, true},
	} {
		opt := &CallOptions{MaxDepth: tc.max}
		_, _, err := e.EncryptBytes(context.Background(), []byte(tc.in), kr, opt)
		if got := errors.Is(err, ErrTooDeep); got != tc.deep {
			t.Errorf("encrypt %s with MaxDepth %d: %v, want too deep = %v", tc.in, tc.max, err, tc.deep)
		}
		_, _, err = d.DecryptBytes(context.Background(), []byte(tc.in), kr, &CallOptions{MaxDepth: tc.max, Strict: true})
		if got := errors.Is(err, ErrTooDeep); got != tc.deep {
			t.Errorf("decrypt %s with MaxDepth %d: %v, want too deep = %v", tc.in, tc.max, err, tc.deep)
		}
	}
	// A call cannot raise the compiled limit.
	low, err := NewEncryptor([]FieldRule{rule(t, "$.ssn pii random")}, Limits{MaxDepth: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := low.EncryptBytes(context.Background(), []byte(`{"a":[1]}`), kr, &CallOptions{MaxDepth: 100}); !errors.Is(err, ErrTooDeep) {
		t.Fatalf("a call raised the compiled depth limit: %v", err)
	}
}
