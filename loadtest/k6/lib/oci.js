// Shared helpers of the Breakwater k6 scripts: image references, the OCI
// pull API, and digest verification of everything read.
//
// Every manifest and blob is fetched with responseType 'binary' and hashed
// with k6/crypto; the sha256 must equal the digest that named it (and the
// registry's Docker-Content-Digest header for manifests). Any mismatch fails a
// check, which fails the `checks` threshold of every script.

import http from 'k6/http';
import crypto from 'k6/crypto';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

// The Accept set of a containerd/docker/podman pull: OCI and Docker
// indexes and manifests.
export const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

const INDEX_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
];

export const metrics = {
  pullOK: new Rate('pull_ok'), // whole image pulled and verified
  pullDuration: new Trend('pull_duration', true), // one whole image
  blobTTFB: new Trend('blob_ttfb', true), // time to first byte of a blob GET
  pulledBytes: new Counter('pulled_bytes'), // verified blob bytes
  digestMismatch: new Counter('digest_mismatches'),
};

// env reads an environment variable with a default.
export function env(name, dflt) {
  const v = __ENV[name];
  return v === undefined || v === '' ? dflt : v;
}

export function envInt(name, dflt) {
  const v = parseInt(env(name, String(dflt)), 10);
  if (isNaN(v)) {
    throw new Error(`${name} must be an integer`);
  }
  return v;
}

// baseURL is BASE_URL without a trailing slash.
export function baseURL() {
  return env('BASE_URL', 'http://127.0.0.1:5000').replace(/\/+$/, '');
}

// parseRef splits "library/app:v1", "library/app@sha256:…" or
// "ghcr.io/org/app:v1@sha256:…" (the digest wins) into the repository name
// as sent in the URL and the reference (tag or digest). No tag means latest.
export function parseRef(ref) {
  let name = ref.trim();
  let digest = '';
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
  }
  let tag = 'latest';
  const colon = name.lastIndexOf(':');
  if (colon > name.lastIndexOf('/')) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  if (name === '') {
    throw new Error(`bad image reference "${ref}"`);
  }
  return { name, tag, digest, reference: digest || tag, byDigest: digest !== '' };
}

// parseRefs reads a comma- or space-separated list of references.
export function parseRefs(list) {
  return list
    .split(/[\s,]+/)
    .filter((s) => s !== '')
    .map(parseRef);
}

// apiURL builds BASE/v2/NAME/KIND/REF, with ?ns=NS when NS is set (the
// parameter containerd adds for a hosts.toml mirror).
export function apiURL(base, name, kind, ref, ns) {
  return `${base}/v2/${name}/${kind}/${ref}` + (ns ? `?ns=${encodeURIComponent(ns)}` : '');
}

export function sha256(buf) {
  return 'sha256:' + crypto.sha256(buf, 'hex');
}

function bodyLength(res) {
  return res.body ? res.body.byteLength : 0;
}

// requestParams are the parameters of every request: a generous timeout, a
// tag that groups URLs (req=manifest|blob) so per-URL metrics stay few.
export function requestParams(req, extra) {
  return Object.assign(
    {
      timeout: env('TIMEOUT', '120s'),
      responseType: 'binary',
      tags: { req, name: req },
      headers: {},
    },
    extra || {},
  );
}

// getManifest GETs a manifest by tag or digest and verifies it: 200, the
// body hashes to Docker-Content-Digest and, when asked by digest, to that
// digest. It returns { ok, digest, mediaType, json } (json null when not ok).
export function getManifest(base, name, reference, ns, expectDigest) {
  const res = http.get(
    apiURL(base, name, 'manifests', reference, ns),
    requestParams('manifest', { headers: { Accept: ACCEPT } }),
  );
  const got = res.status === 200 && res.body ? sha256(res.body) : '';
  const header = res.headers['Docker-Content-Digest'] || '';
  const ok = check(res, {
    'manifest: status 200': (r) => r.status === 200,
    'manifest: body matches Docker-Content-Digest': () => got !== '' && got === header,
    'manifest: body matches the digest asked for': () => !expectDigest || got === expectDigest,
  });
  if (got !== '' && ((header !== '' && got !== header) || (expectDigest && got !== expectDigest))) {
    metrics.digestMismatch.add(1, { req: 'manifest' });
  }
  if (!ok) {
    return { ok: false, digest: got, mediaType: '', json: null, status: res.status };
  }
  let json = null;
  try {
    json = res.json();
  } catch (e) {
    check(res, { 'manifest: valid JSON': () => false });
    return { ok: false, digest: got, mediaType: '', json: null, status: res.status };
  }
  const mediaType = json.mediaType || (res.headers['Content-Type'] || '').split(';')[0];
  return { ok: true, digest: got, mediaType, json, status: res.status };
}

