package election_test

import (
	"context"
	"log"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sidecrypt/sidecrypt/internal/election"
)

// Each sidecar runs the same code; only the elected one runs work, whose
// context ends the moment leadership is lost. (Not run: it needs an etcd.)
func ExampleElector_Run() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	el, err := election.New(cli, election.Options{Prefix: "/sidecrypt/leader"})
	if err != nil {
		log.Fatal(err)
	}
	_ = el.Run(context.Background(), func(ctx context.Context) {
		log.Println("leading: rotating and re-wrapping keys")
		<-ctx.Done()
	})
}
