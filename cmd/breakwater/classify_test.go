package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/classify"
)

func classifyFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "pods", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func runClassifyString(args []string, stdin string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runClassify(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestClassifyCommand(t *testing.T) {
	const bw503 = "received unexpected HTTP status: 503 Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)"
	tests := []struct {
		name     string
		args     []string
		stdin    string // a fixture name when it ends in .json
		code     int
		stdout   []string // exact lines, when non-nil
		inStderr string
	}{
		{name: "pair transient", args: []string{"--reason", "ErrImagePull", "--message", bw503}, code: 0,
			stdout: []string{"transient rule=breakwater-503 " + classify.Classify("", bw503).Reason}},
		{name: "pair fatal, single-dash flags", args: []string{"-reason=InvalidImageName", "-message=x"}, code: 1,
			stdout: []string{"fatal rule=invalid-image-name kubelet cannot parse the image reference; no retry fixes a malformed name"}},
		{name: "pair unknown", args: []string{"--reason", "ImagePullBackOff", "--message", `Back-off pulling image "x"`}, code: 2},
		{name: "message without reason", args: []string{"--message", "pull QPS exceeded"}, code: 0},
		{name: "reason without message", args: []string{"--reason", "RegistryUnavailable"}, code: 0},
		{name: "empty pair is unknown, not bad input", args: []string{"--reason", "", "--message", ""}, code: 2},
		{name: "pair ignores stdin", args: []string{"--reason", "ErrImageNeverPull"}, stdin: "not json", code: 1},
		{name: "non-pull reason as a pair counts", args: []string{"--reason", "ContainerCreating"}, code: 2,
			stdout: []string{"unknown rule=not-image-pull the container is not waiting on an image pull; classify judges image pulls only"}},

		{name: "pod transient", stdin: "pod-transient.json", code: 0, stdout: []string{
			"shop/web-5d8f7c9b4-x2x7q web transient rule=breakwater-503 " + explain("breakwater-503"),
		}},
		{name: "pod fatal behind back-off", stdin: "pod-fatal.json", code: 1, stdout: []string{
			"shop/api-6c9d8b7f5-kq4zp api fatal rule=backoff-previous-error " + classify.Classify("ImagePullBackOff",
				`Back-off pulling image "docker.io/acme/api:v2.0.1": ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/acme/api:v2.0.1": failed to resolve reference "docker.io/acme/api:v2.0.1": docker.io/acme/api:v2.0.1: not found`).Reason,
		}},
		{name: "pod bare back-off", stdin: "pod-bare-backoff.json", code: 2, stdout: []string{
			"shop/cart-0 cart unknown rule=bare-backoff " + classify.Classify("ImagePullBackOff", `Back-off pulling image "x"`).Reason,
		}},
		{name: "list with fatal, unknown and transient", stdin: "podlist-mixed.json", code: 1, stdout: []string{
			"shop/web-5d8f7c9b4-x2x7q migrate transient rule=backoff-previous-error " + classify.Classify("", `Back-off pulling image "x": 429 Too Many Requests`).Reason,
			"shop/web-5d8f7c9b4-x2x7q web unknown rule=not-image-pull " + classify.Classify("PodInitializing", "").Reason,
			"shop/api-6c9d8b7f5-kq4zp api fatal rule=not-found " + explain("not-found"),
			"batch/report-28871234-abcde report unknown rule=bare-backoff " + classify.Classify("ImagePullBackOff", `Back-off pulling image "x"`).Reason,
			"batch/report-28871234-abcde debugger-7xk2p transient rule=breakwater-503 " + explain("breakwater-503"),
		}},
		{name: "podlist all transient, init wait does not vote", stdin: "podlist-transient.json", code: 0, stdout: []string{
			"ml/trainer-0 fetch-weights transient rule=breakwater-503 " + explain("breakwater-503"),
			"ml/trainer-0 trainer unknown rule=not-image-pull " + classify.Classify("PodInitializing", "").Reason,
			"ml/trainer-1 trainer transient rule=kubelet-pull-qps " + explain("kubelet-pull-qps"),
		}},
		{name: "nothing waiting", stdin: "pod-running.json", code: 2, stdout: []string{}, inStderr: "no container is waiting (1 pod(s) read)"},
		{name: "waiting, not on a pull", stdin: "pod-config-error.json", code: 2,
			stdout:   []string{"shop/worker-0 worker unknown rule=not-image-pull " + classify.Classify("CreateContainerConfigError", "").Reason},
			inStderr: "no container is waiting on an image pull"},
		{name: "empty list", stdin: `{"apiVersion":"v1","kind":"List","items":[],"metadata":{"resourceVersion":""}}`, code: 2,
			stdout: []string{}, inStderr: "no container is waiting (0 pod(s) read)"},
		{name: "two pods concatenated", stdin: "pod-transient.json", code: 0}, // doubled below
		{name: "list without kind", stdin: `{"items":[{"metadata":{"name":"p"},"status":{"containerStatuses":[{"name":"c","state":{"waiting":{"reason":"ErrImagePull","message":"connection refused"}}}]}}]}`,
			code: 0, stdout: []string{"p c transient rule=connection-refused " + explain("connection-refused")}},
		{name: "odd names stay one token", stdin: `{"kind":"Pod","metadata":{"name":"a b"},"status":{"containerStatuses":[{"name":"","state":{"waiting":{"reason":"ErrImagePull","message":"i/o timeout"}}}]}}`,
			code: 0, stdout: []string{`"a\x20b" - transient rule=timeout ` + explain("timeout")}},

		{name: "rules", args: []string{"--rules"}, code: 0},
		{name: "unknown flag", args: []string{"--nope"}, code: 3, inStderr: "flag provided but not defined: -nope"},
		{name: "stray argument", args: []string{"pod.json"}, code: 3, inStderr: `unexpected argument "pod.json"`},
		{name: "empty stdin", stdin: "", code: 3, inStderr: "no input on stdin"},
		{name: "blank stdin", stdin: " \n\t\n", code: 3, inStderr: "no input on stdin"},
		{name: "malformed JSON", stdin: `{"kind": "Pod", "metadata": {"name": x}}`, code: 3, inStderr: "invalid JSON at byte 38"},
		{name: "truncated JSON", stdin: `{"kind": "Pod", "metadata": {"name": "x"`, code: 3, inStderr: "JSON ends early"},
		{name: "trailing garbage", stdin: `{"kind":"Pod","metadata":{"name":"x"}} ]`, code: 3, inStderr: "invalid JSON"},
		{name: "JSON array", stdin: `[{"kind":"Pod"}]`, code: 3, inStderr: "a JSON array, want an object"},
		{name: "JSON string", stdin: `"ErrImagePull"`, code: 3, inStderr: "a JSON string, want an object"},
		{name: "wrong field type", stdin: `{"kind":"Pod","status":{"containerStatuses":"oops"}}`, code: 3, inStderr: "field status.containerStatuses holds a JSON string"},
		{name: "not a pod", stdin: "deployment.json", code: 3, inStderr: `a "Deployment", want a Pod or a List of Pods`},
		{name: "empty object", stdin: `{}`, code: 3, inStderr: "not a Pod"},
		{name: "not JSON at all", stdin: "Back-off pulling image \"x\"\n", code: 3, inStderr: "invalid JSON at byte 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdin := tt.stdin
			if strings.HasSuffix(stdin, ".json") {
				stdin = classifyFixture(t, stdin)
				if tt.name == "two pods concatenated" {
					stdin += stdin
				}
			}
			code, stdout, stderr := runClassifyString(tt.args, stdin)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			if tt.stdout != nil {
				want := strings.Join(tt.stdout, "\n")
				if len(tt.stdout) > 0 {
					want += "\n"
				}
				if stdout != want {
					t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
				}
			}
			if !strings.Contains(stderr, tt.inStderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.inStderr)
			}
			if tt.code == 3 && !strings.HasPrefix(stderr, "breakwater classify: ") && !strings.Contains(stderr, "flag provided") {
				t.Errorf("bad input must be named on stderr, got %q", stderr)
			}
			if tt.name == "two pods concatenated" && strings.Count(stdout, "\n") != 2 {
				t.Errorf("want a line per pod, got:\n%s", stdout)
			}
		})
	}
}

