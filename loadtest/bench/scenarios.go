package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

const pullTimeout = 15 * time.Minute

func repeat(n int, size int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = size
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile of sorted-in-place durations, in ms (nearest rank).
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	k := int(p/100*float64(len(ds))+0.5) - 1
	k = min(max(k, 0), len(ds)-1)
	return ms(ds[k])
}

// coldWarm: one client pulls a fresh image from each target (cold for the
// two proxies), then pulls it again (warm). -reps times, a fresh image each.
// First the harness measures the cold path's CPU floor (floor.go), which
// each proxy's cold CPU per GB is divided by.
func (b *bench) coldWarm(ctx context.Context) error {
	fl, err := measureFloor(b.work, b.s.FloorSize)
	if err != nil {
		return err
	}
	b.res.CPUFloor = fl
	logf("machine: CPU floor of a verifying cache, per GB (best of %d over %s each): sha256 %.0f ms + page-cache write %.0f ms + loopback hop %.0f ms = %.0f ms",
		floorRuns, mib(fl.Bytes), fl.SHA256, fl.Write, fl.Hop, fl.Total)
	for r := range b.s.Reps {
		img, err := b.push(fmt.Sprintf("bench/cold-%d", r), repeat(b.s.Layers, b.s.LayerSize)...)
		if err != nil {
			return err
		}
		// What writing the image to a disk cache costs here, right now.
		if w, err := diskWrite(b.work, img.Size); err == nil {
			b.res.add("machine", "direct", "disk_write_mbps", w)
			logf("machine: writing %s to a new file and fsyncing it runs at %.0f MB/s", mib(img.Size), w)
		}
		for _, phase := range []string{"cold", "warm", "warm_parallel"} {
			for _, t := range b.order() {
				parallel, pipelined := 1, true
				if phase == "warm_parallel" {
					// Every blob at once: the harness hashes on both cores,
					// so the figure is not capped by one core's sha256.
					parallel, pipelined = b.s.Layers+1, false
				}
				serverCPU, err := b.onePull(ctx, phase, t, img, parallel, pipelined)
				if err == nil && phase == "cold" && t.proc != b.upstream {
					b.res.add(phase, t.Name, "server_cpu_floor_ratio", serverCPU/fl.Total)
				}
			}
		}
	}
	return nil
}

// cpuSettle is how long the CPU meter of a cold pull keeps counting after
// the client has the last byte: a proxy may hand out a blob's last byte
// before it has fsynced and committed it, and that work belongs to the
// cold pull, not to the warm pull measured next. Half a second covers a
// 64 MiB fsync at the 318 MB/s this disk has been seen to write at.
const cpuSettle = 500 * time.Millisecond

