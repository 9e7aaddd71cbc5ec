package testenv

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestStartPouchDB(t *testing.T) {
	db := StartPouchDB(t)
	req, _ := http.NewRequest(http.MethodPut, db.URL+"/probe", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"ok":true`) {
		t.Fatalf("create database: %d %s", resp.StatusCode, body)
	}
}
