package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/breakwater-registry/breakwater/internal/faultproxy"
	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

// How the recovery step's clients pull: as kubelet does here, one attempt
// at a time with a client timeout, a fixed wait after a failed one, and
// every client must have its image within recoveryGiveUp of the fault's
// end.
const (
	attemptTimeout = 60 * time.Second
	retryWait      = time.Second
	recoveryGiveUp = 2 * time.Minute
	// recoveryLayers and recoveryLayerSize make each client's image: small,
	// so that a pull's time is the mirror's recovery, not the transfer.
	recoveryLayers    = 2
	recoveryLayerSize = 256 << 10
)

// recoveryPhase is one fault the step plays to every target.
type recoveryPhase struct {
	key     string             // the scenario's name in the results
	setting faultproxy.Setting // For is how long the fault lasts
	what    string             // for notes and logs
	images  []*testimage.Pushed
}

// clientOutcome is what one client saw in a phase.
type clientOutcome struct {
	started   time.Time
	succeeded time.Time // zero: it never got its image
	failed    int       // failed attempts
	seen      map[string]int
	example   map[string]error // the first error of each kind in seen
	lastErr   error
}

// phaseOutcome is one phase on one target.
type phaseOutcome struct {
	down, recovered time.Time // when the fault took effect, when pass did
	requestsDown    int64     // requests the fault proxy answered in the fault
	clients         []clientOutcome
}

// recovery: each target behind its own fault proxy (in process) in front of
// the upstream; for each fault — a 503 outage, a 429 rate limit with
// Retry-After, a short 503 burst — every target gets -recovery-clients
// clients, each pulling its own uncached image the way kubelet does, and
// the step measures the upstream requests per second during the fault and
// how long after its end the clients get their images.
func (b *bench) recovery(ctx context.Context) error {
	n := b.s.RecoveryClients
	if n < 1 {
		return fmt.Errorf("-recovery-clients %d: want at least 1", n)
	}
	fps := map[string]*faultproxy.Proxy{}
	for _, name := range []string{"breakwater", "distribution", "direct"} {
		fp, closeLog, err := b.startFaultProxy(ctx, name)
		if err != nil {
			return err
		}
		defer closeLog()
		defer fp.Close()
		fps[name] = fp
	}
	// Breakwater with its built-in resilience defaults (retries, breaker):
	// those are what is measured.
	bw, dist, err := b.startOwn("recovery", fps["breakwater"].URL(), fps["distribution"].URL())
	if err != nil {
		return err
	}
	defer bw.proc.stop()
	defer dist.proc.stop()
	targets := []*target{bw, dist, {Name: "direct", base: fps["direct"].URL(), proc: b.upstream}}
	for _, t := range targets {
		t.fault = fps[t.Name]
		logf("recovery: %s at %s through fault proxy %s", t.Name, t.base, t.fault.URL())
	}

	phases := []*recoveryPhase{
		{key: "recovery_outage", setting: faultproxy.Setting{Mode: faultproxy.Unavailable, For: b.s.RecoveryOutage},
			what: fmt.Sprintf("upstream 503 (no Retry-After) for %s", secs(b.s.RecoveryOutage))},
		{key: "recovery_ratelimit", setting: faultproxy.Setting{Mode: faultproxy.TooManyRequests,
			RetryAfter: &faultproxy.RetryAfter{Seconds: b.s.RecoveryRetryAfter}, For: b.s.RecoveryRateLimit},
			what: fmt.Sprintf("upstream 429 with Retry-After: %d for %s", b.s.RecoveryRetryAfter, secs(b.s.RecoveryRateLimit))},
		{key: "recovery_burst", setting: faultproxy.Setting{Mode: faultproxy.Unavailable, For: b.s.RecoveryBurst},
			what: fmt.Sprintf("upstream 503 (no Retry-After) for %s", secs(b.s.RecoveryBurst))},
	}
	// Fresh images for every phase. The targets share them: each has its
	// own cache, and none was pulled through any target before.
	t0 := time.Now()
	for pi, ph := range phases {
		for i := range n {
			img, err := b.pushQuiet(fmt.Sprintf("bench/recovery-%d-%d", pi, i), repeat(recoveryLayers, recoveryLayerSize)...)
			if err != nil {
				return err
			}
			ph.images = append(ph.images, img)
		}
	}
	logf("recovery: pushed %d images of %d × %s in %s", len(phases)*n, recoveryLayers, mib(recoveryLayerSize), time.Since(t0).Round(time.Millisecond))

	// Each target first serves one pull with the upstream healthy, as a
	// mirror in service would have.
	warm, err := b.push("bench/recovery-warm", recoveryLayerSize)
	if err != nil {
		return err
	}
	for _, t := range targets {
		p := &puller{client: newClient(), base: t.base, parallel: 3, timeout: attemptTimeout}
		if _, err := p.pull(ctx, warm); err != nil {
			return fmt.Errorf("warm-up pull through %s: %w", t.Name, err)
		}
	}

	b.res.note("recovery", fmt.Sprintf("each target behind its own fault proxy (internal/faultproxy, in the harness) in front of the upstream; "+
		"own Breakwater (built-in resilience defaults) and distribution proxy with empty caches; in each phase %d clients each pull a different uncached image "+
		"(%d × %s) by tag, starting as the fault does, like kubelet: one attempt (client timeout %s), after a failed one wait %s and again; "+
		"a client without its image %s after the fault ended fails the step",
		n, recoveryLayers, mib(recoveryLayerSize), secs(attemptTimeout), secs(retryWait), secs(recoveryGiveUp)))
	for _, ph := range phases {
		b.res.note(ph.key, ph.what+", then pass")
	}

	var never []string
	for _, ph := range phases {
		logf("recovery: %s, %d clients", ph.what, n)
		for _, t := range b.rotated(targets) {
			o, err := b.playPhase(ctx, t, ph)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", ph.what, t.Name, err)
			}
			if k := b.recordPhase(ph, t, o); k > 0 {
				never = append(never, fmt.Sprintf("%s: %s: %d of %d", ph.what, t.Name, k, n))
			}
		}
	}
	if len(never) > 0 {
		return fmt.Errorf("clients that did not get their image within %s of the fault's end: %s", secs(recoveryGiveUp), strings.Join(never, "; "))
	}
	return nil
}

