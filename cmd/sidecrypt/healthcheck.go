package main

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// cmdHealthcheck asks a sidecar on this host whether it is up: the
// container image's HEALTHCHECK, which has no curl. /healthz and /readyz
// answer without credentials on the admin listener, so it needs none.
func cmdHealthcheck(a *app, args []string) int {
	fs := a.flags("healthcheck", `sidecrypt healthcheck [--ready]

Asks the sidecar on this host for /healthz (or /readyz with --ready) on its
admin listener, SIDECRYPT_ADMIN_LISTEN (a 0.0.0.0 or [::] address is asked
on loopback), and exits 0 when it answers 200, 1 otherwise. It is the
Docker image's HEALTHCHECK; the endpoints need no credential.`)
	ready := fs.Bool("ready", false, "ask /readyz (ready for traffic) instead of /healthz (up)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return a.usageError(fs, "unexpected arguments")
	}
	cfg, err := a.config()
	if err != nil {
		return a.fail(err)
	}
	if cfg.AdminListen == "off" {
		return a.fail(fmt.Errorf("SIDECRYPT_ADMIN_LISTEN is off: there is nothing to ask"))
	}
	host, port, err := net.SplitHostPort(cfg.AdminListen)
	if err != nil {
		return a.fail(err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	url := "http://" + net.JoinHostPort(host, port) + path
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(a.stderr, "sidecrypt healthcheck: %s: %v\n", url, err)
		return exitFail
	}
	resp.Body.Close()
	fmt.Fprintf(a.stdout, "%s: %s\n", url, resp.Status)
	if resp.StatusCode != http.StatusOK {
		return exitFail
	}
	return exitOK
}
