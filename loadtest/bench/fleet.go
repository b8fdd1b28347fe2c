package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
	"github.com/redis/go-redis/v9"

	"github.com/breakwater-registry/breakwater/loadtest/internal/testimage"
)

// The fleet step (issue 12, "A fleet as one cache"): a herd on one cold
// image against one replica, against independent replicas each with its
// own cache, and against a fleet of replicas sharing a MinIO bucket and
// coordinating through redis-server; then a warm pull from the object
// store against one from a replica's local cache.

const (
	fleetBucket = "breakwater-bench"
	// fleetUpstream is the name every replica knows the upstream by
	// (--upstream docker.io=…): part of the fetch leases' keys.
	fleetUpstream = "docker.io"
	// leasePrefix is how a blob fetch's lease is keyed in Redis: coord's
	// default prefix and proxy's leaseKey, "bw:blob:<upstream>:<digest>".
	leasePrefix = "bw:blob:"
	// uploadWait bounds the wait for a fleet's owners to write an image to
	// the object store after a herd.
	uploadWait = 3 * time.Minute
)

// The Prometheus series the step reads from each replica's /metrics.
const (
	metricFollowed     = "breakwater_fleet_followed_total"
	metricAlone        = "breakwater_fleet_alone_total"
	metricPeerBytes    = "breakwater_fleet_peer_fetched_bytes_total"
	metricUploads      = "breakwater_shared_uploads_total"
	metricSharedBytes  = "breakwater_shared_fetched_bytes_total"
	metricSharedErrors = "breakwater_shared_errors_total"
)

// fleetInfra is what a fleet runs on: MinIO with one bucket, redis-server,
// the replicas' shared secret, and the configuration file of a fleet
// replica.
type fleetInfra struct {
	minio, redis *proc
	rdb          *redis.Client
	config       string // path of a fleet replica's configuration file
}

// fleetTarget is one of the step's targets: some replicas and the clients
// spread over them (client i pulls from replica i % len(replicas)).
type fleetTarget struct {
	key      string
	replicas []*proc
	clients  int
}

func (t *fleetTarget) bases() []string {
	out := make([]string, len(t.replicas))
	for i, p := range t.replicas {
		out[i] = "http://" + p.addr
	}
	return out
}

