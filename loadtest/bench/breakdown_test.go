package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

// TestParseAccessLog: Breakwater's request lines, written by slog's JSON
// handler as Breakwater writes them, give each blob GET's handler start
// (the line's time less duration_ms) and first write (plus
// first_byte_ms); other requests, repositories and lines are skipped.
func TestParseAccessLog(t *testing.T) {
	var buf bytes.Buffer
	end := time.Date(2026, 12, 3, 6, 0, 0, 123456789, time.UTC)
	h := slog.NewJSONHandler(&buf, nil)
	line := func(method, path string, attrs ...slog.Attr) {
		r := slog.NewRecord(end, slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("method", method), slog.String("path", path))
		r.AddAttrs(attrs...)
		if err := h.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	blob := "/v2/bench/herd/blobs/sha256:aa"
	timing := []slog.Attr{slog.Float64("duration_ms", 250.5), slog.Float64("first_byte_ms", 12.345), slog.String("remote", "127.0.0.1:40001"), slog.String("cache", "coalesced")}
	line("GET", blob, timing...)
	line("HEAD", blob, timing...)
	line("GET", "/v2/bench/other/blobs/sha256:aa", timing...)
	line("GET", "/v2/bench/herd/manifests/v1", timing...)
	line("GET", blob, slog.Float64("duration_ms", 1), slog.String("remote", "127.0.0.1:40002")) // before first_byte_ms existed
	buf.WriteString("not json\n")
	gets, err := parseAccessLog(&buf, "/v2/bench/herd/blobs/")
	if err != nil {
		t.Fatal(err)
	}
	if len(gets) != 1 {
		t.Fatalf("%d GETs, want 1: %+v", len(gets), gets)
	}
	g := gets[0]
	wantStart := end.Add(-250500 * time.Microsecond)
	if g.Port != 40001 || g.Path != blob || g.Cache != "coalesced" || !g.Start.Equal(wantStart) || !g.FirstByte.Equal(wantStart.Add(12345*time.Microsecond)) {
		t.Errorf("got %+v; want port 40001, the blob's path, coalesced, start %s, first byte 12.345 ms later", g, wantStart)
	}
}

// TestParseFirstByteLog: the upstream's firstbyte lines give its arrival
// and first write per blob GET; distribution's own log lines are skipped.
func TestParseFirstByteLog(t *testing.T) {
	in := `{"level":"info","msg":"response completed","http.request.uri":"/v2/bench/herd/blobs/sha256:aa"}
{"msg":"blob first byte","method":"GET","path":"/v2/bench/herd/blobs/sha256:aa","remote":"127.0.0.1:5555","arrived":"2026-12-03T06:00:00.1Z","first_byte":"2026-12-03T06:00:00.1045Z","status":200}
{"msg":"blob first byte","method":"HEAD","path":"/v2/bench/herd/blobs/sha256:aa","remote":"127.0.0.1:5556","arrived":"2026-12-03T06:00:00.1Z","first_byte":"2026-12-03T06:00:00.1Z","status":200}
`
	gets, err := parseFirstByteLog(strings.NewReader(in), "/v2/bench/herd/blobs/")
	if err != nil {
		t.Fatal(err)
	}
	if len(gets) != 1 || gets[0].Port != 5555 || gets[0].FirstByte.Sub(gets[0].Start) != 4500*time.Microsecond {
		t.Errorf("got %+v; want one GET from port 5555 whose first byte left 4.5 ms after it arrived", gets)
	}
}

// TestJoinGETs: a GET is matched with the first line of its port and path
// whose handler started after it was sent — a kept-alive connection
// carries the same path for two clients one after the other — and its
// parts add up to its first byte on arrival. GETs with no line, or whose
// request was never seen written, are counted apart.
func TestJoinGETs(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	at := func(n float64) time.Time { return t0.Add(ms(n)) }
	path := "/v2/r/blobs/sha256:aa"
	get := func(sent float64, port int) blobTiming {
		return blobTiming{Sent: at(sent), Conn: ms(1), Wrote: ms(2), ArrivalTTFB: ms(20), TTFB: ms(50), LocalPort: port, Path: path}
	}
	srv := []serverGET{
		// The second client's GET on the same connection, logged first.
		{Port: 1, Path: path, Start: at(105), FirstByte: at(110), Cache: "coalesced"},
		{Port: 1, Path: path, Start: at(5), FirstByte: at(15), Cache: "miss"},
		{Port: 2, Path: "/v2/r/blobs/sha256:bb", Start: at(5), FirstByte: at(6)},
	}
	noWrite := get(0, 1)
	noWrite.Wrote = 0
	// The first GET waited for its own dial; the second dialed too, but
	// took a connection that came free before its dial ended.
	first, second := get(0, 1), get(100, 1)
	first.DialStart, first.Dialed = ms(0.25), ms(0.75)
	second.DialStart, second.Dialed = ms(0.5), ms(3)
	splits, unjoined := joinGETs([]blobTiming{first, second, get(0, 2), get(200, 1), noWrite}, srv)
	if unjoined != 3 {
		t.Errorf("%d unjoined, want 3: another path, no line after the send, no write seen", unjoined)
	}
	want := []getSplit{
		{Conn: ms(1), Written: ms(1), ToHandler: ms(3), Handler: ms(10), ToArrival: ms(5), ToRead: ms(30), Cache: "miss",
			Dialed: true, ToDial: ms(0.25), Connect: ms(0.5), AfterDial: ms(0.25)},
		{Conn: ms(1), Written: ms(1), ToHandler: ms(3), Handler: ms(5), ToArrival: ms(10), ToRead: ms(30), Cache: "coalesced"},
	}
	if len(splits) != len(want) {
		t.Fatalf("%d splits, want %d: %+v", len(splits), len(want), splits)
	}
	for i, s := range splits {
		if s != want[i] {
			t.Errorf("split %d: %+v, want %+v", i, s, want[i])
		}
		if sum := s.Conn + s.Written + s.ToHandler + s.Handler + s.ToArrival; sum != ms(20) {
			t.Errorf("split %d adds up to %s, want the first byte on arrival, 20ms", i, sum)
		}
	}
}

// TestBreakdownOfRealGETs: the harness's own stamps of real GETs join with
// a server's record of them (kept-alive connections, each carrying several
// GETs of one path), and the server's part shows the time its handler
// waited before its first write.
func TestBreakdownOfRealGETs(t *testing.T) {
	const pause = 20 * time.Millisecond
	blob := []byte("a blob the handler sends after a pause")
	sum := sha256.Sum256(blob)
	b := testimage.Blob{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(blob))}
	var mu sync.Mutex
	var srv []serverGET
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		time.Sleep(pause)
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.WriteHeader(http.StatusOK)
		first := time.Now()
		_, _ = w.Write(blob)
		mu.Lock()
		srv = append(srv, serverGET{Port: portOf(r.RemoteAddr), Path: r.URL.Path, Start: start, FirstByte: first})
		mu.Unlock()
	}))
	defer ts.Close()
	p := &puller{client: newClient(), base: ts.URL, parallel: 1, timeout: time.Minute}
	var gets []blobTiming
	for range 4 {
		g, err := p.getBlob(context.Background(), "bench/app", b)
		if err != nil {
			t.Fatal(err)
		}
		gets = append(gets, g)
	}
	mu.Lock()
	defer mu.Unlock()
	splits, unjoined := joinGETs(gets, srv)
	if unjoined != 0 || len(splits) != len(gets) {
		t.Fatalf("%d joined, %d not, of %d GETs", len(splits), unjoined, len(gets))
	}
	dialed := 0
	for i, s := range splits {
		if s.Dialed {
			dialed++
			if s.ToDial < 0 || s.Connect <= 0 || s.AfterDial < 0 || s.ToDial+s.Connect+s.AfterDial != s.Conn {
				t.Errorf("GET %d dialed: %s + %s + %s, want three parts ≥ 0 of its %s to a connection", i, s.ToDial, s.Connect, s.AfterDial, s.Conn)
			}
		}
		if s.Handler < pause {
			t.Errorf("GET %d: handler part %s, but the handler waited %s", i, s.Handler, pause)
		}
		// Not ToHandler: the handler may start before the client's
		// writing goroutine has noted that its write returned.
		if s.Conn < 0 || s.Written < 0 || s.ToArrival < 0 || s.ToRead < 0 {
			t.Errorf("GET %d: a negative part: %+v", i, s)
		}
		if sum := s.Conn + s.Written + s.ToHandler + s.Handler + s.ToArrival; sum != gets[i].ArrivalTTFB {
			t.Errorf("GET %d: parts add up to %s, first byte on arrival %s", i, sum, gets[i].ArrivalTTFB)
		}
	}
	// One after the other, the GETs share one kept-alive connection.
	if dialed != 1 {
		t.Errorf("%d GETs dialed, want the first only", dialed)
	}
}