// onePull is one client pulling img from t, one blob after the other
// (parallel 1) or parallel at once, and records MB/s, first bytes and
// each process's CPU per GB under scenario; it returns the server's CPU
// in ms per GB.
func (b *bench) onePull(ctx context.Context, scenario string, t *target, img *testimage.Pushed, parallel int, pipelined bool) (float64, error) {
	p := &puller{client: newClient(), base: t.base, parallel: parallel, pipelined: pipelined, timeout: pullTimeout}
	defer p.client.CloseIdleConnections()
	cpu := newCPUMeter(b.upstream, t.proc)
	res, err := p.pull(ctx, img)
	if err == nil && !strings.HasPrefix(scenario, "warm") {
		time.Sleep(cpuSettle)
	}
	harnessCPU, upstreamCPU, serverCPU := cpu.used()
	if err != nil {
		b.res.fail(scenario, t.Name, err)
		logf("%s %-12s FAILED: %s", scenario, t.Name, shortErr(err))
		return 0, err
	}
	var layerTTFB []time.Duration
	for _, bt := range res.Blobs[1:] {
		layerTTFB = append(layerTTFB, bt.TTFB)
	}
	mbps := float64(res.Bytes) / res.Duration.Seconds() / 1e6
	b.res.add(scenario, t.Name, "mbps", mbps)
	b.res.add(scenario, t.Name, "ttfb_ms", percentile(layerTTFB, 50))
	b.res.add(scenario, t.Name, "manifest_ttfb_ms", ms(res.ManifestTTFB))
	b.res.add(scenario, t.Name, "seconds", res.Duration.Seconds())
	// CPU per GB shows where a CPU-bound pull's time goes: the
	// three processes share this machine's cores.
	gb := float64(res.Bytes) / 1e9
	b.res.add(scenario, t.Name, "server_cpu_ms_per_gb", ms(serverCPU)/gb)
	b.res.add(scenario, t.Name, "upstream_cpu_ms_per_gb", ms(upstreamCPU)/gb)
	b.res.add(scenario, t.Name, "harness_cpu_ms_per_gb", ms(harnessCPU)/gb)
	logf("%s %-12s %7.0f MB/s  layer first byte %6.2f ms  manifest %6.2f ms  (%s in %s)  CPU ms/GB: server %4.0f upstream %4.0f harness %4.0f", scenario, t.Name,
		mbps, percentile(layerTTFB, 50), ms(res.ManifestTTFB), mib(res.Bytes), res.Duration.Round(time.Millisecond),
		ms(serverCPU)/gb, ms(upstreamCPU)/gb, ms(harnessCPU)/gb)
	return ms(serverCPU) / gb, nil
}

// crowdResult is n clients pulling one image at once.
type crowdResult struct {
	wall   time.Duration
	pulls  []pullResult
	errors []error
}

// crowd starts n clients pulling img from t at the same instant.
func (b *bench) crowd(ctx context.Context, t *target, img *testimage.Pushed, n, parallel int) crowdResult {
	return b.crowdAt(ctx, []string{t.base}, img, n, parallel)
}

// crowdAt is crowd over several servers: client i pulls from
// bases[i % len(bases)], and its pullResult says which (Replica).
func (b *bench) crowdAt(ctx context.Context, bases []string, img *testimage.Pushed, n, parallel int) crowdResult {
	client := newClientRcvBuf(b.s.CrowdRcvBuf)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	pulls := make([]pullResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			p := &puller{client: client, base: bases[i%len(bases)], parallel: parallel, timeout: pullTimeout, content: img.Content}
			pulls[i], errs[i] = p.pull(ctx, img)
			pulls[i].Replica = i % len(bases)
		}()
	}
	time.Sleep(50 * time.Millisecond) // every goroutine is parked at the gate
	t0 := time.Now()
	close(gate)
	wg.Wait()
	cr := crowdResult{wall: time.Since(t0)}
	for i := range n {
		if errs[i] != nil {
			cr.errors = append(cr.errors, errs[i])
		} else {
			cr.pulls = append(cr.pulls, pulls[i])
		}
	}
	client.CloseIdleConnections()
	return cr
}

