package keystore_test

import (
	"context"
	"fmt"
	"log"

	"github.com/sidecrypt/sidecrypt/keystore"
)

// Several sidecars share keys by opening the same etcd keystore; a
// Manager over it works exactly as over the embedded file. (Not run: it
// needs an etcd; see etcd_test.go for tests against a real one.)
func ExampleOpenEtcd() {
	store, err := keystore.OpenEtcd("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/sidecrypt",
		keystore.EtcdTLS{CA: "/etc/sidecrypt/etcd-ca.pem", Cert: "/etc/sidecrypt/etcd.pem", Key: "/etc/sidecrypt/etcd-key.pem"},
		keystore.EtcdOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	ctx := context.Background()
	// Follow changes made by every sidecar and operator: this is what the
	// key cache does to purge revoked keys.
	events, err := store.Watch(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for ev := range events {
		fmt.Println("changed:", ev.Name)
	}
}

func ExampleParseEtcdURL() {
	u, err := keystore.ParseEtcdURL("etcds://etcd-a,etcd-b:2381/prod/sidecrypt/")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u.Endpoints, u.Prefix(), u.TLS)
	// Output: [etcd-a:2379 etcd-b:2381] /prod/sidecrypt true
}
