package memcouch_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/sidecrypt/sidecrypt/loadtest/memcouch"
)

// A memcouch server is an http.Handler; serve it wherever a CouchDB URL is
// expected.
func Example() {
	srv := httptest.NewServer(memcouch.New())
	defer srv.Close()

	req, _ := http.NewRequest("PUT", srv.URL+"/clinic", nil)
	http.DefaultClient.Do(req)
	http.Post(srv.URL+"/clinic", "application/json", strings.NewReader(`{"_id":"p1","email":"ana@example.org"}`))
	resp, err := http.Post(srv.URL+"/clinic/_find", "application/json", strings.NewReader(`{"selector":{"email":"ana@example.org"},"fields":["email"]}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: {"docs":[{"email":"ana@example.org"}],"bookmark":"nil"}
}
