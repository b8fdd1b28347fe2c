// pull-storm.js — many clients pull every layer of one image at once.
//
// Each VU pulls IMAGE the way a runtime does: GET the manifest with the
// Accept set of containerd/docker (an index is resolved to PLATFORM), then
// GET the config and every layer, BATCH blobs at a time. Every body is
// hashed: a manifest must match its Docker-Content-Digest (and the digest
// asked for), a blob its digest and size. Point it at a cold Breakwater to
// see a fleet's pull storm: Breakwater should fetch each blob upstream once
// and stream it to every VU.
//
//   k6 run -e BASE_URL=http://127.0.0.1:5000 -e IMAGE=library/app:v1 -e VUS=32 loadtest/k6/pull-storm.js
//
// Environment:
//   BASE_URL      Breakwater's base URL                      (http://127.0.0.1:5000)
//   IMAGE         image to pull: NAME:TAG, NAME@DIGEST or NAME:TAG@DIGEST,
//                 as in the URL path (library/app:v1, ghcr.io/org/app:v1)  (required)
//   NS            value of the ?ns= parameter containerd adds (e.g. docker.io); empty: none
//   PLATFORM      os/arch chosen from an index                (linux/amd64)
//   VUS           concurrent clients                          (32)
//   ITERATIONS    pulls per VU, all VUs starting at once      (1)
//   DURATION      instead of ITERATIONS: keep pulling for this long (e.g. 30s)
//   BATCH         blobs fetched in parallel per VU (containerd's default is 3)  (3)
//   TIMEOUT       per-request timeout                         (120s)
//   TTFB_P99_MS   bound on p99 blob time to first byte        (2000)
//   PULL_P99_MS   bound on p99 whole-image pull time          (60000)
//
// Thresholds (k6 exits non-zero when one fails): every check passes, no
// request fails, every pull verifies, no digest mismatch, some bytes were
// pulled, and the p99 bounds above hold. The defaults are generous on purpose
// (a noisy 2-core box); tighten them for your hardware.
//
// Memory: k6 keeps each response in memory while hashing it; VUS × BATCH ×
// layer size must fit.

import { fail } from 'k6';
import { baseURL, env, envInt, parseRef, pullImage, scenario } from './lib/oci.js';

const IMAGE = env('IMAGE', '');

export const options = {
  scenarios: { storm: scenario(32, 1) },
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    pull_ok: ['rate==1'],
    digest_mismatches: ['count==0'],
    pulled_bytes: ['count>0'],
    blob_ttfb: [`p(99)<${envInt('TTFB_P99_MS', 2000)}`],
    pull_duration: [`p(99)<${envInt('PULL_P99_MS', 60000)}`],
  },
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'max'],
};

export function setup() {
  if (IMAGE === '') {
    fail('IMAGE is required, e.g. -e IMAGE=library/app:v1');
  }
}

const ref = IMAGE === '' ? null : parseRef(IMAGE);

export default function () {
  pullImage(baseURL(), ref, {
    ns: env('NS', ''),
    platform: env('PLATFORM', 'linux/amd64'),
    batch: envInt('BATCH', 3),
  });
}