// startFaultProxy starts a fault proxy, passing, in front of the upstream,
// logging to faultproxy-NAME.log in the work directory.
func (b *bench) startFaultProxy(ctx context.Context, name string) (*faultproxy.Proxy, func(), error) {
	path := filepath.Join(b.work, "faultproxy-"+name+".log")
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("fault proxy log: %w", err)
	}
	fp, err := faultproxy.Start(ctx, faultproxy.Config{
		Upstream: "http://" + b.upstream.addr,
		Addr:     "127.0.0.1:0",
		Logger:   slog.New(slog.NewJSONHandler(f, nil)),
	})
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("fault proxy for %s: %w", name, err)
	}
	return fp, func() { f.Close() }, nil
}

// playPhase puts t's fault proxy into the phase's fault, which ends by
// itself after its For, and at the same moment starts one client per image.
// It returns when every client has its image or has given up.
func (b *bench) playPhase(ctx context.Context, t *target, ph *recoveryPhase) (phaseOutcome, error) {
	fp := t.fault
	before := fp.Stats()
	if before.Mode != faultproxy.Pass {
		return phaseOutcome{}, fmt.Errorf("fault proxy in %s before the phase, want pass", before.Mode)
	}
	if err := fp.Set(ctx, ph.setting); err != nil {
		return phaseOutcome{}, err
	}
	st := fp.Stats()
	if st.Mode != ph.setting.Mode {
		return phaseOutcome{}, fmt.Errorf("fault proxy in %s right after the switch to %s", st.Mode, ph.setting.Mode)
	}
	o := phaseOutcome{down: st.Since, clients: make([]clientOutcome, len(ph.images))}
	giveUp := o.down.Add(ph.setting.For + recoveryGiveUp)
	client := newClient()
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	for i, img := range ph.images {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.clients[i] = kubeletPull(ctx, client, t.base, img, giveUp)
		}()
	}
	wg.Wait()
	// No client can have its image before the fault ends, so it has; wait
	// only in case every client gave up first.
	for fp.Setting().Mode != faultproxy.Pass {
		select {
		case <-ctx.Done():
			return o, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	after := fp.Stats()
	o.recovered = after.Since
	o.requestsDown = after.Requests[ph.setting.Mode] - before.Requests[ph.setting.Mode]
	return o, nil
}

// kubeletPull pulls img as kubelet does here: an attempt, and after a
// failed one a wait of retryWait and another, until one succeeds or giveUp
// has passed.
func kubeletPull(ctx context.Context, client *http.Client, base string, img *testimage.Pushed, giveUp time.Time) clientOutcome {
	o := clientOutcome{started: time.Now(), seen: map[string]int{}, example: map[string]error{}}
	ctx, cancel := context.WithDeadline(ctx, giveUp)
	defer cancel()
	p := &puller{client: client, base: base, parallel: 3, timeout: attemptTimeout}
	for {
		_, err := p.pull(ctx, img)
		if err == nil {
			o.succeeded = time.Now()
			return o
		}
		o.lastErr = err
		if ctx.Err() != nil {
			return o // given up; the attempt cut short is not one the client saw fail
		}
		o.failed++
		kind := failureKind(err)
		o.seen[kind]++
		if o.example[kind] == nil {
			o.example[kind] = err
		}
		select {
		case <-ctx.Done():
			return o
		case <-time.After(retryWait):
		}
	}
}

// failureKind names what a failed attempt saw: the HTTP status code, or
// timeout, or connection (no answer), or verify (wrong content).
func failureKind(err error) string {
	var se *statusError
	var ve *verifyError
	switch {
	case errors.As(err, &se):
		return strconv.Itoa(se.code)
	case errors.As(err, &ve):
		return "verify"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "connection"
}

// recordPhase stores a phase's figures for t and returns how many clients
// never got their image.
func (b *bench) recordPhase(ph *recoveryPhase, t *target, o phaseOutcome) int {
	sc := ph.key
	held := o.recovered.Sub(o.down)
	b.res.add(sc, t.Name, "fault_s", held.Seconds())
	b.res.add(sc, t.Name, "upstream_requests_in_fault", float64(o.requestsDown))
	b.res.add(sc, t.Name, "upstream_rps_in_fault", float64(o.requestsDown)/held.Seconds())
	var first, last time.Time
	var pulls []time.Duration
	never, failed := 0, 0
	seen := map[string]int{}
	example := map[string]error{}
	for _, c := range o.clients {
		failed += c.failed
		for k, v := range c.seen {
			seen[k] += v
			if example[k] == nil {
				example[k] = c.example[k]
			}
		}
		if c.succeeded.IsZero() {
			never++
			if c.lastErr != nil {
				b.res.fail(sc, t.Name, c.lastErr)
			}
			continue
		}
		if first.IsZero() || c.succeeded.Before(first) {
			first = c.succeeded
		}
		if c.succeeded.After(last) {
			last = c.succeeded
		}
		pulls = append(pulls, c.succeeded.Sub(c.started))
	}
	if !first.IsZero() {
		b.res.add(sc, t.Name, "first_success_s", first.Sub(o.recovered).Seconds())
	}
	if never == 0 {
		b.res.add(sc, t.Name, "last_success_s", last.Sub(o.recovered).Seconds())
	}
	b.res.add(sc, t.Name, "failed_attempts", float64(failed))
	b.res.add(sc, t.Name, "never_succeeded", float64(never))
	b.res.add(sc, t.Name, "pull_p50_s", percentile(pulls, 50)/1000)
	b.res.add(sc, t.Name, "pull_max_s", percentile(pulls, 100)/1000)
	kinds := make([]string, 0, len(seen))
	for k := range seen {
		kinds = append(kinds, k)
		b.res.add(sc, t.Name, "failed_attempts_"+k, float64(seen[k]))
	}
	sort.Strings(kinds)
	saw := "no failed attempt"
	if len(kinds) > 0 {
		var parts []string
		for _, k := range kinds {
			parts = append(parts, fmt.Sprintf("%s × %d", k, seen[k]))
		}
		saw = strings.Join(parts, ", ")
		note := fmt.Sprintf("%s: clients saw %s", t.Name, saw)
		if e := example[kinds[0]]; e != nil {
			note += ", e.g. " + shortErr(e)
		}
		b.res.note(sc, note)
	}
	firstS, lastS := "—", "—"
	if !first.IsZero() {
		firstS = fmt.Sprintf("%.2f s", first.Sub(o.recovered).Seconds())
	}
	if never == 0 {
		lastS = fmt.Sprintf("%.2f s", last.Sub(o.recovered).Seconds())
	}
	logf("%s %-12s fault %.1f s: %d upstream requests (%.1f/s); after it: first image %s, last %s; failed attempts: %s; never got it: %d",
		sc, t.Name, held.Seconds(), o.requestsDown, float64(o.requestsDown)/held.Seconds(), firstS, lastS, saw, never)
	return never
}

// secs writes a duration the way the table's labels do: "30 s", "1.5 s".
func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s" }
