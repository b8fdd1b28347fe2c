// Package config loads and validates Breakwater's configuration file.
//
// Decoding is strict: an unknown key, a value of the wrong kind, a bad URL or
// a bad duration is refused with an error that names the key by its dotted
// path ("upstreams.docker.io.url") and its line in the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/breakwater-registry/breakwater/access"
)

// Config is the whole configuration.
type Config struct {
	// Listen is the address the HTTP server binds, host:port.
	Listen string `yaml:"listen"`
	// DrainTimeout is how long a stopping Breakwater (SIGTERM, SIGINT)
	// lets the answers in flight finish before it exits.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// TLS, when it names a certificate, makes Listen speak TLS.
	TLS   TLS   `yaml:"tls"`
	Cache Cache `yaml:"cache"`
	// Storage is an object store replicas share besides each one's
	// cache.dir; without it the cache directory is all there is.
	Storage Storage `yaml:"storage"`
	// Redis coordinates the replicas of a fleet; Cluster says how they
	// reach each other. Both or neither.
	Redis   Redis   `yaml:"redis"`
	Cluster Cluster `yaml:"cluster"`
	// DefaultUpstream serves requests that name no registry (dockerd's
	// registry-mirrors, podman's mirrors). It must be a key of Upstreams.
	DefaultUpstream string `yaml:"default_upstream"`
	// Upstreams maps a registry host as clients name it ("docker.io") to
	// where and how Breakwater reaches it.
	Upstreams map[string]Upstream `yaml:"upstreams"`
	// Resilience is how Breakwater treats a failing upstream; it applies
	// to every upstream but for the keys an upstream's own block sets.
	Resilience Resilience `yaml:"resilience"`
	Warm       Warm       `yaml:"warm"`
	Admission  Admission  `yaml:"admission"`
	// Auth authenticates Breakwater's clients and says what each may
	// pull; without auth.htpasswd Breakwater is open.
	Auth Auth `yaml:"auth"`
	Log  Log  `yaml:"log"`
}

// Auth configures client authentication and per-repository access, as the
// access package implements them.
type Auth struct {
	// Htpasswd is the path of a bcrypt htpasswd file (htpasswd -B). Set,
	// every client must authenticate but for what Access grants anonymous
	// clients; unset, anyone who reaches Breakwater may pull whatever the
	// upstreams' credentials can read.
	Htpasswd string `yaml:"htpasswd"`
	// Realm is sent in the Basic challenge.
	Realm string `yaml:"realm"`
	// Groups maps a group name to users of the htpasswd file.
	Groups map[string][]string `yaml:"groups"`
	// Access lists who may pull which repositories; pull only.
	Access []AccessEntry `yaml:"access"`
}

// AccessEntry grants pull on Repositories (upstream/repository prefixes,
// or "*") to Users and Groups, to every authenticated user, or to
// everyone (Anonymous).
type AccessEntry struct {
	Users         []string `yaml:"users"`
	Groups        []string `yaml:"groups"`
	Authenticated bool     `yaml:"authenticated"`
	Anonymous     bool     `yaml:"anonymous"`
	Repositories  []string `yaml:"repositories"`
}

// AccessConfig is the auth block as the access package takes it.
func (a Auth) AccessConfig() access.Config {
	c := access.Config{Htpasswd: a.Htpasswd, Realm: a.Realm, Groups: a.Groups}
	for _, e := range a.Access {
		c.Access = append(c.Access, access.Grant{
			Users: e.Users, Groups: e.Groups, Authenticated: e.Authenticated, Anonymous: e.Anonymous,
			Repositories: e.Repositories,
		})
	}
	return c
}

