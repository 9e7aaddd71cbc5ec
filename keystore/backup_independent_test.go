package keystore_test

// An independent reader of a backup, written from docs/KEYS.md, "Backup
// file format", alone, with the standard library's primitives (ML-KEM,
// X25519, SHA-3, HKDF, AES-GCM, ECDSA) and no code from this module: it is
// the proof that a third party can open a backup from the document. It
// runs on a backup made by the Manager and must recover every data key.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"testing"
)

// docBackup is what the independent reader recovers: name/version -> key.
type docBackup map[string][]byte

// openBackupFromDoc follows the document step by step.
func openBackupFromDoc(file, recoveryPEM, signerPEM []byte) (docBackup, error) {
	// 1. The signer's public key: PEM "SIDECRYPT BACKUP SIGNER", the
	//    65-byte uncompressed P-256 point.
	sb, _ := pem.Decode(signerPEM)
	if sb == nil || sb.Type != "SIDECRYPT BACKUP SIGNER" {
		return nil, errors.New("no signer block")
	}
	signer, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), sb.Bytes)
	if err != nil {
		return nil, err
	}
	// 2. The envelope, and the signature over the payload's bytes,
	//    before anything else.
	var env struct {
		Format    string `json:"format"`
		Payload   string `json:"payload"`
		Signature struct {
			Alg       string `json:"alg"`
			PublicKey []byte `json:"public_key"`
			Value     []byte `json:"value"`
		} `json:"signature"`
	}
	if err := json.Unmarshal(file, &env); err != nil {
		return nil, err
	}
	if env.Format != "sidecrypt-backup-v2" || env.Signature.Alg != "ECDSA-P256-SHA256" || len(env.Signature.Value) != 64 {
		return nil, errors.New("not a v2 backup signed with ECDSA-P256-SHA256")
	}
	digest := sha256.Sum256(append([]byte("sidecrypt backup signature v2\x00"), env.Payload...))
	r := new(big.Int).SetBytes(env.Signature.Value[:32])
	s := new(big.Int).SetBytes(env.Signature.Value[32:])
	if !ecdsa.Verify(signer, digest[:], r, s) {
		return nil, errors.New("signature does not verify")
	}
	// 3. The recovery private key: a 32-byte seed, expanded with
	//    SHAKE256 into the ML-KEM-768 seed (64 bytes, d || z) and the
	//    X25519 private key (the next 32 bytes).
	rb, _ := pem.Decode(recoveryPEM)
	if rb == nil || rb.Type != "SIDECRYPT RECOVERY PRIVATE KEY" || len(rb.Bytes) != 32 {
		return nil, errors.New("no recovery private key")
	}
	xof := sha3.NewSHAKE256()
	xof.Write(rb.Bytes)
	expanded := make([]byte, 96)
	xof.Read(expanded)
	dk, err := mlkem.NewDecapsulationKey768(expanded[:64])
	if err != nil {
		return nil, err
	}
	skX, err := ecdh.X25519().NewPrivateKey(expanded[64:96])
	if err != nil {
		return nil, err
	}
	pkX := skX.PublicKey().Bytes()
	// 4. The payload.
	var p struct {
		Format, KEM, KDF, AEAD string
		Keys                   []struct {
			Name     string `json:"name"`
			Versions []struct {
				Meta struct {
					Version     uint32 `json:"version"`
					State       string `json:"state"`
					Fingerprint string `json:"fingerprint"`
				} `json:"meta"`
				Sealed []byte `json:"sealed"`
			} `json:"versions"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(env.Payload), &p); err != nil {
		return nil, err
	}
	if p.KEM != "MLKEM768X25519" || p.KDF != "HKDF-SHA256" || p.AEAD != "AES-256-GCM" {
		return nil, errors.New("unknown suite")
	}
	// HPKE (RFC 9180) suite_id: "HPKE" || kem 0x647a || kdf 0x0001 || aead 0x0002.
	suite := []byte("HPKE\x64\x7a\x00\x01\x00\x02")
	labeledExtract := func(salt []byte, label string, ikm []byte) []byte {
		in := append(append(append([]byte("HPKE-v1"), suite...), label...), ikm...)
		prk, _ := hkdf.Extract(sha256.New, in, salt)
		return prk
	}
	labeledExpand := func(prk []byte, label string, info []byte, n int) []byte {
		in := binary.BigEndian.AppendUint16(nil, uint16(n))
		in = append(append(append(append(in, "HPKE-v1"...), suite...), label...), info...)
		out, _ := hkdf.Expand(sha256.New, prk, string(in), n)
		return out
	}
	out := docBackup{}
	for _, k := range p.Keys {
		for _, v := range k.Versions {
			if v.Meta.State == "destroyed" {
				continue
			}
			// 5. enc (1088-byte ML-KEM ciphertext, 32-byte X25519
			//    ephemeral public key) || AES-256-GCM ciphertext and tag.
			if len(v.Sealed) < 1120+16 {
				return nil, errors.New("sealed too short")
			}
			ctPQ, ctX, ct := v.Sealed[:1088], v.Sealed[1088:1120], v.Sealed[1120:]
			ssPQ, err := dk.Decapsulate(ctPQ)
			if err != nil {
				return nil, err
			}
			eph, err := ecdh.X25519().NewPublicKey(ctX)
			if err != nil {
				return nil, err
			}
			ssX, err := skX.ECDH(eph)
			if err != nil {
				return nil, err
			}
			// X-Wing combiner: SHA3-256(ssPQ || ssX || ctX || pkX || label).
			h := sha3.New256()
			for _, b := range [][]byte{ssPQ, ssX, ctX, pkX, {0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c}} {
				h.Write(b)
			}
			shared := h.Sum(nil)
			// 6. The HPKE key schedule, base mode, and one Open at
			//    sequence number 0 with empty AAD.
			info := []byte("sidecrypt backup v2\x00" + k.Name + "\x00" + strconv.FormatUint(uint64(v.Meta.Version), 10) + "\x00" + v.Meta.Fingerprint)
			ctx := append([]byte{0}, labeledExtract(nil, "psk_id_hash", nil)...)
			ctx = append(ctx, labeledExtract(nil, "info_hash", info)...)
			secret := labeledExtract(shared, "secret", nil)
			key := labeledExpand(secret, "key", ctx, 32)
			nonce := labeledExpand(secret, "base_nonce", ctx, 12)
			block, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(block)
			dek, err := gcm.Open(nil, nonce, ct, nil)
			if err != nil {
				return nil, fmt.Errorf("%s v%d: %w", k.Name, v.Meta.Version, err)
			}
			// 7. The fingerprint: HKDF-SHA256(dek, no salt, "sidecrypt v1
			//    fingerprint"), 16 bytes, hex.
			fp, _ := hkdf.Key(sha256.New, dek, nil, "sidecrypt v1 fingerprint", 16)
			if hex.EncodeToString(fp) != v.Meta.Fingerprint {
				return nil, fmt.Errorf("%s v%d: fingerprint mismatch", k.Name, v.Meta.Version)
			}
			out[k.Name+"/"+strconv.FormatUint(uint64(v.Meta.Version), 10)] = dek
		}
	}
	return out, nil
}

func TestBackupOpensFromTheDocumentAlone(t *testing.T) {
	src, id, backup, deks := backupFixture(t)
	recPEM, err := id.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	signerPEM, err := signerOf(t, src).MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	got, err := openBackupFromDoc(backup, recPEM, signerPEM)
	if err != nil {
		t.Fatalf("the independent reader: %v", err)
	}
	if len(got) != len(deks) {
		t.Fatalf("independent reader recovered %d keys; the backup holds %d", len(got), len(deks))
	}
	for name, want := range deks {
		if !bytes.Equal(got[name], want) {
			t.Errorf("%s: the independent reader recovered another key", name)
		}
	}
	// And it refuses what restore refuses: an edited payload, or another
	// signer.
	edited := editPayload(t, backup, nil, func(m map[string]any) { m["created"] = "2020-01-01T00:00:00Z" })
	if _, err := openBackupFromDoc(edited, recPEM, signerPEM); err == nil {
		t.Error("the independent reader accepted an edited payload")
	}
	other := newFixture(t)
	otherPEM, _ := signerOf(t, other).MarshalText()
	if _, err := openBackupFromDoc(backup, recPEM, otherPEM); err == nil {
		t.Error("the independent reader accepted another signer")
	}
}