func explain(rule string) string {
	for _, r := range classify.Rules() {
		if r.ID == rule {
			return r.Explain
		}
	}
	return "no rule " + rule
}

func TestClassifyCommandRules(t *testing.T) {
	code, stdout, _ := runClassifyString([]string{"--rules"}, "")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	rules := classify.Rules()
	if len(lines) != len(rules) {
		t.Fatalf("%d lines for %d rules:\n%s", len(lines), len(rules), stdout)
	}
	for i, r := range rules {
		if f := strings.Fields(lines[i]); len(f) < 3 || f[0] != r.Verdict.String() || f[1] != r.ID {
			t.Errorf("line %d = %q, want %s %s ...", i, lines[i], r.Verdict, r.ID)
		}
	}
}

type classifyJSONRow struct {
	Namespace   *string `json:"namespace"`
	Pod         *string `json:"pod"`
	Container   *string `json:"container"`
	Reason      string  `json:"reason"`
	Message     string  `json:"message"`
	Verdict     string  `json:"verdict"`
	Rule        string  `json:"rule"`
	Explanation string  `json:"explanation"`
}

func decodeClassifyJSONLines(t *testing.T, stdout string) []classifyJSONRow {
	t.Helper()
	var rows []classifyJSONRow
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var r classifyJSONRow
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		rows = append(rows, r)
	}
	return rows
}

