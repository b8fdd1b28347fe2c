package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/breakwater-registry/breakwater/loadtest/internal/firstbyte"
)

// Where a herd's first bytes wait (issue 14). Each blob GET's first byte
// on arrival is split at the moments both sides recorded: the harness's
// (the request sent, a connection obtained, the request written, the
// first body byte arrived and read; client.go) and the server's (its
// handler's start and its first write, from Breakwater's access log or
// the upstream's firstbyte middleware). A GET is matched to the server's
// line by the client's local port and the path, and, since a kept-alive
// connection carries several GETs of one path for different clients, to
// the first line whose handler started after the GET was sent.

// serverGET is one blob GET as the server logged it.
type serverGET struct {
	Port      int
	Path      string
	Start     time.Time // the handler's start
	FirstByte time.Time // its first write of the answer
	Cache     string    // Breakwater's cache result: miss (the fetch's starter), coalesced, hit
}

// readFrom opens path at offset: the harness takes a log's size before a
// herd and reads what the herd added.
func readFrom(path string, offset int64) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// parseLines calls fn with each line of r that decodes as JSON into a
// fresh T; other lines are skipped.
func parseLines[T any](r io.Reader, fn func(T)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var v T
		if json.Unmarshal(line, &v) == nil {
			fn(v)
		}
	}
	return sc.Err()
}

// portOf is the port of a host:port, 0 when there is none.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// msDuration turns a log's milliseconds (to the microsecond) into a
// duration without float noise.
func msDuration(v float64) time.Duration {
	return time.Duration(math.Round(v*1000)) * time.Microsecond
}

// parseAccessLog reads Breakwater's request lines for blob GETs under
// prefix ("/v2/REPO/blobs/"). A line's time is when it was written, at the
// end of duration_ms, so the handler started duration_ms before it (never
// earlier: the line is written after duration_ms is taken, and
// duration_ms is truncated to the microsecond).
func parseAccessLog(r io.Reader, prefix string) ([]serverGET, error) {
	var out []serverGET
	err := parseLines(r, func(l struct {
		Time      time.Time `json:"time"`
		Msg       string    `json:"msg"`
		Method    string    `json:"method"`
		Path      string    `json:"path"`
		Remote    string    `json:"remote"`
		Duration  *float64  `json:"duration_ms"`
		FirstByte *float64  `json:"first_byte_ms"`
		Cache     string    `json:"cache"`
	}) {
		if l.Msg != "request" || l.Method != "GET" || !strings.HasPrefix(l.Path, prefix) || l.Duration == nil || l.FirstByte == nil {
			return
		}
		start := l.Time.Add(-msDuration(*l.Duration))
		out = append(out, serverGET{Port: portOf(l.Remote), Path: l.Path, Start: start,
			FirstByte: start.Add(msDuration(*l.FirstByte)), Cache: l.Cache})
	})
	return out, err
}

// parseFirstByteLog reads the upstream's firstbyte middleware lines
// (loadtest/registry/firstbyte.go) for blob GETs under prefix.
func parseFirstByteLog(r io.Reader, prefix string) ([]serverGET, error) {
	var out []serverGET
	err := parseLines(r, func(l firstbyte.Line) {
		if l.Msg != firstbyte.Msg || l.Method != "GET" || !strings.HasPrefix(l.Path, prefix) || l.Arrived.IsZero() {
			return
		}
		out = append(out, serverGET{Port: portOf(l.Remote), Path: l.Path, Start: l.Arrived, FirstByte: l.FirstByte})
	})
	return out, err
}

// getSplit is one GET's first byte on arrival cut into its parts; they add
// up to it.
type getSplit struct {
	Conn      time.Duration // sent → connection obtained (harness)
	Written   time.Duration // connection → request written (harness)
	ToHandler time.Duration // written → the server's handler starts (kernel, accept, the server's scheduling and request parsing)
	Handler   time.Duration // handler start → its first write (the server)
	ToArrival time.Duration // first write → arrival at the harness's socket
	ToRead    time.Duration // arrival → read by the harness (the harness's wait for a core)
	Cache     string
	// For a GET that dialed, Conn again in three: sent → the dial's
	// start, the connect itself, connected → the connection handed over.
	// Dialed is false for one that took a kept-alive connection.
	Dialed                     bool
	ToDial, Connect, AfterDial time.Duration
}

