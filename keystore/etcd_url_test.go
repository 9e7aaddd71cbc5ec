package keystore

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseEtcdURL(t *testing.T) {
	tests := []struct {
		in        string
		endpoints []string
		path      string
		prefix    string
		tls       bool
		err       string
	}{
		{"etcd://127.0.0.1:2379", []string{"127.0.0.1:2379"}, "", "/sidecrypt", false, ""},
		{"etcd://a:2379,b:2380/prod/keys/", []string{"a:2379", "b:2380"}, "/prod/keys", "/prod/keys", false, ""},
		{"etcds://etcd.internal/sc", []string{"etcd.internal:2379"}, "/sc", "/sc", true, ""},
		{"etcd://[::1]:2379/x", []string{"[::1]:2379"}, "/x", "/x", false, ""},
		{"etcd://[::1]/x", []string{"[::1]:2379"}, "/x", "/x", false, ""},
		{"etcd://h/", []string{"h:2379"}, "", "/sidecrypt", false, ""},
		{"etcd:///sidecrypt/rules", nil, "/sidecrypt/rules", "/sidecrypt/rules", false, ""},
		{"http://h:2379", nil, "", "", false, "not an etcd:// or etcds:// URL"},
		{"etcd://user:secret@h:2379/x", nil, "", "", false, "credentials in the URL are not supported"},
		{"etcd://h:2379/x?dial=1", nil, "", "", false, "query and fragment"},
		{"etcd://h:0/x", nil, "", "", false, "invalid port"},
		{"etcd://h:99999", nil, "", "", false, "invalid port"},
		{"etcd://a,,b", nil, "", "", false, "empty host"},
		{"etcd://:2379", nil, "", "", false, "no host name"},
		{"etcd://h//x", nil, "", "", false, "empty path segment"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseEtcdURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("the error repeats a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(u.Endpoints, tc.endpoints) || u.Path != tc.path || u.Prefix() != tc.prefix || u.TLS != tc.tls {
				t.Fatalf("got %+v (prefix %q)", u, u.Prefix())
			}
			again, err := ParseEtcdURL(u.String())
			if err != nil || !slices.Equal(again.Endpoints, u.Endpoints) || again.Path != u.Path || again.TLS != u.TLS {
				t.Fatalf("String %q does not parse back: %+v %v", u.String(), again, err)
			}
		})
	}
}

func FuzzParseEtcdURL(f *testing.F) {
	for _, s := range []string{"etcd://a:1,b:2/p", "etcds://[::1]/x/y", "etcd:///r", "etcd://u@h", "etcd://h:2379/a//b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseEtcdURL(s)
		if err != nil {
			return
		}
		// A parsed URL gives itself back.
		again, err := ParseEtcdURL(u.String())
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, u.String(), err)
		}
		if again.String() != u.String() {
			t.Fatalf("%q -> %q -> %q", s, u.String(), again.String())
		}
		if !strings.HasPrefix(u.Prefix(), "/") {
			t.Fatalf("prefix %q does not start with /", u.Prefix())
		}
	})
}

func TestEtcdClientConfigTLS(t *testing.T) {
	dir := t.TempDir()
	u, _ := ParseEtcdURL("etcd://127.0.0.1:2379,127.0.0.2:2379/x")
	cfg, err := EtcdClientConfig(u, EtcdTLS{})
	if err != nil || cfg.TLS != nil || !slices.Equal(cfg.Endpoints, []string{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}) {
		t.Fatalf("plain: %+v %v", cfg.Endpoints, err)
	}
	su, _ := ParseEtcdURL("etcds://127.0.0.1:2379")
	cfg, err = EtcdClientConfig(su, EtcdTLS{})
	if err != nil || cfg.TLS == nil || cfg.Endpoints[0] != "https://127.0.0.1:2379" {
		t.Fatalf("etcds: %+v %v", cfg.Endpoints, err)
	}
	bad := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files EtcdTLS
		want  string
	}{
		{"CA without PEM", EtcdTLS{CA: bad}, "holds no PEM certificate"},
		{"missing CA", EtcdTLS{CA: filepath.Join(dir, "absent.pem")}, "SIDECRYPT_ETCD_CA"},
		{"cert without key", EtcdTLS{Cert: bad}, "set both"},
		{"unreadable pair", EtcdTLS{Cert: bad, Key: bad}, "SIDECRYPT_ETCD_CERT/SIDECRYPT_ETCD_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// TLS files turn TLS on for an etcd:// URL too.
			if _, err := EtcdClientConfig(u, tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := EtcdClientConfig(EtcdURL{Path: "/x"}, EtcdTLS{}); err == nil {
		t.Fatal("a URL without hosts made a client config")
	}
}
