package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// CouchDB's _changes?feed=eventsource: every data line is opened, the
// event framing passes as it is, and each event reaches the client
// before the next one is sent.
func TestEventStreamDecrypted(t *testing.T) {
	keys := testKeyring(t)
	doc := `{"_id":"p1","ssn":"123-45-6789"}`
	sealed := seal(t, keys, doc, piiRule("$.ssn"))
	next := []chan struct{}{make(chan struct{}), make(chan struct{})}
	_, up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := 1; i <= 2; i++ {
			fmt.Fprintf(w, "id: %d\r\ndata: {\"seq\":%d,\"doc\":%s}\r\n\r\n", i, i, sealed)
			fl.Flush()
			<-next[i-1]
		}
		fmt.Fprintf(w, ": heartbeat\n\n")
	}))
	tp := startProxy(t, Config{Upstream: up, Rules: newStaticRules(decryptOnlyPlan(t)), Keys: keys})
	resp, err := client(t).Get(tp.URL.String() + "/clinic/_changes?feed=eventsource")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := 1; i <= 2; i++ {
		var event []string
		deadline := time.After(10 * time.Second)
		for {
			lineCh := make(chan string, 1)
			go func() { l, _ := br.ReadString('\n'); lineCh <- l }()
			var l string
			select {
			case l = <-lineCh:
			case <-deadline:
				t.Fatalf("event %d did not arrive before the next was sent", i)
			}
			if l == "\r\n" {
				break
			}
			event = append(event, l)
		}
		want := []string{fmt.Sprintf("id: %d\r\n", i), fmt.Sprintf("data: {\"seq\":%d,\"doc\":%s}\r\n", i, doc)}
		if strings.Join(event, "") != strings.Join(want, "") {
			t.Errorf("event %d = %q, want %q", i, event, want)
		}
		close(next[i-1])
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != ": heartbeat\n\n" {
		t.Errorf("rest %q", rest)
	}
}