// TLS configures TLS on the listen address. Off when CertFile is empty.
// The files are read at start and again when they change (cert-manager
// rotates them in place); their contents are not checked here, since
// configuration is data: serve refuses a file it cannot read or parse.
type TLS struct {
	// CertFile is the server certificate chain (PEM), leaf first; KeyFile
	// its private key (PEM). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, turns on mutual TLS: every client must
	// present a certificate that verifies against these CAs (PEM).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listen address speaks TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Warm configures the warm-up API.
type Warm struct {
	// APIEnabled serves POST /_breakwater/v1/warm, which pulls images into
	// the cache on request. Off by default: anyone who can reach
	// Breakwater could make it fetch.
	APIEnabled bool `yaml:"api_enabled"`
}

// Admission configures the validating admission webhook, POST
// /_breakwater/v1/admission: it refuses pods whose images are missing,
// forbidden or invalid, and allows with a warning those it cannot judge.
type Admission struct {
	// Enabled serves the webhook, on the TLS listener (the API server
	// calls webhooks over HTTPS only).
	Enabled bool `yaml:"enabled"`
	// Timeout bounds one review: below the webhook's timeoutSeconds, so
	// that Breakwater's answer (allowed, with a warning) comes first.
	Timeout Duration `yaml:"timeout"`
	// CacheTTL is how long a verdict is kept, so a rollout asks once.
	CacheTTL Duration `yaml:"cache_ttl"`
}

func (a Admission) problems(tls TLS) problems {
	var ps problems
	if a.Timeout.D() > 30*time.Second {
		ps.add("admission.timeout", "%s: want up to 30s, the most an API server waits for a webhook", a.Timeout.D())
	}
	if a.Enabled && !tls.Enabled() {
		ps.add("admission.enabled", "needs tls.cert_file and tls.key_file: the API server calls webhooks over HTTPS only")
	}
	return ps
}

// Resilience configures retries, the circuit breaker and concurrency
// towards an upstream. The global block applies to every upstream; an
// upstream's own block overrides any of its keys (Config.ResilienceFor).
type Resilience struct {
	Retry   Retry   `yaml:"retry"`
	Breaker Breaker `yaml:"breaker"`
	// MaxConcurrent caps requests in flight to one upstream; 0 means no cap.
	MaxConcurrent int `yaml:"max_concurrent"`
	// RateLimitReserve: when Docker Hub's ratelimit-remaining falls to this
	// many pulls, tags that are cached are served without revalidation so
	// the remaining pulls go to images the cache lacks. 0 disables it.
	RateLimitReserve int `yaml:"rate_limit_reserve"`
}

// Retry configures the retry policy for one upstream request.
type Retry struct {
	// Attempts caps the tries of one request, the first included. 0 sets
	// no cap, so that Deadline alone bounds the retries: a request is
	// retried for as long as its client is likely to wait.
	Attempts int `yaml:"attempts"`
	// BaseDelay and MaxDelay bound full-jitter exponential backoff: the
	// wait before retry n is uniform in [0, min(MaxDelay, BaseDelay*2^(n-1))].
	BaseDelay Duration `yaml:"base_delay"`
	MaxDelay  Duration `yaml:"max_delay"`
	// Deadline is one request's budget for its retries, for waiting for
	// the verdict of an open circuit's next probe, or for an upstream's
	// rate limit to lift.
	Deadline Duration `yaml:"deadline"`
	// AttemptTimeout bounds the wait for response headers of one try, and
	// for the next byte of a body being fetched.
	AttemptTimeout Duration `yaml:"attempt_timeout"`
	// MaxRetryAfter caps an upstream's Retry-After (or Docker Hub's
	// rate-limit window): a longer one is taken as this, so that one odd
	// header cannot shut an upstream off for days.
	MaxRetryAfter Duration `yaml:"max_retry_after"`
}

// Breaker configures the per-upstream circuit breaker. It counts requests,
// each once its retries are over, rather than tries: one request retrying
// through a blip is one outcome, not several.
type Breaker struct {
	// Window is how far back request outcomes are counted.
	Window Duration `yaml:"window"`
	// MinRequests is how many requests must have finished within Window
	// before their failure ratio counts, so that a couple of failures on a
	// quiet upstream do not open the circuit.
	MinRequests int `yaml:"min_requests"`
	// FailurePercent is the percentage of those requests failed (1 to 100)
	// that opens the circuit.
	FailurePercent int `yaml:"failure_percent"`
	// OpenMin is how long the circuit first stays open before a probe;
	// each failed probe doubles it, up to OpenMax. A blip is over within
	// about a second, while a long outage is probed at a steady pace.
	OpenMin Duration `yaml:"open_min"`
	OpenMax Duration `yaml:"open_max"`
}

// removedKeys names the breaker's keys of before issue 9, which counted
// consecutive tries and stayed open for a fixed time: a file that still
// has them would otherwise quietly mean something else.
func (Breaker) removedKeys() map[string]string {
	return map[string]string{
		"failures": "the breaker now opens when failure_percent of at least min_requests requests finished within window failed",
		"cooldown": "the breaker now probes after open_min, doubling up to open_max",
	}
}

// Cache configures the on-disk cache.
type Cache struct {
	Dir string `yaml:"dir"`
	// TagTTL is how long a tag is trusted before it is revalidated upstream.
	TagTTL Duration `yaml:"tag_ttl"`
	// RevalidateTimeout is how long a request for a cached tag past its
	// TTL waits for the upstream's answer; then it is served from the
	// cache (stale) while the revalidation goes on in the background, so
	// a slow upstream does not slow every pull of a cached tag.
	RevalidateTimeout Duration `yaml:"revalidate_timeout"`
	// MaxStale is how old a tag may be and still be served when the
	// upstream cannot be asked (stale-if-error). 0 disables it.
	MaxStale Duration `yaml:"max_stale"`
	// MaxSize bounds the content kept; 0 means unbounded.
	MaxSize Size `yaml:"max_size"`
	// MaxBlobSize is the most bytes one blob may have: a longer body, or
	// an upstream declaring one, is cut and nothing is cached, so that a
	// body that never ends cannot fill the disk.
	MaxBlobSize Size `yaml:"max_blob_size"`
	// HighWatermark and LowWatermark are percentages of MaxSize: crossing
	// the high mark evicts least recently used content down to the low.
	HighWatermark int `yaml:"high_watermark"`
	LowWatermark  int `yaml:"low_watermark"`
	// ScrubRate is how many bytes per second the background scrub hashes
	// of the blobs not verified since start, so that their first pull
	// does not pay for it; 0 turns the scrub off (first opens still hash).
	ScrubRate Size `yaml:"scrub_rate"`
	// MemorySize bounds the memory that holds the tag records, manifest
	// records and manifests used most recently, so that a warm manifest
	// costs no file reads; 0 turns it off.
	MemorySize Size `yaml:"memory_size"`
}

// Storage is an object store that every replica of a fleet shares, in the
// shape of distribution's storage block so that a distribution user can
// copy theirs. Verified content is written to it once cached, and content
// the local cache lacks is read from it before any upstream is asked.
type Storage struct {
	// One of S3, GCS and Azure. gcs and azure are compiled in but untested
	// here; s3 is tested against MinIO.
	S3    *S3    `yaml:"s3"`
	GCS   *GCS   `yaml:"gcs"`
	Azure *Azure `yaml:"azure"`
	// Redirect answers a blob GET the local cache lacks, but the object
	// store has, with a redirect to a presigned URL, as distribution does:
	// the bytes then flow from the store to the client directly.
	Redirect bool `yaml:"redirect"`
	// MaxSize bounds the object store's blobs fleet-wide: past it, the
	// least recently used (by any replica) are evicted down to 90%, by
	// one replica at a time. 0: never evicted. Needs redis.addr, where
	// the fleet keeps the times of use.
	MaxSize Size `yaml:"max_size"`
}

// Redis is the server a fleet's replicas coordinate through: a lease per
// blob fetch, so that one replica fetches from the upstream and the others
// stream from it.
type Redis struct {
	// Addr is host:port; empty: no fleet.
	Addr         string `yaml:"addr"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	DB           int    `yaml:"db"`
	// TLS speaks TLS to Redis, verified against the system's CAs or
	// CAFile.
	TLS    bool   `yaml:"tls"`
	CAFile string `yaml:"ca_file"`
}

// Cluster is how the replicas of a fleet reach each other.
type Cluster struct {
	// Advertise is the URL other replicas reach this one at, e.g. the
	// pod's http://$(POD_IP):5000; --advertise on the command line.
	Advertise string `yaml:"advertise"`
	// SecretFile holds the secret the replicas share; only a request
	// with it gets an answer from the peer endpoint.
	SecretFile string `yaml:"secret_file"`
	// CAFile verifies the other replicas' certificates when Advertise is
	// https (PEM); unset, the system's CAs do.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the other replicas' certificates are
	// verified for, instead of the host of their advertised URL: a pod's
	// IP is rarely in its certificate, a shared name (the headless
	// Service's, say) can be in every replica's.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are the client certificate a replica shows
	// the others, which tls.client_ca_file (mutual TLS) requires of every
	// client. Read at each new connection, so a rotated pair is taken.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

func (c *Config) fleetProblems() problems {
	var ps problems
	r, cl := c.Redis, c.Cluster
	switch {
	case c.Storage.MaxSize < 0:
		ps.add("storage.max_size", "%d: want 0 (no bound) or more", c.Storage.MaxSize)
	case c.Storage.MaxSize > 0 && len(c.Storage.stores()) == 0:
		ps.add("storage.max_size", "needs an object store (storage.s3, storage.gcs or storage.azure)")
	case c.Storage.MaxSize > 0 && r.Addr == "":
		ps.add("storage.max_size", "needs redis.addr: the fleet keeps the times of use there")
	}
	if r.Addr == "" {
		if cl.Advertise != "" || cl.SecretFile != "" {
			ps.add("redis.addr", "required with cluster.advertise or cluster.secret_file: the replicas coordinate through Redis")
		}
		return ps
	}
	if _, _, err := net.SplitHostPort(r.Addr); err != nil {
		ps.add("redis.addr", "%q is not host:port: %v", r.Addr, err)
	}
	if r.Password != "" && r.PasswordFile != "" {
		ps.add("redis.password_file", "set password or password_file, not both")
	}
	if r.DB < 0 {
		ps.add("redis.db", "%d: want 0 or more", r.DB)
	}
	if r.CAFile != "" && !r.TLS {
		ps.add("redis.ca_file", "needs redis.tls: true")
	}
	// An empty advertise may come from serve's --advertise, which serve
	// checks.
	if u, err := url.Parse(cl.Advertise); cl.Advertise != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/")) {
		ps.add("cluster.advertise", "%q: want http(s)://host:port", cl.Advertise)
	}
	if cl.SecretFile == "" {
		ps.add("cluster.secret_file", "required with redis.addr: the secret the replicas share")
	}
	if (cl.CertFile == "") != (cl.KeyFile == "") {
		ps.add("cluster.cert_file", "cluster.cert_file and cluster.key_file come together")
	}
	if c.TLS.ClientCAFile != "" && cl.CertFile == "" {
		ps.add("cluster.cert_file", "required with tls.client_ca_file: every client, the other replicas too, must show a certificate")
	}
	return ps
}

// S3 are the parameters of distribution's s3 storage driver, by its names.
type S3 struct {
	Bucket string `yaml:"bucket"`
	Region string `yaml:"region"`
	// RegionEndpoint is the endpoint of an S3-compatible server (MinIO,
	// Ceph, R2): https://minio.example:9000.
	RegionEndpoint string `yaml:"regionendpoint"`
	// AccessKey and SecretKey; without them the AWS default chain applies
	// (AWS_ACCESS_KEY_ID, a web identity, the instance's role).
	AccessKey string `yaml:"accesskey"`
	SecretKey string `yaml:"secretkey"`
	// SecretKeyFile is read at start and at each reload instead of
	// SecretKey, so that the key stays out of the configuration file.
	SecretKeyFile string `yaml:"secretkey_file"`
	// Secure is HTTPS towards the endpoint (default true).
	Secure         *bool  `yaml:"secure"`
	SkipVerify     bool   `yaml:"skipverify"`
	ForcePathStyle bool   `yaml:"forcepathstyle"`
	RootDirectory  string `yaml:"rootdirectory"`
	StorageClass   string `yaml:"storageclass"`
	Encrypt        bool   `yaml:"encrypt"`
	KeyID          string `yaml:"keyid"`
	ChunkSize      Size   `yaml:"chunksize"`
}

// DriverParameters are the s3 block as distribution's driver takes them.
func (s S3) DriverParameters() (map[string]any, error) {
	p := map[string]any{
		"bucket":         s.Bucket,
		"region":         s.Region,
		"forcepathstyle": s.ForcePathStyle,
		"skipverify":     s.SkipVerify,
		"encrypt":        s.Encrypt,
		"secure":         s.Secure == nil || *s.Secure,
	}
	for k, v := range map[string]string{"regionendpoint": s.RegionEndpoint, "accesskey": s.AccessKey,
		"secretkey": s.SecretKey, "rootdirectory": s.RootDirectory, "storageclass": s.StorageClass, "keyid": s.KeyID} {
		if v != "" {
			p[k] = v
		}
	}
	if s.SecretKeyFile != "" {
		key, err := readSecretFile(s.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.s3.secretkey_file: %w", err)
		}
		p["secretkey"] = key
	}
	if s.ChunkSize > 0 {
		p["chunksize"] = int64(s.ChunkSize)
	}
	return p, nil
}

// GCS are the parameters of distribution's gcs storage driver, by its
// names. Its inline credentials (a service account's key in the
// configuration) are not taken: keyfile keeps the key out of the file.
type GCS struct {
	Bucket string `yaml:"bucket"`
	// KeyFile is a service account's JSON key, which the driver reads at
	// start; without it Google's default credentials apply
	// (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the instance's
	// service account).
	KeyFile       string `yaml:"keyfile"`
	RootDirectory string `yaml:"rootdirectory"`
	// ChunkSize is the size of each part of an upload, a multiple of
	// 256 KiB (the driver's default: 16 MiB).
	ChunkSize Size   `yaml:"chunksize"`
	UserAgent string `yaml:"useragent"`
	// MaxConcurrency caps the driver's calls to GCS in flight (the
	// driver's default: 50; it raises one below 25 to 25).
	MaxConcurrency int `yaml:"maxconcurrency"`
}

// DriverParameters are the gcs block as distribution's driver takes them.
func (g GCS) DriverParameters() (map[string]any, error) {
	p := map[string]any{"bucket": g.Bucket}
	for k, v := range map[string]string{"keyfile": g.KeyFile, "rootdirectory": g.RootDirectory, "useragent": g.UserAgent} {
		if v != "" {
			p[k] = v
		}
	}
	// The driver reads the key file itself; checked here so that a
	// missing one is named by its key.
	if g.KeyFile != "" {
		if _, err := os.Stat(g.KeyFile); err != nil {
			return nil, fmt.Errorf("storage.gcs.keyfile: %w", err)
		}
	}
	if g.ChunkSize > 0 {
		p["chunksize"] = int64(g.ChunkSize)
	}
	if g.MaxConcurrency > 0 {
		p["maxconcurrency"] = int64(g.MaxConcurrency)
	}
	return p, nil
}

// Azure are the parameters of distribution's azure storage driver, by its
// names. Its connectionstring is not taken: the driver reads it but does
// not use it.
type Azure struct {
	AccountName string `yaml:"accountname"`
	// AccountKey is the account's shared key, for credentials.type
	// shared_key; AccountKeyFile is read at start instead, so that the key
	// stays out of the configuration file.
	AccountKey     string `yaml:"accountkey"`
	AccountKeyFile string `yaml:"accountkey_file"`
	Container      string `yaml:"container"`
	// Realm is the domain of the account's endpoint (the driver's default:
	// core.windows.net); ServiceURL replaces the endpoint whole
	// (https://<accountname>.blob.<realm>).
	Realm         string           `yaml:"realm"`
	ServiceURL    string           `yaml:"serviceurl"`
	RootDirectory string           `yaml:"rootdirectory"`
	Credentials   AzureCredentials `yaml:"credentials"`
	// MaxRetries is how often the driver polls a copy still under way
	// (a move) before it gives up (0: the driver's 5); RetryDelay the wait
	// between polls, growing linearly (0: the driver's 100ms).
	MaxRetries int      `yaml:"max_retries"`
	RetryDelay Duration `yaml:"retry_delay"`
	SkipVerify bool     `yaml:"skipverify"`
}

// AzureCredentials is how the azure driver authenticates: type shared_key
// (the account's key), client_secret (an app registration's) or
// default_credentials (Azure's default chain: environment, workload
// identity, managed identity).
type AzureCredentials struct {
	Type     string `yaml:"type"`
	ClientID string `yaml:"clientid"`
	TenantID string `yaml:"tenantid"`
	Secret   string `yaml:"secret"`
	// SecretFile is read at start instead of Secret, so that the secret
	// stays out of the configuration file.
	SecretFile string `yaml:"secret_file"`
}

// The azure driver's credentials types.
const (
	azureSharedKey    = "shared_key"
	azureClientSecret = "client_secret"
	azureDefault      = "default_credentials"
)

// DriverParameters are the azure block as distribution's driver takes
// them, with the files accountkey_file and credentials.secret_file name
// read in.
func (a Azure) DriverParameters() (map[string]any, error) {
	creds := map[string]any{"type": a.Credentials.Type}
	for k, v := range map[string]string{"clientid": a.Credentials.ClientID, "tenantid": a.Credentials.TenantID, "secret": a.Credentials.Secret} {
		if v != "" {
			creds[k] = v
		}
	}
	if a.Credentials.SecretFile != "" {
		secret, err := readSecretFile(a.Credentials.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("storage.azure.credentials.secret_file: %w", err)
		}
		creds["secret"] = secret
	}
	p := map[string]any{
		"accountname": a.AccountName,
		"container":   a.Container,
		"credentials": creds,
		"skipverify":  a.SkipVerify,
	}
	// Only what is set: an empty realm given to the driver would replace
	// its default.
	for k, v := range map[string]string{"accountkey": a.AccountKey, "realm": a.Realm, "serviceurl": a.ServiceURL, "rootdirectory": a.RootDirectory} {
		if v != "" {
			p[k] = v
		}
	}
	if a.AccountKeyFile != "" {
		key, err := readSecretFile(a.AccountKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.azure.accountkey_file: %w", err)
		}
		p["accountkey"] = key
	}
	if a.MaxRetries > 0 {
		p["max_retries"] = a.MaxRetries
	}
	if a.RetryDelay > 0 {
		p["retry_delay"] = a.RetryDelay.D().String()
	}
	return p, nil
}

// readSecretFile is a secret kept in a file, without the newline an
// editor or kubectl leaves at its end.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Driver is the object store the block configures, as distribution's
// driver factory takes it: the driver's name and its parameters, with the
// secrets the *_file keys name read in. The name is "" when no store is
// configured.
func (s Storage) Driver() (name string, params map[string]any, err error) {
	if set := s.stores(); len(set) > 1 {
		return "", nil, fmt.Errorf("storage: %s are set: one object store at most", strings.Join(set, " and "))
	}
	name = s.Kind()
	switch name {
	case "s3":
		params, err = s.S3.DriverParameters()
	case "gcs":
		params, err = s.GCS.DriverParameters()
	case "azure":
		params, err = s.Azure.DriverParameters()
	default:
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	return name, params, nil
}

// Kind is the driver the block configures, "s3", "gcs" or "azure", ""
// for none (or more than one, which validation refuses).
func (s Storage) Kind() string {
	if len(s.stores()) != 1 {
		return ""
	}
	switch {
	case s.S3 != nil:
		return "s3"
	case s.GCS != nil:
		return "gcs"
	}
	return "azure"
}

// stores names the object stores the block sets, by their keys.
func (s Storage) stores() []string {
	var set []string
	for _, st := range []struct {
		key string
		on  bool
	}{{"storage.s3", s.S3 != nil}, {"storage.gcs", s.GCS != nil}, {"storage.azure", s.Azure != nil}} {
		if st.on {
			set = append(set, st.key)
		}
	}
	return set
}

func (s Storage) problems() problems {
	var ps problems
	switch set := s.stores(); {
	case len(set) > 1:
		ps.add("storage", "%s are set: set one of storage.s3, storage.gcs and storage.azure, the one object store the replicas share", strings.Join(set, " and "))
	case len(set) == 0 && s.Redirect:
		ps.add("storage.redirect", "needs an object store (storage.s3, storage.gcs or storage.azure)")
	}
	if s.GCS != nil {
		ps = append(ps, s.GCS.problems()...)
	}
	if s.Azure != nil {
		ps = append(ps, s.Azure.problems()...)
	}
	if s.S3 == nil {
		return ps
	}
	c := s.S3
	if c.Bucket == "" {
		ps.add("storage.s3.bucket", "required")
	}
	if c.Region == "" && c.RegionEndpoint == "" {
		ps.add("storage.s3.region", "required (or storage.s3.regionendpoint for an S3-compatible server)")
	}
	if c.RegionEndpoint != "" {
		if u, err := url.Parse(c.RegionEndpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("storage.s3.regionendpoint", "%q: want http(s)://host[:port]", c.RegionEndpoint)
		}
	}
	if c.SecretKey != "" && c.SecretKeyFile != "" {
		ps.add("storage.s3.secretkey_file", "set secretkey or secretkey_file, not both")
	}
	if (c.AccessKey == "") != (c.SecretKey == "" && c.SecretKeyFile == "") {
		ps.add("storage.s3.accesskey", "accesskey and secretkey (or secretkey_file) come together; leave both unset for the AWS default credentials")
	}
	if c.ChunkSize != 0 && c.ChunkSize < 5<<20 {
		ps.add("storage.s3.chunksize", "%d: S3 parts are at least 5 MiB", c.ChunkSize)
	}
	return ps
}

// gcsChunk is the unit of a GCS resumable upload: every part but the last
// is a multiple of it.
const gcsChunk = 256 << 10

func (g GCS) problems() problems {
	var ps problems
	if g.Bucket == "" {
		ps.add("storage.gcs.bucket", "required")
	}
	if g.ChunkSize != 0 && (g.ChunkSize < gcsChunk || g.ChunkSize%gcsChunk != 0) {
		ps.add("storage.gcs.chunksize", "%d: want a multiple of 256 KiB (GCS's upload unit)", g.ChunkSize)
	}
	if g.MaxConcurrency < 0 {
		ps.add("storage.gcs.maxconcurrency", "%d: must not be negative", g.MaxConcurrency)
	}
	return ps
}

func (a Azure) problems() problems {
	var ps problems
	if a.AccountName == "" {
		ps.add("storage.azure.accountname", "required")
	}
	if a.Container == "" {
		ps.add("storage.azure.container", "required")
	}
	if a.ServiceURL != "" {
		if u, err := url.Parse(a.ServiceURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("storage.azure.serviceurl", "%q: want http(s)://host[:port]", a.ServiceURL)
		}
	}
	// The driver takes max_retries -1 as: give up on a copy still under
	// way and report the move done, which would leave a blob that is not
	// in place, or not whole.
	if a.MaxRetries < 0 {
		ps.add("storage.azure.max_retries", "%d: want 0 or more (0: the driver's 5)", a.MaxRetries)
	}
	if a.AccountKey != "" && a.AccountKeyFile != "" {
		ps.add("storage.azure.accountkey_file", "set accountkey or accountkey_file, not both")
	}
	c := a.Credentials
	if c.Secret != "" && c.SecretFile != "" {
		ps.add("storage.azure.credentials.secret_file", "set secret or secret_file, not both")
	}
	hasKey := a.AccountKey != "" || a.AccountKeyFile != ""
	hasClient := c.ClientID != "" || c.TenantID != "" || c.Secret != "" || c.SecretFile != ""
	switch c.Type {
	case "":
		ps.add("storage.azure.credentials.type", "required: %s, %s or %s", azureSharedKey, azureClientSecret, azureDefault)
	case azureSharedKey:
		if !hasKey {
			ps.add("storage.azure.accountkey", "required with credentials.type %s (or accountkey_file)", azureSharedKey)
		}
	case azureClientSecret:
		if c.ClientID == "" {
			ps.add("storage.azure.credentials.clientid", "required with credentials.type %s", azureClientSecret)
		}
		if c.TenantID == "" {
			ps.add("storage.azure.credentials.tenantid", "required with credentials.type %s", azureClientSecret)
		}
		if c.Secret == "" && c.SecretFile == "" {
			ps.add("storage.azure.credentials.secret", "required with credentials.type %s (or secret_file)", azureClientSecret)
		}
	case azureDefault:
	default:
		ps.add("storage.azure.credentials.type", "%q is not one of %s, %s, %s", c.Type, azureSharedKey, azureClientSecret, azureDefault)
	}
	// What the driver would ignore is refused, so that nobody believes a
	// key is in use that is not.
	if hasKey && c.Type != azureSharedKey && c.Type != "" {
		ps.add("storage.azure.accountkey", "only with credentials.type %s: %s does not use it", azureSharedKey, c.Type)
	}
	if hasClient && c.Type != azureClientSecret && c.Type != "" {
		ps.add("storage.azure.credentials", "clientid, tenantid and secret are only for type %s: %s does not use them", azureClientSecret, c.Type)
	}
	return ps
}

// Size is a byte count written as "200GiB", "512MiB", "10GB" or "1024".
type Size int64

func (z *Size) setScalar(s string) error {
	v, err := ParseSize(s)
	if err != nil {
		return err
	}
	*z = Size(v)
	return nil
}

// ParseSize reads a byte count with an optional unit: B, KB, MB, GB, TB
// (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	mult := map[string]float64{
		"": 1, "B": 1,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
	}[unit]
	f, err := strconv.ParseFloat(num, 64)
	if num == "" || err != nil || mult == 0 || f < 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 200GiB, 512MiB, 10GB)", s)
	}
	return int64(f * mult), nil
}

// Upstream is one registry Breakwater pulls from.
type Upstream struct {
	// URL is the registry's base URL, scheme and host only.
	URL          string `yaml:"url"`
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// DockerConfig takes credentials from the Docker config file
	// ($DOCKER_CONFIG/config.json) for this upstream's host.
	DockerConfig bool `yaml:"docker_config"`
	// CredentialHelper names a docker credential helper:
	// docker-credential-CredentialHelper on the PATH is asked for this
	// upstream's credentials, and asked again every 30 s, so that
	// short-lived tokens (ECR's ecr-login, GAR's gcloud) are refreshed.
	CredentialHelper string `yaml:"credential_helper"`
	// Resilience is this upstream's resilience when its block in the file
	// sets any of its keys: the global block with those keys decoded over
	// it. nil: the global block applies. Read it with Config.ResilienceFor.
	Resilience *Resilience `yaml:"resilience,inherit=resilience"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as "30s", "5m", "1h30m".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) setScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 30s, 5m, 1h)", s)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: negative", s)
	}
	*d = Duration(v)
	return nil
}

