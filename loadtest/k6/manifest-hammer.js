// manifest-hammer.js — HEAD and GET one manifest by tag and by digest, as
// fast as VUS clients can.
//
// setup() resolves IMAGE's tag once (GET, verified) to learn its digest, media
// type and size. Then every iteration sends, in turn, HEAD by tag, GET by tag,
// HEAD by digest and GET by digest, and checks each answer: 200, the right
// Docker-Content-Digest, Content-Type and Content-Length, and for a GET a body
// that hashes to the digest. This is what a fleet's kubelets do to a mirror
// on every pod start with imagePullPolicy: Always; a warm Breakwater answers
// tags from its cache for tag_ttl and digests always.
//
//   k6 run -e BASE_URL=http://127.0.0.1:5000 -e IMAGE=library/app:v1 -e VUS=64 -e DURATION=10s loadtest/k6/manifest-hammer.js
//
// Environment:
//   BASE_URL      Breakwater's base URL                      (http://127.0.0.1:5000)
//   IMAGE         NAME:TAG whose manifest to hammer (an index is fine: it is
//                 not resolved further)                       (required)
//   NS            value of the ?ns= parameter; empty: none
//   VUS           concurrent clients                          (16)
//   DURATION      how long                                    (10s)
//   ITERATIONS    instead of DURATION: iterations per VU (4 requests each)
//   TIMEOUT       per-request timeout                         (120s)
//   P99_MS        bound on p99 request duration               (500)
//   MIN_RPS       lower bound on requests/s; 0 turns it off  (0)
//
// Thresholds: every check passes, no request fails, p99 under P99_MS, and the
// request rate at least MIN_RPS when set.

import http from 'k6/http';
import { check, fail } from 'k6';
import { ACCEPT, apiURL, baseURL, env, envInt, parseRef, requestParams, sha256 } from './lib/oci.js';

const IMAGE = env('IMAGE', '');
const MIN_RPS = envInt('MIN_RPS', 0);

function buildScenario() {
  const vus = envInt('VUS', 16);
  if (env('ITERATIONS', '') !== '') {
    return { executor: 'per-vu-iterations', vus, iterations: envInt('ITERATIONS', 1), maxDuration: env('MAX_DURATION', '10m') };
  }
  return { executor: 'constant-vus', vus, duration: env('DURATION', '10s'), gracefulStop: '30s' };
}

const thresholds = {
  checks: ['rate==1'],
  http_req_failed: ['rate==0'],
  'http_req_duration{req:manifest}': [`p(99)<${envInt('P99_MS', 500)}`],
};
if (MIN_RPS > 0) {
  thresholds.http_reqs = [`rate>=${MIN_RPS}`];
}

export const options = {
  scenarios: { hammer: buildScenario() },
  thresholds,
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'max'],
};

export function setup() {
  if (IMAGE === '') {
    fail('IMAGE is required, e.g. -e IMAGE=library/app:v1');
  }
  const ref = parseRef(IMAGE);
  if (ref.byDigest) {
    fail('IMAGE must name a tag (NAME:TAG), not a digest');
  }
  const res = http.get(
    apiURL(baseURL(), ref.name, 'manifests', ref.tag, env('NS', '')),
    requestParams('setup', { headers: { Accept: ACCEPT } }),
  );
  if (res.status !== 200) {
    fail(`setup: GET ${ref.name}:${ref.tag} answered ${res.status} ${res.status_text}`);
  }
  const digest = sha256(res.body);
  if (digest !== res.headers['Docker-Content-Digest']) {
    fail(`setup: manifest hashes to ${digest}, Docker-Content-Digest says ${res.headers['Docker-Content-Digest']}`);
  }
  return {
    name: ref.name,
    tag: ref.tag,
    digest,
    size: res.body.byteLength,
    mediaType: (res.headers['Content-Type'] || '').split(';')[0],
  };
}

function verify(res, m, how, method) {
  const checks = {};
  checks[`${method} by ${how}: status 200`] = (r) => r.status === 200;
  checks[`${method} by ${how}: Docker-Content-Digest`] = (r) => r.headers['Docker-Content-Digest'] === m.digest;
  checks[`${method} by ${how}: Content-Type`] = (r) => (r.headers['Content-Type'] || '').split(';')[0] === m.mediaType;
  checks[`${method} by ${how}: Content-Length`] = (r) => parseInt(r.headers['Content-Length'], 10) === m.size;
  if (method === 'GET') {
    checks[`GET by ${how}: body hashes to the digest`] = (r) => r.status === 200 && sha256(r.body) === m.digest;
  }
  check(res, checks);
}

export default function (m) {
  const base = baseURL();
  const ns = env('NS', '');
  const params = requestParams('manifest', { headers: { Accept: ACCEPT } });
  for (const [how, ref] of [
    ['tag', m.tag],
    ['digest', m.digest],
  ]) {
    const url = apiURL(base, m.name, 'manifests', ref, ns);
    verify(http.head(url, params), m, how, 'HEAD');
    verify(http.get(url, params), m, how, 'GET');
  }
}
