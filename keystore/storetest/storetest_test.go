package storetest_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecrypt/sidecrypt/internal/testenv"
	"github.com/sidecrypt/sidecrypt/keystore"
	"github.com/sidecrypt/sidecrypt/keystore/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func(t *testing.T) keystore.Store {
		path := filepath.Join(t.TempDir(), "keys.db")
		return func(t *testing.T) keystore.Store {
			s, err := keystore.OpenBolt(path, keystore.BoltOptions{PollInterval: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}

func TestEtcdConformance(t *testing.T) {
	e := testenv.StartEtcd(t)
	var n atomic.Int32
	storetest.Run(t, func(t *testing.T) func(t *testing.T) keystore.Store {
		// Each test gets its own prefix on the one etcd, as two
		// deployments sharing a cluster would.
		url := fmt.Sprintf("etcd://%s/conformance-%d", e.Hosts(), n.Add(1))
		return func(t *testing.T) keystore.Store {
			s, err := keystore.OpenEtcd(url, keystore.EtcdTLS{}, keystore.EtcdOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}
