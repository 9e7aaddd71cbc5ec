package keystore

import "time"

// KeyView is a key as the CLI (`keys list --json`) and the admin API show
// it: every lifecycle fact, and never the wrapped key material, which
// nothing outside the keystore and the HSM has a reason to hold. Its JSON
// shape is stable.
type KeyView struct {
	Name                string        `json:"name"`
	Primary             uint32        `json:"primary"`
	CryptoperiodSeconds int64         `json:"cryptoperiod_seconds"`
	Created             time.Time     `json:"created"`
	Versions            []VersionView `json:"versions"`
}

// VersionView is one version in a KeyView.
type VersionView struct {
	Version       uint32    `json:"version"`
	State         string    `json:"state"`
	Algorithm     string    `json:"algorithm"`
	KEKVersion    uint32    `json:"kek_version"`
	Mechanism     string    `json:"mechanism"`
	Fingerprint   string    `json:"fingerprint"`
	Created       time.Time `json:"created"`
	Activated     time.Time `json:"activated,omitzero"`
	Deactivated   time.Time `json:"deactivated,omitzero"`
	Compromised   time.Time `json:"compromised,omitzero"`
	Destroyed     time.Time `json:"destroyed,omitzero"`
	Reason        string    `json:"reason,omitempty"`
	OverrideUntil time.Time `json:"override_until,omitzero"`
}

// View returns k without its wrapped material.
func (k *Key) View() KeyView {
	kv := KeyView{Name: k.Name, Primary: k.Primary, CryptoperiodSeconds: int64(k.Cryptoperiod / time.Second), Created: k.Created, Versions: []VersionView{}}
	for _, v := range k.Versions {
		kv.Versions = append(kv.Versions, VersionView{
			Version: v.Version, State: string(v.State), Algorithm: v.Algorithm, KEKVersion: v.KEKVersion,
			Mechanism: v.Mechanism, Fingerprint: v.Fingerprint, Created: v.Created, Activated: v.Activated,
			Deactivated: v.Deactivated, Compromised: v.Compromised, Destroyed: v.Destroyed, Reason: v.Reason,
			OverrideUntil: v.OverrideUntil,
		})
	}
	return kv
}
