package fieldcrypt

import (
	"fmt"
	"strconv"
	"strings"
)

// Padding (token format 2, docs/FORMAT.md section 4.5).
//
// A token's length shows the length of what it seals. Format 2 pads the
// sealed value with zero bytes to a length that depends only on the
// value's length and the field's Padding:
//
//	T = bucket(max(P, minPadded))
//
// where P is the value's length and bucket is the smallest of the field's
// buckets that is at least that large, or beyond the largest bucket the
// next multiple of it (no buckets: the length itself). The floor minPadded
// makes true, false and null (and every value of up to 5 bytes) seal to the
// same length without any configuration.
//
// This is bucket padding: fixed sizes, so that the length a token shows is
// one of a few the operator chose. TLS 1.3 pads records the same way and
// leaves the sizes to the sender (RFC 8446 section 5.4 and appendix E.3);
// Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
// Communication with PURBs" (PETS 2019, section 4) measure fixed buckets
// against PADME, which bounds the leak to O(log log P) bits at most 12%
// overhead. PADME leaves values under a few dozen bytes (the usual
// protected field: a name, an SSN, an e-mail address) almost unpadded,
// where buckets hide them completely, so buckets are what a field gets.

const (
	// minPadded is the floor of the padded length: len("false"), so that
	// the three literals, and any value of up to 5 bytes, give tokens of
	// one length under one key and mode.
	minPadded = 5

	// MaxPadBucket is the largest bucket, in bytes. Every value of a
	// padded field grows to at least its bucket, so a mistyped size
	// (pad: 1000000) would multiply the size of every document; 4 KiB
	// covers any field worth padding (names, addresses, free-text notes),
	// and larger values are padded to multiples of the largest bucket.
	MaxPadBucket = 4096

	// MaxPadBuckets bounds the length of a bucket list.
	MaxPadBuckets = 16
)

// Padding is the padding of a field's sealed values (FieldRule.Pad). The
// zero Padding pads to the format's floor only (5 bytes).
type Padding struct {
	// Buckets, strictly ascending, each from 1 to MaxPadBucket, at most
	// MaxPadBuckets of them. A value of P bytes is padded to the smallest
	// bucket of at least max(P, 5) bytes; beyond the largest bucket, to
	// the next multiple of the largest. One bucket N therefore means
	// "pad to a multiple of N".
	Buckets []int
}

// IsZero reports whether p pads to the floor only.
func (p Padding) IsZero() bool { return len(p.Buckets) == 0 }

// Validate checks the bucket list.
func (p Padding) Validate() error {
	if len(p.Buckets) > MaxPadBuckets {
		return fmt.Errorf("fieldcrypt: padding: %d buckets, at most %d", len(p.Buckets), MaxPadBuckets)
	}
	for i, b := range p.Buckets {
		if b < 1 || b > MaxPadBucket {
			return fmt.Errorf("fieldcrypt: padding: bucket %d is not between 1 and %d bytes", b, MaxPadBucket)
		}
		if i > 0 && b <= p.Buckets[i-1] {
			return fmt.Errorf("fieldcrypt: padding: buckets must be strictly ascending (%d after %d)", b, p.Buckets[i-1])
		}
	}
	return nil
}

// String gives the bucket list as ParsePadding reads it: "16,64,256", or
// "none" for the zero Padding.
func (p Padding) String() string {
	if p.IsZero() {
		return "none"
	}
	s := make([]string, len(p.Buckets))
	for i, b := range p.Buckets {
		s[i] = strconv.Itoa(b)
	}
	return strings.Join(s, ",")
}

// ParsePadding reads a bucket list: "16" (a multiple of 16 bytes),
// "16,64,256", or "none" or "" (the floor only). The result is validated.
func ParsePadding(s string) (Padding, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return Padding{}, nil
	}
	var p Padding
	for _, f := range strings.Split(s, ",") {
		b, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return Padding{}, fmt.Errorf("fieldcrypt: padding %q: %q is not a number of bytes", s, f)
		}
		p.Buckets = append(p.Buckets, b)
	}
	if err := p.Validate(); err != nil {
		return Padding{}, err
	}
	return p, nil
}

// PaddedLen is the length a value of n bytes is padded to (T above, not
// counting the type byte). p must be valid.
func (p Padding) PaddedLen(n int) int { return paddedLen(n, p.Buckets) }

func paddedLen(n int, buckets []int) int {
	t := max(n, minPadded)
	if len(buckets) == 0 {
		return t
	}
	for _, b := range buckets {
		if t <= b {
			return b
		}
	}
	last := buckets[len(buckets)-1]
	return (t + last - 1) / last * last
}