// Default returns the configuration Breakwater runs with when given no file;
// the bundled config.yaml says the same.
func Default() Config {
	return Config{
		Listen:       ":5000",
		DrainTimeout: Duration(30 * time.Second),
		Cache: Cache{
			Dir:               "./data",
			TagTTL:            Duration(5 * time.Minute),
			RevalidateTimeout: Duration(3 * time.Second),
			MaxBlobSize:       Size(64 << 30),
			MaxStale:          Duration(7 * 24 * time.Hour),
			HighWatermark:     90,
			LowWatermark:      80,
			ScrubRate:         50 << 20,
			MemorySize:        32 << 20,
		},
		Admission:       Admission{Timeout: Duration(8 * time.Second), CacheTTL: Duration(30 * time.Second)},
		DefaultUpstream: "docker.io",
		Upstreams: map[string]Upstream{
			"docker.io":       {URL: "https://registry-1.docker.io"},
			"ghcr.io":         {URL: "https://ghcr.io"},
			"quay.io":         {URL: "https://quay.io"},
			"registry.k8s.io": {URL: "https://registry.k8s.io"},
		},
		Resilience: Resilience{
			Retry: Retry{
				Attempts:       0,
				BaseDelay:      Duration(200 * time.Millisecond),
				MaxDelay:       Duration(2 * time.Second),
				Deadline:       Duration(20 * time.Second),
				AttemptTimeout: Duration(10 * time.Second),
				MaxRetryAfter:  Duration(time.Hour),
			},
			Breaker: Breaker{
				Window:         Duration(30 * time.Second),
				MinRequests:    5,
				FailurePercent: 50,
				OpenMin:        Duration(time.Second),
				OpenMax:        Duration(4 * time.Second),
			},
			MaxConcurrent:    64,
			RateLimitReserve: 10,
		},
		Auth: Auth{Realm: access.DefaultRealm},
		Log:  Log{Level: "info", Format: "json"},
	}
}

