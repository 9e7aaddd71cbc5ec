package rules_test

import (
	"context"
	"log"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/rules"
)

// One rule file in etcd, loaded by every sidecar: push it once (validated,
// compare-and-swap), and each sidecar's EtcdSource hot-reloads it. (Not
// run: it needs an etcd.)
func ExampleNewEtcdSource() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	const key = "/sidecrypt/rules"

	// The operator's side (`sidecrypt rules push FILE`).
	data, err := os.ReadFile("clinic.yaml")
	if err != nil {
		log.Fatal(err)
	}
	_, rev, err := rules.ReadEtcdRules(ctx, cli, key)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := rules.PushEtcdRules(ctx, cli, key, data, rev); err != nil {
		log.Fatal(err) // invalid file, or someone pushed meanwhile
	}

	// Each sidecar's side.
	src, err := rules.NewEtcdSource(ctx, cli, key, rules.EtcdSourceOptions{})
	if err != nil {
		log.Fatal(err)
	}
	go src.Run(ctx)
	log.Println("rules in force:", src.Current().Hash)
}