// fleetStep: -herd-reps times, each target pulls a fresh cold image with a
// herd; after the fleet's herd, a replica that joins with an empty cache
// pulls the same image from the object store, then again from its own
// cache.
func (b *bench) fleetStep(ctx context.Context) error {
	n, per := b.s.FleetReplicas, b.s.FleetClients
	if n < 2 || per < 1 {
		return fmt.Errorf("-fleet-replicas %d, -fleet-clients %d: want at least 2 replicas and 1 client", n, per)
	}
	in, err := b.startFleetInfra(ctx)
	if err != nil {
		return err
	}
	defer in.close()

	var started []*proc
	defer func() {
		for _, p := range started {
			p.stop()
		}
	}()
	replica := func(name, config string) (*proc, error) {
		p, err := b.startReplica(name, config)
		if err == nil {
			started = append(started, p)
		}
		return p, err
	}
	one, err := replica("fleet-one", "")
	if err != nil {
		return err
	}
	var indep, fleet []*proc
	for i := range n {
		p, err := replica(fmt.Sprintf("fleet-independent-%d", i), "")
		if err != nil {
			return err
		}
		indep = append(indep, p)
	}
	for i := range n {
		p, err := replica(fmt.Sprintf("fleet-%d", i), in.config)
		if err != nil {
			return err
		}
		fleet = append(fleet, p)
	}
	logf("fleet: one replica at %s; %d independent replicas; a fleet of %d on MinIO %s and redis-server %s", one.addr, n, n, in.minio.addr, in.redis.addr)

	targets := []*fleetTarget{
		{key: "one", replicas: []*proc{one}, clients: per},
		{key: "one_all", replicas: []*proc{one}, clients: n * per},
		{key: "independent", replicas: indep, clients: n * per},
		{key: "fleet", replicas: fleet, clients: n * per},
	}
	reps := max(b.s.HerdReps, 1)
	b.res.note("fleet", fmt.Sprintf("each target a fresh cold %d × %s image per herd, %d blobs at once per client, %d herds per target; "+
		"replicas are Breakwater serve --tag-ttl %s with empty caches; the independent replicas have filesystem caches only, "+
		"the fleet's share a MinIO bucket (storage.s3) and coordinate through redis-server (redis.addr, cluster.advertise, cluster.secret_file); "+
		"MinIO, Redis, the upstream, every replica and the harness share this machine's cores",
		b.s.Layers, mib(b.s.LayerSize), b.s.HerdParallel, reps, b.s.TagTTL))
	b.res.note("fleet_peer", "the fleet's blob GETs split by the replica the client asked: the one whose lease Redis names for the blob "+
		"(it fetched from the upstream) or another (it streamed the blob from that one); added = other − owner, per herd")
	b.res.note("fleet_warm", "1 client, one blob after the other, every byte hashed; s3: a replica that joins the fleet with an empty cache "+
		"after the herd, so every blob comes from MinIO through it; fs: the same replica again, now from its own cache; "+
		"upstream: the same replica, a fresh image that only the upstream has (a cold pull, for comparison)")
	for r := range reps {
		k := b.scenario % len(targets)
		b.scenario++
		for _, t := range append(append([]*fleetTarget(nil), targets[k:]...), targets[:k]...) {
			if err := b.fleetHerd(ctx, in, t, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// fleetHerd is one target's herd on a fresh image.
func (b *bench) fleetHerd(ctx context.Context, in *fleetInfra, t *fleetTarget, rep int) error {
	img, err := b.push(fmt.Sprintf("bench/fleet-%s-%d", strings.ReplaceAll(t.key, "_", "-"), rep), repeat(b.s.Layers, b.s.LayerSize)...)
	if err != nil {
		return err
	}
	before, err := scrapeAll(t.replicas)
	if err != nil {
		return err
	}
	// Each herd's peak resident set is its own (as memStep does per step).
	for _, p := range t.replicas {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0)
	}
	off := b.upLog.size()
	cr := b.crowdAt(ctx, t.bases(), img, t.clients, b.s.HerdParallel)
	time.Sleep(300 * time.Millisecond) // the access log line follows the response
	up, err := b.upLog.count(off, img.Repo)
	if err != nil {
		return err
	}
	b.recordCrowd("fleet", &target{Name: t.key}, img, cr, up)
	b.res.add("fleet", t.key, "upstream_blob_heads", float64(up.BlobHEADs))
	b.res.add("fleet", t.key, "upstream_manifest_gets", float64(up.ManifestGETs))
	b.res.add("fleet", t.key, "upstream_manifest_heads", float64(up.ManifestHEADs))
	var peak int64
	for _, p := range t.replicas {
		if m, err := p.mem(); err == nil {
			peak = max(peak, m.HWMKiB)
		}
	}
	b.res.add("fleet", t.key, "rss_peak_mib", float64(peak)/1024)
	if t.key != "fleet" {
		return nil
	}

	owners, err := in.owners(ctx, img)
	if err != nil {
		return err
	}
	split := splitByOwner(cr.pulls, t.bases(), owners)
	for k, v := range split.figures() {
		side, key, _ := strings.Cut(k, ":")
		b.res.add("fleet_peer", side, key, v)
	}
	after, err := scrapeAll(t.replicas)
	if err != nil {
		return err
	}
	delta := func(name, with string) float64 { return metricSum(after, name, with) - metricSum(before, name, with) }
	// Tags followed are counted in the same series, as what="tag".
	tagsFollowed := delta(metricFollowed, tagLabel)
	blobsFollowed := delta(metricFollowed, "") - tagsFollowed
	b.res.add("fleet", t.key, "followed", blobsFollowed)
	b.res.add("fleet", t.key, "tags_followed", tagsFollowed)
	b.res.add("fleet", t.key, "alone", delta(metricAlone, ""))
	b.res.add("fleet", t.key, "peer_ratio", delta(metricPeerBytes, "")/float64(img.Size))
	b.res.add("fleet", t.key, "store_ratio", delta(metricSharedBytes, "")/float64(img.Size))
	b.res.add("fleet", t.key, "shared_errors", delta(metricSharedErrors, ""))
	logf("fleet %-12s owner clients' first byte arrival p50 %.2f ms p99 %.2f ms, other replicas' %.2f / %.2f ms (%d / %d GETs, %d of unknown owner); "+
		"blob fetches followed %.0f, alone %.0f; bytes from peers %.2f × image, from the store %.2f × image",
		t.key, split.value("owner", "arrival_ttfb_p50_ms"), split.value("owner", "arrival_ttfb_p99_ms"),
		split.value("follower", "arrival_ttfb_p50_ms"), split.value("follower", "arrival_ttfb_p99_ms"),
		len(split.owner), len(split.follower), split.unknown, blobsFollowed, delta(metricAlone, ""),
		delta(metricPeerBytes, "")/float64(img.Size), delta(metricSharedBytes, "")/float64(img.Size))

	// The image reaches the object store after the herd, in the
	// background; wait for it, so that the uploads neither run into the
	// next target's herd nor leave the warm pull below without the store.
	t0 := time.Now()
	want := metricSum(before, metricUploads, "") + float64(len(img.Blobs))
	for {
		now, err := scrapeAll(t.replicas)
		if err != nil {
			return err
		}
		if metricSum(now, metricUploads, "") >= want {
			break
		}
		if time.Since(t0) > uploadWait {
			return fmt.Errorf("the fleet wrote %.0f of %d blobs to the object store within %s", metricSum(now, metricUploads, "")-metricSum(before, metricUploads, ""), len(img.Blobs), uploadWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.res.add("fleet", t.key, "store_upload_s", time.Since(t0).Seconds())
	logf("fleet %-12s the image was in the object store %.2f s after the herd", t.key, time.Since(t0).Seconds())
	// Its links follow each blob's upload.
	time.Sleep(500 * time.Millisecond)
	return b.fleetWarm(ctx, in, img, rep)
}

// fleetWarm: a replica joins the fleet with an empty cache and pulls img,
// which only the object store (and the other replicas) have, then pulls it
// again from its own cache; and, for comparison in the same run, pulls an
// image nobody has from the upstream (last: its upload to the store
// follows it, and the replica's stop waits for that).
func (b *bench) fleetWarm(ctx context.Context, in *fleetInfra, img *testimage.Pushed, rep int) error {
	cold, err := b.pushQuiet(fmt.Sprintf("bench/fleet-cold-%d", rep), repeat(b.s.Layers, b.s.LayerSize)...)
	if err != nil {
		return err
	}
	late, err := b.startReplica(fmt.Sprintf("fleet-late-%d", rep), in.config)
	if err != nil {
		return err
	}
	defer late.stop()
	base := "http://" + late.addr
	for _, phase := range []string{"s3", "fs", "upstream"} {
		img := img
		if phase == "upstream" {
			img = cold
		}
		before, err := scrape(base)
		if err != nil {
			return err
		}
		off := b.upLog.size()
		p := &puller{client: newClient(), base: base, parallel: 1, pipelined: true, timeout: pullTimeout}
		// The meter's "upstream" is MinIO here; the upstream's CPU is
		// not measured.
		cpu := newCPUMeter(in.minio, late)
		res, err := p.pull(ctx, img)
		_, storeCPU, serverCPU := cpu.used()
		p.client.CloseIdleConnections()
		if err != nil {
			b.res.fail("fleet_warm", phase, err)
			logf("fleet warm %-8s FAILED: %s", phase, shortErr(err))
			continue
		}
		time.Sleep(300 * time.Millisecond)
		up, err := b.upLog.count(off, img.Repo)
		if err != nil {
			return err
		}
		after, err := scrape(base)
		if err != nil {
			return err
		}
		var layerTTFB []time.Duration
		for _, bt := range res.Blobs[1:] {
			layerTTFB = append(layerTTFB, bt.TTFB)
		}
		mbps := float64(res.Bytes) / res.Duration.Seconds() / 1e6
		gb := float64(res.Bytes) / 1e9
		storeRatio := (metricSum(after, metricSharedBytes, "") - metricSum(before, metricSharedBytes, "")) / float64(img.Size)
		b.res.add("fleet_warm", phase, "mbps", mbps)
		b.res.add("fleet_warm", phase, "ttfb_ms", percentile(layerTTFB, 50))
		b.res.add("fleet_warm", phase, "seconds", res.Duration.Seconds())
		b.res.add("fleet_warm", phase, "server_cpu_ms_per_gb", ms(serverCPU)/gb)
		b.res.add("fleet_warm", phase, "store_cpu_ms_per_gb", ms(storeCPU)/gb)
		b.res.add("fleet_warm", phase, "store_ratio", storeRatio)
		b.res.add("fleet_warm", phase, "upstream_blob_gets", float64(up.BlobGETs))
		b.res.add("fleet_warm", phase, "upstream_manifest_gets", float64(up.ManifestGETs))
		logf("fleet warm %-8s %7.0f MB/s  layer first byte %6.2f ms  (%s in %s)  bytes from the store %.2f × image  upstream blob GETs %d  CPU ms/GB: replica %4.0f MinIO %4.0f",
			phase, mbps, percentile(layerTTFB, 50), mib(res.Bytes), res.Duration.Round(time.Millisecond), storeRatio, up.BlobGETs, ms(serverCPU)/gb, ms(storeCPU)/gb)
	}
	return nil
}

// startReplica starts a Breakwater replica with an empty cache, and, with
// config, the fleet's configuration and --advertise at its own address.
func (b *bench) startReplica(name, config string) (*proc, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--listen", addr, "--cache-dir", filepath.Join(b.work, name+"-cache"),
		"--upstream", fleetUpstream + "=http://" + b.upstream.addr, "--tag-ttl", b.s.TagTTL}
	if config != "" {
		args = append(args, "--config", config, "--advertise", "http://"+addr)
	}
	return b.startBreakwater(name, addr, args...)
}

// startFleetInfra starts MinIO and redis-server on free loopback ports,
// each from the project's script that installs it when missing, creates
// the bucket, and writes a fleet replica's configuration.
func (b *bench) startFleetInfra(ctx context.Context) (*fleetInfra, error) {
	minioBin, err := b.script("s3.sh")
	if err != nil {
		return nil, err
	}
	redisBin, err := b.script("redis.sh")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.work, "fleet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	in := &fleetInfra{}
	ok := false
	defer func() {
		if !ok {
			in.close()
		}
	}()

	accessKey, secretKey := "breakwater", rand.Text()
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	in.minio, err = startProc("minio", b.work, addr, httpReady("http://"+addr+"/minio/health/ready"),
		[]string{"HOME=" + dir, "MINIO_ROOT_USER=" + accessKey, "MINIO_ROOT_PASSWORD=" + secretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off"},
		minioBin, "server", "--quiet", "--address", addr, filepath.Join(dir, "minio-data"))
	if err != nil {
		return nil, err
	}
	endpoint := "http://" + addr
	if err := createBucket(ctx, endpoint, accessKey, secretKey, fleetBucket); err != nil {
		return nil, err
	}

	if addr, err = freePort(); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	in.rdb = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	ping := func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return in.rdb.Ping(ctx).Err()
	}
	in.redis, err = startProc("redis", b.work, addr, ping, nil, redisBin,
		"--port", port, "--bind", host, "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", "")
	if err != nil {
		return nil, err
	}

	secretFile, keyFile := filepath.Join(dir, "peer-secret"), filepath.Join(dir, "s3-secretkey")
	if err := os.WriteFile(secretFile, []byte(rand.Text()+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, []byte(secretKey+"\n"), 0o600); err != nil {
		return nil, err
	}
	in.config = filepath.Join(dir, "replica.yaml")
	cfg := fmt.Sprintf(`storage:
  s3:
    bucket: %s
    region: us-east-1
    regionendpoint: %s
    accesskey: %s
    secretkey_file: %s
    secure: false
    forcepathstyle: true
redis:
  addr: %s
cluster:
  secret_file: %s
`, fleetBucket, endpoint, accessKey, keyFile, in.redis.addr, secretFile)
	if err := os.WriteFile(in.config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf("fleet: MinIO at %s (pid %d, bucket %s), redis-server at %s (pid %d)", in.minio.addr, in.minio.cmd.Process.Pid, fleetBucket,
		in.redis.addr, in.redis.cmd.Process.Pid)
	ok = true
	return in, nil
}

func (in *fleetInfra) close() {
	if in.rdb != nil {
		in.rdb.Close()
	}
	for _, p := range []*proc{in.redis, in.minio} {
		if p != nil {
			p.stop()
		}
	}
}

// owners asks Redis which replica holds (or held, and has) each blob of
// img: a finished fetch's lease names its replica for 10 minutes.
func (in *fleetInfra) owners(ctx context.Context, img *testimage.Pushed) (map[string]string, error) {
	out := map[string]string{}
	for _, bl := range img.Blobs {
		v, err := in.rdb.Get(ctx, leasePrefix+fleetUpstream+":"+bl.Digest).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("redis: lease of %s: %w", bl.Digest, err)
		}
		if h := leaseHolder(v); h != "" {
			out[bl.Digest] = h
		}
	}
	return out, nil
}

// leaseHolder is the replica a lease's value "<token> <address>" names.
func leaseHolder(v string) string {
	_, addr, ok := strings.Cut(v, " ")
	if !ok {
		return ""
	}
	return strings.TrimSuffix(strings.TrimSpace(addr), "/")
}

// peerSplit is a fleet herd's blob GETs split by whether the replica the
// client asked held the blob's fetch (owner) or streamed it from the one
// that did (follower).
type peerSplit struct {
	owner, follower []blobTiming
	unknown         int // GETs of blobs whose owner Redis did not name
}

// splitByOwner splits pulls, whose Replica indexes bases, by owners
// (digest → the owner's base URL).
func splitByOwner(pulls []pullResult, bases []string, owners map[string]string) peerSplit {
	var s peerSplit
	for _, p := range pulls {
		if p.Replica < 0 || p.Replica >= len(bases) {
			s.unknown += len(p.Blobs)
			continue
		}
		at := strings.TrimSuffix(bases[p.Replica], "/")
		for _, bt := range p.Blobs {
			switch o := owners[bt.Digest]; {
			case o == "":
				s.unknown++
			case o == at:
				s.owner = append(s.owner, bt)
			default:
				s.follower = append(s.follower, bt)
			}
		}
	}
	return s
}

// firstBytes are the figures of one side of a split, by key.
func firstBytes(bts []blobTiming) map[string]float64 {
	if len(bts) == 0 {
		return map[string]float64{"gets": 0}
	}
	var read, arrival []time.Duration
	for _, bt := range bts {
		read = append(read, bt.TTFB)
		arrival = append(arrival, bt.ArrivalTTFB)
	}
	return map[string]float64{
		"gets":                float64(len(bts)),
		"arrival_ttfb_p50_ms": percentile(arrival, 50),
		"arrival_ttfb_p99_ms": percentile(arrival, 99),
		"ttfb_p50_ms":         percentile(read, 50),
		"ttfb_p99_ms":         percentile(read, 99),
	}
}

// figures are "side:key" → value, side owner, follower or added (follower
// − owner, when both sides have GETs).
func (s peerSplit) figures() map[string]float64 {
	out := map[string]float64{"owner:unknown_owner_gets": float64(s.unknown)}
	o, f := firstBytes(s.owner), firstBytes(s.follower)
	for k, v := range o {
		out["owner:"+k] = v
	}
	for k, v := range f {
		out["follower:"+k] = v
	}
	if len(s.owner) > 0 && len(s.follower) > 0 {
		for k, v := range f {
			if k != "gets" {
				out["added:"+k] = v - o[k]
			}
		}
	}
	return out
}

// value is one figure of a split, NaN when not measured.
func (s peerSplit) value(side, key string) float64 {
	if v, ok := s.figures()[side+":"+key]; ok {
		return v
	}
	return math.NaN()
}

// scrape reads a server's /metrics.
func scrape(base string) (string, error) {
	resp, err := plainClient.Get(base + "/metrics")
	if err != nil {
		return "", fmt.Errorf("metrics of %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(resp.Status)
	}
	if err != nil {
		return "", fmt.Errorf("metrics of %s: %w", base, err)
	}
	return string(body), nil
}

// scrapeAll is scrape of every replica, concatenated: metricSum adds them
// up.
func scrapeAll(ps []*proc) (string, error) {
	var sb strings.Builder
	for _, p := range ps {
		s, err := scrape("http://" + p.addr)
		if err != nil {
			return "", err
		}
		sb.WriteString(s)
		sb.WriteByte('\n')
	}
	return sb.String(), nil
}

// tagLabel marks the fleet metrics' samples that count tags, not blobs.
const tagLabel = `what="tag"`

// metricSum adds up every sample of the series name in Prometheus text
// exposition whose labels contain with (any labels when with is empty).
func metricSum(text, name, with string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" {
			continue
		}
		switch rest[0] {
		case '{':
			i := strings.LastIndexByte(rest, '}')
			if i < 0 || !strings.Contains(rest[:i], with) {
				continue
			}
			rest = rest[i+1:]
		case ' ':
			if with != "" {
				continue
			}
		default:
			continue // another series whose name starts with name
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// script runs scripts/NAME of the repository, which prints the path of a
// server it installed when missing (as the tests' helpers do), and returns
// that path. What the script says while installing goes to stderr.
func (b *bench) script(name string) (string, error) {
	var stdout bytes.Buffer
	cmd := exec.Command("bash", filepath.Join(b.root, "scripts", name))
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/%s: %w", name, err)
	}
	path := strings.TrimSpace(stdout.String())
	if path == "" {
		return "", fmt.Errorf("scripts/%s printed no path", name)
	}
	return path, nil
}

// createBucket makes the fleet's bucket, trying again for a minute: a
// MinIO that says it is ready may not answer its first request on a loaded
// machine.
func createBucket(ctx context.Context, endpoint, accessKey, secretKey, bucket string) error {
	sess, err := session.NewSession(aws.NewConfig().
		WithCredentials(credentials.NewStaticCredentials(accessKey, secretKey, "")).
		WithEndpoint(endpoint).
		WithRegion("us-east-1").
		WithS3ForcePathStyle(true).
		WithDisableSSL(true).
		WithHTTPClient(&http.Client{Transport: &http.Transport{Proxy: nil}}))
	if err != nil {
		return fmt.Errorf("S3 session: %w", err)
	}
	client := s3.New(sess)
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.CreateBucketWithContext(cctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		cancel()
		var aerr awserr.Error
		if err == nil || (errors.As(err, &aerr) && aerr.Code() == s3.ErrCodeBucketAlreadyOwnedByYou) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("create bucket %s: %w", bucket, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
