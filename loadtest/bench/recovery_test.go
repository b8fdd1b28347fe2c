package main

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/internal/faultproxy"
	"github.com/breakwater-registry/breakwater/internal/testupstream"
	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

// TestPlayPhaseThroughAFaultProxy: a phase straight through a fault proxy
// (the step's direct target): every client's first attempt meets the
// fault, the clients retry a second apart until it ends by itself, and the
// outcome has the fault's span and the requests answered in it.
func TestPlayPhaseThroughAFaultProxy(t *testing.T) {
	up := testupstream.Start(t)
	fp, err := faultproxy.Start(context.Background(), faultproxy.Config{Upstream: up.URL, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	const hold = 1500 * time.Millisecond
	ph := &recoveryPhase{key: "recovery_test", setting: faultproxy.Setting{Mode: faultproxy.Unavailable, For: hold}}
	for i := range 3 {
		layers, err := testimage.Layers(4096)
		if err != nil {
			t.Fatal(err)
		}
		img, err := testimage.Image("amd64", layers)
		if err != nil {
			t.Fatal(err)
		}
		p, err := testimage.Push(up.Host, fmt.Sprintf("bench/t-%d", i), "v1", img)
		if err != nil {
			t.Fatal(err)
		}
		ph.images = append(ph.images, &p)
	}
	b := &bench{res: newResults(settings{})}
	tg := &target{Name: "direct", base: fp.URL(), fault: fp}
	o, err := b.playPhase(context.Background(), tg, ph)
	if err != nil {
		t.Fatal(err)
	}
	if span := o.recovered.Sub(o.down); span < hold || span > hold+time.Second {
		t.Errorf("the fault lasted %s, want %s", span, hold)
	}
	// Attempts at about 0 s and 1 s meet the fault, the one at 2 s passes.
	for i, c := range o.clients {
		if c.succeeded.IsZero() || c.succeeded.Before(o.recovered) {
			t.Errorf("client %d: succeeded at %v, the fault ended at %v", i, c.succeeded, o.recovered)
		}
		if c.failed != 2 || c.seen["503"] != 2 {
			t.Errorf("client %d: %d failed attempts, saw %v; want 2, both 503", i, c.failed, c.seen)
		}
	}
	if o.requestsDown != 6 {
		t.Errorf("%d requests answered in the fault, want 6 (3 clients × 2 manifest GETs)", o.requestsDown)
	}
	if b.recordPhase(ph, tg, o) != 0 {
		t.Error("recordPhase counts clients that never got their image, but all did")
	}
	b.res.finish(b)
	if v := b.res.value("recovery_test", "direct", "failed_attempts"); v != 6 {
		t.Errorf("failed_attempts recorded as %v, want 6", v)
	}
}

// TestRecordPhaseWithAClientThatNeverSucceeded: such a client is counted,
// the last-success figure is left out rather than taken from the others,
// and the table's row fails its target.
func TestRecordPhaseWithAClientThatNeverSucceeded(t *testing.T) {
	s := settings{RecoveryOutage: 30 * time.Second, RecoveryClients: 2, RecoveryRateLimit: 20 * time.Second, RecoveryRetryAfter: 10, RecoveryBurst: 1500 * time.Millisecond}
	b := &bench{res: newResults(s)}
	t0 := time.Now()
	end := t0.Add(30 * time.Second)
	o := phaseOutcome{down: t0, recovered: end, requestsDown: 90, clients: []clientOutcome{
		{started: t0, succeeded: end.Add(2 * time.Second), failed: 30, seen: map[string]int{"503": 30}},
		{started: t0, failed: 150, seen: map[string]int{"503": 150}, lastErr: fmt.Errorf("GET x: 503")},
	}}
	ph := &recoveryPhase{key: "recovery_outage"}
	if got := b.recordPhase(ph, &target{Name: "breakwater"}, o); got != 1 {
		t.Fatalf("recordPhase: %d never succeeded, want 1", got)
	}
	b.res.finish(b)
	want := map[string]float64{"upstream_rps_in_fault": 3, "first_success_s": 2, "failed_attempts": 180, "never_succeeded": 1, "failed_attempts_503": 180}
	for k, v := range want {
		if got := b.res.value("recovery_outage", "breakwater", k); math.Abs(got-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	if v := b.res.value("recovery_outage", "breakwater", "last_success_s"); !math.IsNaN(v) {
		t.Errorf("last_success_s = %v with a client that never succeeded, want none", v)
	}
	found := false
	for _, row := range b.res.Table {
		if row.Figure == "upstream down 30 s, 2 clients: clients without their image 2 min after recovery" {
			found = true
			if row.Met != "NO" {
				t.Errorf("%s: met %q, want NO", row.Figure, row.Met)
			}
		}
	}
	if !found {
		t.Error("no row for clients without their image")
	}
}
