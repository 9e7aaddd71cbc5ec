package admin

import (
	"net/http"
	"testing"
	"time"
)

// TestCreateKeyDefaultCryptoperiod: a key made through the API without a
// cryptoperiod gets SIDECRYPT_DEFAULT_CRYPTOPERIOD, as `keys create` does;
// "0" still asks for none.
func TestCreateKeyDefaultCryptoperiod(t *testing.T) {
	f := newFixture(t, fixtureOpts{cryptoperiod: 90 * 24 * time.Hour})
	f.call(t, "olive", "POST", "/v1/keys", `{"name":"pii"}`, http.StatusCreated)
	f.call(t, "olive", "POST", "/v1/keys", `{"name":"det","cryptoperiod":"0"}`, http.StatusCreated)
	f.call(t, "olive", "POST", "/v1/keys", `{"name":"short","cryptoperiod":"7d"}`, http.StatusCreated)
	for name, want := range map[string]time.Duration{"pii": 90 * 24 * time.Hour, "det": 0, "short": 7 * 24 * time.Hour} {
		k, err := f.manager.Get(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if k.Cryptoperiod != want {
			t.Errorf("%s: cryptoperiod %v, want %v", name, k.Cryptoperiod, want)
		}
	}
}