type portPath struct {
	port int
	path string
}

// joinGETs matches each GET the harness made with the server's line for
// it and splits its first byte. GETs without a line, or without the
// harness's own stamps, are counted in unjoined.
func joinGETs(gets []blobTiming, srv []serverGET) (splits []getSplit, unjoined int) {
	byKey := map[portPath][]serverGET{}
	for _, s := range srv {
		k := portPath{s.Port, s.Path}
		byKey[k] = append(byKey[k], s)
	}
	for _, ss := range byKey {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Start.Before(ss[j].Start) })
	}
	for _, g := range gets {
		ss := byKey[portPath{g.LocalPort, g.Path}]
		i := sort.Search(len(ss), func(i int) bool { return !ss[i].Start.Before(g.Sent) })
		if i == len(ss) || g.Wrote <= 0 || g.ArrivalTTFB <= 0 {
			unjoined++
			continue
		}
		s := ss[i]
		wrote := g.Sent.Add(g.Wrote)
		arrival := g.Sent.Add(g.ArrivalTTFB)
		sp := getSplit{
			Conn:      g.Conn,
			Written:   g.Wrote - g.Conn,
			ToHandler: s.Start.Sub(wrote),
			Handler:   s.FirstByte.Sub(s.Start),
			ToArrival: arrival.Sub(s.FirstByte),
			ToRead:    g.TTFB - g.ArrivalTTFB,
			Cache:     s.Cache,
		}
		// A GET that dialed may take a connection that came free first,
		// its own dial going to the pool: only one whose connect ended
		// before it had a connection waited for it.
		if g.Dialed > 0 && g.Dialed <= g.Conn {
			sp.Dialed, sp.ToDial, sp.Connect, sp.AfterDial = true, g.DialStart, g.Dialed-g.DialStart, g.Conn-g.Dialed
		}
		splits = append(splits, sp)
	}
	return splits, unjoined
}

// splitParts names the parts of a split as the results' keys.
var splitParts = []struct {
	key string
	of  func(getSplit) time.Duration
}{
	{"conn", func(s getSplit) time.Duration { return s.Conn }},
	{"written", func(s getSplit) time.Duration { return s.Written }},
	{"to_handler", func(s getSplit) time.Duration { return s.ToHandler }},
	{"handler", func(s getSplit) time.Duration { return s.Handler }},
	{"to_arrival", func(s getSplit) time.Duration { return s.ToArrival }},
	{"to_read", func(s getSplit) time.Duration { return s.ToRead }},
	{"arrival", func(s getSplit) time.Duration { return s.Conn + s.Written + s.ToHandler + s.Handler + s.ToArrival }},
}

