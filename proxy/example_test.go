package proxy_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/sidecrypt/sidecrypt/fieldcrypt"
	"github.com/sidecrypt/sidecrypt/proxy"
	"github.com/sidecrypt/sidecrypt/rules"
)

// A reverse-mode sidecar in front of a datastore: the application writes
// and reads plaintext, the datastore holds a token.
func Example() {
	// A toy datastore that keeps the last document written.
	var mu sync.Mutex
	var stored string
	datastore := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPut {
			b, _ := io.ReadAll(r.Body)
			stored = string(b)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, stored)
	}))
	defer datastore.Close()

	plan, _, err := rules.Compile("rules.yaml", []byte(`
version: 1
routes:
  - name: patients
    match: {methods: [PUT], paths: ["/clinic/*"]}
    encrypt:
      - fields: [$.ssn]
        key: pii
decrypt:
  keys: [pii]
`))
	if err != nil {
		log.Fatal(err)
	}
	material := make([]byte, fieldcrypt.DataKeySize)
	rand.Read(material)
	key, _ := fieldcrypt.NewDataKey("pii", 1, material)

	upstream, _ := url.Parse(datastore.URL)
	p, err := proxy.New(proxy.Config{
		Upstream: upstream,
		Rules:    rules.Static(plan),
		Keys:     fieldcrypt.NewStaticKeyring(key),
	})
	if err != nil {
		log.Fatal(err)
	}
	sidecar := httptest.NewServer(p) // in production: p.Serve(ctx, listener)
	defer sidecar.Close()

	req, _ := http.NewRequest(http.MethodPut, sidecar.URL+"/clinic/p1", strings.NewReader(`{"name":"Ada","ssn":"078-05-1120"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	resp, err = http.Get(sidecar.URL + "/clinic/p1")
	if err != nil {
		log.Fatal(err)
	}
	read, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	mu.Lock()
	fmt.Println("datastore:", regexp.MustCompile(`sc2\.[A-Za-z0-9_-]+`).ReplaceAllString(stored, "sc2.…"))
	mu.Unlock()
	fmt.Println("app reads:", string(read))
	// Output:
	// datastore: {"name":"Ada","ssn":"sc2.…"}
	// app reads: {"name":"Ada","ssn":"078-05-1120"}
}

// Forward mode needs a local CA whose certificate the application trusts.
func ExampleInitCA() {
	dir, _ := os.MkdirTemp("", "sidecrypt-ca")
	defer os.RemoveAll(dir)

	ca, err := proxy.InitCA(filepath.Join(dir, "ca"), false)
	if err != nil {
		log.Fatal(err)
	}
	// Give ca.crt (or ca.CertificatePEM()) to the application's trust
	// store; serve loads the pair with LoadCA.
	loaded, err := proxy.LoadCA(ca.Dir())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(loaded.Certificate().IsCA, loaded.Fingerprint() == ca.Fingerprint())
	_, err = proxy.InitCA(ca.Dir(), false)
	fmt.Println(errors.Is(err, proxy.ErrCAExists))
	// Output:
	// true true
	// true
}
