package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadValid(t *testing.T) {
	cfg, err := Load(filepath.Join("testdata", "valid.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "127.0.0.1:5000", DrainTimeout: Duration(30 * time.Second),
		Cache: Cache{Dir: "/var/lib/breakwater", TagTTL: Duration(90 * time.Second), RevalidateTimeout: Duration(1500 * time.Millisecond),
			MaxStale: Duration(24 * time.Hour), MaxSize: 200 << 30, MaxBlobSize: 64 << 30, HighWatermark: 95, LowWatermark: 85, ScrubRate: 10 << 20, MemorySize: 32 << 20},
		DefaultUpstream: "docker.io",
		Upstreams: map[string]Upstream{
			"docker.io": {URL: "https://registry-1.docker.io", Username: "robot", Password: "s3cret",
				Resilience: &Resilience{
					Retry: Retry{Attempts: 3, BaseDelay: Duration(100 * time.Millisecond), MaxDelay: Duration(2 * time.Second),
						Deadline: Duration(45 * time.Second), AttemptTimeout: Duration(5 * time.Second), MaxRetryAfter: Duration(15 * time.Second)},
					Breaker: Breaker{Window: Duration(time.Minute), MinRequests: 10, FailurePercent: 80,
						OpenMin: Duration(2 * time.Second), OpenMax: Duration(30 * time.Second)},
					MaxConcurrent: 16,
				}},
			"registry.example.com:5000": {URL: "http://10.0.0.5:5000", DockerConfig: true},
		},
		Resilience: Resilience{
			Retry: Retry{Attempts: 3, BaseDelay: Duration(100 * time.Millisecond), MaxDelay: Duration(2 * time.Second),
				Deadline: Duration(20 * time.Second), AttemptTimeout: Duration(5 * time.Second), MaxRetryAfter: Duration(15 * time.Second)},
			Breaker: Breaker{Window: Duration(time.Minute), MinRequests: 10, FailurePercent: 80,
				OpenMin: Duration(2 * time.Second), OpenMax: Duration(8 * time.Second)},
			MaxConcurrent: 16,
		},
		Auth: Auth{Htpasswd: "testdata/htpasswd", Realm: "mirror",
			Groups: map[string][]string{"ci": {"jenkins", "gitlab"}},
			Access: []AccessEntry{
				{Users: []string{"alice"}, Repositories: []string{"docker.io/library/", "registry.example.com:5000/team/"}},
				{Groups: []string{"ci"}, Users: []string{"alice"}, Repositories: []string{"*"}},
				{Anonymous: true, Repositories: []string{"docker.io/library/busybox"}},
			}},
		Admission: Admission{Timeout: Duration(8 * time.Second), CacheTTL: Duration(30 * time.Second)},
		Log:       Log{Level: "debug", Format: "text"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
	if got := cfg.Upstreams["docker.io"].Resilience; !reflect.DeepEqual(got, want.Upstreams["docker.io"].Resilience) {
		t.Errorf("docker.io resilience %+v\nwant %+v", got, want.Upstreams["docker.io"].Resilience)
	}
}

// TestBundledConfig keeps the repository's config.yaml runnable and equal to
// the built-in defaults the README promises.
func TestBundledConfig(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("config.yaml differs from Default():\n%+v\n%+v", cfg, Default())
	}
}

// The commented-out example of an upstream's resilience block in config.yaml
// is one Breakwater takes when uncommented.
func TestBundledConfigExample(t *testing.T) {
	cfg, err := Parse(uncommentedExample(t, "    ", "resilience"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default().Resilience
	want.Retry.Deadline = Duration(time.Minute)
	want.Breaker.OpenMax = Duration(30 * time.Second)
	if got := cfg.ResilienceFor("docker.io"); got != want {
		t.Errorf("the example uncommented: docker.io resilience %+v, want %+v", got, want)
	}
}

// The commented-out auth example in config.yaml is one Breakwater takes
// when uncommented (given its htpasswd file, which Parse does not read).
func TestBundledConfigAuthExample(t *testing.T) {
	cfg, err := Parse(uncommentedExample(t, "", "auth"))
	if err != nil {
		t.Fatal(err)
	}
	want := Auth{Htpasswd: "/etc/breakwater/htpasswd", Realm: "breakwater",
		Groups: map[string][]string{"ci": {"jenkins", "gitlab"}},
		Access: []AccessEntry{
			{Users: []string{"alice"}, Repositories: []string{"docker.io/library/", "ghcr.io/acme/"}},
			{Groups: []string{"ci"}, Repositories: []string{"*"}},
			{Anonymous: true, Repositories: []string{"registry.k8s.io/"}},
		}}
	if !reflect.DeepEqual(cfg.Auth, want) {
		t.Errorf("the example uncommented: auth %+v, want %+v", cfg.Auth, want)
	}
}

func TestLoadRejects(t *testing.T) {
	cases := []struct {
		file string
		want []string // substrings of the error, naming the field
	}{
		{"unknown-key.yaml", []string{"line 3", "cache.tag_tll", "unknown key", "tag_ttl"}},
		{"unknown-upstream-key.yaml", []string{"upstreams.docker.io.pasword", "unknown key"}},
		{"bad-url-scheme.yaml", []string{"line 3: upstreams.docker.io.url", "scheme must be http or https"}},
		{"bad-url-path.yaml", []string{"upstreams.docker.io.url", "no path"}},
		{"bad-url-parse.yaml", []string{"upstreams.docker.io.url", "not a URL"}},
		{"url-credentials.yaml", []string{"upstreams.docker.io.url", "credentials"}},
		{"bad-duration.yaml", []string{"line 2", "cache.tag_ttl", "invalid duration"}},
		{"negative-duration.yaml", []string{"cache.tag_ttl", "negative"}},
		{"bad-default.yaml", []string{"line 1: default_upstream", "quay.io"}},
		{"bad-listen.yaml", []string{"line 1: listen", "host:port"}},
		{"wrong-kind.yaml", []string{"cache", "mapping"}},
		{"bad-level.yaml", []string{"line 2: log.level", "loud"}},
		{"password-without-user.yaml", []string{"upstreams.docker.io.username", "required"}},
		{"bad-host.yaml", []string{"line 2: upstreams.bad host!", "not a registry host"}},
		{"not-yaml.yaml", []string{"not valid YAML"}},
		{"bad-bool.yaml", []string{"upstreams.docker.io.docker_config", "true or false"}},
		{"bad-concurrency.yaml", []string{"line 2", "resilience.max_concurrent", "whole number"}},
		{"bad-size.yaml", []string{"line 2", "cache.max_size", "invalid size"}},
		{"bad-watermarks.yaml", []string{"line 3: cache.low_watermark"}},
		{"zero-max-blob.yaml", []string{"line 2: cache.max_blob_size", "must be positive"}},
		{"negative-memory-size.yaml", []string{"line 2: cache.memory_size", "invalid size"}},
		{"bad-helper.yaml", []string{"line 4: upstreams.docker.io.credential_helper", "docker-credential-NAME"}},
		{"helper-and-user.yaml", []string{"upstreams.docker.io", "mutually exclusive"}},
		{"zero-drain.yaml", []string{"line 1: drain_timeout", "must be positive"}},
		{"missing.yaml", []string{"missing.yaml", "no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", tc.file))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// parseFile parses a fixture with Parse, so that errors come without Load's
// "config <path>:" prefix and can be compared whole.
func parseFile(t *testing.T, name string) (Config, error) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return Parse(b)
}

// Every resilience error, exactly: the field by its full path, the line
// when the file has the key there, and nothing else reported.
func TestResilienceErrors(t *testing.T) {
	cases := []struct {
		file string
		want []string // the error's lines, in order
	}{
		{"resilience-zero.yaml", []string{
			"line 3: resilience.retry.attempts: -1: must not be negative (0: as many as fit in deadline)",
			"line 4: resilience.retry.base_delay: must be positive",
			"line 6: resilience.retry.deadline: must be positive",
			"line 7: resilience.retry.attempt_timeout: must be positive",
			"line 8: resilience.retry.max_retry_after: must be positive",
			"line 10: resilience.breaker.window: must be positive",
			"line 11: resilience.breaker.min_requests: 0: must be at least 1",
			"line 12: resilience.breaker.failure_percent: 0: want a percentage, 1 to 100",
			"line 13: resilience.breaker.open_min: must be positive",
			"line 15: resilience.max_concurrent: -1: must not be negative",
			"line 16: resilience.rate_limit_reserve: -1: must not be negative",
		}},
		{"resilience-order.yaml", []string{
			"line 4: resilience.retry.max_delay: 1s: must not be less than base_delay (3s)",
			"line 6: resilience.breaker.failure_percent: 101: want a percentage, 1 to 100",
			"line 8: resilience.breaker.open_max: 5s: must not be less than open_min (10s)",
		}},
		{"upstream-resilience-zero.yaml", []string{
			"line 6: upstreams.docker.io.resilience.retry.attempts: -1: must not be negative (0: as many as fit in deadline)",
			"line 7: upstreams.docker.io.resilience.retry.base_delay: must be positive",
			"line 9: upstreams.docker.io.resilience.retry.deadline: must be positive",
			"line 10: upstreams.docker.io.resilience.retry.attempt_timeout: must be positive",
			"line 11: upstreams.docker.io.resilience.retry.max_retry_after: must be positive",
			"line 13: upstreams.docker.io.resilience.breaker.window: must be positive",
			"line 14: upstreams.docker.io.resilience.breaker.min_requests: 0: must be at least 1",
			"line 15: upstreams.docker.io.resilience.breaker.failure_percent: 0: want a percentage, 1 to 100",
			"line 16: upstreams.docker.io.resilience.breaker.open_min: must be positive",
			"line 18: upstreams.docker.io.resilience.max_concurrent: -1: must not be negative",
			"line 19: upstreams.docker.io.resilience.rate_limit_reserve: -1: must not be negative",
		}},
		// Checked against the global values it inherits (base_delay 200ms,
		// open_min 1s).
		{"upstream-resilience-order.yaml", []string{
			"line 6: upstreams.docker.io.resilience.retry.max_delay: 100ms: must not be less than base_delay (200ms)",
			"line 8: upstreams.docker.io.resilience.breaker.failure_percent: 101: want a percentage, 1 to 100",
			"line 9: upstreams.docker.io.resilience.breaker.open_max: 500ms: must not be less than open_min (1s)",
		}},
		// docker.io's own base_delay is above the max_delay it inherits: the
		// effective block is wrong where the file has no such key, so no
		// line. The global deadline of 0s is reported once, at the global
		// key, but also where ghcr.io sets it again; quay.io only inherits.
		{"upstream-resilience-inherited.yaml", []string{
			"upstreams.docker.io.resilience.retry.max_delay: 2s: must not be less than base_delay (3s)",
			"line 11: upstreams.ghcr.io.resilience.retry.deadline: must be positive",
			"line 19: resilience.retry.deadline: must be positive",
		}},
		{"revalidate-timeout-zero.yaml", []string{"line 3: cache.revalidate_timeout: must be positive"}},
		// Decoder errors: the first one, with its line.
		{"removed-failures.yaml", []string{
			"line 5: resilience.breaker.failures: removed: the breaker now opens when failure_percent of at least min_requests requests finished within window failed",
		}},
		{"removed-cooldown.yaml", []string{
			"line 4: resilience.breaker.cooldown: removed: the breaker now probes after open_min, doubling up to open_max",
		}},
		{"upstream-removed-cooldown.yaml", []string{
			"line 6: upstreams.docker.io.resilience.breaker.cooldown: removed: the breaker now probes after open_min, doubling up to open_max",
		}},
		{"upstream-resilience-unknown-key.yaml", []string{
			"line 6: upstreams.docker.io.resilience.retry.dedline: unknown key (known keys: attempts, base_delay, max_delay, deadline, attempt_timeout, max_retry_after)",
		}},
		{"upstream-resilience-bad-duration.yaml", []string{
			`line 6: upstreams.docker.io.resilience.retry.deadline: invalid duration "a minute" (want e.g. 30s, 5m, 1h)`,
		}},
		{"upstream-resilience-not-mapping.yaml", []string{
			"line 4: upstreams.docker.io.resilience: want a mapping of keys",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			_, err := parseFile(t, tc.file)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// The bounds themselves are allowed: attempts 0 (no cap), max_delay equal to
// base_delay, open_max equal to open_min, percentages 1 and 100.
func TestResilienceEdgesAccepted(t *testing.T) {
	cfg, err := parseFile(t, "resilience-edges.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ResilienceFor("docker.io").Breaker.FailurePercent; got != 1 {
		t.Errorf("docker.io failure_percent %d, want 1", got)
	}
}

// An upstream's block takes what it does not set from the global block as
// the file has it, whichever of the two comes first.
func TestResilienceFor(t *testing.T) {
	global := Resilience{
		Retry: Retry{Attempts: 6, BaseDelay: Duration(50 * time.Millisecond), MaxDelay: Duration(time.Second),
			Deadline: Duration(15 * time.Second), AttemptTimeout: Duration(4 * time.Second), MaxRetryAfter: Duration(2 * time.Minute)},
		Breaker: Breaker{Window: Duration(10 * time.Second), MinRequests: 3, FailurePercent: 60,
			OpenMin: Duration(500 * time.Millisecond), OpenMax: Duration(2 * time.Second)},
		MaxConcurrent:    32,
		RateLimitReserve: 5,
	}
	docker := global
	docker.Retry.Deadline = Duration(time.Minute)
	docker.Retry.MaxDelay = Duration(5 * time.Second)
	docker.Breaker.OpenMax = Duration(time.Minute)
	docker.MaxConcurrent = 4

	for _, file := range []string{"override-global-first.yaml", "override-global-last.yaml"} {
		t.Run(file, func(t *testing.T) {
			cfg, err := parseFile(t, file)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				host string
				want Resilience
			}{
				{"docker.io", docker},
				{"ghcr.io", global},              // configured, no block of its own
				{"registry.k8s.io", global},      // a default upstream the file dropped
				{"unknown.example:5000", global}, // never configured
			} {
				if got := cfg.ResilienceFor(tc.host); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("ResilienceFor(%q) = %+v\nwant %+v", tc.host, got, tc.want)
				}
			}
			if cfg.Resilience != global {
				t.Errorf("global block %+v, want %+v: an upstream's block leaked into it", cfg.Resilience, global)
			}
		})
	}
}

// Validate, without a file, names the field of an upstream's block by its
// full path too, and checks it against its own values.
func TestValidateUpstreamResilience(t *testing.T) {
	cfg := Default()
	r := cfg.Resilience
	r.Breaker.OpenMax = Duration(500 * time.Millisecond)
	u := cfg.Upstreams["quay.io"]
	u.Resilience = &r
	cfg.Upstreams["quay.io"] = u
	want := "upstreams.quay.io.resilience.breaker.open_max: 500ms: must not be less than open_min (1s)"
	if err := cfg.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
}

func TestSetUpstreamKeepsResilience(t *testing.T) {
	cfg, err := parseFile(t, "override-global-first.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before := cfg.ResilienceFor("docker.io")
	if before == cfg.Resilience {
		t.Fatal("fixture: docker.io has no block of its own")
	}
	if err := cfg.SetUpstream("docker.io=http://127.0.0.1:5001"); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Upstreams["docker.io"].URL; got != "http://127.0.0.1:5001" {
		t.Errorf("URL %q not replaced", got)
	}
	if got := cfg.ResilienceFor("docker.io"); got != before {
		t.Errorf("after SetUpstream docker.io resilience %+v, want %+v", got, before)
	}
	if err := cfg.SetUpstream("new.example=https://new.example"); err != nil {
		t.Fatal(err)
	}
	if got := cfg.ResilienceFor("new.example"); got != cfg.Resilience {
		t.Errorf("a new upstream's resilience %+v, want the global %+v", got, cfg.Resilience)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

func TestSetUpstream(t *testing.T) {
	cfg := Default()
	cfg.Upstreams["docker.io"] = Upstream{URL: "https://registry-1.docker.io", Username: "u", Password: "p"}
	if err := cfg.SetUpstream("docker.io=http://127.0.0.1:5001/"); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Upstreams["docker.io"]; got.URL != "http://127.0.0.1:5001" || got.Username != "u" {
		t.Errorf("docker.io = %+v: URL replaced, credentials kept", got)
	}
	if err := cfg.SetUpstream("internal.example:5000=https://mirror.internal"); err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Upstreams["internal.example:5000"]; !ok {
		t.Error("new upstream not added")
	}
	for _, bad := range []string{"docker.io", "=http://x", "docker.io=", "docker.io=ftp://x", "no host!=http://x"} {
		if err := cfg.SetUpstream(bad); err == nil || !strings.Contains(err.Error(), "--upstream") {
			t.Errorf("SetUpstream(%q) = %v, want an error naming --upstream", bad, err)
		}
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	cfg, err := Parse([]byte("  \n"))
	if err != nil || !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("empty file: %v, %+v", err, cfg)
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true}, {"10B", 10, true}, {"1KB", 1000, true}, {"1KiB", 1024, true},
		{"200GiB", 200 << 30, true}, {"1.5GiB", 3 << 29, true}, {"2 TB", 2e12, true}, {"512M", 512 << 20, true},
		{"", 0, false}, {"GiB", 0, false}, {"-1GiB", 0, false}, {"10 parsecs", 0, false}, {"1e9", 0, false},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v", tc.in, got, err)
		}
	}
}

// The tls block: both files or neither, a client CA only with them, and
// each error names the field that is missing.
func TestTLS(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want string // the whole error; "" for accepted
	}{
		{"tls:\n  cert_file: /tls/tls.crt\n  key_file: /tls/tls.key\n", ""},
		{"tls:\n  cert_file: /tls/tls.crt\n  key_file: /tls/tls.key\n  client_ca_file: /tls/ca.crt\n", ""},
		{"tls:\n  cert_file: /tls/tls.crt\n", "tls.key_file: required with tls.cert_file"},
		{"tls:\n  key_file: /tls/tls.key\n", "tls.cert_file: required with tls.key_file"},
		{"tls:\n  client_ca_file: /tls/ca.crt\n", "line 2: tls.client_ca_file: requires tls.cert_file and tls.key_file (mutual TLS is TLS first)"},
		// The warm API asks Breakwater in process, whatever the listener.
		{"tls:\n  cert_file: /tls/tls.crt\n  key_file: /tls/tls.key\nwarm:\n  api_enabled: true\n", ""},
		{"tls:\n  cert: /tls/tls.crt\n", "line 2: tls.cert: unknown key (known keys: cert_file, key_file, client_ca_file)"},
	} {
		cfg, err := Parse([]byte(tc.yaml))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.want == "" && !cfg.TLS.Enabled():
			t.Errorf("%q: TLS not enabled: %+v", tc.yaml, cfg.TLS)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if Default().TLS.Enabled() {
		t.Error("TLS is on by default")
	}
}

// The commented-out tls example in config.yaml is one Breakwater takes
// when uncommented.
func TestBundledConfigTLSExample(t *testing.T) {
	cfg, err := Parse(uncommentedExample(t, "", "tls"))
	if err != nil {
		t.Fatal(err)
	}
	want := TLS{CertFile: "/etc/breakwater/tls/tls.crt", KeyFile: "/etc/breakwater/tls/tls.key", ClientCAFile: "/etc/breakwater/tls/ca.crt"}
	if cfg.TLS != want {
		t.Errorf("the example uncommented: tls %+v, want %+v", cfg.TLS, want)
	}
}

// The commented-out storage example in config.yaml is one Breakwater takes
// when uncommented, and its parameters are the driver's.
func TestBundledConfigStorageExample(t *testing.T) {
	dir := t.TempDir()
	example := strings.ReplaceAll(string(uncommentedExample(t, "", "storage")), "/etc/breakwater-s3/secretkey", filepath.Join(dir, "secretkey"))
	if err := os.WriteFile(filepath.Join(dir, "secretkey"), []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Storage.S3 == nil || cfg.Storage.Redirect {
		t.Fatalf("the example uncommented: storage %+v", cfg.Storage)
	}
	got, err := cfg.Storage.S3.DriverParameters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"bucket": "breakwater", "region": "us-east-1", "regionendpoint": "https://minio.internal:9000",
		"accesskey": "breakwater", "secretkey": "s3cr3t", "forcepathstyle": true, "secure": true, "skipverify": false, "encrypt": false}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("driver parameters %v, want %v", got, want)
	}
}

func TestStorageErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"no bucket", "storage:\n  s3:\n    region: eu-west-1\n", "storage.s3.bucket: required"},
		{"no region", "storage:\n  s3:\n    bucket: b\n", "storage.s3.region: required"},
		{"a bad endpoint", "storage:\n  s3:\n    bucket: b\n    regionendpoint: minio:9000\n", `storage.s3.regionendpoint: "minio:9000": want http(s)://host[:port]`},
		{"a key without its secret", "storage:\n  s3:\n    bucket: b\n    region: r\n    accesskey: a\n", "storage.s3.accesskey: accesskey and secretkey"},
		{"both secrets", "storage:\n  s3:\n    bucket: b\n    region: r\n    accesskey: a\n    secretkey: s\n    secretkey_file: f\n", "storage.s3.secretkey_file: set secretkey or secretkey_file, not both"},
		{"small parts", "storage:\n  s3:\n    bucket: b\n    region: r\n    chunksize: 1MiB\n", "storage.s3.chunksize: 1048576: S3 parts are at least 5 MiB"},
		{"a misspelt key", "storage:\n  s3:\n    bucket: b\n    regoin: r\n", "line 4: storage.s3.regoin: unknown key"},
		{"redirect without a store", "storage:\n  redirect: true\n", "line 2: storage.redirect: needs an object store (storage.s3, storage.gcs or storage.azure)"},
		{"two stores", "storage:\n  s3:\n    bucket: b\n    region: r\n  gcs:\n    bucket: b\n",
			"line 1: storage: storage.s3 and storage.gcs are set: set one of storage.s3, storage.gcs and storage.azure, the one object store the replicas share"},
		{"three stores", "storage:\n  s3:\n    bucket: b\n    region: r\n  gcs:\n    bucket: b\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: default_credentials\n",
			"storage: storage.s3 and storage.gcs and storage.azure are set"},

		{"gcs: no bucket", "storage:\n  gcs:\n    keyfile: /k.json\n", "storage.gcs.bucket: required"},
		{"gcs: parts too small", "storage:\n  gcs:\n    bucket: b\n    chunksize: 128KiB\n", "line 4: storage.gcs.chunksize: 131072: want a multiple of 256 KiB (GCS's upload unit)"},
		{"gcs: parts not of 256 KiB", "storage:\n  gcs:\n    bucket: b\n    chunksize: 1000KiB\n", "line 4: storage.gcs.chunksize: 1024000: want a multiple of 256 KiB"},
		{"gcs: negative concurrency", "storage:\n  gcs:\n    bucket: b\n    maxconcurrency: -1\n", "line 4: storage.gcs.maxconcurrency: -1: must not be negative"},
		{"gcs: inline credentials", "storage:\n  gcs:\n    bucket: b\n    credentials:\n      type: service_account\n",
			"line 4: storage.gcs.credentials: unknown key (known keys: bucket, keyfile, rootdirectory, chunksize, useragent, maxconcurrency)"},

		{"azure: no account", "storage:\n  azure:\n    container: c\n    credentials:\n      type: default_credentials\n", "storage.azure.accountname: required"},
		{"azure: no container", "storage:\n  azure:\n    accountname: a\n    credentials:\n      type: default_credentials\n", "storage.azure.container: required"},
		{"azure: no credentials type", "storage:\n  azure:\n    accountname: a\n    container: c\n    accountkey: k\n",
			"storage.azure.credentials.type: required: shared_key, client_secret or default_credentials"},
		{"azure: a credentials type that is none", "storage:\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: sharedkey\n",
			`line 6: storage.azure.credentials.type: "sharedkey" is not one of shared_key, client_secret, default_credentials`},
		{"azure: a shared key type without a key", "storage:\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: shared_key\n",
			"storage.azure.accountkey: required with credentials.type shared_key (or accountkey_file)"},
		{"azure: both keys", "storage:\n  azure:\n    accountname: a\n    container: c\n    accountkey: k\n    accountkey_file: f\n    credentials:\n      type: shared_key\n",
			"line 6: storage.azure.accountkey_file: set accountkey or accountkey_file, not both"},
		{"azure: a key the credentials do not use", "storage:\n  azure:\n    accountname: a\n    container: c\n    accountkey: k\n    credentials:\n      type: default_credentials\n",
			"line 5: storage.azure.accountkey: only with credentials.type shared_key: default_credentials does not use it"},
		{"azure: a client secret without its client", "storage:\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: client_secret\n      secret: s\n",
			"storage.azure.credentials.clientid: required with credentials.type client_secret\nstorage.azure.credentials.tenantid: required with credentials.type client_secret"},
		{"azure: a client without its secret", "storage:\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: client_secret\n      clientid: i\n      tenantid: t\n",
			"storage.azure.credentials.secret: required with credentials.type client_secret (or secret_file)"},
		{"azure: both client secrets", "storage:\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: client_secret\n      clientid: i\n      tenantid: t\n      secret: s\n      secret_file: f\n",
			"line 10: storage.azure.credentials.secret_file: set secret or secret_file, not both"},
		{"azure: a client the credentials do not use", "storage:\n  azure:\n    accountname: a\n    container: c\n    accountkey: k\n    credentials:\n      type: shared_key\n      clientid: i\n",
			"line 6: storage.azure.credentials: clientid, tenantid and secret are only for type client_secret: shared_key does not use them"},
		{"azure: a bad service URL", "storage:\n  azure:\n    accountname: a\n    container: c\n    serviceurl: a.blob.core.windows.net\n    credentials:\n      type: default_credentials\n",
			`line 5: storage.azure.serviceurl: "a.blob.core.windows.net": want http(s)://host[:port]`},
		{"azure: negative retries", "storage:\n  azure:\n    accountname: a\n    container: c\n    max_retries: -1\n    credentials:\n      type: default_credentials\n",
			"line 5: storage.azure.max_retries: -1: want 0 or more (0: the driver's 5)"},
		{"azure: a bad retry delay", "storage:\n  azure:\n    accountname: a\n    container: c\n    retry_delay: 100\n", `line 5: storage.azure.retry_delay: invalid duration "100"`},
		{"azure: a connection string", "storage:\n  azure:\n    accountname: a\n    connectionstring: x\n", "line 4: storage.azure.connectionstring: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// Each object store's block is the parameters of its driver, by the
// driver's names, with the secrets of the *_file keys read in; Driver
// names the driver the block configures.
func TestStorageDriver(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"secretkey": "s3cr3t\n", "accountkey": "YWNjb3VudGtleQ==\n", "clientsecret": "cl13nt\r\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyfile := filepath.Join(dir, "key.json")
	if err := os.WriteFile(keyfile, []byte(`{"type": "service_account"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, text string
		driver     string
		want       map[string]any
	}{
		{"none", "", "", nil},
		{"s3", "storage:\n  s3:\n    bucket: b\n    region: r\n    accesskey: a\n    secretkey_file: " + filepath.Join(dir, "secretkey") + "\n",
			"s3", map[string]any{"bucket": "b", "region": "r", "accesskey": "a", "secretkey": "s3cr3t",
				"forcepathstyle": false, "skipverify": false, "encrypt": false, "secure": true}},
		{"gcs, the bucket alone", "storage:\n  gcs:\n    bucket: b\n", "gcs", map[string]any{"bucket": "b"}},
		{"gcs, every key", "storage:\n  gcs:\n    bucket: b\n    keyfile: " + keyfile + "\n    rootdirectory: /bw\n    chunksize: 8MiB\n    useragent: breakwater\n    maxconcurrency: 30\n",
			"gcs", map[string]any{"bucket": "b", "keyfile": keyfile, "rootdirectory": "/bw", "chunksize": int64(8 << 20), "useragent": "breakwater", "maxconcurrency": int64(30)}},
		{"azure, a shared key from its file", "storage:\n  azure:\n    accountname: a\n    accountkey_file: " + filepath.Join(dir, "accountkey") + "\n    container: c\n    credentials:\n      type: shared_key\n",
			"azure", map[string]any{"accountname": "a", "accountkey": "YWNjb3VudGtleQ==", "container": "c", "skipverify": false,
				"credentials": map[string]any{"type": "shared_key"}}},
		{"azure, a shared key inline", "storage:\n  azure:\n    accountname: a\n    accountkey: k\n    container: c\n    credentials:\n      type: shared_key\n",
			"azure", map[string]any{"accountname": "a", "accountkey": "k", "container": "c", "skipverify": false,
				"credentials": map[string]any{"type": "shared_key"}}},
		{"azure, a client secret from its file, every key", "storage:\n  azure:\n    accountname: a\n    container: c\n    realm: core.chinacloudapi.cn\n" +
			"    serviceurl: https://a.blob.core.chinacloudapi.cn\n    rootdirectory: /bw\n    max_retries: 8\n    retry_delay: 250ms\n    skipverify: true\n" +
			"    credentials:\n      type: client_secret\n      clientid: i\n      tenantid: t\n      secret_file: " + filepath.Join(dir, "clientsecret") + "\n",
			"azure", map[string]any{"accountname": "a", "container": "c", "realm": "core.chinacloudapi.cn", "serviceurl": "https://a.blob.core.chinacloudapi.cn",
				"rootdirectory": "/bw", "max_retries": 8, "retry_delay": "250ms", "skipverify": true,
				"credentials": map[string]any{"type": "client_secret", "clientid": "i", "tenantid": "t", "secret": "cl13nt"}}},
		{"azure, the default credentials", "storage:\n  azure:\n    accountname: a\n    container: c\n    credentials:\n      type: default_credentials\n  redirect: true\n",
			"azure", map[string]any{"accountname": "a", "container": "c", "skipverify": false, "credentials": map[string]any{"type": "default_credentials"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			driver, params, err := cfg.Storage.Driver()
			if err != nil {
				t.Fatal(err)
			}
			if driver != tc.driver || !reflect.DeepEqual(params, tc.want) {
				t.Errorf("Driver() = %q, %#v\nwant %q, %#v", driver, params, tc.driver, tc.want)
			}
			if kind := cfg.Storage.Kind(); kind != tc.driver {
				t.Errorf("Kind() = %q, want %q", kind, tc.driver)
			}
		})
	}
}

// A *_file key whose file is not there is named by its key when the
// parameters are made, at start; so is a gcs key file, which the driver
// reads itself. Two stores set, which validation refuses, are refused by
// Driver too.
func TestStorageDriverFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		name    string
		storage Storage
		want    string
	}{
		{"s3 secretkey_file", Storage{S3: &S3{Bucket: "b", Region: "r", AccessKey: "a", SecretKeyFile: missing}}, "storage.s3.secretkey_file: open " + missing},
		{"gcs keyfile", Storage{GCS: &GCS{Bucket: "b", KeyFile: missing}}, "storage.gcs.keyfile: stat " + missing},
		{"azure accountkey_file", Storage{Azure: &Azure{AccountName: "a", Container: "c", AccountKeyFile: missing, Credentials: AzureCredentials{Type: "shared_key"}}},
			"storage.azure.accountkey_file: open " + missing},
		{"azure credentials.secret_file", Storage{Azure: &Azure{AccountName: "a", Container: "c",
			Credentials: AzureCredentials{Type: "client_secret", ClientID: "i", TenantID: "t", SecretFile: missing}}},
			"storage.azure.credentials.secret_file: open " + missing},
		{"two stores", Storage{S3: &S3{Bucket: "b", Region: "r"}, Azure: &Azure{}}, "storage: storage.s3 and storage.azure are set: one object store at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tc.storage.Driver()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFleetErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"a cluster without Redis", "cluster:\n  advertise: http://10.0.0.5:5000\n", "redis.addr: required with cluster.advertise or cluster.secret_file"},
		{"a bad address", "redis:\n  addr: redis\ncluster:\n  secret_file: s\n", `line 2: redis.addr: "redis" is not host:port`},
		{"no secret", "redis:\n  addr: r:6379\n", "cluster.secret_file: required with redis.addr"},
		{"both passwords", "redis:\n  addr: r:6379\n  password: p\n  password_file: f\ncluster:\n  secret_file: s\n", "redis.password_file: set password or password_file, not both"},
		{"a CA without TLS", "redis:\n  addr: r:6379\n  ca_file: ca.pem\ncluster:\n  secret_file: s\n", "redis.ca_file: needs redis.tls: true"},
		{"an advertise that is no URL", "redis:\n  addr: r:6379\ncluster:\n  advertise: 10.0.0.5:5000\n  secret_file: s\n", `cluster.advertise: "10.0.0.5:5000": want http(s)://host:port`},
		{"a peer certificate without its key", "redis:\n  addr: r:6379\ncluster:\n  secret_file: s\n  cert_file: c.pem\n", "cluster.cert_file: cluster.cert_file and cluster.key_file come together"},
		{"mutual TLS without a peer certificate", "redis:\n  addr: r:6379\ncluster:\n  secret_file: s\ntls:\n  cert_file: t.crt\n  key_file: t.key\n  client_ca_file: ca.crt\n", "cluster.cert_file: required with tls.client_ca_file"},
		{"a store bound without a store", "storage:\n  max_size: 1TiB\n", "storage.max_size: needs an object store (storage.s3, storage.gcs or storage.azure)"},
		{"a store bound without Redis", "storage:\n  max_size: 1TiB\n  s3:\n    bucket: b\n    region: r\n", "storage.max_size: needs redis.addr"},
		{"a store bound that is no size", "storage:\n  max_size: lots\n", "storage.max_size"},
		{"an advertise with a path", "redis:\n  addr: r:6379\ncluster:\n  advertise: http://h:5000/x\n  secret_file: s\n", `want http(s)://host:port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Parse([]byte("redis:\n  addr: r:6379\n  tls: true\ncluster:\n  advertise: https://10.0.0.5:5000\n  secret_file: s\n")); err != nil {
		t.Errorf("a valid fleet block refused: %v", err)
	}
}

// uncommentedExample is the bundled config.yaml with the commented-out
// block of key, indented by indent, uncommented.
func uncommentedExample(t *testing.T, indent, key string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in, found := false, false
	for _, line := range strings.Split(string(b), "\n") {
		in = line == indent+"# "+key+":" || in && strings.HasPrefix(line, indent+"#   ")
		if in {
			line, found = indent+strings.TrimPrefix(line, indent+"# "), true
		}
		out = append(out, line)
	}
	if !found {
		t.Fatalf("config.yaml has no commented-out %s example", key)
	}
	return []byte(strings.Join(out, "\n"))
}

// Every auth error exactly, through Load, which also reads the htpasswd
// file: the field by its path (list elements by index), its line, and the
// htpasswd file's own path and line for what is wrong in it.
func TestAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"a key misspelt", `auth:
  htpasswd: testdata/htpasswd
  access:
    - user: [alice]
      repositories: ["*"]
`, []string{"line 4: auth.access[0].user: unknown key (known keys: users, groups, authenticated, anonymous, repositories)"}},
		{"a user, not a list", `auth:
  htpasswd: testdata/htpasswd
  access:
    - users: alice
      repositories: ["*"]
`, []string{"line 4: auth.access[0].users: want a list, e.g. [a, b]"}},
		{"an access list without htpasswd", `auth:
  access:
    - anonymous: true
      repositories: ["*"]
`, []string{"auth.htpasswd: required with an access list or groups: without it Breakwater is open to everyone"}},
		{"htpasswd without an access list", `auth:
  htpasswd: testdata/htpasswd
`, []string{`auth.access: empty: with htpasswd set and no access list nobody may pull anything; to let every user pull everything, add {authenticated: true, repositories: ["*"]}`}},
		{"entries", `upstreams:
  docker.io:
    url: https://registry-1.docker.io
  ghcr.io:
    url: https://ghcr.io
auth:
  htpasswd: testdata/htpasswd
  groups:
    ci: [jenkins]
  access:
    - repositories: ["*"]
    - groups: [ci, cd]
      repositories: [quay.io/org/, "docker.io/lib*", ghcr.io]
    - anonymous: true
      users: [alice]
      repositories: []
`, []string{
			"line 11: auth.access[0]: says for whom: users, groups, authenticated: true or anonymous: true",
			`line 12: auth.access[1].groups[1]: group "cd" is not one of groups (ci)`,
			`line 13: auth.access[1].repositories[1]: "docker.io/lib*": a pattern is a prefix of whole path segments; "*" only stands alone, for everything`,
			"line 14: auth.access[2]: users/groups, authenticated and anonymous exclude each other: anonymous is everyone, authenticated every user of the htpasswd file",
			`line 16: auth.access[2].repositories: empty: list upstream/repository prefixes, or "*" for everything`,
			`line 13: auth.access[1].repositories[0]: "quay.io/org/": quay.io is not one of the upstreams (docker.io, ghcr.io)`,
		}},
		// Only Load reads the file: these pass Parse.
		{"users not in the file", `auth:
  htpasswd: testdata/htpasswd
  groups:
    ci: [jenkins, hudson]
  access:
    - users: [alice, bob]
      repositories: ["*"]
`, []string{
			`line 4: auth.groups.ci[1]: user "hudson" is not in testdata/htpasswd`,
			`line 6: auth.access[0].users[1]: user "bob" is not in testdata/htpasswd`,
		}},
		{"an MD5 htpasswd", `auth:
  htpasswd: testdata/htpasswd-md5
  access:
    - authenticated: true
      repositories: ["*"]
`, []string{`line 2: auth.htpasswd: htpasswd testdata/htpasswd-md5: line 1: user "bob": an MD5 hash is refused; only bcrypt hashes are accepted: create the entry with htpasswd -B`}},
		{"no htpasswd file", `auth:
  htpasswd: testdata/nope
  access:
    - authenticated: true
      repositories: ["*"]
`, []string{`line 2: auth.htpasswd: htpasswd file: open testdata/nope: no such file or directory`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "cfg.yaml")
			if err := os.WriteFile(file, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(file)
			if err == nil {
				t.Fatal("accepted")
			}
			got := strings.Split(strings.TrimPrefix(err.Error(), "config "+file+": "), "\n")
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("error:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestAdmissionErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"a webhook without TLS", "admission:\n  enabled: true\n", "admission.enabled: needs tls.cert_file and tls.key_file"},
		{"a webhook slower than any API server waits", "admission:\n  timeout: 45s\n", "admission.timeout: 45s: want up to 30s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