// recordCrowd stores what a crowd saw and what the upstream served for it.
func (b *bench) recordCrowd(scenario string, t *target, img *testimage.Pushed, cr crowdResult, up upstreamCount) {
	var ttfb, arrival, manifestTTFB, pullTimes []time.Duration
	for _, p := range cr.pulls {
		for _, bt := range p.Blobs {
			ttfb = append(ttfb, bt.TTFB)
			arrival = append(arrival, bt.ArrivalTTFB)
		}
		manifestTTFB = append(manifestTTFB, p.ManifestTTFB)
		pullTimes = append(pullTimes, p.Duration)
	}
	for _, err := range cr.errors {
		b.res.fail(scenario, t.Name, err)
	}
	b.res.add(scenario, t.Name, "wall_s", cr.wall.Seconds())
	b.res.add(scenario, t.Name, "ttfb_p50_ms", percentile(ttfb, 50))
	b.res.add(scenario, t.Name, "ttfb_p99_ms", percentile(ttfb, 99))
	b.res.add(scenario, t.Name, "ttfb_max_ms", percentile(ttfb, 100))
	b.res.add(scenario, t.Name, "arrival_ttfb_p50_ms", percentile(arrival, 50))
	b.res.add(scenario, t.Name, "arrival_ttfb_p99_ms", percentile(arrival, 99))
	b.res.add(scenario, t.Name, "manifest_ttfb_p99_ms", percentile(manifestTTFB, 99))
	b.res.add(scenario, t.Name, "pull_p99_s", percentile(pullTimes, 99)/1000)
	b.res.add(scenario, t.Name, "upstream_blob_gets", float64(up.BlobGETs))
	b.res.add(scenario, t.Name, "upstream_ratio", float64(up.BlobBytes)/float64(img.Size))
	b.res.add(scenario, t.Name, "distinct_blobs", float64(len(img.Blobs)))
	b.res.add(scenario, t.Name, "errors", float64(len(cr.errors)))
	var served int64
	for _, p := range cr.pulls {
		served += p.Bytes
	}
	b.res.add(scenario, t.Name, "served_mbps", float64(served)/cr.wall.Seconds()/1e6)
	b.res.upstream(scenario, t.Name, up)
	logf("%s %-12s wall %6.2f s  first byte p50 %7.2f ms p99 %7.2f ms (arrival p50 %7.2f ms p99 %7.2f ms)  upstream blob GETs %4d (%d distinct)  upstream bytes %.2f × image  errors %d",
		scenario, t.Name, cr.wall.Seconds(), percentile(ttfb, 50), percentile(ttfb, 99), percentile(arrival, 50), percentile(arrival, 99), up.BlobGETs, len(img.Blobs),
		float64(up.BlobBytes)/float64(img.Size), len(cr.errors))
	if len(cr.errors) > 0 {
		logf("%s %-12s first error: %s", scenario, t.Name, shortErr(cr.errors[0]))
	}
}

// herd: n clients pull a fresh image at once from each target, -herd-reps
// times (a fresh image each time): a p99 over one herd's few hundred GETs
// is a noisy estimate, so the table shows the median of the herds.
func (b *bench) herd(ctx context.Context, scenario string, n int, layerSize int64) error {
	b.res.note(scenario, fmt.Sprintf("%d clients, %d × %s, %d blobs at once per client; %d herds per target, each a fresh image",
		n, b.s.Layers, mib(layerSize), b.s.HerdParallel, max(b.s.HerdReps, 1)))
	for r := range max(b.s.HerdReps, 1) {
		img, err := b.pushLogged(fmt.Sprintf("bench/herd-%d-%d", n, r), b.s.HerdVerify == "content", repeat(b.s.Layers, layerSize)...)
		if err != nil {
			return err
		}
		for _, t := range b.order() {
			off := b.upLog.size()
			logs := b.herdOffsets(t)
			cpu := startHerdCPU(b.upstream, t.proc)
			cr := b.crowd(ctx, t, img, n, b.s.HerdParallel)
			cpu.record(b.res, scenario+"_split", t.Name)
			time.Sleep(300 * time.Millisecond) // the access log line follows the response
			up, err := b.upLog.count(off, img.Repo)
			if err != nil {
				return err
			}
			b.recordCrowd(scenario, t, img, cr, up)
			if err := b.breakdown(scenario, t, img.Repo, cr, logs); err != nil {
				return fmt.Errorf("%s breakdown of %s: %w", scenario, t.Name, err)
			}
		}
	}
	return nil
}

