// Command sidecrypt is a sidecar encryption proxy: it encrypts the JSON
// fields that its rules name on the way to a datastore and decrypts them on
// the way back. Run `sidecrypt help` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
