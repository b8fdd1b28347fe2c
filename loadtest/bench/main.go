// Command bench measures Breakwater side by side with the CNCF distribution
// registry in proxy mode and with pulling straight from the upstream, in one
// run, on this machine.
//
//	go run ./loadtest/bench            # full run, several minutes
//	go run ./loadtest/bench -quick     # small sizes, under a minute
//
// It builds Breakwater (./cmd/breakwater) and distribution v3
// (./loadtest/registry), starts a distribution registry as the upstream
// (filesystem storage), Breakwater and distribution in proxy mode
// (proxy.remoteurl) in front of it — three separate processes, each on its
// own loopback port with its own empty cache — pushes incompressible images
// to the upstream, and measures each scenario for the three targets
// (breakwater, distribution, direct), rotating their order from one
// scenario to the next so that drift of a noisy machine hits all alike:
//
//	wan      the upstream through a relay shaped like a real registry
//	         (100 MiB/s per connection, +20 ms per request): 1 client cold,
//	         MB/s; 32 clients cold, wall time, first byte, upstream GETs
//	cold     1 client pulls a fresh image (4 × 64 MiB): MB/s, time to first
//	         byte, CPU per GB of each process against the cold path's CPU
//	         floor measured in the run (sha256, page-cache write, loopback hop)
//	warm     the same again: MB/s
//	herd     32 clients pull a fresh image at once: wall time, first-byte p50/p99,
//	         upstream blob GETs (from the upstream's access log), bytes fetched
//	         upstream ÷ image size; again with 256 clients on a smaller image
//	manifest 64 clients HEAD+GET one tag for 10 s, warm: requests/s, p50/p99
//	big      one 1 GiB layer to 32 clients, cold: peak RSS of the server (VmHWM)
//	fleet    3 replicas × 32 clients on one cold image: one replica, three
//	         independent ones, a fleet of three on MinIO and redis-server
//	         (started from scripts/s3.sh and scripts/redis.sh): upstream
//	         GETs and bytes, first byte, the added first byte of a peer
//	         stream; a warm pull from the object store against one from a
//	         replica's local cache
//	recovery each target behind its own fault proxy (internal/faultproxy):
//	         upstream 503 for 30 s, 429 with Retry-After: 10 for 20 s, 503
//	         for 1.5 s, 32 clients pulling uncached images like kubelet:
//	         upstream requests/s during the fault, time from its end to the
//	         first and last client's image, failed attempts
//	outage   the upstream is stopped; 200 pulls of cached images: errors
//
// Every byte read is hashed and compared with its digest; a mismatch fails
// the run (exit status 1, after the results are written). It prints a table
// with ratios and writes the same figures as JSON (-out).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/breakwater-registry/breakwater/internal/faultproxy"
	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