// Load reads a configuration file over the defaults and validates it.
// Keys absent from the file keep their default; a file that sets upstreams
// replaces the default upstream list whole. Unlike Parse it also reads the
// files the configuration names and checks them against it: the htpasswd
// file (its errors with its path and line) and the users the auth block
// names.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, lines, err := parse(b)
	if err == nil {
		err = cfg.checkFiles(lines)
	}
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over the defaults and validates the result. It reads
// no other file.
func Parse(b []byte) (Config, error) {
	cfg, _, err := parse(b)
	return cfg, err
}

func parse(b []byte) (Config, map[string]int, error) {
	cfg := Default()
	var lines map[string]int
	if len(bytes.TrimSpace(b)) > 0 {
		var err error
		if lines, err = decodeStrict(b, &cfg); err != nil {
			return Config{}, nil, err
		}
	}
	if err := cfg.validate(lines); err != nil {
		return Config{}, nil, err
	}
	return cfg, lines, nil
}

// checkFiles reads the htpasswd file, if any, as Breakwater will, and
// checks the users the auth block names against it.
func (c *Config) checkFiles(lines map[string]int) error {
	if c.Auth.Htpasswd == "" {
		return nil
	}
	var ps problems
	if _, err := access.New(c.Auth.AccessConfig()); err != nil {
		ps.addAccess(err)
	}
	return ps.err(lines)
}

