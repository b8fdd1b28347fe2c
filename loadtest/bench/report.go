package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// results is everything a run measured; it is written as JSON as is.
type results struct {
	Date               string                              `json:"date"`
	Command            string                              `json:"command"`
	Machine            map[string]string                   `json:"machine"`
	Versions           map[string]string                   `json:"versions"`
	Settings           settings                            `json:"settings"`
	HarnessSHA256MBps  float64                             `json:"harness_sha256_mb_per_s"`
	HarnessCeilingMBps float64                             `json:"harness_ceiling_mb_per_s"`
	CPUFloor           *cpuFloor                           `json:"cpu_floor,omitempty"`
	Notes              map[string][]string                 `json:"notes"`
	Scenarios          map[string]map[string]*targetResult `json:"scenarios"`
	PeakRSSMiB         map[string]float64                  `json:"peak_rss_mib"`
	VerifyFailures     int64                               `json:"verify_failures"`
	Errors             []string                            `json:"errors,omitempty"`
	Table              []tableRow                          `json:"table"`
	// Fleet are the fleet step's tables, which compare other targets.
	Fleet []sideTable `json:"fleet_tables,omitempty"`
	// Breakdown are the herds' first bytes split into their parts.
	Breakdown       []sideTable `json:"herd_breakdown_tables,omitempty"`
	Duration        string      `json:"duration"`
	started         time.Time
	clearRefsFailed bool
}

// targetResult is one target in one scenario. Samples hold every
// measurement (one per repetition); Values their median.
type targetResult struct {
	Samples      map[string][]float64 `json:"samples"`
	Values       map[string]float64   `json:"values"`
	Upstream     []upstreamCount      `json:"upstream,omitempty"`
	Failures     int                  `json:"failures"`
	ErrorSamples []string             `json:"error_samples,omitempty"`
}

func newResults(s settings) *results {
	return &results{
		Date:       time.Now().Format(time.RFC3339),
		Command:    strings.Join(append([]string{"go run ./loadtest/bench"}, os.Args[1:]...), " "),
		Machine:    machine(),
		Versions:   map[string]string{},
		Settings:   s,
		Notes:      map[string][]string{},
		Scenarios:  map[string]map[string]*targetResult{},
		PeakRSSMiB: map[string]float64{},
		started:    time.Now(),
	}
}

func (r *results) get(scenario, target string) *targetResult {
	sc := r.Scenarios[scenario]
	if sc == nil {
		sc = map[string]*targetResult{}
		r.Scenarios[scenario] = sc
	}
	tr := sc[target]
	if tr == nil {
		tr = &targetResult{Samples: map[string][]float64{}, Values: map[string]float64{}}
		sc[target] = tr
	}
	return tr
}

func (r *results) add(scenario, target, key string, v float64) {
	tr := r.get(scenario, target)
	tr.Samples[key] = append(tr.Samples[key], v)
}

func (r *results) fail(scenario, target string, err error) {
	tr := r.get(scenario, target)
	tr.Failures++
	if len(tr.ErrorSamples) < 5 {
		tr.ErrorSamples = append(tr.ErrorSamples, shortErr(err))
	}
}

func (r *results) upstream(scenario, target string, c upstreamCount) {
	tr := r.get(scenario, target)
	tr.Upstream = append(tr.Upstream, c)
}