type settings struct {
	Quick            bool          `json:"quick"`
	Layers           int           `json:"layers"`
	LayerSize        int64         `json:"layer_size"`
	Reps             int           `json:"reps"`
	HerdReps         int           `json:"herd_reps"`
	Herd             int           `json:"herd_clients"`
	HerdBig          int           `json:"herd_big_clients"`
	HerdBigLayerSize int64         `json:"herd_big_layer_size"`
	ManifestClients  int           `json:"manifest_clients"`
	ManifestDuration time.Duration `json:"manifest_duration_ns"`
	BigLayerSize     int64         `json:"big_layer_size"`
	BigClients       int           `json:"big_clients"`
	OutagePulls      int           `json:"outage_pulls"`
	OutageClients    int           `json:"outage_clients"`
	TagTTL           string        `json:"breakwater_tag_ttl"`
	OutageTagTTL     string        `json:"breakwater_outage_tag_ttl"`
	HerdParallel     int           `json:"herd_layer_parallelism"`
	// HerdVerify is how the herds' clients check each blob: "content"
	// compares it with the bytes the harness pushed, "sha256" hashes it.
	HerdVerify string `json:"herd_verify"`
	// CrowdRcvBuf is SO_RCVBUF on the connections of every crowd's
	// clients (herds, big, fleet); 0 leaves the kernel's autotuning.
	CrowdRcvBuf   int     `json:"crowd_rcvbuf_bytes"`
	SlowRate      float64 `json:"slow_rate_bytes_per_s"`
	SlowLayers    int     `json:"slow_layers"`
	SlowLayerSize int64   `json:"slow_layer_size"`
	// The recovery step: how long each fault lasts, the clients, and the
	// 429's Retry-After in seconds.
	RecoveryOutage     time.Duration `json:"recovery_outage_ns"`
	RecoveryRateLimit  time.Duration `json:"recovery_ratelimit_ns"`
	RecoveryBurst      time.Duration `json:"recovery_burst_ns"`
	RecoveryClients    int           `json:"recovery_clients"`
	RecoveryRetryAfter int           `json:"recovery_retry_after_s"`
	// The fleet step: replicas of each multi-replica target, clients per
	// replica.
	FleetReplicas int `json:"fleet_replicas"`
	FleetClients  int `json:"fleet_clients_per_replica"`
	// The wan step: the upstream through the throttle at WANRate bytes
	// per second per connection, WANLatency added to every request.
	WANRate    float64       `json:"wan_rate_bytes_per_s"`
	WANLatency time.Duration `json:"wan_latency_ns"`
	// FloorSize is the bytes of each run of the cold path's CPU floor
	// (cold_warm step).
	FloorSize int64 `json:"cpu_floor_bytes"`
	// BreakwaterEnv is added to the environment of every Breakwater the
	// harness starts (GOMAXPROCS=2, GODEBUG=…).
	BreakwaterEnv []string `json:"breakwater_env,omitempty"`
}

type bench struct {
	s        settings
	root     string // the module's directory
	work     string
	bwBin    string
	regBin   string
	upstream *proc
	upLog    accessLog
	targets  []*target
	res      *results
	scenario int // index, rotates the order of targets
	only     map[string]bool
}

// target is one of the three things measured.
type target struct {
	Name string
	base string
	proc *proc // the server process; the upstream for direct
	// restart starts the server again on the same cache (Breakwater only).
	restart func(tagTTL string) (*proc, error)
	peak    memStat
	// fault is the fault proxy between the target and the upstream
	// (recovery step only).
	fault *faultproxy.Proxy
}

func main() {
	os.Exit(run())
}

