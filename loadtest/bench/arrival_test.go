package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	undo, err := keepRxTimestampsOn()
	if err != nil {
		panic(err)
	}
	code := m.Run()
	undo()
	os.Exit(code)
}

// TestArrivalIsWhenBytesCameNotWhenRead: bytes that sat in the socket
// while the reader was busy carry the time they arrived, and a read of
// later bytes carries their later time.
func TestArrivalIsWhenBytesCameNotWhenRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sent := make(chan time.Time, 2)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for _, msg := range []string{"first", "second"} {
			sent <- time.Now()
			if _, err := c.Write([]byte(msg)); err != nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	c, err := stampDialer{}.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := c.(*stampConn)

	firstSent := <-sent
	time.Sleep(150 * time.Millisecond) // the reader is busy; "first" waits in the socket
	buf := make([]byte, 64)
	n, err := sc.Read(buf)
	readAt := time.Now()
	if err != nil || string(buf[:n]) != "first" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	at, ok := sc.lastArrival()
	if !ok {
		t.Fatal("the kernel gave no receive timestamp")
	}
	if at.Before(firstSent.Add(-time.Millisecond)) || at.After(firstSent.Add(100*time.Millisecond)) || readAt.Sub(at) < 100*time.Millisecond {
		t.Errorf("arrival %s after sending, read %s after sending: want arrival near the send", at.Sub(firstSent), readAt.Sub(firstSent))
	}

	secondSent := <-sent
	n, err = sc.Read(buf)
	if err != nil || string(buf[:n]) != "second" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	at2, _ := sc.lastArrival()
	if at2.Before(secondSent.Add(-time.Millisecond)) || !at2.After(at) {
		t.Errorf("second arrival %s after its send (first at %s): want the later segment's time", at2.Sub(secondSent), at)
	}
	if n, err := sc.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("after close: %d, %v; want io.EOF", n, err)
	}
}

// TestClientConnsAreStamped: the harness's HTTP client reads through
// stampConn, so blob GETs get an arrival time.
func TestClientConnsAreStamped(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello"))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	var conn net.Conn
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { conn = info.Conn }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	t0 := time.Now()
	resp, err := newClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "hello" {
		t.Fatalf("body %q, %v", body, err)
	}
	sc, ok := conn.(*stampConn)
	if !ok {
		t.Fatalf("the client's connection is a %T, not a *stampConn", conn)
	}
	if at, ok := sc.lastArrival(); !ok || at.Before(t0) || at.After(time.Now()) {
		t.Errorf("arrival %v (ok %v) outside the request [%v, now]", at, ok, t0)
	}
}

// TestStampDialerRcvBuf: -crowd-rcvbuf reaches the socket (the kernel
// doubles what it is given), and 0 leaves the kernel's default.
func TestStampDialerRcvBuf(t *testing.T) {
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
			defer c.Close()
		}
	}()
	rcvbuf := func(c net.Conn) int {
		var v int
		var serr error
		if err := c.(*stampConn).raw.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		return v
	}
	def, err := stampDialer{}.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	set, err := stampDialer{rcvbuf: 256 << 10}.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if got := rcvbuf(set); got != 512<<10 {
		t.Errorf("SO_RCVBUF with rcvbuf 256 KiB: %d, want %d (doubled by the kernel)", got, 512<<10)
	}
	if got := rcvbuf(def); got == 512<<10 {
		t.Errorf("SO_RCVBUF without rcvbuf: %d, the value of the set one", got)
	}
}
