//go:build linux || darwin || freebsd || netbsd || openbsd

package proxy

import (
	"net"
	"testing"
	"time"
)

// TestProbe: an idle connection is reusable only while nothing waits on
// it and its peer has not closed it, and checking costs no allocation.
func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() (*probe, net.Conn, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		peer := <-accepted
		t.Cleanup(func() { peer.Close() })
		return newProbe(c), c, peer
	}
	// settled waits until the probe reports want (the peer's bytes or its
	// FIN take a moment to arrive on loopback).
	settled := func(pr *probe, want bool) bool {
		for range 200 {
			if pr.alive() == want {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}

	pr, _, peer := dial()
	if !pr.alive() {
		t.Fatal("an idle open connection was not reusable")
	}
	if n := testing.AllocsPerRun(100, func() { pr.alive() }); n != 0 {
		t.Errorf("a check allocated %v times", n)
	}
	peer.Write([]byte("HTTP/1.1 200 OK\r\n")) // an unsolicited response
	if !settled(pr, false) {
		t.Error("a connection with unsolicited bytes waiting was reusable")
	}

	pr, _, peer = dial()
	peer.Close()
	if !settled(pr, false) {
		t.Error("a connection its peer closed was reusable")
	}

	pr, c, _ := dial()
	c.Close()
	if pr.alive() {
		t.Error("a connection closed on our side was reusable")
	}

	if newProbe(pipeConn{}) != nil {
		t.Error("a connection that is not a socket got a probe")
	}
	if (*probe)(nil).alive() {
		t.Error("a connection without a probe was reusable")
	}
}

type pipeConn struct{ net.Conn }