func run() int {
	var s settings
	var err error
	var layerSize, herdBigLayer, bigLayer, slowRate, slowLayer, wanRate, floorSize, out, bwBin, regBin, workDir, bwEnv string
	var keep bool
	var only string
	var timeout time.Duration
	flag.BoolVar(&s.Quick, "quick", false, "small sizes and short runs: a smoke test of the harness (overrides the size flags)")
	flag.IntVar(&s.Layers, "layers", 4, "layers of the cold/warm and herd images")
	flag.StringVar(&layerSize, "layer-size", "64MiB", "size of each of those layers")
	flag.IntVar(&s.Reps, "reps", 3, "cold/warm pulls per target (a fresh image each time); the table shows the median")
	flag.IntVar(&s.Herd, "herd", 32, "clients of the herd")
	flag.IntVar(&s.HerdReps, "herd-reps", 3, "times each herd runs per target (a fresh image each time); the table shows the median and Breakwater's range")
	flag.IntVar(&s.HerdBig, "herd-big", 256, "clients of the second herd; 0 skips it")
	flag.StringVar(&herdBigLayer, "herd-big-layer-size", "4MiB", "layer size of the second herd's image (it has -layers layers)")
	flag.IntVar(&s.HerdParallel, "herd-parallel", 3, "blobs each herd client fetches at once (containerd's default is 3)")
	flag.IntVar(&s.CrowdRcvBuf, "crowd-rcvbuf", 512<<10, "SO_RCVBUF in bytes on every crowd client's connections (the herds, wan's herd, big, fleet; the kernel doubles it); 0 keeps the kernel's autotuning, which lets each socket grow to tcp_rmem's maximum")
	flag.StringVar(&s.HerdVerify, "herd-verify", "content", "herd, herd_big: how each client checks a blob: content (compare with the bytes pushed, themselves checked against the digest) or sha256 (hash what was read)")
	flag.StringVar(&slowRate, "slow-rate", "10MB", "herd_slow: bytes per second the upstream sends on each connection")
	flag.IntVar(&s.SlowLayers, "slow-layers", 1, "herd_slow: layers of its image")
	flag.StringVar(&slowLayer, "slow-layer-size", "16MiB", "herd_slow: size of each layer")
	flag.StringVar(&wanRate, "wan-rate", "100MiB", "wan: bytes per second the upstream sends on each connection")
	flag.DurationVar(&s.WANLatency, "wan-latency", 20*time.Millisecond, "wan: added to every request to the upstream (each request reaches it this much later)")
	flag.IntVar(&s.ManifestClients, "manifest-clients", 64, "concurrent clients of the manifest scenario")
	flag.DurationVar(&s.ManifestDuration, "manifest-duration", 10*time.Second, "how long each target is hammered with manifest requests")
	flag.StringVar(&bigLayer, "big-layer-size", "1GiB", "size of the one layer sent to -big-clients at once")
	flag.IntVar(&s.BigClients, "big-clients", 32, "clients of the big-layer scenario")
	flag.IntVar(&s.OutagePulls, "outage-pulls", 200, "pulls of cached images per target while the upstream is down")
	flag.IntVar(&s.OutageClients, "outage-clients", 8, "concurrent clients during the outage")
	flag.DurationVar(&s.RecoveryOutage, "recovery-outage", 30*time.Second, "recovery: how long the upstream answers 503 in the outage phase")
	flag.DurationVar(&s.RecoveryRateLimit, "recovery-ratelimit", 20*time.Second, "recovery: how long the upstream answers 429 (Retry-After: 10) in the rate-limit phase")
	flag.IntVar(&s.RecoveryClients, "recovery-clients", 32, "recovery: clients per phase, each pulling its own uncached image")
	flag.IntVar(&s.FleetReplicas, "fleet-replicas", 3, "fleet: replicas of the fleet and of the independent replicas")
	flag.IntVar(&s.FleetClients, "fleet-clients", 32, "fleet: clients per replica of the herd on each target")
	flag.StringVar(&floorSize, "floor-size", "1GiB", "cold_warm: bytes of each run of the CPU floor (sha256, page-cache write, loopback hop; best of 3 runs each)")
	flag.StringVar(&s.TagTTL, "tag-ttl", "1h", "Breakwater's --tag-ttl (the manifest scenario measures a warm cache)")
	flag.StringVar(&s.OutageTagTTL, "outage-tag-ttl", "0s", "Breakwater is restarted on its cache with this --tag-ttl before the outage, so every cached tag has expired and is served stale-if-error; empty: no restart")
	flag.StringVar(&out, "out", "", "write the results as JSON here (default loadtest/bench/results.json, or results-quick.json with -quick)")
	flag.StringVar(&bwBin, "breakwater", "", "Breakwater binary to measure (default: build ./cmd/breakwater)")
	flag.StringVar(&bwEnv, "breakwater-env", "", "KEY=VAL,... added to the environment of every Breakwater the harness starts (e.g. GOMAXPROCS=1)")
	flag.StringVar(&regBin, "registry", "", "distribution registry binary (default: build ./loadtest/registry)")
	flag.StringVar(&workDir, "work", "", "work directory (default: a new temporary directory, removed at the end)")
	flag.BoolVar(&keep, "keep", false, "keep the work directory (logs, caches)")
	flag.StringVar(&only, "only", "", "run only these steps, comma-separated: cold_warm, wan, herd, herd_big, herd_slow, manifest, big, fleet, recovery, outage")
	flag.DurationVar(&timeout, "timeout", 45*time.Minute, "give up after this long")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: unexpected arguments:", strings.Join(flag.Args(), " "))
		return 2
	}
	if s.Quick {
		layerSize, herdBigLayer, bigLayer, slowLayer, floorSize = "4MiB", "1MiB", "64MiB", "4MiB", "256MiB"
		s.Reps, s.HerdReps, s.HerdBig, s.ManifestDuration, s.OutagePulls = 1, 1, 64, 2*time.Second, 40
		s.RecoveryOutage, s.RecoveryRateLimit, s.RecoveryClients = 8*time.Second, 6*time.Second, 8
	}
	if s.CrowdRcvBuf < 0 {
		fmt.Fprintf(os.Stderr, "bench: -crowd-rcvbuf: %d: want 0 or a positive number of bytes\n", s.CrowdRcvBuf)
		return 2
	}
	if s.HerdVerify != "content" && s.HerdVerify != "sha256" {
		fmt.Fprintf(os.Stderr, "bench: -herd-verify: %q: want content or sha256\n", s.HerdVerify)
		return 2
	}
	if s.BreakwaterEnv, err = parseEnv(bwEnv); err != nil {
		fmt.Fprintln(os.Stderr, "bench: -breakwater-env:", err)
		return 2
	}
	// The short burst of the recovery step, and the Retry-After of its
	// rate limit: fixed, the figures of issue 9.
	s.RecoveryBurst, s.RecoveryRetryAfter = 1500*time.Millisecond, 10
	for _, f := range []struct {
		dst *int64
		src string
	}{{&s.LayerSize, layerSize}, {&s.HerdBigLayerSize, herdBigLayer}, {&s.BigLayerSize, bigLayer}, {&s.SlowLayerSize, slowLayer}, {&s.FloorSize, floorSize}} {
		if *f.dst, err = testimage.ParseSize(f.src); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
	}

	for _, f := range []struct {
		name string
		dst  *float64
		src  string
	}{{"-slow-rate", &s.SlowRate, slowRate}, {"-wan-rate", &s.WANRate, wanRate}} {
		rate, err := testimage.ParseSize(f.src)
		if err != nil || rate <= 0 {
			fmt.Fprintf(os.Stderr, "bench: %s: %q: not a positive size (%v)\n", f.name, f.src, err)
			return 2
		}
		*f.dst = float64(rate)
	}

	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if out == "" {
		out = filepath.Join(root, "loadtest", "bench", "results.json")
		if s.Quick {
			out = filepath.Join(root, "loadtest", "bench", "results-quick.json")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "breakwater-bench."); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		if !keep {
			defer os.RemoveAll(workDir)
		}
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer stopAll()
	undoStamps, err := keepRxTimestampsOn()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer undoStamps()
	if keep {
		defer fmt.Fprintln(os.Stderr, "bench: work directory kept:", workDir)
	}

	b := &bench{s: s, root: root, work: workDir, bwBin: bwBin, regBin: regBin, only: map[string]bool{}}
	for _, o := range strings.Split(only, ",") {
		if o = strings.TrimSpace(o); o != "" {
			b.only[o] = true
		}
	}
	b.res = newResults(s)
	if err := b.setup(ctx, root); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	runErr := b.runAll(ctx)
	if runErr != nil {
		b.res.Errors = append(b.res.Errors, runErr.Error())
	}
	b.res.VerifyFailures = verifyFailures.Load()
	b.res.finish(b)
	table := b.res.table()
	fmt.Println()
	fmt.Print(table)
	if err := b.res.write(out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Println("results written to", out)
	switch {
	case runErr != nil:
		fmt.Fprintln(os.Stderr, "bench: FAILED:", runErr)
		return 1
	case b.res.VerifyFailures > 0:
		fmt.Fprintf(os.Stderr, "bench: FAILED: %d verification failures (content that did not match its digest)\n", b.res.VerifyFailures)
		return 1
	}
	return 0
}

// parseEnv reads -breakwater-env: KEY=VAL pairs separated by commas, each
// key a plain environment variable name.
func parseEnv(list string) ([]string, error) {
	var env []string
	for _, kv := range strings.Split(list, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("%q: want KEY=VAL", kv)
		}
		env = append(env, kv)
	}
	return env, nil
}