// TestTailMean: the mean of a part over the slowest 1% of GETs by first
// byte on arrival, and at least the slowest one.
func TestTailMean(t *testing.T) {
	handler := func(s getSplit) time.Duration { return s.Handler }
	var splits []getSplit
	for i := range 200 {
		// GET i arrives after i ms, all of it in the handler but 1 ms.
		splits = append(splits, getSplit{Conn: time.Millisecond, Handler: time.Duration(i-1) * time.Millisecond})
	}
	if got := tailMean(splits, handler); got != 197.5 {
		t.Errorf("200 GETs: %v ms, want 197.5, the mean of the slowest two", got)
	}
	if got := tailMean(splits[:50], handler); got != 48 {
		t.Errorf("50 GETs: %v ms, want 48, the slowest one's", got)
	}
}

func TestParseNetstat(t *testing.T) {
	text := "TcpExt: SyncookiesSent TCPTimeouts TCPRcvQDrop\nTcpExt: 0 6644 23082\nIpExt: InNoRoutes\nIpExt: 7\n"
	got, err := parseNetstat(text, "TcpExt")
	if err != nil || got["TCPTimeouts"] != 6644 || got["TCPRcvQDrop"] != 23082 || len(got) != 3 {
		t.Errorf("TcpExt: %v, %v; want its three counters", got, err)
	}
	if got, err := parseNetstat(text, "IpExt"); err != nil || got["InNoRoutes"] != 7 {
		t.Errorf("IpExt: %v, %v", got, err)
	}
	if _, err := parseNetstat("TcpExt: A B\nTcpExt: 1\n", "TcpExt"); err == nil {
		t.Error("a values line shorter than its names: no error")
	}
	if _, err := parseNetstat(text, "MPTcpExt"); err == nil {
		t.Error("a missing section: no error")
	}
}

