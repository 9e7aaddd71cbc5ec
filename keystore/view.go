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
	// Seals is the version's seal count, when the caller read it
	// (ViewWithSeals): for active and pre-active versions.
	Seals *SealsView `json:"seals,omitempty"`
}

// SealsView is a version's seal budget: how many values it has reserved
// for sealing across every sidecar, the limit, and what is left.
type SealsView struct {
	Reserved  uint64 `json:"reserved"`
	Limit     uint64 `json:"limit"`
	Remaining uint64 `json:"remaining"`
}

// ViewWithSeals is View with each active or pre-active version's seal
// count from us (Manager.Usages).
func (k *Key) ViewWithSeals(us map[string]Usage, limit uint64) KeyView {
	kv := k.View()
	for i := range kv.Versions {
		v := &kv.Versions[i]
		if v.State != string(StateActive) && v.State != string(StatePreActive) {
			continue
		}
		u := UsageOf(us, k.Name, v.Version, limit)
		v.Seals = &SealsView{Reserved: u.Reserved, Limit: limit, Remaining: limit - min(u.Reserved, limit)}
	}
	return kv
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