// startBreakwater starts a Breakwater named name at addr with args and
// -breakwater-env in its environment, ready when /healthz answers.
func (b *bench) startBreakwater(name, addr string, args ...string) (*proc, error) {
	return startProc(name, b.work, addr, httpReady("http://"+addr+"/healthz"), b.s.BreakwaterEnv, b.bwBin, args...)
}

// moduleRoot is the directory of Breakwater's go.mod.
func moduleRoot() (string, error) {
	outp, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(outp))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run from inside the Breakwater module (go run ./loadtest/bench)")
	}
	return filepath.Dir(mod), nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (b *bench) setup(ctx context.Context, root string) error {
	build := func(out, pkg string) error {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", pkg, err)
		}
		return nil
	}
	if b.bwBin == "" {
		b.bwBin = filepath.Join(b.work, "bin", "breakwater")
		logf("building %s", "./cmd/breakwater")
		if err := build(b.bwBin, "./cmd/breakwater"); err != nil {
			return err
		}
	}
	if b.regBin == "" {
		b.regBin = filepath.Join(b.work, "bin", "registry")
		logf("building %s (distribution v3)", "./loadtest/registry")
		if err := build(b.regBin, "./loadtest/registry"); err != nil {
			return err
		}
	}
	if v, err := exec.Command(b.bwBin, "version").CombinedOutput(); err == nil {
		b.res.Versions["breakwater"] = strings.TrimSpace(string(v))
	}
	if v, err := exec.Command(b.regBin, "--version").CombinedOutput(); err == nil {
		b.res.Versions["distribution"] = strings.TrimSpace(string(v))
	}

	// The upstream.
	upAddr, err := freePort()
	if err != nil {
		return err
	}
	upCfg, err := b.registryConfig("upstream", upAddr, "")
	if err != nil {
		return err
	}
	if b.upstream, err = start("upstream", b.work, upAddr, "/v2/", b.regBin, "serve", upCfg); err != nil {
		return err
	}
	b.upLog = accessLog{path: b.upstream.outPath}
	logf("upstream: distribution at %s (pid %d)", upAddr, b.upstream.cmd.Process.Pid)

	// Breakwater.
	bw := &target{Name: "breakwater"}
	bwCache := filepath.Join(b.work, "breakwater-cache")
	startBW := func(tagTTL string) (*proc, error) {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := b.startBreakwater("breakwater", addr, "serve",
			"--listen", addr, "--cache-dir", bwCache,
			"--upstream", "docker.io=http://"+upAddr, "--tag-ttl", tagTTL)
		if err != nil {
			return nil, err
		}
		bw.proc, bw.base = p, "http://"+addr
		return p, nil
	}
	if _, err := startBW(b.s.TagTTL); err != nil {
		return err
	}
	bw.restart = startBW
	logf("breakwater at %s (pid %d, tag_ttl %s)", bw.base, bw.proc.cmd.Process.Pid, b.s.TagTTL)

	// distribution in proxy mode.
	distProc, err := b.startDistribution("distribution", "http://"+upAddr)
	if err != nil {
		return err
	}
	dist := &target{Name: "distribution", base: "http://" + distProc.addr, proc: distProc}
	logf("distribution proxy at %s (pid %d)", dist.base, distProc.cmd.Process.Pid)

	direct := &target{Name: "direct", base: "http://" + upAddr, proc: b.upstream}
	b.targets = []*target{bw, dist, direct}

	b.res.HarnessSHA256MBps = sha256Speed()
	logf("harness: sha256 runs at %.0f MB/s on one core", b.res.HarnessSHA256MBps)
	if c, err := harnessCeiling(min(b.s.LayerSize, 256<<20)); err == nil {
		b.res.HarnessCeilingMBps = c
		logf("harness: a verified single-stream pull from an in-process server runs at %.0f MB/s", c)
	}
	return nil
}

