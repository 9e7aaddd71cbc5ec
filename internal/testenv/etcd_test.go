package testenv

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func health(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url + "/health")
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestStartEtcdSingleRestart(t *testing.T) {
	e := StartEtcd(t)
	m := e.Members[0]
	if h := health(t, m.ClientURL); !strings.Contains(h, `"health":"true"`) {
		t.Fatalf("health = %s", h)
	}
	m.Stop()
	if h := health(t, m.ClientURL); !strings.HasPrefix(h, "error") {
		t.Fatalf("a stopped member still answers: %s", h)
	}
	m.Restart(t)
	if h := health(t, m.ClientURL); !strings.Contains(h, `"health":"true"`) {
		t.Fatalf("after restart: health = %s", h)
	}
	if e.Hosts() != strings.TrimPrefix(m.ClientURL, "http://") {
		t.Fatalf("Hosts = %q", e.Hosts())
	}
}

func TestStartEtcdClusterSurvivesOneMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster")
	}
	e := StartEtcdCluster(t, 3)
	if len(e.Endpoints()) != 3 {
		t.Fatalf("endpoints = %v", e.Endpoints())
	}
	e.Members[0].Kill()
	// The two others keep a quorum; a new leader may take an election
	// timeout to appear.
	deadline := time.Now().Add(20 * time.Second)
	for {
		h := health(t, e.Members[1].ClientURL)
		if strings.Contains(h, `"health":"true"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two of three members are not healthy: %s", h)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.Members[0].Restart(t)
}

func TestTCPProxyCutAndHeal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	p := StartTCPProxy(t, ln.Addr().String())
	echo := func() (string, error) {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		b := make([]byte, 4)
		_, err = io.ReadFull(c, b)
		return string(b), err
	}
	if got, err := echo(); err != nil || got != "ping" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	// A connection open at the cut is closed.
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(b); err == nil {
		t.Fatal("a connection open at the cut still reads")
	}
	if got, err := echo(); err == nil {
		t.Fatalf("a new connection got through a cut proxy: %q", got)
	}
	p.Heal()
	if got, err := echo(); err != nil || got != "ping" {
		t.Fatalf("after heal: %q, %v", got, err)
	}
}