func TestClassifyCommandJSON(t *testing.T) {
	code, stdout, stderr := runClassifyString([]string{"--json"}, classifyFixture(t, "podlist-mixed.json"))
	if code != 1 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	rows := decodeClassifyJSONLines(t, stdout)
	type want struct{ ns, pod, container, reason, verdict, rule string }
	wants := []want{
		{"shop", "web-5d8f7c9b4-x2x7q", "migrate", "ImagePullBackOff", "transient", "backoff-previous-error"},
		{"shop", "web-5d8f7c9b4-x2x7q", "web", "PodInitializing", "unknown", "not-image-pull"},
		{"shop", "api-6c9d8b7f5-kq4zp", "api", "ErrImagePull", "fatal", "not-found"},
		{"batch", "report-28871234-abcde", "report", "ImagePullBackOff", "unknown", "bare-backoff"},
		{"batch", "report-28871234-abcde", "debugger-7xk2p", "ErrImagePull", "transient", "breakwater-503"},
	}
	if len(rows) != len(wants) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(wants), stdout)
	}
	for i, w := range wants {
		r := rows[i]
		if r.Namespace == nil || *r.Namespace != w.ns || r.Pod == nil || *r.Pod != w.pod || r.Container == nil || *r.Container != w.container ||
			r.Reason != w.reason || r.Verdict != w.verdict || r.Rule != w.rule || r.Explanation == "" {
			t.Errorf("row %d = %+v, want %+v", i, r, w)
		}
	}
	// The message is carried whole, & and < included.
	if !strings.Contains(rows[4].Message, "(breakwater-transient: upstream docker.io unreachable: i/o timeout; retry after 10s)") {
		t.Errorf("message not carried: %q", rows[4].Message)
	}

	// A single pair has no pod fields at all.
	msg := `Get "https://r/v2/?a=1&b=<2>": EOF`
	code, stdout, _ = runClassifyString([]string{"--json", "--reason", "ErrImagePull", "--message", msg}, "")
	if code != 0 {
		t.Fatalf("pair: exit %d", code)
	}
	rows = decodeClassifyJSONLines(t, stdout)
	if len(rows) != 1 || rows[0].Namespace != nil || rows[0].Pod != nil || rows[0].Container != nil ||
		rows[0].Message != msg || rows[0].Verdict != "transient" || rows[0].Rule != "eof" {
		t.Errorf("pair row = %+v", rows)
	}
	if strings.Contains(stdout, `\u0026`) {
		t.Errorf("JSON escapes & needlessly: %s", stdout)
	}
}

func TestClassifyCommandHugeGarbage(t *testing.T) {
	garbage := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	for _, input := range [][]byte{
		garbage,
		append([]byte(`{"kind":"Pod","metadata":{"name":"`), garbage...),
		bytes.Repeat([]byte("["), 1<<20),
	} {
		start := time.Now()
		var out, errOut bytes.Buffer
		code := runClassify(nil, bytes.NewReader(input), &out, &errOut)
		if code != 3 || out.Len() != 0 || errOut.Len() == 0 || errOut.Len() > 1000 {
			t.Errorf("exit %d, stdout %d bytes, stderr %.200q", code, out.Len(), errOut.String())
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	}
}

func TestClassifyCommandInputLimit(t *testing.T) {
	pod := classifyFixture(t, "pod-transient.json")
	var out, errOut bytes.Buffer
	code := classifyMain(nil, strings.NewReader(pod+strings.Repeat(" ", 100)), &out, &errOut, int64(len(pod)))
	if code != 3 || !strings.Contains(errOut.String(), "more than") {
		t.Errorf("over the limit: exit %d, stderr %q", code, errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := classifyMain(nil, strings.NewReader(pod), &out, &errOut, int64(len(pod))); code != 0 {
		t.Errorf("at the limit: exit %d, stderr %q", code, errOut.String())
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("device on fire") }

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestClassifyCommandIOErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := runClassify(nil, failingReader{}, &out, &errOut); code != 3 || !strings.Contains(errOut.String(), "reading stdin: device on fire") {
		t.Errorf("failing stdin: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := runClassify(nil, nil, &out, &errOut); code != 3 || !strings.Contains(errOut.String(), "no input") {
		t.Errorf("nil stdin: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := runClassify([]string{"--reason", "ErrImagePull"}, nil, failingWriter{}, &errOut); code != 3 || !strings.Contains(errOut.String(), "closed pipe") {
		t.Errorf("failing stdout: exit %d, stderr %q", code, errOut.String())
	}
}
