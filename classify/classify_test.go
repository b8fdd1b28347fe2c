package classify

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

type corpusCase struct {
	Reason  string  `json:"reason"`
	Message string  `json:"message"`
	Want    Verdict `json:"want"`
	// Rule, when set, is the rule id the case must be decided by; it pins
	// the precedence the case was written to show.
	Rule   string `json:"rule"`
	Source string `json:"source"`
}

func loadCorpus(t *testing.T) []corpusCase {
	t.Helper()
	data, err := os.ReadFile("testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("testdata/corpus.json: %v", err)
	}
	return cases
}

func TestCorpus(t *testing.T) {
	cases := loadCorpus(t)
	if len(cases) < 90 {
		t.Errorf("corpus has %d cases, want at least 90", len(cases))
	}
	for i, c := range cases {
		if strings.TrimSpace(c.Source) == "" {
			t.Errorf("case %d (%.60q): no source", i, c.Message)
		}
		got := Classify(c.Reason, c.Message)
		if got.Verdict != c.Want || (c.Rule != "" && got.Rule != c.Rule) {
			t.Errorf("case %d [%s]\nClassify(%q, %q)\n = %v rule=%s (%s)\nwant %v rule=%s",
				i, c.Source, c.Reason, c.Message, got.Verdict, got.Rule, got.Reason, c.Want, c.Rule)
		}
		checkResult(t, got)
	}
}

// checkResult holds every result to the API's promises.
func checkResult(t *testing.T, r Result) {
	t.Helper()
	if r.Verdict < Unknown || r.Verdict > Fatal {
		t.Errorf("verdict %d out of range", int(r.Verdict))
	}
	if r.Rule == "" {
		t.Errorf("%v result without a rule id", r.Verdict)
	}
	if r.Reason == "" || strings.ContainsAny(r.Reason, "\r\n") {
		t.Errorf("rule %s: explanation %q is not one non-empty line", r.Rule, r.Reason)
	}
}

// Every rule, and every step of Classify that decides, is shown by at least
// one corpus case, directly or as the previous error under a back-off.
func TestCorpusCoversEveryRule(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range loadCorpus(t) {
		r := Classify(c.Reason, c.Message)
		seen[r.Rule] = true
		if r.Rule == RuleBackoffPreviousError {
			if i := strings.LastIndex(r.Reason, "["); i >= 0 {
				seen[strings.TrimSuffix(r.Reason[i+1:], "]")] = true
			}
		}
	}
	want := []string{RuleNotImagePull, RuleBareBackoff, RuleBackoffPreviousError, RuleNoMessage, RuleNoMatch}
	for _, info := range Rules() {
		want = append(want, info.ID)
	}
	for _, id := range want {
		if !seen[id] {
			t.Errorf("no corpus case is decided by rule %s", id)
		}
	}
}

func TestTableShape(t *testing.T) {
	ids := map[string]bool{}
	for _, id := range []string{RuleNotImagePull, RuleBareBackoff, RuleBackoffPreviousError, RuleNoMessage, RuleNoMatch} {
		ids[id] = true
	}
	check := func(r rule, isReasonRow bool) {
		if r.id == "" || ids[r.id] {
			t.Errorf("rule id %q empty or used twice", r.id)
		}
		ids[r.id] = true
		if r.explain == "" || strings.ContainsAny(r.explain, "\r\n") {
			t.Errorf("rule %s: explanation must be one non-empty line", r.id)
		}
		if isReasonRow != (len(r.reasons) > 0) || isReasonRow == (len(r.patterns) > 0) {
			t.Errorf("rule %s: a reason row has reasons only, a message row patterns only", r.id)
		}
		for _, reason := range r.reasons {
			if isPullReason(strings.ToLower(reason)) {
				t.Errorf("rule %s: reason %q decides nothing alone; the message does", r.id, reason)
			}
		}
		for _, p := range r.patterns {
			for _, part := range p.parts {
				// Classify lower-cases the message, so an upper-case
				// needle could never match.
				if part == "" || part != strings.ToLower(part) {
					t.Errorf("rule %s: needle %q must be non-empty lower case", r.id, part)
				}
				// The anchoring argument in the comments on phrase and
				// word depends on this.
				if p.kind != word && !strings.Contains(part, " ") {
					t.Errorf("rule %s: %v needle %q has no space; make it a word", r.id, p, part)
				}
				if p.kind == word && strings.TrimSpace(part) != part {
					t.Errorf("rule %s: word %q has outer spaces", r.id, part)
				}
			}
		}
	}
	for _, r := range reasonRules {
		check(r, true)
	}
	for _, r := range messageRules {
		check(r, false)
	}
}