// addAccess adds the access package's FieldErrors, named under auth.
func (ps *problems) addAccess(err error) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else if err != nil {
		errs = []error{err}
	}
	for _, e := range errs {
		var fe *access.FieldError
		if errors.As(e, &fe) {
			ps.add("auth."+fe.Field, "%v", fe.Err)
		} else {
			ps.add("auth", "%v", e)
		}
	}
}

// hostRE matches a registry host as clients name it: a DNS name or IPv4
// address with an optional port, or "localhost".
// helperRE is a credential helper's name: what follows docker-credential-.
var helperRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)

var hostRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$`)

// problem is what is wrong with one field, named by its dotted path.
type problem struct {
	path, msg string
}

// problems collects what is wrong, field by field.
type problems []problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, problem{path, fmt.Sprintf(format, args...)})
}

// Validate checks every field and names each one that is wrong.
func (c *Config) Validate() error {
	return c.validate(nil)
}

// validate is Validate with the line of each key the file has (from the
// decoder), so that an error points into the file where it can.
func (c *Config) validate(lines map[string]int) error {
	return c.problems(lines).err(lines)
}

// err is the problems as one error, each with its line where the file has
// the key.
func (ps problems) err(lines map[string]int) error {
	var errs []error
	for _, p := range ps {
		if l, ok := lines[p.path]; ok {
			errs = append(errs, fmt.Errorf("line %d: %s: %s", l, p.path, p.msg))
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", p.path, p.msg))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) problems(lines map[string]int) problems {
	var ps problems
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		ps.add("listen", "%q is not host:port: %v", c.Listen, err)
	}
	ps = append(ps, c.TLS.problems()...)
	ps = append(ps, c.Admission.problems(c.TLS)...)
	ps = append(ps, c.Storage.problems()...)
	ps = append(ps, c.fleetProblems()...)
	if c.Cache.Dir == "" {
		ps.add("cache.dir", "must not be empty")
	}
	if c.Cache.HighWatermark < 1 || c.Cache.HighWatermark > 100 {
		ps.add("cache.high_watermark", "%d: want a percentage of max_size, 1 to 100", c.Cache.HighWatermark)
	}
	if c.Cache.LowWatermark < 0 || c.Cache.LowWatermark >= c.Cache.HighWatermark {
		ps.add("cache.low_watermark", "%d: want a percentage below high_watermark (%d)", c.Cache.LowWatermark, c.Cache.HighWatermark)
	}
	if c.DrainTimeout <= 0 {
		ps.add("drain_timeout", "must be positive (e.g. 30s)")
	}
	if c.Cache.RevalidateTimeout <= 0 {
		ps.add("cache.revalidate_timeout", "must be positive")
	}
	if c.Cache.MaxBlobSize <= 0 {
		ps.add("cache.max_blob_size", "must be positive (e.g. 64GiB)")
	}
	if len(c.Upstreams) == 0 {
		ps.add("upstreams", "at least one upstream is required")
	}
	names := make([]string, 0, len(c.Upstreams))
	for name := range c.Upstreams {
		names = append(names, name)
	}
	sort.Strings(names)
	global := c.Resilience.problems()
	inherited := map[problem]bool{}
	for _, p := range global {
		inherited[p] = true
	}
	for _, name := range names {
		u := c.Upstreams[name]
		field := "upstreams." + name
		if !hostRE.MatchString(name) {
			ps.add(field, "%q is not a registry host name (like docker.io or registry.example.com:5000)", name)
		}
		if err := checkUpstreamURL(u.URL); err != nil {
			ps.add(field+".url", "%v", err)
		}
		if u.Password != "" && u.PasswordFile != "" {
			ps.add(field, "password and password_file are mutually exclusive")
		}
		if (u.Password != "" || u.PasswordFile != "") && u.Username == "" {
			ps.add(field+".username", "required with a password")
		}
		if u.DockerConfig && u.Username != "" {
			ps.add(field, "docker_config and username are mutually exclusive")
		}
		if u.CredentialHelper != "" {
			if !helperRE.MatchString(u.CredentialHelper) {
				ps.add(field+".credential_helper", "%q: want a helper's name, the NAME of docker-credential-NAME (e.g. ecr-login)", u.CredentialHelper)
			}
			if u.Username != "" || u.DockerConfig {
				ps.add(field, "credential_helper, username and docker_config are mutually exclusive")
			}
		}
		if u.Resilience != nil {
			for _, p := range u.Resilience.problems() {
				path := field + ".resilience." + p.path
				// A wrong value the upstream inherits is reported once,
				// at the global key; here only if the file sets it here.
				if _, inFile := lines[path]; inherited[p] && !inFile {
					continue
				}
				ps.add(path, "%s", p.msg)
			}
		}
	}
	if _, ok := c.Upstreams[c.DefaultUpstream]; !ok && len(c.Upstreams) > 0 {
		ps.add("default_upstream", "%q is not one of the upstreams (%s)", c.DefaultUpstream, strings.Join(names, ", "))
	}
	for _, p := range global {
		ps.add("resilience."+p.path, "%s", p.msg)
	}
	c.Auth.problems(&ps, c.Upstreams)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		ps.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		ps.add("log.format", "%q is not one of json, text", c.Log.Format)
	}
	return ps
}

// problems checks the tls block: the certificate and its key come
// together, and a client CA needs a TLS listener to ask for certificates.
func (t TLS) problems() problems {
	var ps problems
	if t.CertFile != "" && t.KeyFile == "" {
		ps.add("tls.key_file", "required with tls.cert_file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		ps.add("tls.cert_file", "required with tls.key_file")
	}
	if t.ClientCAFile != "" && (t.CertFile == "" || t.KeyFile == "") {
		ps.add("tls.client_ca_file", "requires tls.cert_file and tls.key_file (mutual TLS is TLS first)")
	}
	return ps
}

// problems checks the auth block as far as it can without the htpasswd
// file, and that every pattern names a configured upstream.
func (a Auth) problems(ps *problems, upstreams map[string]Upstream) {
	ps.addAccess(a.AccessConfig().Validate())
	names := make([]string, 0, len(upstreams))
	lower := map[string]bool{}
	for n := range upstreams {
		names = append(names, n)
		lower[strings.ToLower(n)] = true
	}
	sort.Strings(names)
	for i, e := range a.Access {
		for j, r := range e.Repositories {
			p, err := access.ParsePattern(r)
			if err == nil && p.Upstream != "" && !lower[p.Upstream] {
				ps.add(fmt.Sprintf("auth.access[%d].repositories[%d]", i, j), "%q: %s is not one of the upstreams (%s)", r, p.Upstream, strings.Join(names, ", "))
			}
		}
	}
}

// problems checks one resilience block; paths are relative to the block.
func (r Resilience) problems() problems {
	var ps problems
	if r.Retry.Attempts < 0 {
		ps.add("retry.attempts", "%d: must not be negative (0: as many as fit in deadline)", r.Retry.Attempts)
	}
	if r.Retry.BaseDelay <= 0 {
		ps.add("retry.base_delay", "must be positive")
	}
	if r.Retry.MaxDelay < r.Retry.BaseDelay {
		ps.add("retry.max_delay", "%s: must not be less than base_delay (%s)", r.Retry.MaxDelay.D(), r.Retry.BaseDelay.D())
	}
	if r.Retry.Deadline <= 0 {
		ps.add("retry.deadline", "must be positive")
	}
	if r.Retry.AttemptTimeout <= 0 {
		ps.add("retry.attempt_timeout", "must be positive")
	}
	if r.Retry.MaxRetryAfter <= 0 {
		ps.add("retry.max_retry_after", "must be positive")
	}
	if r.Breaker.Window <= 0 {
		ps.add("breaker.window", "must be positive")
	}
	if r.Breaker.MinRequests < 1 {
		ps.add("breaker.min_requests", "%d: must be at least 1", r.Breaker.MinRequests)
	}
	if r.Breaker.FailurePercent < 1 || r.Breaker.FailurePercent > 100 {
		ps.add("breaker.failure_percent", "%d: want a percentage, 1 to 100", r.Breaker.FailurePercent)
	}
	if r.Breaker.OpenMin <= 0 {
		ps.add("breaker.open_min", "must be positive")
	}
	if r.Breaker.OpenMax < r.Breaker.OpenMin {
		ps.add("breaker.open_max", "%s: must not be less than open_min (%s)", r.Breaker.OpenMax.D(), r.Breaker.OpenMin.D())
	}
	if r.MaxConcurrent < 0 {
		ps.add("max_concurrent", "%d: must not be negative", r.MaxConcurrent)
	}
	if r.RateLimitReserve < 0 {
		ps.add("rate_limit_reserve", "%d: must not be negative", r.RateLimitReserve)
	}
	return ps
}

// ResilienceFor returns the resilience settings in effect for the upstream
// host: its own block merged over the global one, or the global block for
// an upstream without one and for a host not configured. The merge happens
// when the file is decoded: changing c.Resilience afterwards reaches only
// the upstreams without a block of their own.
func (c *Config) ResilienceFor(host string) Resilience {
	if u, ok := c.Upstreams[host]; ok && u.Resilience != nil {
		return *u.Resilience
	}
	return c.Resilience
}

func checkUpstreamURL(raw string) error {
	if raw == "" {
		return errors.New("must not be empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host", raw)
	}
	if u.User != nil {
		return fmt.Errorf("%q: put credentials in username/password, not in the URL", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: must be scheme://host[:port] with no path, query or fragment", raw)
	}
	return nil
}

// SetUpstream applies a --upstream HOST=URL flag: it adds the upstream or
// replaces the URL of an existing one, keeping its credentials and its
// resilience block.
func (c *Config) SetUpstream(spec string) error {
	host, rawURL, ok := strings.Cut(spec, "=")
	if !ok || host == "" || rawURL == "" {
		return fmt.Errorf("--upstream %q: want HOST=URL, e.g. docker.io=http://127.0.0.1:5001", spec)
	}
	if !hostRE.MatchString(host) {
		return fmt.Errorf("--upstream %q: %q is not a registry host name", spec, host)
	}
	if err := checkUpstreamURL(rawURL); err != nil {
		return fmt.Errorf("--upstream %q: %w", spec, err)
	}
	if c.Upstreams == nil {
		c.Upstreams = map[string]Upstream{}
	}
	u := c.Upstreams[host]
	u.URL = strings.TrimSuffix(rawURL, "/")
	c.Upstreams[host] = u
	return nil
}