// bigLayer: one large layer to many clients at once, cold; the figure is
// the server's peak resident set.
func (b *bench) bigLayer(ctx context.Context) error {
	img, err := b.push("bench/big", b.s.BigLayerSize)
	if err != nil {
		return err
	}
	b.res.note("big", fmt.Sprintf("%d clients, 1 × %s, cold", b.s.BigClients, mib(b.s.BigLayerSize)))
	for _, t := range b.order() {
		off := b.upLog.size()
		cr := b.crowd(ctx, t, img, b.s.BigClients, 1)
		time.Sleep(300 * time.Millisecond)
		up, err := b.upLog.count(off, img.Repo)
		if err != nil {
			return err
		}
		b.recordCrowd("big", t, img, cr, up)
		if m, err := t.proc.mem(); err == nil {
			logf("big %-12s peak RSS since the last step %.0f MiB (now %.0f MiB)", t.Name, float64(m.HWMKiB)/1024, float64(m.RSSKiB)/1024)
		}
	}
	return nil
}

// manifests: many clients HEAD and GET one tag, warm, for a fixed time.
func (b *bench) manifests(ctx context.Context) error {
	img, err := b.push("bench/manifests", 4096)
	if err != nil {
		return err
	}
	b.res.note("manifest", fmt.Sprintf("%d clients, HEAD then GET by tag in a loop, %s per target, warm", b.s.ManifestClients, b.s.ManifestDuration))
	for _, t := range b.order() {
		// Warm: the image is pulled once through the target.
		p := &puller{client: newClient(), base: t.base, parallel: 1, timeout: pullTimeout}
		if _, err := p.pull(ctx, img); err != nil {
			b.res.fail("manifest", t.Name, err)
			logf("manifest %-12s warm-up FAILED: %s", t.Name, shortErr(err))
			continue
		}
		client := newClient()
		var ok, failed atomic.Int64
		lat := make([][]time.Duration, b.s.ManifestClients)
		errSample := make(chan error, 1)
		var wg sync.WaitGroup
		cpu := newCPUMeter(b.upstream, t.proc)
		t0 := time.Now()
		deadline := t0.Add(b.s.ManifestDuration)
		for w := range b.s.ManifestClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
					method := http.MethodHead
					if i%2 == 1 {
						method = http.MethodGet
					}
					r0 := time.Now()
					err := manifestProbe(ctx, client, t.base, method, img)
					if err != nil {
						failed.Add(1)
						select {
						case errSample <- err:
						default:
						}
						continue
					}
					lat[w] = append(lat[w], time.Since(r0))
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(t0)
		harnessCPU, upstreamCPU, serverCPU := cpu.used()
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		rps := float64(ok.Load()) / elapsed.Seconds()
		b.res.add("manifest", t.Name, "rps", rps)
		b.res.add("manifest", t.Name, "p50_ms", percentile(all, 50))
		b.res.add("manifest", t.Name, "p99_ms", percentile(all, 99))
		b.res.add("manifest", t.Name, "requests", float64(ok.Load()))
		b.res.add("manifest", t.Name, "errors", float64(failed.Load()))
		// CPU per request is what the server can do per core, whatever
		// share of the two cores the harness's clients leave it.
		perReq := func(d time.Duration) float64 { return float64(d.Microseconds()) / max(float64(ok.Load()), 1) }
		b.res.add("manifest", t.Name, "server_cpu_us_per_req", perReq(serverCPU))
		b.res.add("manifest", t.Name, "upstream_cpu_us_per_req", perReq(upstreamCPU))
		b.res.add("manifest", t.Name, "harness_cpu_us_per_req", perReq(harnessCPU))
		select {
		case err := <-errSample:
			b.res.fail("manifest", t.Name, err)
		default:
		}
		logf("manifest %-12s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  CPU per request: server %.1f µs, upstream %.1f µs, harness %.1f µs",
			t.Name, rps, percentile(all, 50), percentile(all, 99), failed.Load(), perReq(serverCPU), perReq(upstreamCPU), perReq(harnessCPU))
		client.CloseIdleConnections()
	}
	return nil
}

