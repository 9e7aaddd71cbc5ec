package main

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets scripts run `sidecrypt` as a command: the test binary
// re-executes itself as the CLI.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		// The real main: SIGTERM drains exactly as in production.
		"sidecrypt": main,
	})
}

// TestScripts runs testdata/script/*.txtar: each reads like an operator's
// session at a terminal. Scripts get a fresh $WORK directory, and the
// environment below so that nothing touches the real user's files.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("SIDECRYPT_KEYSTORE", env.WorkDir+"/data/keys.db")
			env.Setenv("SIDECRYPT_AUDIT_LOG", env.WorkDir+"/data/audit.log")
			env.Setenv("SIDECRYPT_MASTER_PASSPHRASE", "correct horse battery staple")
			return nil
		},
		RequireExplicitExec: false,
	})
}