// registryConfig writes a distribution configuration: filesystem storage in
// its own directory, the access log on stdout, proxy mode when remote is
// set, the firstbyte middleware when not. Everything else is
// distribution's default.
func (b *bench) registryConfig(name, addr, remote string) (string, error) {
	dir := filepath.Join(b.work, name+"-storage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: json
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: breakwater-bench-%s
`, dir, addr, name)
	if remote != "" {
		cfg += fmt.Sprintf("proxy:\n  remoteurl: %s\n  ttl: 168h\n", remote)
	} else {
		// The upstream logs when each blob GET arrived and when its first
		// byte left (loadtest/registry/firstbyte.go): its own share of a
		// herd's first byte.
		cfg += "middleware:\n  repository:\n    - name: firstbyte\n"
	}
	path := filepath.Join(b.work, name+".yml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

// order is the targets rotated by the scenario counter, so that no target
// always goes first.
func (b *bench) order() []*target { return b.rotated(b.targets) }

// rotated is order for a step's own targets.
func (b *bench) rotated(targets []*target) []*target {
	k := b.scenario % len(targets)
	b.scenario++
	return append(append([]*target(nil), targets[k:]...), targets[:k]...)
}

// push pushes a fresh image of the given layer sizes as repo:v1.
func (b *bench) push(repo string, sizes ...int64) (*testimage.Pushed, error) {
	return b.pushLogged(repo, false, sizes...)
}

// pushLogged is push that, with keep, also keeps every blob's bytes in the
// Pushed (testimage.KeepContent), for the herds' clients to compare with.
func (b *bench) pushLogged(repo string, keep bool, sizes ...int64) (*testimage.Pushed, error) {
	t0 := time.Now()
	p, err := b.pushImage(repo, keep, sizes...)
	if err != nil {
		return nil, err
	}
	kept := ""
	if keep {
		kept = ", kept in memory"
	}
	logf("pushed %s:v1 (%s, %d blobs%s) in %s", repo, mib(p.Size), len(p.Blobs), kept, time.Since(t0).Round(time.Millisecond))
	return p, nil
}

// pushQuiet is push without the log line, for steps that push many.
func (b *bench) pushQuiet(repo string, sizes ...int64) (*testimage.Pushed, error) {
	return b.pushImage(repo, false, sizes...)
}

func (b *bench) pushImage(repo string, keep bool, sizes ...int64) (*testimage.Pushed, error) {
	layers, err := testimage.Layers(sizes...)
	if err != nil {
		return nil, err
	}
	img, err := testimage.Image("amd64", layers)
	if err != nil {
		return nil, err
	}
	p, err := testimage.Push(b.upstream.addr, repo, "v1", img)
	if err != nil {
		return nil, err
	}
	if keep {
		if err := testimage.KeepContent(&p, img); err != nil {
			return nil, fmt.Errorf("keep %s: %w", repo, err)
		}
	}
	return &p, nil
}

func (b *bench) runAll(ctx context.Context) error {
	steps := []struct {
		key  string
		name string
		fn   func(context.Context) error
	}{
		{"cold_warm", "cold and warm pulls", b.coldWarm},
		{"wan", "cold pulls from an upstream shaped like a WAN", b.wan},
		{"herd", "herd", func(ctx context.Context) error { return b.herd(ctx, "herd", b.s.Herd, b.s.LayerSize) }},
		{"herd_big", "herd (big)", func(ctx context.Context) error {
			if b.s.HerdBig <= 0 {
				return nil
			}
			return b.herd(ctx, "herd_big", b.s.HerdBig, b.s.HerdBigLayerSize)
		}},
		{"herd_slow", "herd from a slow upstream", b.herdSlow},
		{"manifest", "manifests", b.manifests},
		{"big", "big layer", b.bigLayer},
		{"fleet", "fleet: one replica, independent replicas, a fleet on MinIO and Redis", b.fleetStep},
		// Before outage, which stops the upstream for good.
		{"recovery", "outage and recovery", b.recovery},
		{"outage", "outage", b.outage},
	}
	for _, st := range steps {
		if len(b.only) > 0 && !b.only[st.key] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
		logf("== %s", st.name)
		if err := st.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
		b.memStep(st.key)
	}
	return nil
}

// sampleMem records each server's peak resident set so far.
func (b *bench) sampleMem() {
	for _, t := range b.targets {
		if m, err := t.proc.mem(); err == nil {
			if m.HWMKiB > t.peak.HWMKiB {
				t.peak.HWMKiB = m.HWMKiB
			}
			t.peak.RSSKiB = m.RSSKiB
		}
	}
}

// sha256Speed is the harness's own hashing rate on one core, MB/s: the
// ceiling of any single-stream figure it reports.
func sha256Speed() float64 {
	buf := make([]byte, 64<<20)
	r := mrand.NewChaCha8([32]byte{1})
	_, _ = r.Read(buf)
	h := sha256.New()
	t0 := time.Now()
	for range 4 {
		h.Write(buf)
	}
	return float64(4*len(buf)) / time.Since(t0).Seconds() / 1e6
}

func mib(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// machine describes where the run happened.
func machine() map[string]string {
	m := map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version(), "goos": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m["memory"] = strings.Join(strings.Fields(line)[1:], " ")
	}
	if b, err := exec.Command("uname", "-r").Output(); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}
