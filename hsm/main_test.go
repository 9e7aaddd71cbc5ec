package hsm_test

import (
	"os"
	"testing"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
)

// helperMain, when set by a build with PKCS#11 support, runs instead of
// the tests in a child process (see inspectTokenFromOutside).
var helperMain func() int

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" && helperMain != nil {
		os.Exit(helperMain())
	}
	code := m.Run()
	testenv.CleanupSoftHSM()
	os.Exit(code)
}

const helperEnv = "SIDECRYPT_HSM_TEST_INSPECT"
