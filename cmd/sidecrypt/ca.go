package main

import (
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sidecrypt/sidecrypt/proxy"
)

func cmdCA(a *app, args []string) int {
	return a.dispatch("sidecrypt ca", []command{
		{"init", "create the forward-mode interception CA and print its certificate", cmdCAInit},
		{"show", "print the interception CA's certificate and fingerprint", cmdCAShow},
	}, args)
}

const caAbout = `
Forward mode (SIDECRYPT_UPSTREAM empty) intercepts HTTPS to the hosts that
the rules name, with certificates signed by this CA. The application must
trust its certificate (ca.crt): add it to the application's trust store,
for example SSL_CERT_FILE, NODE_EXTRA_CA_CERTS or a Java keystore. The
private key (ca.key, mode 0600) never leaves SIDECRYPT_CA_DIR.

The output is a short description followed by the certificate in PEM;
--pem prints the certificate alone, --json everything as JSON.`

func cmdCAInit(a *app, args []string) int {
	fs := a.flags("ca init", `sidecrypt ca init [--dir DIR] [--force] [--pem | --json]

Creates the interception CA in SIDECRYPT_CA_DIR (default: ca/ next to the
key store): ca.key (ECDSA P-256, mode 0600) and ca.crt, valid 5 years.
Refuses to replace an existing CA unless --force is given; after --force,
every application must trust the new certificate.`+caAbout)
	dir := caDirFlag(a, fs)
	force := fs.Bool("force", false, "replace an existing CA")
	pemOnly := fs.Bool("pem", false, "print only the certificate (PEM)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return a.usageError(fs, "unexpected arguments")
	}
	if *pemOnly && *asJSON {
		return a.usageError(fs, "--pem and --json exclude each other")
	}
	d, err := dir()
	if err != nil {
		return a.fail(err)
	}
	ca, err := proxy.InitCA(d, *force)
	if err != nil {
		return a.fail(err)
	}
	return a.printCA(ca, *pemOnly, *asJSON, "created")
}

func cmdCAShow(a *app, args []string) int {
	fs := a.flags("ca show", `sidecrypt ca show [--dir DIR] [--pem | --json]

Prints the interception CA's certificate, for the application's trust
store, after checking that ca.key and ca.crt belong together and that the
key file is private.`+caAbout)
	dir := caDirFlag(a, fs)
	pemOnly := fs.Bool("pem", false, "print only the certificate (PEM)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return a.usageError(fs, "unexpected arguments")
	}
	if *pemOnly && *asJSON {
		return a.usageError(fs, "--pem and --json exclude each other")
	}
	d, err := dir()
	if err != nil {
		return a.fail(err)
	}
	ca, err := proxy.LoadCA(d)
	if err != nil {
		return a.fail(err)
	}
	return a.printCA(ca, *pemOnly, *asJSON, "")
}

// caDirFlag registers --dir and returns a function that resolves it
// against SIDECRYPT_CA_DIR once flags are parsed.
func caDirFlag(a *app, fs *flag.FlagSet) func() (string, error) {
	dir := fs.String("dir", "", "CA directory (default SIDECRYPT_CA_DIR)")
	return func() (string, error) {
		if *dir != "" {
			return *dir, nil
		}
		cfg, err := a.config()
		if err != nil {
			return "", err
		}
		return cfg.CADir, nil
	}
}

func (a *app) printCA(ca *proxy.CA, pemOnly, asJSON bool, verb string) int {
	cert := ca.Certificate()
	if asJSON {
		return a.printJSON(struct {
			Dir         string    `json:"dir"`
			CertFile    string    `json:"cert_file"`
			KeyFile     string    `json:"key_file"`
			Subject     string    `json:"subject"`
			Fingerprint string    `json:"fingerprint_sha256"`
			NotBefore   time.Time `json:"not_before"`
			NotAfter    time.Time `json:"not_after"`
			PEM         string    `json:"pem"`
		}{
			ca.Dir(), filepath.Join(ca.Dir(), proxy.CACertFile), filepath.Join(ca.Dir(), proxy.CAKeyFile),
			cert.Subject.String(), ca.Fingerprint(), cert.NotBefore.UTC(), cert.NotAfter.UTC(), string(ca.CertificatePEM()),
		})
	}
	if !pemOnly {
		if verb != "" {
			fmt.Fprintf(a.stdout, "Interception CA %s in %s\n", verb, ca.Dir())
		}
		fmt.Fprintf(a.stdout, "Certificate:         %s\n", filepath.Join(ca.Dir(), proxy.CACertFile))
		fmt.Fprintf(a.stdout, "Private key:         %s (keep it private)\n", filepath.Join(ca.Dir(), proxy.CAKeyFile))
		fmt.Fprintf(a.stdout, "Subject:             %s\n", cert.Subject)
		fmt.Fprintf(a.stdout, "Valid until:         %s\n", cert.NotAfter.UTC().Format(time.DateOnly))
		fmt.Fprintf(a.stdout, "SHA-256 fingerprint: %s\n", ca.Fingerprint())
		fmt.Fprintf(a.stdout, "\nAdd this certificate to the application's trust store:\n\n")
	}
	_, _ = a.stdout.Write(ca.CertificatePEM())
	return exitOK
}