// choosePlatform picks the manifest for "os/arch" from an index.
function choosePlatform(index, platform) {
  const [os, arch] = platform.split('/');
  const ms = index.manifests || [];
  for (const m of ms) {
    if (m.platform && m.platform.os === os && m.platform.architecture === arch) {
      return m;
    }
  }
  return null;
}

function blobRequest(base, name, blob, ns) {
  return {
    method: 'GET',
    url: apiURL(base, name, 'blobs', blob.digest, ns),
    params: requestParams('blob'),
  };
}

function verifyBlob(res, blob) {
  const got = res.status === 200 && res.body ? sha256(res.body) : '';
  const ok = check(res, {
    'blob: status 200': (r) => r.status === 200,
    'blob: size matches the manifest': (r) => bodyLength(r) === blob.size,
    'blob: sha256 matches its digest': () => got === blob.digest,
  });
  if (res.status === 200 && got !== blob.digest) {
    metrics.digestMismatch.add(1, { req: 'blob' });
  }
  if (res.status === 200) {
    metrics.blobTTFB.add(res.timings.waiting);
  }
  if (ok) {
    metrics.pulledBytes.add(blob.size);
  }
  return ok;
}

// pullImage pulls one image the way a runtime does: the manifest by the
// reference (resolving an index to PLATFORM), then the config and every
// layer, BATCH blobs at a time, each verified. It records pull_ok and
// pull_duration and returns whether everything verified.
export function pullImage(base, ref, opts) {
  const ns = opts.ns || '';
  const platform = opts.platform || 'linux/amd64';
  const batch = Math.max(1, opts.batch || 3);
  const start = Date.now();
  let ok = false;
  try {
    ok = pullInner(base, ref, ns, platform, batch);
  } finally {
    metrics.pullOK.add(ok ? 1 : 0, { image: ref.name });
    if (ok) {
      metrics.pullDuration.add(Date.now() - start, { image: ref.name });
    }
  }
  return ok;
}

function pullInner(base, ref, ns, platform, batch) {
  let m = getManifest(base, ref.name, ref.reference, ns, ref.byDigest ? ref.digest : '');
  if (!m.ok) {
    return false;
  }
  if (INDEX_TYPES.includes(m.mediaType)) {
    const d = choosePlatform(m.json, platform);
    if (!check(m, { [`index: has a ${platform} manifest`]: () => d !== null })) {
      return false;
    }
    m = getManifest(base, ref.name, d.digest, ns, d.digest);
    if (!m.ok) {
      return false;
    }
  }
  const blobs = [];
  if (m.json.config) {
    blobs.push(m.json.config);
  }
  for (const l of m.json.layers || []) {
    blobs.push(l);
  }
  if (!check(m, { 'manifest: has a config and layers': () => blobs.length > 0 })) {
    return false;
  }
  let ok = true;
  for (let i = 0; i < blobs.length; i += batch) {
    const group = blobs.slice(i, i + batch);
    const responses = http.batch(group.map((b) => blobRequest(base, ref.name, b, ns)));
    for (let j = 0; j < group.length; j++) {
      ok = verifyBlob(responses[j], group[j]) && ok;
    }
  }
  return ok;
}

// executor builds the scenario from VUS, ITERATIONS and DURATION: with
// DURATION set, VUS loop for that long; otherwise each of VUS runs
// ITERATIONS iterations, all starting together.
export function scenario(defaultVUs, defaultIterations) {
  const vus = envInt('VUS', defaultVUs);
  const duration = env('DURATION', '');
  if (duration !== '') {
    return { executor: 'constant-vus', vus, duration, gracefulStop: env('GRACEFUL_STOP', '60s') };
  }
  return {
    executor: 'per-vu-iterations',
    vus,
    iterations: envInt('ITERATIONS', defaultIterations),
    maxDuration: env('MAX_DURATION', '10m'),
  };
}