func TestParseSteal(t *testing.T) {
	for _, tc := range []struct {
		stat    string
		want    int64
		wantErr bool
	}{
		{"cpu  100 2 30 4000 5 0 6 77 0 0\ncpu0 50 1 15 2000 2 0 3 40 0 0\n", 77, false},
		{"cpu  100 2 30 4000\n", 0, true},
		{"intr 1 2 3\n", 0, true},
	} {
		got, err := parseSteal(tc.stat)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseSteal(%q) = %d, %v; want %d, error %v", tc.stat, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestRecordSplitsOfNothingJoined: a herd none of whose GETs joined (a
// Breakwater without first_byte_ms) records the count and no NaN, which
// the JSON could not hold.
func TestRecordSplitsOfNothingJoined(t *testing.T) {
	r := newResults(settings{})
	r.recordSplits("herd_big_split", "breakwater", nil, 1280, nil)
	if got := r.Scenarios["herd_big_split"]["breakwater"].Samples["unjoined"]; len(got) != 1 || got[0] != 1280 {
		t.Errorf("unjoined %v, want [1280]", got)
	}
	if err := r.write(filepath.Join(t.TempDir(), "results.json")); err != nil {
		t.Errorf("writing the results: %v", err)
	}
}

// TestBreakdownTable: a herd's split shows in its own table, medians of the
// herds, with the worst herd's unjoined GETs.
func TestBreakdownTable(t *testing.T) {
	r := newResults(settings{Layers: 4, HerdBig: 256, HerdBigLayerSize: 4 << 20, HerdReps: 3})
	for i, v := range []float64{10, 30, 20} {
		r.add("herd_big_split", "breakwater", "handler_p99_ms", v)
		r.add("herd_big_split", "breakwater", "unjoined", float64(i))
	}
	r.add("herd_big_split", "direct", "handler_p99_ms", 5)
	for _, tr := range r.Scenarios["herd_big_split"] {
		for k, xs := range tr.Samples {
			tr.Values[k] = median(xs)
		}
	}
	tables := r.breakdownTables()
	if len(tables) != 1 {
		t.Fatalf("%d tables, want 1 (herd_big only)", len(tables))
	}
	md := tables[0].markdown()
	for _, want := range []string{"| handler start → headers written (the server), p99 | ms | 20 | 5 |", "| GETs not joined (worst herd) |  | 2 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "p50") {
		t.Errorf("rows with nothing measured are left out:\n%s", md)
	}
}
