// outage.js — run while Breakwater's upstream is down.
//
// What a mirror owes its fleet during an upstream outage: images it has
// cached keep pulling, completely and verified (tags too: stale-if-error);
// images it has not cached fail fast and honestly, with 503 and a
// Retry-After, so that kubelet backs off and retries — never a 404 (which
// would fail the pod for good), a hang or a 500. Each iteration pulls every
// image of CACHED (manifest, config and every layer, digests checked) and
// asks for the manifest of every image of UNCACHED with GET and HEAD, which
// must each get 503 with Retry-After, the body's errors[0].code UNAVAILABLE
// (GET) and, over HTTP/1.1, Breakwater's "breakwater-transient" reason phrase.
//
// Use: pull the CACHED images through Breakwater (e.g. with pull-storm.js),
// stop the upstream (or cut Breakwater off from it), then
//
//   k6 run -e BASE_URL=http://127.0.0.1:5000 \
//          -e CACHED=library/app:v1,library/db@sha256:… \
//          -e UNCACHED=library/never-pulled:v1 loadtest/k6/outage.js
//
// Environment:
//   BASE_URL        Breakwater's base URL                    (http://127.0.0.1:5000)
//   CACHED          comma- or space-separated refs (NAME:TAG, NAME@DIGEST) that
//                   Breakwater has cached; each must pull completely  (required)
//   UNCACHED        refs Breakwater has never pulled; each must get 503 +
//                   Retry-After; may be empty
//   NS              value of the ?ns= parameter; empty: none
//   PLATFORM        os/arch chosen from an index            (linux/amd64)
//   VUS             concurrent clients                      (4)
//   ITERATIONS      iterations per VU                       (3)
//   DURATION        instead of ITERATIONS: keep going for this long
//   BATCH           blobs fetched in parallel per VU        (3)
//   TIMEOUT         per-request timeout                     (120s)
//   CACHED_P99_MS   bound on p99 whole-image pull time of cached images (30000)
//   UNAVAILABLE_P99_MS  bound on p99 time to the 503 (Breakwater retries
//                   before answering, up to resilience.retry.deadline,
//                   20 s by default) (35000)
//
// Thresholds: every check passes; http_req_failed is 0 — a 503 counts as
// expected only for UNCACHED requests, anything else non-2xx is a failure;
// every cached pull verifies; the p99 bounds hold.

import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { ACCEPT, apiURL, baseURL, env, envInt, parseRefs, pullImage, requestParams, scenario } from './lib/oci.js';

const CACHED = parseRefs(env('CACHED', ''));
const UNCACHED = parseRefs(env('UNCACHED', ''));

const unavailableDuration = new Trend('unavailable_duration', true);
const unavailableAnswers = new Counter('unavailable_answers');

const thresholds = {
  checks: ['rate==1'],
  http_req_failed: ['rate==0'],
  pull_ok: ['rate==1'],
  digest_mismatches: ['count==0'],
  pull_duration: [`p(99)<${envInt('CACHED_P99_MS', 30000)}`],
};
if (UNCACHED.length > 0) {
  thresholds.unavailable_duration = [`p(99)<${envInt('UNAVAILABLE_P99_MS', 35000)}`];
  thresholds.unavailable_answers = ['count>0'];
}

export const options = {
  scenarios: { outage: scenario(4, 3) },
  thresholds,
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'max'],
};

export function setup() {
  if (CACHED.length === 0) {
    fail('CACHED is required: the images Breakwater has cached, e.g. -e CACHED=library/app:v1');
  }
}

// validRetryAfter accepts delay-seconds or an HTTP date (RFC 9110 10.2.3).
function validRetryAfter(v) {
  if (!v) {
    return false;
  }
  if (/^\d+$/.test(v)) {
    return true;
  }
  return !isNaN(Date.parse(v));
}

function errorCode(res) {
  try {
    const j = res.json();
    return j.errors && j.errors.length > 0 ? j.errors[0].code : '';
  } catch (e) {
    return '';
  }
}

function expectUnavailable(base, ref, ns) {
  const params = requestParams('unavailable', {
    headers: { Accept: ACCEPT },
    responseCallback: http.expectedStatuses(503),
  });
  const url = apiURL(base, ref.name, 'manifests', ref.reference, ns);
  for (const method of ['GET', 'HEAD']) {
    const res = method === 'GET' ? http.get(url, params) : http.head(url, params);
    const checks = {};
    checks[`uncached ${method}: status 503`] = (r) => r.status === 503;
    checks[`uncached ${method}: Retry-After`] = (r) => validRetryAfter(r.headers['Retry-After']);
    checks[`uncached ${method}: breakwater-transient reason (HTTP/1.1)`] = (r) =>
      r.proto !== 'HTTP/1.1' || (r.status_text || '').toLowerCase().includes('breakwater-transient');
    if (method === 'GET') {
      checks['uncached GET: errors[0].code UNAVAILABLE'] = (r) => errorCode(r) === 'UNAVAILABLE';
    }
    check(res, checks);
    if (res.status === 503) {
      unavailableAnswers.add(1);
    }
    unavailableDuration.add(res.timings.duration, { method });
  }
}

export default function () {
  const base = baseURL();
  const ns = env('NS', '');
  const opts = { ns, platform: env('PLATFORM', 'linux/amd64'), batch: envInt('BATCH', 3) };
  for (const ref of CACHED) {
    pullImage(base, ref, opts);
  }
  for (const ref of UNCACHED) {
    expectUnavailable(base, ref, ns);
  }
}
