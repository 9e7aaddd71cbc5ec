package hsm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	kwp "github.com/tink-crypto/tink-go/v2/kwp/subtle"

	"github.com/sidecrypt/sidecrypt/hsm/internal/kdf"
)

// KWPVector is an AES-256 KWP known answer.
type KWPVector struct {
	TCID         int
	Valid        bool
	Key, Msg, CT string // hex
}

// WycheproofKWP are AES-256 KWP vectors from Project Wycheproof,
// testvectors_v1/aes_kwp_test.json (C2SP/wycheproof), test group
// keySize=256: valid cases with key data of a multiple of 8 bytes, and
// invalid cases with a modified IV, RFC 3394-style padding and a length
// field of 2^31+16.
//
// The RFC 5649 section 6 vectors cannot be run through tink, which the
// software provider uses: they use a 192-bit KEK, and tink's KWP accepts
// only 128- and 256-bit KEKs (and refuses the second vector's 7-byte key,
// below its 16-byte minimum). They run through SoftHSM2 instead
// (TestPKCS11RFC5649Vectors), and TestPKCS11MatchesSoftwareKWP shows
// SoftHSM2 and tink agree byte for byte on AES-256.
var WycheproofKWP = []KWPVector{
	{161, true, "fce0429c610658ef8e7cfb0154c51de2239a8a317f5af5b6714f985fb5c4d75c", "287326b5ed0078e7ca0164d748f667e7", "e3eab96d9a2fda12f9e252053aff15e753e5ea6f5172c92b"},
	{164, true, "07518a82cbc8da1dcec55f3763a206d277487abd03cedd0b8bef9ee2fb157121", "faa4664d79fce3c7d2fdd462f6c1c423c2f8e6b69be2e071", "4b1220525c537aec30ebcd562b694b4e9e2ccd819de22ef608b5d8090779d9de"},
	{167, true, "38e1b1d075d9d852b9a6c01c8ff6965af01bac457a4e339ae3e1d7b2ffacc0cd", "80ad6820f1c90981e2ca42b817a345c1179d0a11d8e23a8adc0505e13d87295a", "b63b7e0fec7e315816233db6758fd3e744b9f6a40862bdf866487e53bcb950d8b2649269e51b4475"},
	{168, true, "c641f1689d81caa8ba37d895272240664054ed974cfffc40e6c5c0cad1b916c7", "3fd0ba19955e46749f54d88e99d080b7339d588fe612ec0f4021ca3ca2104270", "837cfc316b49299edaf427e0988020ee876204b29d847669daab72c8660b0d860e9de3bd851198ff"},
	{203, false, "4f710eb6b5e28703becfc3dc52fa8bc1dd44a4a6d38a84b4f94e89ac32d987e7", "a828cbda9b5ff0ae374f84fa01d070a5", "a24e94c12b2e6b776c8febe9179521beae0cfbd507d358b4"},
	{210, false, "4f710eb6b5e28703becfc3dc52fa8bc1dd44a4a6d38a84b4f94e89ac32d987e7", "a828cbda9b5ff0ae374f84fa01d070a5f0a17a0c462be4f1", "8b011408049eab81cc185796b9636982c1ad28e940e5c35ab1219434c23e8c59"},
	{238, false, "48a53c11ef2d727db7eb9a834b134ea9602273aca929702eb2c31d96a58c9be2", "000102030405060708090a0b0c0d0e0f", "ac1a774a5de27e4f9c356e4f62deaf8b7eeee6bcafafd895"},
	{245, false, "48a53c11ef2d727db7eb9a834b134ea9602273aca929702eb2c31d96a58c9be2", "00000000000000000000000000000000", "23a693e211c08ab9b222c2ede2db18f437e22917fdff8032"},
}

func (v KWPVector) bytes() (key, msg, ct []byte) {
	key, _ = hex.DecodeString(v.Key)
	msg, _ = hex.DecodeString(v.Msg)
	ct, _ = hex.DecodeString(v.CT)
	return key, msg, ct
}

// softwareWithKEK builds a software provider whose KEK v1 is kek, sealed
// in a real key file, so the known answers run through the provider's own
// Wrap and Unwrap rather than through tink directly.
func softwareWithKEK(t *testing.T, kek []byte) Provider {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek.json")
	hdr, err := newSoftHeader(kdf.Params{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	payload := &softPayload{
		KEKs:     []softPayloadKEK{{Version: 1, Key: bytes.Clone(kek), Created: time.Now()}},
		AuditKey: make([]byte, 32),
	}
	data, err := sealSoftFile(deriveSealKey("kat", hdr), hdr, payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, data); err != nil {
		t.Fatal(err)
	}
	p, err := Open(t.Context(), "software", Options{KEKFile: path, Passphrase: "kat", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestSoftwareKWPVectors(t *testing.T) {
	for _, v := range WycheproofKWP {
		t.Run(fmt.Sprintf("wycheproof-%d", v.TCID), func(t *testing.T) {
			key, msg, ct := v.bytes()
			p := softwareWithKEK(t, key)
			w := Wrapped{KEKVersion: 1, Mechanism: MechanismKWP, Bytes: ct}
			if !v.Valid {
				if _, err := p.Unwrap(t.Context(), w, Binding{}); !errors.Is(err, ErrUnwrap) {
					t.Fatalf("invalid vector: Unwrap = %v; want ErrUnwrap", err)
				}
				return
			}
			got, err := p.Wrap(t.Context(), msg, Binding{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes, ct) || got.Mechanism != MechanismKWP {
				t.Fatalf("Wrap = %x (%s); want %x", got.Bytes, got.Mechanism, ct)
			}
			dek, err := p.Unwrap(t.Context(), w, Binding{})
			if err != nil || !bytes.Equal(dek, msg) {
				t.Fatalf("Unwrap = %x, %v; want %x", dek, err, msg)
			}
			// Flipped bits in the ciphertext and in the KEK both fail.
			for i := 0; i < len(ct)*8; i += 7 {
				bad := bytes.Clone(ct)
				bad[i/8] ^= 1 << (i % 8)
				if _, err := p.Unwrap(t.Context(), Wrapped{KEKVersion: 1, Mechanism: MechanismKWP, Bytes: bad}, Binding{}); !errors.Is(err, ErrUnwrap) {
					t.Fatalf("ciphertext bit %d flipped: Unwrap = %v", i, err)
				}
			}
			badKey := bytes.Clone(key)
			badKey[31] ^= 0x80
			other, _ := kwp.NewKWP(badKey)
			if _, err := other.Unwrap(ct); err == nil {
				t.Fatal("unwrapped under a KEK with one bit flipped")
			}
		})
	}
}
