package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a server process the harness started: the upstream registry,
// Breakwater or distribution in proxy mode.
type proc struct {
	name    string
	cmd     *exec.Cmd
	addr    string // 127.0.0.1:PORT
	logPath string // stderr
	outPath string // stdout (distribution's access log)
	done    chan struct{}
	waitErr error
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// freePort asks the kernel for a free loopback port.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// childEnv is the environment of every server the harness starts: no HTTP
// proxies, no telemetry export (everything stays on loopback).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		// A developer's MinIO settings stay out of the step's MinIO.
		if strings.HasPrefix(k, "OTEL_") || strings.HasPrefix(k, "MINIO_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NO_PROXY=*", "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
}

// start runs bin args... with stdout and stderr to files in dir, and waits
// until GET readyPath answers 200.
func start(name, dir, addr, readyPath, bin string, args ...string) (*proc, error) {
	return startProc(name, dir, addr, httpReady("http://"+addr+readyPath), nil, bin, args...)
}

// httpReady is a readiness check: GET url answers 200.
func httpReady(url string) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := plainClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// startProc is start with any readiness check, and env added to the
// child's environment (childEnv).
func startProc(name, dir, addr string, ready func() error, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, addr: addr, done: make(chan struct{}),
		logPath: filepath.Join(dir, name+".log"), outPath: filepath.Join(dir, name+".stdout.log")}
	stderr, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	stdout, err := os.OpenFile(p.outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		stderr.Close()
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	p.cmd.Env = append(childEnv(), env...)
	// The server dies with the harness even when the harness is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	go func() {
		p.waitErr = p.cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited at start (%v); see %s", name, p.waitErr, p.logPath)
		default:
		}
		if ready() == nil {
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("%s did not become ready at %s within %s; see %s", name, addr, startTimeout, p.logPath)
}

// startTimeout is how long a server may take to become ready.
const startTimeout = 60 * time.Second

var plainClient = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}

// stop ends the process: SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stopAll stops every process the harness started, by its pid.
func stopAll() {
	procsMu.Lock()
	ps := append([]*proc(nil), procs...)
	procsMu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// memStat is a process's resident set from /proc/PID/status.
type memStat struct {
	HWMKiB int64 `json:"vm_hwm_kib"` // peak resident set since start
	RSSKiB int64 `json:"vm_rss_kib"` // resident set now
}

func (p *proc) mem() (memStat, error) {
	if !p.alive() {
		return memStat{}, errors.New(p.name + " is not running")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return memStat{}, err
	}
	defer f.Close()
	var m memStat
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmHWM":
			m.HWMKiB = n
		case "VmRSS":
			m.RSSKiB = n
		}
	}
	return m, sc.Err()
}

// accessLog reads distribution's access log (Apache combined format, on its
// stdout) from an offset: the harness takes the size before a run and reads
// what the run added.
type accessLog struct{ path string }

func (a accessLog) size() int64 {
	st, err := os.Stat(a.path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// combined matches `"GET /v2/x/blobs/sha256:… HTTP/1.1" 200 67108864`.
var combined = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)`)

// upstreamCount is what the upstream served to one target in one run.
type upstreamCount struct {
	BlobGETs      int   `json:"blob_gets"`
	BlobBytes     int64 `json:"blob_bytes"`
	BlobHEADs     int   `json:"blob_heads"`
	ManifestGETs  int   `json:"manifest_gets"`
	ManifestHEADs int   `json:"manifest_heads"`
}

// count tallies the requests for repository repo logged after offset.
func (a accessLog) count(offset int64, repo string) (upstreamCount, error) {
	var c upstreamCount
	f, err := os.Open(a.path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return c, err
	}
	prefix := "/v2/" + repo + "/"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := combined.FindStringSubmatch(sc.Text())
		if m == nil || !strings.HasPrefix(m[2], prefix) {
			continue
		}
		method, path := m[1], m[2]
		status, _ := strconv.Atoi(m[3])
		n, _ := strconv.ParseInt(m[4], 10, 64)
		switch {
		case strings.Contains(path, "/blobs/") && method == http.MethodGet && (status == 200 || status == 206):
			c.BlobGETs++
			c.BlobBytes += n
		case strings.Contains(path, "/blobs/") && method == http.MethodHead:
			c.BlobHEADs++
		case strings.Contains(path, "/manifests/") && method == http.MethodGet:
			c.ManifestGETs++
		case strings.Contains(path, "/manifests/") && method == http.MethodHead:
			c.ManifestHEADs++
		}
	}
	return c, sc.Err()
}

// cpuTime is the CPU time (user + system, every thread) a process has used
// so far, from /proc/PID/stat; pid 0 is the harness itself.
func cpuTime(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; the fields after it do not.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// cpuMeter measures the CPU time that the harness, the upstream and a
// target's server spend on one step.
type cpuMeter struct {
	pids  [3]int // harness (0), upstream, server (0 for direct)
	start [3]time.Duration
}

func newCPUMeter(upstream, server *proc) *cpuMeter {
	m := &cpuMeter{pids: [3]int{0, upstream.cmd.Process.Pid, -1}}
	if server != nil && server != upstream {
		m.pids[2] = server.cmd.Process.Pid
	}
	for i, pid := range m.pids {
		if pid >= 0 {
			m.start[i], _ = cpuTime(pid)
		}
	}
	return m
}

// used returns the CPU time each of harness, upstream and server spent
// since the meter started; a server of -1 (direct) reports 0.
func (m *cpuMeter) used() (harness, upstream, server time.Duration) {
	var d [3]time.Duration
	for i, pid := range m.pids {
		if pid < 0 {
			continue
		}
		now, err := cpuTime(pid)
		if err == nil {
			d[i] = now - m.start[i]
		}
	}
	return d[0], d[1], d[2]
}