// recordSplits adds one herd's p50 and p99 of every part to scenario, as
// target's "<part>_p50_ms" and "<part>_p99_ms"; the handler's part also
// for the fetch's starters (cache miss) and its followers (coalesced)
// apart, and the upstream's own first byte over its blob GETs (up).
func (r *results) recordSplits(scenario, target string, splits []getSplit, unjoined int, up []serverGET) {
	add := func(key string, ds []time.Duration) {
		if len(ds) == 0 {
			return
		}
		r.add(scenario, target, key+"_p50_ms", percentile(ds, 50))
		r.add(scenario, target, key+"_p99_ms", percentile(ds, 99))
	}
	for _, p := range splitParts {
		var ds []time.Duration
		for _, s := range splits {
			ds = append(ds, p.of(s))
		}
		add(p.key, ds)
	}
	for _, d := range []struct {
		key string
		of  func(getSplit) time.Duration
	}{
		{"dial_wait", func(s getSplit) time.Duration { return s.ToDial }},
		{"dial_connect", func(s getSplit) time.Duration { return s.Connect }},
		{"dial_handover", func(s getSplit) time.Duration { return s.AfterDial }},
	} {
		var ds []time.Duration
		for _, s := range splits {
			if s.Dialed {
				ds = append(ds, d.of(s))
			}
		}
		add(d.key, ds)
	}
	for _, c := range []string{"miss", "coalesced"} {
		var ds []time.Duration
		for _, s := range splits {
			if s.Cache == c {
				ds = append(ds, s.Handler)
			}
		}
		add("handler_"+c, ds)
	}
	if len(splits) > 0 {
		for _, p := range splitParts {
			r.add(scenario, target, p.key+"_tail_ms", tailMean(splits, p.of))
		}
	}
	var upFirst []time.Duration
	for _, u := range up {
		upFirst = append(upFirst, u.FirstByte.Sub(u.Start))
	}
	add("upstream", upFirst)
	r.add(scenario, target, "joined", float64(len(splits)))
	r.add(scenario, target, "unjoined", float64(unjoined))
}

// tailMean is the mean of part over the slowest 1% of splits by first
// byte on arrival (at least one): percentiles of the parts do not add up,
// and this says which parts the slowest GETs waited in.
func tailMean(splits []getSplit, part func(getSplit) time.Duration) float64 {
	if len(splits) == 0 {
		return math.NaN()
	}
	arrival := splitParts[len(splitParts)-1].of
	s := append([]getSplit(nil), splits...)
	sort.Slice(s, func(i, j int) bool { return arrival(s[i]) > arrival(s[j]) })
	n := max(len(s)/100, 1)
	var sum time.Duration
	for _, x := range s[:n] {
		sum += part(x)
	}
	return ms(sum / time.Duration(n))
}

// herdCPU is the CPU each process spent during one herd, and the time the
// hypervisor took from this VM's vCPUs meanwhile.
type herdCPU struct {
	meter   *cpuMeter
	rusage0 time.Duration
	steal0  int64
	tcp0    map[string]int64
}

// tcpCounters are the machine's TCP counters (/proc/net/netstat's TcpExt)
// a herd's delays may come from: a retransmission timeout is at least
// 200 ms, even on loopback, and a segment dropped for want of receive
// memory, a full accept queue or a lost SYN each cost one.
var tcpCounters = []struct{ name, key string }{
	{"TCPTimeouts", "tcp_timeouts"},
	{"TCPRcvQDrop", "tcp_rcvq_drops"},
	{"ListenOverflows", "tcp_listen_overflows"},
	{"TCPSynRetrans", "tcp_syn_retrans"},
	// Receive buffers autotune up to tcp_rmem's maximum (32 MiB here); a
	// herd's hundreds of sockets that the harness is slow to read can take
	// TCP past tcp_mem's pressure threshold, and queues are then pruned.
	{"TCPMemoryPressures", "tcp_memory_pressures"},
	{"PruneCalled", "tcp_prune_called"},
}

func startHerdCPU(upstream, server *proc) *herdCPU {
	c := &herdCPU{meter: newCPUMeter(upstream, server)}
	c.rusage0, _ = selfRusage()
	c.steal0, _ = stealTicks()
	c.tcp0, _ = tcpExt()
	return c
}

// record adds the herd's CPU seconds to scenario for target: the server
// (Breakwater, or nothing for direct), the upstream and the harness from
// /proc/PID/stat, the harness again from getrusage (to the microsecond),
// and the steal of all vCPUs from /proc/stat.
func (c *herdCPU) record(r *results, scenario, target string) {
	harness, upstream, server := c.meter.used()
	r.add(scenario, target, "cpu_server_s", server.Seconds())
	r.add(scenario, target, "cpu_upstream_s", upstream.Seconds())
	r.add(scenario, target, "cpu_harness_s", harness.Seconds())
	if ru, err := selfRusage(); err == nil {
		r.add(scenario, target, "cpu_harness_rusage_s", (ru - c.rusage0).Seconds())
	}
	if st, err := stealTicks(); err == nil {
		r.add(scenario, target, "steal_s", float64(st-c.steal0)/100) // USER_HZ
	}
	if now, err := tcpExt(); err == nil && c.tcp0 != nil {
		for _, k := range tcpCounters {
			r.add(scenario, target, k.key, float64(now[k.name]-c.tcp0[k.name]))
		}
	}
}

