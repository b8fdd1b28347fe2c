// Package testproc runs the real servers that tests use as child processes:
// it gets their binaries from the project's scripts (which install them when
// missing), runs each in its own process group with its output in a log
// file, and kills the whole group, so that no test leaves a server behind.
// internal/tests3 and internal/testredis are built on it.
package testproc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	scriptsMu sync.Mutex
	scripts   = map[string]func() (string, error){}
)

// Script runs scripts/NAME from the repository and returns the path it
// prints on stdout; on failure the error holds what it printed on stderr.
// It runs once per test process: the first caller may wait minutes for an
// install, the others get its answer (or its error) at once.
func Script(name string) (string, error) {
	scriptsMu.Lock()
	run, ok := scripts[name]
	if !ok {
		run = sync.OnceValues(func() (string, error) { return runScript(name) })
		scripts[name] = run
	}
	scriptsMu.Unlock()
	return run()
}

func runScript(name string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(root, "scripts", name))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/%s: %w\n%s", name, err, stderr.String())
	}
	path := strings.TrimSpace(stdout.String())
	if path == "" {
		return "", fmt.Errorf("scripts/%s printed no path\n%s", name, stderr.String())
	}
	return path, nil
}

// repoRoot walks up from the working directory (a test's package directory)
// to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}

// Process is a running child process, alone in its process group.
type Process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// Start starts cmd in a process group of its own, its stdout and stderr
// appended to the file logPath.
func Start(cmd *exec.Cmd, logPath string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	// The child has its own copy of the descriptor once started.
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// WaitReady calls ready every interval until it returns nil. It fails,
// with ready's last error, when the process exits first or timeout has
// passed: a server is up when it answers, not when its process started.
func (p *Process) WaitReady(timeout, interval time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, err)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited before it was ready: %w", err)
		case <-time.After(interval):
		}
	}
}

// HTTPStatus is a ready func for WaitReady: a GET of url answered with
// status want.
func HTTPStatus(url string, want int) func() error {
	client := &http.Client{Timeout: time.Second}
	return func() error {
		res, err := client.Get(url)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != want {
			return fmt.Errorf("GET %s: %s, want %d", url, res.Status, want)
		}
		return nil
	}
}

// Kill sends SIGKILL to the process group and waits for the process to
// exit, so that its port and files are free when Kill returns.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Log returns the last 4 KiB of the process's output, for failure messages.
func (p *Process) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const tail = 4096
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	return string(b)
}

// FreeAddr returns a loopback host:port where nothing listens: a port
// picked by the kernel and closed again, for a server to take.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