// The precedence documented on messageRules, checked on the table itself:
// the mirror-fallback row, then the marker, then every fatal row, then every
// transient row.
func TestMessageRuleOrder(t *testing.T) {
	var order []string
	for _, r := range messageRules {
		order = append(order, r.id)
	}
	if len(order) < 2 || order[0] != "mirror-fallback-not-found" || order[1] != "breakwater-503" {
		t.Fatalf("table must start with mirror-fallback-not-found, breakwater-503; got %v", order[:min(2, len(order))])
	}
	sawTransient := false
	for _, r := range messageRules[2:] {
		switch r.verdict {
		case Transient:
			sawTransient = true
		case Fatal:
			if sawTransient {
				t.Errorf("fatal rule %s comes after a transient rule: a registry's answer must win over context", r.id)
			}
		default:
			t.Errorf("rule %s: message rows decide; unknown is what no match means", r.id)
		}
	}
}

func TestPrecedence(t *testing.T) {
	bwPhrase := TransientMessage("docker.io", CauseTooManyRequests, 10*time.Second)
	tests := []struct {
		name, reason, message string
		want                  Verdict
		rule                  string
	}{
		{"reason row beats any message", "ErrImageNeverPull", "503 Service Unavailable (" + Marker + ": x)", Fatal, "image-never-pull"},
		{"transient reason row beats a fatal message", "RegistryUnavailable", "manifest unknown", Transient, "registry-unavailable"},
		{"non-pull reason beats the message table", "CreateContainerConfigError", "503 " + bwPhrase, Unknown, RuleNotImagePull},
		{"marker beats fatal words next to it", "ErrImagePull", "pull access denied for x: 503 " + bwPhrase, Transient, "breakwater-503"},
		{"registry's direct 404 beats the mirror's marker",
			"ErrImagePull", "(Mirrors also failed: [m/x:v1: 503 " + bwPhrase + "]): docker.io/x:v1: manifest unknown", Fatal, "mirror-fallback-not-found"},
		{"a 404 inside the mirror list is not the registry's answer",
			"ErrImagePull", "(Mirrors also failed: [m/x:v1: manifest unknown]): docker.io/x:v1: 503 " + bwPhrase, Transient, "breakwater-503"},
		{"fatal beats transient", "ErrImagePull", "dial tcp: i/o timeout; then: manifest unknown", Fatal, "manifest-unknown"},
		{"within transients the table order picks the id", "ErrImagePull", "503 Service Unavailable: 429 Too Many Requests", Transient, "http-429"},
		{"bare word not found is no pattern", "ErrImagePull", "something not found", Unknown, RuleNoMatch},
		{"forbidden alone is no pattern", "ErrImagePull", "forbidden", Unknown, RuleNoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.reason, tt.message)
			if got.Verdict != tt.want || got.Rule != tt.rule {
				t.Errorf("Classify(%q, %q) = %v %s, want %v %s", tt.reason, tt.message, got.Verdict, got.Rule, tt.want, tt.rule)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	inner := []string{
		`rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/library/x:v1": failed to resolve reference "docker.io/library/x:v1": docker.io/library/x:v1: not found`,
		`failed to copy: httpReadSeeker: failed open: unexpected status code https://r/v2/x/blobs/sha256:1: 429 Too Many Requests`,
		"503 " + TransientMessage("ghcr.io", CauseCircuitOpen, time.Second),
		"pull QPS exceeded",
		"x509: certificate signed by unknown authority",
	}
	for _, msg := range inner {
		direct := Classify("ErrImagePull", msg)
		for _, prefix := range []string{
			`Back-off pulling image "docker.io/library/x:v1": ErrImagePull: `,
			`Back-off pulling image "docker.io/library/x:v1": `,
			`BACK-OFF PULLING IMAGE "X": ERRIMAGEPULL: `,
			`Back-off pulling image "a": ErrImagePull: Back-off pulling image "a": ErrImagePull: `,
		} {
			got := Classify("ImagePullBackOff", prefix+msg)
			if got.Verdict != direct.Verdict || got.Rule != RuleBackoffPreviousError {
				t.Errorf("back-off over %q\n= %v %s, want %v %s", msg, got.Verdict, got.Rule, direct.Verdict, RuleBackoffPreviousError)
			}
			if !strings.Contains(got.Reason, "["+direct.Rule+"]") {
				t.Errorf("explanation %q does not name the previous error's rule %s", got.Reason, direct.Rule)
			}
		}
	}

	// The previous error's own reason decides when it is a reason row.
	if got := Classify("ImagePullBackOff", `Back-off pulling image "x": RegistryUnavailable: whatever`); got.Verdict != Transient {
		t.Errorf("back-off over RegistryUnavailable = %v, want transient", got.Verdict)
	}
	if got := Classify("ImagePullBackOff", `Back-off pulling image "x": InvalidImageName: 503 Service Unavailable`); got.Verdict != Fatal {
		t.Errorf("back-off over InvalidImageName = %v, want fatal", got.Verdict)
	}

	for _, msg := range []string{
		`Back-off pulling image "docker.io/library/x:v1"`,
		`back-off pulling image "x"`,
		`Back-off pulling image "x":`,
		`Back-off pulling image "x":   `,
		`Back-off pulling image "unterminated: 503 Service Unavailable`,
		`Back-off pulling image x`,
		`Back-off pulling image "a": ErrImagePull: Back-off pulling image "a"`,
	} {
		for _, reason := range []string{"ImagePullBackOff", "ErrImagePull", ""} {
			if got := Classify(reason, msg); got.Verdict != Unknown || got.Rule != RuleBareBackoff {
				t.Errorf("Classify(%q, %q) = %v %s, want unknown %s", reason, msg, got.Verdict, got.Rule, RuleBareBackoff)
			}
		}
	}

	// Only a message that starts with the back-off is one.
	if got := Classify("ErrImagePull", `event: Back-off pulling image "x"`); got.Rule != RuleNoMatch {
		t.Errorf("back-off text in the middle: rule %s, want %s", got.Rule, RuleNoMatch)
	}
	// An unquoted image from a kubelet we do not know still yields its error.
	if got := Classify("ImagePullBackOff", `Back-off pulling image x:v1: dial tcp: i/o timeout`); got.Verdict != Transient {
		t.Errorf("unquoted image: %v, want transient", got.Verdict)
	}
}

func TestBackoffDeepNesting(t *testing.T) {
	msg := strings.Repeat(`Back-off pulling image "x": ErrImagePull: `, 100000) + "connection refused"
	start := time.Now()
	got := Classify("ImagePullBackOff", msg)
	if got.Verdict != Transient || got.Rule != RuleBackoffPreviousError {
		t.Errorf("deep nesting = %v %s", got.Verdict, got.Rule)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("deep nesting took %v; it must stay linear", d)
	}
}

func TestContainsWord(t *testing.T) {
	tests := []struct {
		s, w string
		want bool
	}{
		{"denied: requested access to the resource is denied", "denied", true},
		{"401 unauthorized", "unauthorized", true},
		{"get \"https://x/v2/\": eof", "eof", true},
		{"failed to copy: unexpected eof", "eof", true},
		{"errors:\nunauthorized: authentication required\n", "unauthorized", true},
		{"toomanyrequests: you have reached your pull rate limit", "toomanyrequests", true},
		{"(breakwater-transient: upstream", "breakwater-transient", true},
		{"docker.io/denied/app:v1", "denied", false},
		{"docker.io/library/app:denied", "denied", false},
		{"image \"denied\"", "denied", false},
		{"docker.io/library/toomanyrequests:latest", "toomanyrequests", false},
		{"docker.io/library/eof: not found", "eof", false},
		{"reading manifest unauthorized in quay.io/x", "unauthorized", false},
		{"eof:latest", "eof", false},
		{"thereof", "eof", false},
		{"eofs", "eof", false},
		{"eof eof", "eof", true},
		{"xeof eof", "eof", true},
		{"", "eof", false},
	}
	for _, tt := range tests {
		if got := containsWord(tt.s, tt.w); got != tt.want {
			t.Errorf("containsWord(%q, %q) = %v, want %v", tt.s, tt.w, got, tt.want)
		}
	}
}

func TestTransientMessage(t *testing.T) {
	got := TransientMessage("docker.io", CauseTooManyRequests, 10*time.Second)
	want := "Service Unavailable (breakwater-transient: upstream docker.io answered 429 Too Many Requests; retry after 10s)"
	if got != want {
		t.Errorf("TransientMessage = %q\nwant %q", got, want)
	}
	for d, secs := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", time.Millisecond: "1s", 1500 * time.Millisecond: "2s",
		time.Minute: "60s", time.Duration(1<<63 - 1): "9223372037s",
	} {
		if m := TransientMessage("u", "circuit open", d); !strings.HasSuffix(m, "; retry after "+secs+")") {
			t.Errorf("retry %v: %q, want retry after %s", d, m, secs)
		}
	}
	if m := TransientMessage("evil\r\nX-Injected: 1", "circuit\x00 open", time.Second); strings.ContainsAny(m, "\r\n\x00") {
		t.Errorf("control characters survive: %q", m)
	}

	causes := []string{
		CauseTooManyRequests, CauseInternalServerError, CauseBadGateway, CauseServiceUnavailable,
		CauseGatewayTimeout, CauseRequestTimeout, CauseConnectionRefused, CauseConnectionReset,
		CauseTimeout, CauseNoSuchHost, CauseCircuitOpen,
	}
	for _, cause := range causes {
		phrase := TransientMessage("registry.example.com", cause, 7*time.Second)
		for _, sub := range []string{"Service Unavailable", Marker, cause, "retry after 7s"} {
			if !strings.Contains(phrase, sub) {
				t.Errorf("%q lacks %q", phrase, sub)
			}
		}
		// What Airflow's KPO matches, case-insensitively (seed 000).
		lower := strings.ToLower(phrase)
		if !strings.Contains(lower, "service unavailable") {
			t.Errorf("%q: Airflow would not see a transient error", phrase)
		}
		// What Flyte matches, case-sensitively (seed 002).
		if cause == CauseTooManyRequests && !strings.Contains(phrase, "429 Too Many Requests") {
			t.Errorf("%q: Flyte would not see a rate limit", phrase)
		}
		for _, wrap := range []string{
			`failed to resolve reference "docker.io/library/x:v9": pulling from host 127.0.0.1:5000 failed with status code [manifests v9]: 503 %s`,
			`failed to resolve reference "docker.io/library/x:v9": unexpected status from HEAD request to http://127.0.0.1:5000/v2/library/x/manifests/v9?ns=docker.io: 503 %s`,
			`failed to copy: httpReadSeeker: failed open: unexpected status code http://127.0.0.1:5000/v2/library/x/blobs/sha256:1?ns=docker.io: 503 %s - Server message: unavailable: %s`,
			`reading manifest v9 in 127.0.0.1:5000/library/x: received unexpected HTTP status: 503 %s`,
			`Error response from daemon: received unexpected HTTP status: 503 %s`,
		} {
			msg := strings.ReplaceAll(wrap, "%s", phrase)
			if r := Classify("ErrImagePull", msg); r.Verdict != Transient || r.Rule != "breakwater-503" {
				t.Errorf("Classify(%q) = %v %s, want transient breakwater-503", msg, r.Verdict, r.Rule)
			}
		}
	}
}

func TestVerdictText(t *testing.T) {
	for _, v := range []Verdict{Unknown, Transient, Fatal} {
		text, err := v.MarshalText()
		if err != nil || string(text) != v.String() {
			t.Errorf("%d.MarshalText() = %q, %v", int(v), text, err)
		}
		var back Verdict
		if err := back.UnmarshalText([]byte(strings.ToUpper(string(text)))); err != nil || back != v {
			t.Errorf("UnmarshalText(%q) = %v, %v", text, back, err)
		}
	}
	if got := Verdict(7).String(); got != "Verdict(7)" {
		t.Errorf("Verdict(7).String() = %q", got)
	}
	if _, err := Verdict(-1).MarshalText(); err == nil {
		t.Error("MarshalText of an invalid verdict: no error")
	}
	var v Verdict
	if err := v.UnmarshalText([]byte("maybe")); err == nil {
		t.Error("UnmarshalText(maybe): no error")
	}
	b, err := json.Marshal(Result{Verdict: Fatal, Rule: "r", Reason: "x"})
	if err != nil || !strings.Contains(string(b), `"Verdict":"fatal"`) {
		t.Errorf("json.Marshal(Result) = %s, %v", b, err)
	}
}

func TestRulesIsACopy(t *testing.T) {
	rules := Rules()
	if len(rules) != len(reasonRules)+len(messageRules) {
		t.Fatalf("Rules() has %d rules, want %d", len(rules), len(reasonRules)+len(messageRules))
	}
	before := Classify("InvalidImageName", "")
	rules[0].Reasons[0] = "something-else"
	rules[len(rules)-1].Patterns[0] = "x"
	if after := Classify("InvalidImageName", ""); after != before {
		t.Errorf("editing Rules() changed Classify: %v -> %v", before, after)
	}
}

// The README documents the table; this keeps it from falling behind.
func TestReadmeListsEveryRule(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	ids := []string{RuleNotImagePull, RuleBareBackoff, RuleBackoffPreviousError, RuleNoMessage, RuleNoMatch}
	for _, r := range Rules() {
		ids = append(ids, r.ID)
	}
	for _, id := range ids {
		if !strings.Contains(readme, "`"+id+"`") {
			t.Errorf("README.md does not mention rule `%s`", id)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, c := range [][2]string{
		{"", ""},
		{"ErrImagePull", "rpc error: code = Unknown desc = 503 " + TransientMessage("docker.io", CauseTooManyRequests, time.Second)},
		{"ImagePullBackOff", `Back-off pulling image "x": ErrImagePull: manifest unknown`},
		{"ImagePullBackOff", `Back-off pulling image "\"`},
		{"ImagePullBackOff", `Back-off pulling image "a\\"b": `},
		{"InvalidImageName", "\xff\xfe"},
		{"ErrImagePull", "(Mirrors also failed: [x: y]): z: manifest unknown"},
		{"ErrImagePull", "İstanbul EOF ſ"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, reason, message string) {
		got := Classify(reason, message)
		checkResult(t, got)
		if again := Classify(reason, message); again != got {
			t.Fatalf("not deterministic: %v then %v", got, again)
		}
		// Case and surrounding space never matter (ASCII upper-casing
		// keeps byte positions, so every pattern sees the same text).
		if other := Classify(" "+asciiUpper(reason)+"\t", "\n"+asciiUpper(message)+" "); other != got {
			t.Fatalf("case or space changed the result: %v vs %v", got, other)
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