// tcpExt reads /proc/net/netstat's TcpExt counters.
func tcpExt() (map[string]int64, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return nil, err
	}
	return parseNetstat(string(b), "TcpExt")
}

// parseNetstat reads one section of /proc/net/netstat: a line of names
// after "SECTION:" and a line of values after it.
func parseNetstat(text, section string) (map[string]int64, error) {
	var names []string
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, section+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if names == nil {
			names = f
			continue
		}
		if len(f) != len(names) {
			return nil, fmt.Errorf("/proc/net/netstat: %s: %d names, %d values", section, len(names), len(f))
		}
		out := make(map[string]int64, len(names))
		for i, n := range names {
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/netstat: %s %s: %w", section, n, err)
			}
			out[n] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("/proc/net/netstat: no %s values", section)
}

// selfRusage is the harness's CPU time (user + system, every thread).
func selfRusage() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// stealTicks is the steal time of all CPUs so far, in USER_HZ ticks.
func stealTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseSteal(string(b))
}

// parseSteal reads the steal field (the 8th number) of /proc/stat's
// "cpu" line.
func parseSteal(stat string) (int64, error) {
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 9 {
			return 0, fmt.Errorf("/proc/stat: cpu line has %d fields, no steal", len(f))
		}
		n, err := strconv.ParseInt(f[8], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: steal: %w", err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("/proc/stat: no cpu line")
}

// herdOffsets are the sizes of the logs a herd's breakdown reads, taken
// before the herd.
type herdOffsets struct{ server, upstream int64 }

func (b *bench) herdOffsets(t *target) herdOffsets {
	return herdOffsets{server: accessLog{path: t.proc.logPath}.size(), upstream: accessLog{path: b.upstream.logPath}.size()}
}

// breakdown joins a herd's GETs with the server's log and records the
// split under scenario+"_split": Breakwater's access log for breakwater,
// the upstream's firstbyte lines for direct (the upstream is the server);
// distribution logs no first byte. The upstream's lines for the herd's
// repository are the upstream's own first byte either way.
func (b *bench) breakdown(scenario string, t *target, repo string, cr crowdResult, off herdOffsets) error {
	prefix := "/v2/" + repo + "/blobs/"
	read := func(path string, offset int64, parse func(io.Reader, string) ([]serverGET, error)) ([]serverGET, error) {
		f, err := readFrom(path, offset)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		gets, err := parse(f, prefix)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return gets, nil
	}
	up, err := read(b.upstream.logPath, off.upstream, parseFirstByteLog)
	if err != nil {
		return err
	}
	var srv []serverGET
	switch t.Name {
	case "breakwater":
		if srv, err = read(t.proc.logPath, off.server, parseAccessLog); err != nil {
			return err
		}
	case "direct":
		srv = up
	default:
		return nil
	}
	var gets []blobTiming
	for _, p := range cr.pulls {
		gets = append(gets, p.Blobs...)
	}
	splits, unjoined := joinGETs(gets, srv)
	sc := scenario + "_split"
	b.res.recordSplits(sc, t.Name, splits, unjoined, up)
	v := func(k string) float64 { xs := b.res.get(sc, t.Name).Samples[k]; return xs[len(xs)-1] }
	if len(splits) > 0 {
		logf("%s %-12s first byte on arrival, p50/p99 ms: connection %.1f/%.1f, written %.1f/%.1f, to handler %.1f/%.1f, handler %.1f/%.1f, to arrival %.1f/%.1f; then read %.1f/%.1f later (%d GETs joined, %d not)",
			scenario, t.Name, v("conn_p50_ms"), v("conn_p99_ms"), v("written_p50_ms"), v("written_p99_ms"), v("to_handler_p50_ms"), v("to_handler_p99_ms"),
			v("handler_p50_ms"), v("handler_p99_ms"), v("to_arrival_p50_ms"), v("to_arrival_p99_ms"), v("to_read_p50_ms"), v("to_read_p99_ms"), len(splits), unjoined)
	}
	return nil
}

// breakdownTables are the herds' breakdown tables, one per herd step that
// ran: each part of the first byte on arrival, p50 and p99 (medians over
// the herds), for Breakwater and direct, and the CPU each process spent.
func (r *results) breakdownTables() []sideTable {
	s := r.Settings
	var out []sideTable
	for _, h := range []struct {
		scenario string
		clients  int
		layer    int64
	}{{"herd", s.Herd, s.LayerSize}, {"herd_big", s.HerdBig, s.HerdBigLayerSize}} {
		parts := []struct{ figure, key string }{
			{"sent → connection obtained (harness)", "conn"},
			{"… of GETs that dialed: sent → the dial starts (harness)", "dial_wait"},
			{"… the connect (kernel)", "dial_connect"},
			{"… connected → connection handed to the GET (harness)", "dial_handover"},
			{"connection → request written (harness)", "written"},
			{"request written → handler start (kernel, accept, the server's scheduling)", "to_handler"},
			{"handler start → headers written (the server)", "handler"},
			{"… the fetch's starter (cache miss)", "handler_miss"},
			{"… its followers (coalesced)", "handler_coalesced"},
			{"headers written → arrival at the harness", "to_arrival"},
			{"first byte on arrival (the sum)", "arrival"},
			{"arrival → read by the harness", "to_read"},
			{"the upstream's own first byte (its blob GETs)", "upstream"},
		}
		var defs []sideDef
		for _, p := range parts {
			defs = append(defs, sideDef{p.figure + ", p50", "ms", p.key + "_p50_ms"}, sideDef{p.figure + ", p99", "ms", p.key + "_p99_ms"})
		}
		for _, p := range parts {
			if !strings.HasPrefix(p.key, "handler_") && !strings.HasPrefix(p.key, "dial_") && p.key != "upstream" {
				defs = append(defs, sideDef{"slowest 1% of GETs by arrival, mean: " + p.figure, "ms", p.key + "_tail_ms"})
			}
		}
		defs = append(defs,
			sideDef{"CPU of the server during a herd", "s", "cpu_server_s"},
			sideDef{"CPU of the upstream", "s", "cpu_upstream_s"},
			sideDef{"CPU of the harness (/proc)", "s", "cpu_harness_s"},
			sideDef{"CPU of the harness (getrusage)", "s", "cpu_harness_rusage_s"},
			sideDef{"steal, all vCPUs", "s", "steal_s"},
			sideDef{"TCP retransmission timeouts, whole machine", "", "tcp_timeouts"},
			sideDef{"TCP segments dropped for a full receive queue, whole machine", "", "tcp_rcvq_drops"},
			sideDef{"TCP accept queue overflows, whole machine", "", "tcp_listen_overflows"},
			sideDef{"TCP SYN retransmits, whole machine", "", "tcp_syn_retrans"},
			sideDef{"TCP memory pressure entered (tcp_mem), whole machine", "", "tcp_memory_pressures"},
			sideDef{"TCP receive queues pruned, whole machine", "", "tcp_prune_called"},
			sideDef{"GETs joined with the server's log (per herd)", "", "joined"},
			sideDef{"GETs not joined (worst herd)", "", worstOf + "unjoined"},
		)
		t := r.sideTable(fmt.Sprintf("Herd of %d clients, %d × %s: where the first byte waits, medians of %d herds", h.clients, s.Layers, mib(h.layer), max(s.HerdReps, 1)),
			h.scenario+"_split", []sideColumn{{label: "Breakwater", target: "breakwater"}, {label: "direct", target: "direct"}}, defs)
		if t != nil {
			out = append(out, *t)
		}
	}
	return out
}
