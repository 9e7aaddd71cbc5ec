package hsm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const mod = "module-path=/usr/lib/softhsm/libsofthsm2.so"

func TestParsePKCS11URI(t *testing.T) {
	good := []struct {
		uri  string
		want pkcs11Config
	}{
		{
			"pkcs11:token=prod?" + mod,
			pkcs11Config{Token: "prod", Object: DefaultObject, ModulePath: "/usr/lib/softhsm/libsofthsm2.so", Mechanism: wrapMechanisms[0], MaxSessions: DefaultMaxSessions},
		},
		{
			"PKCS11:token=My%20Token;object=app-kek;type=secret-key?" + mod + "&pin-source=file:///run/secrets/pin&wrap-mechanism=kw&max-sessions=4",
			pkcs11Config{Token: "My Token", Object: "app-kek", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/run/secrets/pin", Mechanism: wrapMechanisms[2], MaxSessions: 4},
		},
		{
			"pkcs11:serial=abc%3Bdef;slot-id=7;manufacturer=SoftHSM%20project;model=SoftHSM%20v2?" + mod + "&pin-source=/etc/pin&wrap-mechanism=kwp-v3",
			pkcs11Config{Serial: "abc;def", SlotID: 7, HasSlotID: true, Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Object: DefaultObject,
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/etc/pin", Mechanism: wrapMechanisms[1], MaxSessions: DefaultMaxSessions},
		},
		{
			"pkcs11:token=a+b?" + mod + "&pin-source=file:/etc/p%20in",
			pkcs11Config{Token: "a+b", Object: DefaultObject, ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/etc/p in", Mechanism: wrapMechanisms[0], MaxSessions: DefaultMaxSessions},
		},
	}
	for _, c := range good {
		t.Run(c.uri, func(t *testing.T) {
			got, err := parsePKCS11URI(c.uri)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got != c.want {
				t.Fatalf("parse =\n %+v\nwant\n %+v", got, c.want)
			}
			again, err := parsePKCS11URI(got.String())
			if err != nil || again != got {
				t.Fatalf("String() %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}

	t.Run("pin-value", func(t *testing.T) {
		c, err := parsePKCS11URI("pkcs11:token=t?" + mod + "&pin-value=12%2534")
		if err != nil {
			t.Fatal(err)
		}
		if !c.hasPINValue || c.pinValue != "12%34" {
			t.Errorf("pin-value = %q", c.pinValue)
		}
		if strings.Contains(c.String(), "12") {
			t.Errorf("String() %q shows the PIN", c.String())
		}
	})

	bad := []struct {
		uri, mentions string
	}{
		{"pkcs11", "must start with"},
		{"http://token=x", "must start with"},
		{"pkcs11:token=t", "module-path is required"},
		{"pkcs11:object=o?" + mod, "name the token"},
		{"pkcs11:token=t?module-path=libsofthsm2.so", "absolute path"},
		{"pkcs11:token=t?module-name=softhsm2", "module-name"},
		{"pkcs11:token=t;token=u?" + mod, `"token" appears twice`},
		{"pkcs11:token=t?" + mod + "&" + mod, `"module-path" appears twice`},
		{"pkcs11:token=t;;object=o?" + mod, "empty path attribute"},
		{"pkcs11:token=t;bogus=1?" + mod, `unknown path attribute "bogus"`},
		{"pkcs11:token=t;id=%01?" + mod, `"id" is not supported`},
		{"pkcs11:token=t;type=private?" + mod, `type "private"`},
		{"pkcs11:token=t;slot-id=x?" + mod, "slot-id"},
		{"pkcs11:token=t;slot-id=-1?" + mod, "slot-id"},
		{"pkcs11:token=t;object=?" + mod, "object must not be empty"},
		{"pkcs11:token=t;object=a%0Ab?" + mod, "control character"},
		{"pkcs11:token=t;object=" + strings.Repeat("o", 65) + "?" + mod, "at most 64"},
		{"pkcs11:token=t%ZZ?" + mod, "bad percent-encoding"},
		{"pkcs11:token?" + mod, "has no '='"},
		{"pkcs11:token=t?" + mod + "&wrap-mechanism=gcm", "wrap-mechanism"},
		{"pkcs11:token=t?" + mod + "&max-sessions=0", "max-sessions"},
		{"pkcs11:token=t?" + mod + "&max-sessions=99999", "max-sessions"},
		{"pkcs11:token=t?" + mod + "&pin-source=relative/pin", "absolute path"},
		{"pkcs11:token=t?" + mod + "&pin-source=https://example.invalid/pin", "only file: URIs"},
		{"pkcs11:token=t?" + mod + "&pin-source=file://otherhost/pin", "only local files"},
		{"pkcs11:token=t?" + mod + "&pin-source=/p&pin-value=1", "mutually exclusive"},
		{"pkcs11:token=t?" + mod + "&x-vendor=1", `unknown query attribute "x-vendor"`},
		{"pkcs11:token=t?", "empty query"},
		{"pkcs11:token=t?" + mod + "#frag", "fragment"},
	}
	for _, c := range bad {
		t.Run("bad/"+c.uri, func(t *testing.T) {
			_, err := parsePKCS11URI(c.uri)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("parse = %v; want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), c.mentions) || !strings.HasPrefix(err.Error(), "hsm: pkcs11 URI: ") {
				t.Errorf("error %q does not start with \"hsm: pkcs11 URI: \" and mention %q", err, c.mentions)
			}
		})
	}
}

// A malformed pin-value must not be echoed in the error.
func TestParsePKCS11URINeverEchoesPIN(t *testing.T) {
	for _, uri := range []string{
		"pkcs11:token=t?" + mod + "&pin-value=s3cr%ZZet",
		"pkcs11:token=t?" + mod + "&pin-value=s3cret&pin-source=/x",
		"pkcs11:token=t?" + mod + "&pin-value=s3cret&pin-value=s3cret",
		"pkcs11:token=t?" + mod + "&s3cret",
		"pkcs11:token=t?" + mod + "&S3CRET=1",
	} {
		_, err := parsePKCS11URI(uri)
		if err == nil {
			t.Fatalf("%s parsed", uri)
		}
		if strings.Contains(strings.ToLower(err.Error()), "s3c") {
			t.Errorf("%s: error %q shows the PIN", uri, err)
		}
	}
}

func TestReadPINFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	for _, c := range []struct {
		name, body, want string
	}{
		{"plain", "1234", "1234"},
		{"newline", "1234\n", "1234"},
		{"crlf", "1234\r\n", "1234"},
		{"inner space kept", " 12 34 ", " 12 34 "},
	} {
		got, err := readPINFile(write(c.name, c.body))
		if err != nil || got != c.want {
			t.Errorf("%s: readPINFile = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for name, path := range map[string]string{
		"empty":   write("empty", "\n"),
		"huge":    write("huge", strings.Repeat("1", maxPINFile+1)),
		"missing": filepath.Join(dir, "missing"),
	} {
		if _, err := readPINFile(path); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: readPINFile = %v; want ErrConfig", name, err)
		}
	}
}

func FuzzParsePKCS11URI(f *testing.F) {
	f.Add("pkcs11:token=prod;object=kek?module-path=/usr/lib/x.so&pin-source=file:/p&wrap-mechanism=kw")
	f.Add("pkcs11:serial=1%202;slot-id=3?module-path=/m.so&pin-value=1234&max-sessions=2")
	f.Add("pkcs11:token=%zz?module-path=/m")
	f.Add("pkcs11:;;?&&")
	f.Fuzz(func(t *testing.T, uri string) {
		c, err := parsePKCS11URI(uri)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		if c.hasPINValue && len(c.pinValue) >= 6 && strings.Contains(c.String(), c.pinValue) {
			t.Fatalf("String() %q shows pin-value", c.String())
		}
		// Rendering and parsing again gives the same configuration,
		// minus the PIN that String leaves out.
		again, err := parsePKCS11URI(c.String())
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", c.String(), uri, err)
		}
		want := c
		if c.hasPINValue {
			again.pinValue = c.pinValue
		}
		if again != want {
			t.Fatalf("round trip of %q:\n got %+v\nwant %+v", uri, again, want)
		}
	})
}
