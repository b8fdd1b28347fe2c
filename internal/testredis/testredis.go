// Package testredis runs a real Redis (Debian's redis-server) on loopback
// for tests of the coordination between Breakwater replicas: leases and
// their expiry, and what a replica does when Redis dies under it, are
// tested against the server that fleet mode will run with, not a mock.
//
// The binary comes from scripts/redis.sh, which installs Debian's
// redis-server package with apt-get when it is missing (a few seconds, as
// root); a server then starts in milliseconds. When the script or the server
// fails, the test fails rather than skips: CI relies on the script to
// provide the server.
package testredis

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/testproc"
)

// Server is a Redis server with nothing persisted: a restart starts it
// empty.
type Server struct {
	// Addr is host:port, on 127.0.0.1.
	Addr string
	// Password is what AUTH needs; empty for none.
	Password string

	t   testing.TB
	bin string
	dir string

	mu   sync.Mutex
	proc *testproc.Process // nil while killed
}

// Start runs a server without a password until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWithPassword(t, "")
}

// StartWithPassword runs a server that requires password until the test
// ends.
func StartWithPassword(t testing.TB, password string) *Server {
	t.Helper()
	bin, err := testproc.Script("redis.sh")
	if err != nil {
		t.Fatalf("no redis-server (CI installs it with scripts/redis.sh): %v", err)
	}
	s := &Server{Addr: testproc.FreeAddr(t), Password: password, t: t, bin: bin, dir: t.TempDir()}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start()
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Kill)
	return s
}

// Kill ends the server with SIGKILL, as a crash would: clients' connections
// break and new ones are refused. It returns once the server has exited.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
}

// Restart starts the server again on the same address, killing it first if
// it is running, and returns once it answers. It starts empty. Like Start,
// it fails the test that started the server, so call it from that test's
// goroutine.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
	s.start()
}

// start runs redis-server and waits for it to answer PING; s.mu is held.
func (s *Server) start() {
	s.t.Helper()
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		s.t.Fatal(err)
	}
	args := []string{
		"--port", port,
		"--bind", host,
		"--save", "", // no snapshots
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "", // standard output, which goes to the log file
	}
	if s.Password != "" {
		args = append(args, "--requirepass", s.Password)
	}
	p, err := testproc.Start(exec.Command(s.bin, args...), filepath.Join(s.dir, "redis.log"))
	if err != nil {
		s.t.Fatalf("redis-server: %v", err)
	}
	// PING (after AUTH, with a password) until the server answers PONG.
	if err := p.WaitReady(20*time.Second, 20*time.Millisecond, func() error { return ping(s.Addr, s.Password) }); err != nil {
		p.Kill()
		s.t.Fatalf("redis-server on %s: %v\n%s", s.Addr, err, p.Log())
	}
	s.proc = p
}

// ping speaks just enough of the Redis protocol to know the server is up,
// so that the helper does not depend on the client the tests exercise.
func ping(addr, password string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	var req []byte
	var want []string
	if password != "" {
		req = appendCommand(req, "AUTH", password)
		want = append(want, "+OK")
	}
	req = appendCommand(req, "PING")
	want = append(want, "+PONG")
	if _, err := conn.Write(req); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for _, w := range want {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if got := strings.TrimRight(line, "\r\n"); got != w {
			return fmt.Errorf("answered %q, want %q", got, w)
		}
	}
	return nil
}

// appendCommand appends a command in RESP, an array of bulk strings.
func appendCommand(b []byte, args ...string) []byte {
	b = fmt.Appendf(b, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}
