package main

import (
	"context"
	"fmt"
	"time"
)

// wan: the upstream shaped like a real registry across a WAN — reached
// through the harness's throttle at -wan-rate per connection (100 MiB/s)
// with -wan-latency (20 ms) added to every request (throttle.go says how)
// — instead of the loopback upstream of the other steps, where a cold pull
// is bound by this machine's two cores. One client pulls a fresh image
// through a Breakwater and a distribution proxy of the step's own (empty
// caches, their upstream the throttle) and directly through the same
// throttle, -reps times; then -herd clients pull a fresh image at once,
// -herd-parallel blobs at a time each, -herd-reps times. Every byte is
// verified, as everywhere.
func (b *bench) wan(ctx context.Context) error {
	th, err := newThrottle(b.upstream.addr, b.s.WANRate, b.s.WANLatency)
	if err != nil {
		return err
	}
	defer th.close()
	remote := "http://" + th.addr()
	bw, dist, err := b.startOwn("wan", remote, remote)
	if err != nil {
		return err
	}
	defer bw.proc.stop()
	defer dist.proc.stop()
	targets := []*target{bw, dist, {Name: "direct", base: remote, proc: b.upstream}}
	shape := fmt.Sprintf("upstream through the harness's throttle: %s per connection, +%s per request", rateLabel(b.s.WANRate), b.s.WANLatency)
	b.res.note("wan_cold", fmt.Sprintf("1 client, %d × %s, one blob after the other, %d pulls per target, each a fresh image; %s; own Breakwater and distribution instances with empty caches",
		b.s.Layers, mib(b.s.LayerSize), max(b.s.Reps, 1), shape))
	b.res.note("wan_herd", fmt.Sprintf("%d clients, %d × %s, %d blobs at once per client; %d herds per target, each a fresh image; %s",
		b.s.Herd, b.s.Layers, mib(b.s.LayerSize), b.s.HerdParallel, max(b.s.HerdReps, 1), shape))

	for r := range max(b.s.Reps, 1) {
		img, err := b.push(fmt.Sprintf("bench/wan-cold-%d", r), repeat(b.s.Layers, b.s.LayerSize)...)
		if err != nil {
			return err
		}
		for _, t := range b.rotated(targets) {
			off := b.upLog.size()
			if _, err := b.onePull(ctx, "wan_cold", t, img, 1, true); err != nil {
				continue
			}
			if up, err := b.upLog.count(off, img.Repo); err == nil {
				b.res.add("wan_cold", t.Name, "upstream_blob_gets", float64(up.BlobGETs))
			}
		}
	}
	for r := range max(b.s.HerdReps, 1) {
		img, err := b.push(fmt.Sprintf("bench/wan-herd-%d", r), repeat(b.s.Layers, b.s.LayerSize)...)
		if err != nil {
			return err
		}
		for _, t := range b.rotated(targets) {
			off := b.upLog.size()
			cr := b.crowd(ctx, t, img, b.s.Herd, b.s.HerdParallel)
			time.Sleep(300 * time.Millisecond) // the access log line follows the response
			up, err := b.upLog.count(off, img.Repo)
			if err != nil {
				return err
			}
			b.recordCrowd("wan_herd", t, img, cr, up)
		}
	}
	return nil
}

// rateLabel is a rate in bytes per second as the flags spell it: MiB/s
// when it is a whole number of them, MB/s otherwise.
func rateLabel(bytesPerSecond float64) string {
	if mibs := bytesPerSecond / (1 << 20); mibs == float64(int64(mibs)) && mibs >= 1 {
		return fmt.Sprintf("%d MiB/s", int64(mibs))
	}
	return fmt.Sprintf("%.0f MB/s", bytesPerSecond/1e6)
}
