package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAdminDefaults(t *testing.T) {
	c, err := Load([]string{"SIDECRYPT_KEYSTORE=/var/lib/sc/keys.db"})
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminSocket != "/var/lib/sc/admin.sock" || c.AdminApprovals != "/var/lib/sc/audit.log.approvals" || c.AdminApprovalTTL != time.Hour {
		t.Fatalf("admin defaults: %q %q %v", c.AdminSocket, c.AdminApprovals, c.AdminApprovalTTL)
	}
	c, _ = Load([]string{"SIDECRYPT_AUDIT_LOG=/log/a.log", "SIDECRYPT_ADMIN_SOCKET=off", "SIDECRYPT_ADMIN_HOSTS=sidecar.internal,sc:8081"})
	if c.AdminSocket != "off" || c.AdminApprovals != filepath.FromSlash("/log/a.log.approvals") || len(c.AdminHosts) != 2 {
		t.Fatalf("%+v", c)
	}
}

// TestAdminRefusals: settings under which serve must not start.
func TestAdminRefusals(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		// Tokens across a network in clear.
		{[]string{"SIDECRYPT_ADMIN_LISTEN=0.0.0.0:8081", "SIDECRYPT_ADMIN_TOKEN=t0123456789"}, "in clear"},
		{[]string{"SIDECRYPT_ADMIN_LISTEN=10.0.0.5:8081", "SIDECRYPT_ADMIN_TOKENS_FILE=/etc/sc/principals"}, "in clear"},
		{[]string{"SIDECRYPT_ADMIN_TLS_CERT=/c.pem"}, "go together"},
		{[]string{"SIDECRYPT_ADMIN_CLIENT_CA=/ca.pem"}, "needs TLS"},
		{[]string{"SIDECRYPT_ADMIN_APPROVAL_TTL=10s"}, "APPROVAL_TTL"},
		{[]string{"SIDECRYPT_ADMIN_APPROVAL_TTL=720h"}, "APPROVAL_TTL"},
		{[]string{"SIDECRYPT_AUDIT_WITNESS=etcd"}, "needs an etcd keystore"},
		{[]string{"SIDECRYPT_AUDIT_WITNESS=file:"}, "want file:PATH"},
		{[]string{"SIDECRYPT_AUDIT_WITNESS=s3://bucket"}, "want file:PATH"},
	} {
		if _, err := Load(tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error mentioning %q", tc.env, err, tc.want)
		}
	}
	for _, ok := range [][]string{
		// Health probes on the pod's address, no token on TCP.
		{"SIDECRYPT_ADMIN_LISTEN=0.0.0.0:8081"},
		{"SIDECRYPT_ADMIN_LISTEN=0.0.0.0:8081", "SIDECRYPT_ADMIN_TOKENS_FILE=/p", "SIDECRYPT_ADMIN_TLS_CERT=/c", "SIDECRYPT_ADMIN_TLS_KEY=/k"},
		{"SIDECRYPT_ADMIN_TOKEN=t0123456789"},
		{"SIDECRYPT_AUDIT_WITNESS=file:/srv/witness/heads"},
		{"SIDECRYPT_AUDIT_WITNESS=syslog:"},
		{"SIDECRYPT_AUDIT_WITNESS=etcd", "SIDECRYPT_KEYSTORE=etcd://127.0.0.1:2379/sc"},
	} {
		if _, err := Load(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
}
