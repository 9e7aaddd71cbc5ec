package loadtest

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
)

// The test binary doubles as the command target of TestCommandTarget:
// with LOADTEST_TEST_PROXY set it is a reverse proxy listening on its
// first argument for the upstream URL in its second, counting requests
// into a file.
func TestMain(m *testing.M) {
	if os.Getenv("LOADTEST_TEST_PROXY") != "" {
		testProxyMain(os.Args[1], os.Args[2], os.Getenv("LOADTEST_TEST_PROXY"))
		return
	}
	os.Exit(m.Run())
}

func testProxyMain(listen, upstream, countFile string) {
	u, err := url.Parse(upstream)
	if err != nil {
		os.Exit(2)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	n := 0
	http.ListenAndServe(listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		os.WriteFile(countFile, []byte(strconv.Itoa(n)), 0o600)
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
}

// TestCommandTarget: a --target-cmd proxy is started on {listen} for
// {upstream}, measured among the others (its requests really went
// through it, its CPU is accounted), and stopped at the end.
func TestCommandTarget(t *testing.T) {
	count := t.TempDir() + "/count"
	t.Setenv("LOADTEST_TEST_PROXY", count)
	ct, err := ParseCommandTarget("probe-1=" + os.Args[0] + " {listen} {upstream}")
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := Run(context.Background(), Config{
		Workload: "write", Requests: 200, Concurrency: 4, Warmup: -1,
		Targets: []string{TargetDirect}, Commands: []CommandTarget{ct}, Log: &log,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if len(res.Targets) != 2 || res.Targets[1].Name != "probe-1" {
		t.Fatalf("targets: %+v", res.Targets)
	}
	tr := res.Target("probe-1")
	if tr.OK != 200 || tr.ErrorTotal != 0 || tr.Database != "loadtest_probe_1" {
		t.Errorf("probe-1: ok %d, errors %v, database %s", tr.OK, tr.Errors, tr.Database)
	}
	var pid int
	for _, c := range tr.CPU {
		if c.Process == "proxy" {
			pid = c.PID
		}
	}
	if pid == 0 {
		t.Errorf("the command target's CPU is not accounted: %+v", tr.CPU)
	} else if !processGone(pid) {
		t.Errorf("the command target (pid %d) still runs after Run returned", pid)
	}
	b, _ := os.ReadFile(count)
	if n, _ := strconv.Atoi(string(b)); n < 200 {
		t.Errorf("the proxy counted %d requests, want 200: the load did not go through it", n)
	}
	found := false
	for _, r := range res.Ratios {
		found = found || (r.Target == "probe-1" && r.Baseline == TargetDirect)
	}
	if !found {
		t.Errorf("no ratio of probe-1 to direct: %+v", res.Ratios)
	}
}

func TestCommandTargetRefused(t *testing.T) {
	for _, s := range []string{"x", "Probe=a {listen}", "p=", "p=cmd --port 1", "nginx=cmd {listen}"} {
		ct, err := ParseCommandTarget(s)
		if err == nil {
			c := Config{Commands: []CommandTarget{ct}}
			c.Defaults()
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