func (r *results) note(scenario, s string) {
	for _, n := range r.Notes[scenario] {
		if n == s {
			return
		}
	}
	r.Notes[scenario] = append(r.Notes[scenario], s)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// finish computes medians, the run's peak RSS and the table.
func (r *results) finish(b *bench) {
	b.sampleMem()
	for _, sc := range r.Scenarios {
		for _, tr := range sc {
			for k, xs := range tr.Samples {
				if v := median(xs); !math.IsNaN(v) && !math.IsInf(v, 0) {
					tr.Values[k] = v
				}
			}
		}
	}
	for _, t := range b.targets {
		if t.peak.HWMKiB > 0 {
			r.PeakRSSMiB[t.Name] = float64(t.peak.HWMKiB) / 1024
		}
	}
	r.Duration = time.Since(r.started).Round(time.Second).String()
	r.Table = r.buildTable()
	r.Fleet = r.fleetTables()
	r.Breakdown = r.breakdownTables()
}

// value is a figure, NaN when it was not measured.
func (r *results) value(scenario, target, key string) float64 {
	if key == "cpu_floor_ms_per_gb" {
		// The floor is the machine's, shown as Breakwater's yardstick.
		if target == "breakwater" && r.CPUFloor != nil {
			return r.CPUFloor.Total
		}
		return math.NaN()
	}
	if scenario == "run" && key == "peak_rss_mib" {
		if v, ok := r.PeakRSSMiB[target]; ok {
			return v
		}
		return math.NaN()
	}
	sc := r.Scenarios[scenario]
	if sc == nil || sc[target] == nil {
		return math.NaN()
	}
	if k, ok := strings.CutPrefix(key, worstOf); ok {
		xs := sc[target].Samples[k]
		if len(xs) == 0 {
			return math.NaN()
		}
		m := xs[0]
		for _, x := range xs {
			m = math.Max(m, x)
		}
		return m
	}
	v, ok := sc[target].Values[key]
	if !ok {
		return math.NaN()
	}
	return v
}

// worstOf before a key makes a row show the largest sample rather than the
// median: for counts where one bad repetition must not hide behind good
// ones.
const worstOf = "worst of "

// tableRow is one line of the table.
type tableRow struct {
	Figure       string  `json:"figure"`
	Unit         string  `json:"unit"`
	Breakwater   float64 `json:"breakwater"`
	Distribution float64 `json:"distribution"`
	Direct       float64 `json:"direct"`
	// Range is "min–max" of Breakwater's samples when there are several.
	Range  string `json:"breakwater_range,omitempty"`
	Target string `json:"target,omitempty"`
	// Met is "yes", "NO" or "" (no target for this figure).
	Met string `json:"met,omitempty"`
}

// MarshalJSON writes NaN (not measured) as null.
func (t tableRow) MarshalJSON() ([]byte, error) {
	type plain tableRow
	num := func(v float64) any {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return v
	}
	return json.Marshal(struct {
		plain
		Breakwater   any `json:"breakwater"`
		Distribution any `json:"distribution"`
		Direct       any `json:"direct"`
	}{plain(t), num(t.Breakwater), num(t.Distribution), num(t.Direct)})
}

type rowDef struct {
	figure, unit, scenario, key string
	target                      string
	// met says whether Breakwater's value meets the target, given the
	// three values (bw, dist, direct) and the image's distinct blobs.
	met func(bw, dist, direct, blobs float64) bool
}

func (r *results) rowDefs() []rowDef {
	s := r.Settings
	img := fmt.Sprintf("%d × %s", s.Layers, mib(s.LayerSize))
	herdBig := fmt.Sprintf("%d × %s", s.Layers, mib(s.HerdBigLayerSize))
	// The headline (issue 14): an upstream shaped like a real registry.
	wan := fmt.Sprintf("WAN upstream (%s per connection, +%s per request): ", rateLabel(s.WANRate), s.WANLatency)
	wanHerd := fmt.Sprintf("%sherd %d clients, %s: ", wan, s.Herd, img)
	rows := []rowDef{
		{wan + "cold pull, 1 client, " + img, "MB/s", "wan_cold", "mbps", "≥ 0.97 × direct",
			func(bw, _, direct, _ float64) bool { return bw >= 0.97*direct }},
		{wan + "cold pull: layer time to first byte (median)", "ms", "wan_cold", "ttfb_ms", "", nil},
		{wan + "cold pull: server CPU per GB pulled", "ms", "wan_cold", "server_cpu_ms_per_gb", "", nil},
		{wanHerd + "wall time", "s", "wan_herd", "wall_s", "", nil},
		{wanHerd + "first byte p99, arrival", "ms", "wan_herd", "arrival_ttfb_p99_ms", "", nil},
		{wanHerd + "first byte p99, read by the harness", "ms", "wan_herd", "ttfb_p99_ms", "", nil},
		{wanHerd + "upstream blob GETs (worst herd)", "", "wan_herd", worstOf + "upstream_blob_gets", "= distinct blobs",
			func(bw, _, _, blobs float64) bool { return bw == blobs }},
		{wanHerd + "failed pulls (worst herd)", "", "wan_herd", worstOf + "errors", "0",
			func(bw, _, _, _ float64) bool { return bw == 0 }},
		{"cold pull, 1 client, " + img, "MB/s", "cold", "mbps", "≥ 0.9 × direct",
			func(bw, _, direct, _ float64) bool { return bw >= 0.9*direct }},
		{"cold pull: layer time to first byte (median)", "ms", "cold", "ttfb_ms", "≤ direct + 5 ms",
			func(bw, _, direct, _ float64) bool { return bw <= direct+5 }},
		{"cold pull: server CPU per GB pulled", "ms", "cold", "server_cpu_ms_per_gb", "", nil},
		{"cold pull: CPU floor per GB, sha256 + page-cache write + loopback hop (this machine, this run)", "ms", "cold", "cpu_floor_ms_per_gb", "", nil},
		{"cold pull: server CPU per GB ÷ floor", "×", "cold", "server_cpu_floor_ratio", "≤ 1.15 × floor",
			func(bw, _, _, _ float64) bool { return bw <= 1.15 }},
		{"cold pull: upstream CPU per GB pulled", "ms", "cold", "upstream_cpu_ms_per_gb", "", nil},
		{"cold pull: harness CPU per GB pulled", "ms", "cold", "harness_cpu_ms_per_gb", "", nil},
		{"warm pull, 1 client", "MB/s", "warm", "mbps", "≥ direct",
			func(bw, _, direct, _ float64) bool { return bw >= direct }},
		{"warm pull, 1 client, all blobs at once", "MB/s", "warm_parallel", "mbps", "≥ direct",
			func(bw, _, direct, _ float64) bool { return bw >= direct }},
	}
	herd := func(scenario string, n int, image string) {
		p := fmt.Sprintf("herd %d clients, %s: ", n, image)
		rows = append(rows,
			rowDef{p + "wall time", "s", scenario, "wall_s", "", nil},
			rowDef{p + "first byte p50, arrival", "ms", scenario, "arrival_ttfb_p50_ms", "", nil},
			rowDef{p + "first byte p99, arrival", "ms", scenario, "arrival_ttfb_p99_ms", "< 50 ms",
				func(bw, _, _, _ float64) bool { return bw < 50 }},
			rowDef{p + "first byte p50, read by the harness", "ms", scenario, "ttfb_p50_ms", "", nil},
			rowDef{p + "first byte p99, read by the harness", "ms", scenario, "ttfb_p99_ms", "", nil},
			rowDef{p + "upstream blob GETs (worst herd)", "", scenario, worstOf + "upstream_blob_gets", "= distinct blobs",
				func(bw, _, _, blobs float64) bool { return bw == blobs }},
			rowDef{p + "bytes fetched upstream ÷ image (worst herd)", "×", scenario, worstOf + "upstream_ratio", "1.00",
				func(bw, _, _, _ float64) bool { return bw <= 1.001 }},
			rowDef{p + "failed pulls (worst herd)", "", scenario, worstOf + "errors", "0",
				func(bw, _, _, _ float64) bool { return bw == 0 }},
		)
	}
	herd("herd", s.Herd, img)
	if s.HerdBig > 0 {
		herd("herd_big", s.HerdBig, herdBig)
	}
	herd("herd_slow", s.Herd, fmt.Sprintf("%d × %s, upstream at %.0f MB/s per connection", s.SlowLayers, mib(s.SlowLayerSize), s.SlowRate/1e6))
	rows = append(rows,
		rowDef{fmt.Sprintf("manifests by tag, HEAD+GET, %d clients, warm", s.ManifestClients), "req/s", "manifest", "rps",
			"≥ 10 × distribution and ≥ direct",
			func(bw, dist, direct, _ float64) bool { return bw >= 10*dist && bw >= direct }},
		rowDef{"manifests: p50", "ms", "manifest", "p50_ms", "", nil},
		rowDef{"manifests: p99", "ms", "manifest", "p99_ms", "", nil},
		rowDef{fmt.Sprintf("1 × %s to %d clients, cold: wall time", mib(s.BigLayerSize), s.BigClients), "s", "big", "wall_s", "", nil},
		rowDef{fmt.Sprintf("1 × %s to %d clients: upstream blob GETs", mib(s.BigLayerSize), s.BigClients), "", "big", "upstream_blob_gets", "", nil},
		rowDef{fmt.Sprintf("1 × %s to %d clients: first byte p99, arrival", mib(s.BigLayerSize), s.BigClients), "ms", "big", "arrival_ttfb_p99_ms", "", nil},
		rowDef{fmt.Sprintf("1 × %s to %d clients: first byte p99, read by the harness", mib(s.BigLayerSize), s.BigClients), "ms", "big", "ttfb_p99_ms", "", nil},
		rowDef{fmt.Sprintf("1 × %s to %d clients: peak RSS of the server", mib(s.BigLayerSize), s.BigClients), "MiB", "rss", "big", "< 100 MiB",
			func(bw, _, _, _ float64) bool { return bw < 100 }},
		rowDef{"peak RSS of the server, whole run", "MiB", "run", "peak_rss_mib", "< 100 MiB",
			func(bw, _, _, _ float64) bool { return bw < 100 }},
	)
	zero := func(bw, _, _, _ float64) bool { return bw == 0 }
	// fault adds the rows of a fault that lasts and then ends: while names
	// the fault, end its end.
	fault := func(scenario, label, while, end string) {
		rows = append(rows,
			rowDef{label + "upstream requests/s while " + while, "req/s", scenario, "upstream_rps_in_fault", "", nil},
			rowDef{label + "s from " + end + " to first successful cold pull", "s", scenario, "first_success_s", "", nil},
			rowDef{label + "s from " + end + " to the last client's success", "s", scenario, "last_success_s", "", nil},
			rowDef{label + "failed pull attempts seen by clients", "", scenario, "failed_attempts", "", nil},
			rowDef{label + "clients without their image 2 min after " + end, "", scenario, "never_succeeded", "0", zero},
		)
	}
	fault("recovery_outage", fmt.Sprintf("upstream down %s, %d clients: ", secs(s.RecoveryOutage), s.RecoveryClients), "down", "recovery")
	fault("recovery_ratelimit", fmt.Sprintf("upstream 429 (Retry-After: %d) %s, %d clients: ", s.RecoveryRetryAfter, secs(s.RecoveryRateLimit), s.RecoveryClients),
		"rate-limited", "the limit's end")
	burst := fmt.Sprintf("upstream down %s as %d clients start cold pulls: ", secs(s.RecoveryBurst), s.RecoveryClients)
	rows = append(rows,
		rowDef{burst + "failed pull attempts seen by clients", "", "recovery_burst", "failed_attempts", "0", zero},
		rowDef{burst + "pull time p50 (from the client's start)", "s", "recovery_burst", "pull_p50_s", "", nil},
		rowDef{burst + "pull time, slowest client", "s", "recovery_burst", "pull_max_s", "", nil},
		rowDef{burst + "upstream requests while down", "", "recovery_burst", "upstream_requests_in_fault", "", nil},
		rowDef{fmt.Sprintf("upstream down: failed pulls of %d (cached images)", s.OutagePulls), "", "outage", "errors", "0", zero},
	)
	return rows
}

func (r *results) buildTable() []tableRow {
	var out []tableRow
	for _, d := range r.rowDefs() {
		row := tableRow{
			Figure: d.figure, Unit: d.unit, Target: d.target,
			Breakwater:   r.value(d.scenario, "breakwater", d.key),
			Distribution: r.value(d.scenario, "distribution", d.key),
			Direct:       r.value(d.scenario, "direct", d.key),
		}
		if sc := r.Scenarios[d.scenario]; sc != nil && sc["breakwater"] != nil {
			if xs := sc["breakwater"].Samples[d.key]; len(xs) > 1 {
				lo, hi := xs[0], xs[0]
				for _, x := range xs {
					lo, hi = math.Min(lo, x), math.Max(hi, x)
				}
				row.Range = fmtNum(lo) + "–" + fmtNum(hi)
			}
		}
		if math.IsNaN(row.Breakwater) && math.IsNaN(row.Distribution) && math.IsNaN(row.Direct) {
			continue // a step left out with -only
		}
		if d.met != nil {
			blobs := r.value(d.scenario, "breakwater", "distinct_blobs")
			switch {
			case math.IsNaN(row.Breakwater):
				row.Met = "n/a"
			case d.met(row.Breakwater, row.Distribution, row.Direct, blobs):
				row.Met = "yes"
			default:
				row.Met = "NO"
			}
		}
		out = append(out, row)
	}
	return out
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v == math.Trunc(v) && math.Abs(v) < 1e6:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// table renders the table as Markdown (it reads as well in a terminal).
func (r *results) table() string {
	var sb strings.Builder
	if len(r.Table) > 0 {
		sb.WriteString("| figure | unit | Breakwater | distribution proxy | direct | BW ÷ dist | BW ÷ direct | Breakwater target | met |\n")
		sb.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	}
	for _, row := range r.Table {
		bw := fmtNum(row.Breakwater)
		if row.Range != "" {
			bw += " (" + row.Range + ")"
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.Figure, row.Unit, bw,
			fmtNum(row.Distribution), fmtNum(row.Direct), ratio(row.Breakwater, row.Distribution),
			ratio(row.Breakwater, row.Direct), row.Target, row.Met)
	}
	for _, t := range append(append([]sideTable(nil), r.Fleet...), r.Breakdown...) {
		if sb.Len() > 0 {
			sb.WriteString("\n")
		}
		sb.WriteString(t.markdown())
	}
	fmt.Fprintf(&sb, "\nharness: sha256 %.0f MB/s per core; a verified single-stream pull from an in-process server %.0f MB/s; verification failures: %d; run took %s\n",
		r.HarnessSHA256MBps, r.HarnessCeilingMBps, r.VerifyFailures, r.Duration)
	if fl := r.CPUFloor; fl != nil {
		fmt.Fprintf(&sb, "CPU floor of a verifying cache on this machine, per GB, each the best of %d runs over %s in the harness's process: sha256 %.0f ms + page-cache write %.0f ms + loopback hop (both ends) %.0f ms = %.0f ms\n",
			floorRuns, mib(fl.Bytes), fl.SHA256, fl.Write, fl.Hop, fl.Total)
	}
	if tr := r.Scenarios["machine"]["direct"]; tr != nil {
		xs := tr.Samples["disk_write_mbps"]
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range xs {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		fmt.Fprintf(&sb, "this machine, right before each cold pull: write + fsync of a new file of the image's size: median %.0f MB/s (%.0f–%.0f), the floor cost of any disk cache\n",
			median(xs), lo, hi)
	}
	keys := make([]string, 0, len(r.Notes))
	for k := range r.Notes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, n := range r.Notes[k] {
			fmt.Fprintf(&sb, "note (%s): %s\n", k, n)
		}
	}
	for _, sc := range sortedKeys(r.Scenarios) {
		for _, tg := range sortedKeys(r.Scenarios[sc]) {
			if tr := r.Scenarios[sc][tg]; tr != nil && tr.Failures > 0 {
				fmt.Fprintf(&sb, "failures (%s, %s): %d, e.g. %s\n", sc, tg, tr.Failures, tr.ErrorSamples[0])
			}
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&sb, "error: %s\n", e)
	}
	return sb.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (r *results) write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// sideTable is a table of a step whose targets are not the main table's
// three, such as the fleet step's: one column per target, and columns that
// are the ratio of two others.
type sideTable struct {
	Title   string    `json:"title"`
	Columns []string  `json:"columns"`
	Rows    []sideRow `json:"rows"`
}

type sideRow struct {
	Figure string `json:"figure"`
	Unit   string `json:"unit"`
	// Values line up with the table's Columns; NaN (null) is not measured.
	Values []cell `json:"values"`
}

// cell is a figure, written to JSON as null when NaN.
type cell float64

func (c cell) MarshalJSON() ([]byte, error) {
	v := float64(c)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}

// sideColumn is one column: a target of the scenario, or, with of set,
// the ratio of the values of the targets of[0] and of[1].
type sideColumn struct {
	label, target string
	of            [2]string
}

// sideDef is one row: a key of the scenario's targets (worstOf allowed).
type sideDef struct{ figure, unit, key string }

// sideTable builds a table of scenario; rows with no value in any column,
// and a table with no rows, are left out (nil).
func (r *results) sideTable(title, scenario string, cols []sideColumn, defs []sideDef) *sideTable {
	t := &sideTable{Title: title}
	for _, c := range cols {
		t.Columns = append(t.Columns, c.label)
	}
	for _, d := range defs {
		row := sideRow{Figure: d.figure, Unit: d.unit}
		measured := false
		for _, c := range cols {
			var v float64
			if c.target != "" {
				v = r.value(scenario, c.target, d.key)
			} else if a, b := r.value(scenario, c.of[0], d.key), r.value(scenario, c.of[1], d.key); b != 0 {
				v = a / b
			} else {
				v = math.NaN()
			}
			measured = measured || (c.target != "" && !math.IsNaN(v))
			row.Values = append(row.Values, cell(v))
		}
		if measured {
			t.Rows = append(t.Rows, row)
		}
	}
	if len(t.Rows) == 0 {
		return nil
	}
	return t
}

// markdown renders the table with its title above it.
func (t *sideTable) markdown() string {
	var sb strings.Builder
	sb.WriteString(t.Title + "\n\n| figure | unit |")
	for _, c := range t.Columns {
		sb.WriteString(" " + c + " |")
	}
	sb.WriteString("\n| --- | --- |" + strings.Repeat(" ---: |", len(t.Columns)) + "\n")
	for _, row := range t.Rows {
		fmt.Fprintf(&sb, "| %s | %s |", row.Figure, row.Unit)
		for _, v := range row.Values {
			sb.WriteString(" " + fmtNum(float64(v)) + " |")
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// fleetTables are the fleet step's three tables: the herd on each target,
// the fleet's first bytes split by owner, and the warm pull from the object
// store against the local cache.
func (r *results) fleetTables() []sideTable {
	s := r.Settings
	n, per := s.FleetReplicas, s.FleetClients
	img := fmt.Sprintf("%d × %s", s.Layers, mib(s.LayerSize))
	herd := r.sideTable(fmt.Sprintf("Fleet (issue 12): a herd on one cold %s image, medians of %d herds", img, max(s.HerdReps, 1)), "fleet",
		[]sideColumn{
			{label: fmt.Sprintf("1 replica, %d clients", per), target: "one"},
			{label: fmt.Sprintf("1 replica, %d clients", n*per), target: "one_all"},
			{label: fmt.Sprintf("%d independent replicas × %d", n, per), target: "independent"},
			{label: fmt.Sprintf("fleet of %d × %d", n, per), target: "fleet"},
			{label: "fleet ÷ independent", of: [2]string{"fleet", "independent"}},
		},
		[]sideDef{
			{"wall time", "s", "wall_s"},
			{"first byte p50, arrival", "ms", "arrival_ttfb_p50_ms"},
			{"first byte p99, arrival", "ms", "arrival_ttfb_p99_ms"},
			{"first byte p50, read by the harness", "ms", "ttfb_p50_ms"},
			{"first byte p99, read by the harness", "ms", "ttfb_p99_ms"},
			{"upstream blob GETs (worst herd)", "", worstOf + "upstream_blob_gets"},
			{"distinct blobs", "", "distinct_blobs"},
			{"bytes fetched upstream ÷ image (worst herd)", "×", worstOf + "upstream_ratio"},
			{"upstream blob HEADs (worst herd)", "", worstOf + "upstream_blob_heads"},
			{"upstream manifest GETs (worst herd)", "", worstOf + "upstream_manifest_gets"},
			{"upstream manifest HEADs (worst herd)", "", worstOf + "upstream_manifest_heads"},
			{"failed pulls (worst herd)", "", worstOf + "errors"},
			{"blob fetches streamed from the owner", "", "followed"},
			{"tag answers taken from the replica resolving it", "", "tags_followed"},
			{"fetches made alone in the fleet (worst herd)", "", worstOf + "alone"},
			{"bytes streamed between replicas ÷ image", "×", "peer_ratio"},
			{"bytes read from the object store ÷ image", "×", "store_ratio"},
			{"object store errors (worst herd)", "", worstOf + "shared_errors"},
			{"s from the herd's end until the image was in the object store", "s", "store_upload_s"},
			{"peak RSS of the largest replica", "MiB", "rss_peak_mib"},
		})
	peer := r.sideTable(fmt.Sprintf("Fleet: first byte on the replica that fetched a blob (owner) and on the others (streamed from it), %d × %d clients, medians of %d herds", n, per, max(s.HerdReps, 1)), "fleet_peer",
		[]sideColumn{
			{label: "owner's clients", target: "owner"},
			{label: "the other replicas' clients", target: "follower"},
			{label: "added by the peer stream", target: "added"},
		},
		[]sideDef{
			{"first byte p50, arrival", "ms", "arrival_ttfb_p50_ms"},
			{"first byte p99, arrival", "ms", "arrival_ttfb_p99_ms"},
			{"first byte p50, read by the harness", "ms", "ttfb_p50_ms"},
			{"first byte p99, read by the harness", "ms", "ttfb_p99_ms"},
			{"blob GETs", "", "gets"},
			{"blob GETs of a blob whose owner Redis did not name (worst herd)", "", worstOf + "unknown_owner_gets"},
		})
	warm := r.sideTable(fmt.Sprintf("Fleet: warm pull, 1 client, %s, from the object store (a replica with an empty cache) and from a replica's own cache; a cold pull for comparison", img), "fleet_warm",
		[]sideColumn{
			{label: "from MinIO through the replica", target: "s3"},
			{label: "from the replica's cache (filesystem)", target: "fs"},
			{label: "store ÷ filesystem", of: [2]string{"s3", "fs"}},
			{label: "cold, from the upstream", target: "upstream"},
			{label: "store ÷ upstream", of: [2]string{"s3", "upstream"}},
		},
		[]sideDef{
			{"pull", "MB/s", "mbps"},
			{"layer time to first byte (median)", "ms", "ttfb_ms"},
			{"replica CPU per GB pulled", "ms", "server_cpu_ms_per_gb"},
			{"MinIO CPU per GB pulled (the upload after the cold pull included)", "ms", "store_cpu_ms_per_gb"},
			{"bytes read from the object store ÷ image", "×", "store_ratio"},
			{"upstream blob GETs (worst pull)", "", worstOf + "upstream_blob_gets"},
		})
	var out []sideTable
	for _, t := range []*sideTable{herd, peer, warm} {
		if t != nil {
			out = append(out, *t)
		}
	}
	return out
}