// outage: images are pulled through every target, the upstream is
// stopped, and each target gets -outage-pulls pulls of those images.
func (b *bench) outage(ctx context.Context) error {
	var imgs []*testimage.Pushed
	for i := range 4 {
		img, err := b.push(fmt.Sprintf("bench/outage-%d", i), 1<<20, 1<<20)
		if err != nil {
			return err
		}
		imgs = append(imgs, img)
	}
	for _, t := range b.targets {
		p := &puller{client: newClient(), base: t.base, parallel: 3, timeout: pullTimeout}
		for _, img := range imgs {
			if _, err := p.pull(ctx, img); err != nil {
				return fmt.Errorf("warming %s through %s: %w", img.Repo, t.Name, err)
			}
		}
	}
	logf("outage: stopping the upstream (pid %d)", b.upstream.cmd.Process.Pid)
	b.upstream.stop()
	note := fmt.Sprintf("%d pulls by tag of %d cached images, %d clients, upstream stopped", b.s.OutagePulls, len(imgs), b.s.OutageClients)
	for _, t := range b.targets {
		if t.restart != nil && b.s.OutageTagTTL != "" {
			b.sampleMem()
			t.proc.stop()
			if _, err := t.restart(b.s.OutageTagTTL); err != nil {
				return fmt.Errorf("restarting %s: %w", t.Name, err)
			}
			logf("outage: %s restarted on its cache with --tag-ttl %s at %s: every cached tag is expired", t.Name, b.s.OutageTagTTL, t.base)
			note += fmt.Sprintf("; breakwater restarted on its cache with --tag-ttl %s (tags served stale-if-error)", b.s.OutageTagTTL)
		}
	}
	b.res.note("outage", note)
	for _, t := range b.order() {
		client := newClient()
		var next atomic.Int64
		var mu sync.Mutex
		var times []time.Duration
		var errs []error
		var wg sync.WaitGroup
		t0 := time.Now()
		for range b.s.OutageClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := &puller{client: client, base: t.base, parallel: 3, timeout: 2 * time.Minute}
				for {
					i := next.Add(1) - 1
					if i >= int64(b.s.OutagePulls) || ctx.Err() != nil {
						return
					}
					r, err := p.pull(ctx, imgs[i%int64(len(imgs))])
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						times = append(times, r.Duration)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		wall := time.Since(t0)
		for _, err := range errs {
			b.res.fail("outage", t.Name, err)
		}
		b.res.add("outage", t.Name, "pulls", float64(b.s.OutagePulls))
		b.res.add("outage", t.Name, "errors", float64(len(errs)))
		b.res.add("outage", t.Name, "wall_s", wall.Seconds())
		b.res.add("outage", t.Name, "pull_p99_ms", percentile(times, 99))
		logf("outage %-12s %d pulls, %d errors, pull p99 %.1f ms, %.2f s", t.Name, b.s.OutagePulls, len(errs), percentile(times, 99), wall.Seconds())
		if len(errs) > 0 {
			logf("outage %-12s first error: %s", t.Name, shortErr(errs[0]))
		}
		client.CloseIdleConnections()
	}
	return nil
}

// memStep records each server's peak resident set (VmHWM) during the step
// that just ended, keeps the largest in the run's peak, and clears the
// peak for the next step by writing 5 to /proc/PID/clear_refs (Linux 4.0+).
func (b *bench) memStep(step string) {
	for _, t := range b.targets {
		m, err := t.proc.mem()
		if err != nil {
			continue
		}
		b.res.add("rss", t.Name, step, float64(m.HWMKiB)/1024)
		if m.HWMKiB > t.peak.HWMKiB {
			t.peak.HWMKiB = m.HWMKiB
		}
		path := fmt.Sprintf("/proc/%d/clear_refs", t.proc.cmd.Process.Pid)
		if err := os.WriteFile(path, []byte("5"), 0); err != nil && !b.res.clearRefsFailed {
			b.res.clearRefsFailed = true
			b.res.note("rss", "could not reset VmHWM ("+err.Error()+"): each figure is the peak since the server started")
		}
	}
}

// herdSlow: the herd again, but the upstream sends each connection at most
// -slow-rate, as a registry across a WAN would. A blob then takes long
// enough to arrive that the clients' time to first byte shows whether a
// proxy streams it while it arrives (first byte ≈ the upstream's) or only
// once it is complete (first byte ≈ the whole transfer), without the
// harness's own CPU load on this small machine hiding the difference. It
// runs its own Breakwater and distribution proxy (fresh caches) pointed at
// a throttling relay in front of the upstream; direct goes through the
// relay too.
func (b *bench) herdSlow(ctx context.Context) error {
	th, err := newThrottle(b.upstream.addr, b.s.SlowRate, 0)
	if err != nil {
		return err
	}
	defer th.close()
	remote := "http://" + th.addr()
	bw, dist, err := b.startOwn("slow", remote, remote)
	if err != nil {
		return err
	}
	defer bw.proc.stop()
	defer dist.proc.stop()
	targets := []*target{bw, dist, {Name: "direct", base: remote, proc: b.upstream}}

	img, err := b.push("bench/herd-slow", repeat(b.s.SlowLayers, b.s.SlowLayerSize)...)
	if err != nil {
		return err
	}
	b.res.note("herd_slow", fmt.Sprintf("%d clients, %d × %s, upstream limited to %.0f MB/s per connection (a blob takes %.1f s to arrive); own Breakwater and distribution instances with empty caches",
		b.s.Herd, b.s.SlowLayers, mib(b.s.SlowLayerSize), b.s.SlowRate/1e6, float64(b.s.SlowLayerSize)/b.s.SlowRate))
	for _, t := range b.rotated(targets) {
		off := b.upLog.size()
		cr := b.crowd(ctx, t, img, b.s.Herd, b.s.HerdParallel)
		time.Sleep(300 * time.Millisecond)
		up, err := b.upLog.count(off, img.Repo)
		if err != nil {
			return err
		}
		b.recordCrowd("herd_slow", t, img, cr, up)
		if m, err := t.proc.mem(); err == nil && t.proc != b.upstream {
			b.res.add("herd_slow", t.Name, "rss_peak_mib", float64(m.HWMKiB)/1024)
		}
	}
	return nil
}

// startOwn starts a Breakwater (empty cache, -tag-ttl, built-in defaults
// otherwise) and a distribution proxy for a step that needs its own, named
// breakwater-SUFFIX and distribution-SUFFIX, with the given upstream URLs.
func (b *bench) startOwn(suffix, bwUpstream, distUpstream string) (bw, dist *target, err error) {
	bwAddr, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	bwProc, err := b.startBreakwater("breakwater-"+suffix, bwAddr, "serve",
		"--listen", bwAddr, "--cache-dir", filepath.Join(b.work, "breakwater-"+suffix+"-cache"),
		"--upstream", "docker.io="+bwUpstream, "--tag-ttl", b.s.TagTTL)
	if err != nil {
		return nil, nil, err
	}
	distProc, err := b.startDistribution("distribution-"+suffix, distUpstream)
	if err != nil {
		bwProc.stop()
		return nil, nil, err
	}
	return &target{Name: "breakwater", base: "http://" + bwAddr, proc: bwProc},
		&target{Name: "distribution", base: "http://" + distProc.addr, proc: distProc}, nil
}

// startDistribution starts distribution in proxy mode in front of upstream.
func (b *bench) startDistribution(name, upstream string) (*proc, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg, err := b.registryConfig(name, addr, upstream)
	if err != nil {
		return nil, err
	}
	return start(name, b.work, addr, "/v2/", b.regBin, "serve", cfg)
}

// diskWrite writes size bytes to a new file in dir and fsyncs it: what any
// caching proxy pays at least to put a blob on this machine's disk. It
// returns MB/s.
func diskWrite(dir string, size int64) (float64, error) {
	buf := make([]byte, 256<<10)
	r := mrand.NewChaCha8([32]byte{2})
	_, _ = r.Read(buf)
	f, err := os.CreateTemp(dir, "diskwrite-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	t0 := time.Now()
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(size) / time.Since(t0).Seconds() / 1e6, nil
}
