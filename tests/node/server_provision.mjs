// Provisioned throughput under load, on the real `vkpt serve` (stories260K
// on this machine's device):
//  - fairness: endpoints provisioned 1, 2 and 4 chunks on one device, all
//    flooded by `vkpt loadgen`, process tokens 1:2:4 (within 10%), while a
//    fourth endpoint loaded below its provision is never throttled and its
//    latency stays bounded;
//  - scale to zero and a cold start; 429 REQUEST_LIMIT_EXCEEDED with
//    Retry-After above max; the autoscaler adding replicas under demand and
//    removing them when it goes.
// The chunk size is the TEST override (--test-chunk-size): lavapipe's whole
// device is a few hundred tokens/s, so provisions are set relative to it
// (docs/PROVISIONING.md explains the method and gives the figures).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, vkptBin, repoRoot, sleep, metrics, apiCall } from './server_util.mjs';

const STORIES = path.join(repoRoot, 'models', 'stories260K', 'stories260K.gguf');
const dirs = [];
let srv;

after(async () => {
  if (srv) await srv.stop();
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function serve(args) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-provision-'));
  dirs.push(dataDir);
  execFileSync(vkptBin(), ['register', STORIES, '--name', 'main.default.stories', '--context-length', '256',
    '--data-dir', dataDir], { env: process.env });
  return startServer(['--data-dir', dataDir, ...args]);
}

const api = (method, route, body) => apiCall(srv.url, method, route, body);

async function create(name, min, max, more = {}) {
  const r = await api('POST', '/api/2.0/serving-endpoints', {
    name,
    config: {
      served_entities: [{ entity_name: 'main.default.stories', entity_version: 1, min_provisioned_throughput: min,
        max_provisioned_throughput: max, ...more }],
    },
  });
  assert.equal(r.status, 200, r.text);
}

async function waitReady(name) {
  for (let i = 0; i < 300; i++) {
    const r = await api('GET', `/api/2.0/serving-endpoints/${name}`);
    if (r.json?.state?.ready === 'READY' && r.json.state.config_update === 'NOT_UPDATING') return r.json;
    await sleep(100);
  }
  assert.fail(`${name} did not become READY`);
}

// One endpoint's metric, by name and extra labels.
function epMetric(m, name, ep, extra = '') {
  const k = Object.keys(m).find((x) => x.startsWith(`${name}{endpoint="${ep}"`) && x.includes(extra));
  return k === undefined ? undefined : m[k];
}

async function until(what, fn, ms = 30000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await fn()) return;
    await sleep(100);
  }
  assert.fail(`${what}: not within ${ms} ms`);
}

function invoke(name, maxTokens, content = 'Once upon a time') {
  return api('POST', `/serving-endpoints/${name}/invocations`, {
    messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0,
  });
}

// `vkpt loadgen` against one endpoint (OpenAI route, model = the endpoint).
function loadgen(model, concurrency, seconds) {
  return new Promise((resolve, reject) => {
    const child = spawn(vkptBin(), ['loadgen', '--url', srv.url, '--model', model, '--concurrency', String(concurrency),
      '--input-tokens', '32', '--output-tokens', '16', '--duration', String(seconds), '--json'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`loadgen ${model} exited ${code}: ${err}`));
      try {
        resolve(JSON.parse(out).levels[0]);
      } catch (e) {
        reject(new Error(`loadgen ${model}: ${e.message}: ${out}\n${err}`));
      }
    });
  });
}

test('fairness: 1, 2 and 4 chunks flooded get 1:2:4; an endpoint below its provision is not throttled', async () => {
  // A chunk larger than the whole device: every endpoint is provisioned more
  // than it can get, so the device is shared by weight (the arbiter), never
  // by the 429 limit, and replicas stay at min = max.
  const CHUNK = 1000;
  srv = await serve(['--test-chunk-size', String(CHUNK), '--parallel', '16', '--no-prefix-cache']);
  const w = { fair1: 1, fair2: 2, fair4: 4 };
  for (const [name, k] of Object.entries(w)) await create(name, k * CHUNK, k * CHUNK);
  await create('light', CHUNK, CHUNK);
  for (const name of [...Object.keys(w), 'light']) await waitReady(name);

  // the light endpoint alone first: its baseline latency
  const alone = [];
  for (let i = 0; i < 4; i++) {
    const t0 = Date.now();
    assert.equal((await invoke('light', 8)).status, 200);
    alone.push(Date.now() - t0);
  }
  const base = alone.sort((a, b) => a - b)[1];

  const FLOOD_S = 55;
  const runs = Object.entries(w).map(([name, k]) => loadgen(name, 8 * k, FLOOD_S));
  // every flooded endpoint has requests queued in every replica
  await until('the flood', async () => {
    const m = await metrics(srv.url);
    return Object.entries(w).every(([name, k]) => epMetric(m, 'vkpt_endpoint_requests_in_flight', name) >= 6 * k);
  });
  await sleep(3000);
  // the light client: one short request at a time, with pauses, through the window
  const light = { lat: [], status: [] };
  let stop = false;
  const lightLoop = (async () => {
    while (!stop) {
      const t0 = Date.now();
      const r = await invoke('light', 8);
      light.status.push(r.status);
      light.lat.push(Date.now() - t0);
      await sleep(500);
    }
  })();
  const m0 = await metrics(srv.url);
  const t0 = Date.now();
  await sleep(30000);
  const m1 = await metrics(srv.url);
  const secs = (Date.now() - t0) / 1000;
  stop = true;
  await lightLoop;
  const got = {};
  for (const name of Object.keys(w))
    got[name] = (epMetric(m1, 'vkpt_endpoint_tokens_total', name) - epMetric(m0, 'vkpt_endpoint_tokens_total', name)) / secs;
  const lg = await Promise.all(runs);
  const r2 = got.fair2 / got.fair1;
  const r4 = got.fair4 / got.fair1;
  console.log(`# fairness (server tokens/s over ${secs.toFixed(1)} s): ${got.fair1.toFixed(1)} : ${got.fair2.toFixed(1)} : `
    + `${got.fair4.toFixed(1)} = 1 : ${r2.toFixed(3)} : ${r4.toFixed(3)}`);
  console.log(`# fairness (loadgen total tokens/s): ${lg.map((l) => l.total_tokens_per_s.toFixed(1)).join(' : ')}; `
    + `errors ${lg.map((l) => l.errors).join(', ')}`);
  const ls = [...light.lat].sort((a, b) => a - b);
  console.log(`# light endpoint: ${ls.length} requests, latency alone ${base} ms, under the flood p50 `
    + `${ls[Math.floor(ls.length / 2)]} ms, max ${ls[ls.length - 1]} ms`);
  assert.ok(Math.abs(r2 / 2 - 1) < 0.10, `fair2/fair1 = ${r2}`);
  assert.ok(Math.abs(r4 / 4 - 1) < 0.10, `fair4/fair1 = ${r4}`);
  for (const l of lg) assert.equal(l.errors, 0, 'no flooded request was refused: the device, not the limit, is the bottleneck');
  // the endpoint below its provision: never throttled, promptly served
  assert.ok(light.status.length >= 5, `${light.status.length} light requests`);
  assert.ok(light.status.every((s) => s === 200), `light statuses: ${light.status}`);
  const m2 = await metrics(srv.url);
  assert.equal(epMetric(m2, 'vkpt_endpoint_throttled_requests_total', 'light'), 0);
  const flood50 = lg[0].ttft_ms.p50 + 15 * lg[0].tpot_ms.p50;
  assert.ok(ls[Math.floor(ls.length / 2)] < flood50 / 2,
    `light p50 ${ls[Math.floor(ls.length / 2)]} ms vs a flooded request's ~${flood50.toFixed(0)} ms`);
  assert.ok(ls[ls.length - 1] < Math.max(12 * base, base + 8000), `light max ${ls[ls.length - 1]} ms (alone ${base} ms)`);
  assert.equal(await srv.stop(), 0);
  srv = null;
});

test('scale to zero, a cold start, 429 with Retry-After above max, autoscaling up and down', async () => {
  const CHUNK = 20;
  srv = await serve(['--test-chunk-size', String(CHUNK), '--parallel', '8', '--autoscale-interval', '0.2',
    '--scale-down-delay', '1', '--scale-to-zero-delay', '1.5']);
  await create('zero', 0, CHUNK, { scale_to_zero_enabled: true });
  await create('auto', CHUNK, 3 * CHUNK);
  await waitReady('zero');
  await waitReady('auto');

  // idle: scaled to zero, the model unloaded
  await until('scale to zero', async () => {
    const m = await metrics(srv.url);
    return epMetric(m, 'vkpt_endpoint_replicas', 'zero', 'state="ready"') === 0 &&
      epMetric(m, 'vkpt_endpoint_scaling_actions_total', 'zero', 'direction="to_zero"') >= 1;
  });
  const ep = (await api('GET', '/api/2.0/serving-endpoints/zero')).json;
  assert.equal(ep.state.ready, 'READY', 'scaled to zero is still ready: requests start a replica');
  assert.match(ep.config.served_entities[0].state.deployment_state_message, /scaled to zero/);
  // the first request waits for a cold start, measured and reported
  let r = await invoke('zero', 4);
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('x-vkpt-cold-start-ms') ?? '', /^\d+$/);
  let m = await metrics(srv.url);
  assert.equal(epMetric(m, 'vkpt_endpoint_cold_starts_total', 'zero'), 1);
  assert.equal(epMetric(m, 'vkpt_endpoint_cold_start_seconds_count', 'zero'), 1);
  assert.ok(/cold start took/.test(srv.log()));
  r = await invoke('zero', 4);
  assert.equal(r.headers.get('x-vkpt-cold-start-ms'), null, 'a warm replica: no cold start');

  // above max (20 tokens/s, 1 s of burst): 429 REQUEST_LIMIT_EXCEEDED with Retry-After
  await sleep(1100); // a full bucket
  const burst = await Promise.all([1, 2, 3, 4, 5].map(() => invoke('zero', 30)));
  const ok = burst.filter((x) => x.status === 200);
  const limited = burst.filter((x) => x.status === 429);
  assert.equal(ok.length, 1, burst.map((x) => x.status).join(','));
  assert.equal(limited.length, 4);
  let retry = 0;
  for (const x of limited) {
    assert.equal(x.json.error_code, 'REQUEST_LIMIT_EXCEEDED');
    assert.match(x.json.message, /max_provisioned_throughput of 20 tokens\/s/);
    retry = Number(x.headers.get('retry-after'));
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 5, `Retry-After ${retry}`);
  }
  m = await metrics(srv.url);
  assert.equal(epMetric(m, 'vkpt_endpoint_throttled_requests_total', 'zero'), 4);
  await sleep(retry * 1000 + 200);
  r = await invoke('zero', 4);
  assert.equal(r.status, 200, `after Retry-After: ${r.text}`);
  // the OpenAI route is limited too (OpenAI-shaped error)
  await sleep(1100);
  const oa = await Promise.all([1, 2, 3].map(() => api('POST', '/v1/chat/completions',
    { model: 'zero', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 30 })));
  const oal = oa.find((x) => x.status === 429);
  assert.ok(oal, oa.map((x) => x.status).join(','));
  assert.equal(oal.json.error.code, 'rate_limit_exceeded');
  assert.ok(Number(oal.headers.get('retry-after')) >= 1);

  // autoscaling: demand above one chunk adds replicas (at most max / chunk = 3)
  let stop = false;
  const loops = [1, 2, 3, 4].map(async () => {
    while (!stop) {
      const x = await invoke('auto', 16);
      if (x.status === 429) await sleep(200);
    }
  });
  await until('scale up', async () => {
    const mm = await metrics(srv.url);
    return epMetric(mm, 'vkpt_endpoint_replicas', 'auto', 'state="ready"') >= 2;
  }, 20000);
  stop = true;
  await Promise.all(loops);
  m = await metrics(srv.url);
  assert.ok(epMetric(m, 'vkpt_endpoint_scaling_actions_total', 'auto', 'direction="up"') >= 1);
  assert.ok(epMetric(m, 'vkpt_endpoint_replicas', 'auto', 'state="ready"') <= 3, 'never above max');
  assert.ok(/auto\/stories-1: scale 1 -> [23] replicas \(demand/.test(srv.log()), 'the action and its reason are logged');
  // demand gone: down to min (one replica), never below
  await until('scale down', async () => {
    const mm = await metrics(srv.url);
    return epMetric(mm, 'vkpt_endpoint_replicas', 'auto', 'state="ready"') === 1 &&
      epMetric(mm, 'vkpt_endpoint_replicas', 'auto', 'state="draining"') === 0;
  }, 20000);
  await sleep(1500);
  m = await metrics(srv.url);
  assert.equal(epMetric(m, 'vkpt_endpoint_replicas', 'auto', 'state="ready"'), 1, 'never below min');
  assert.ok(epMetric(m, 'vkpt_endpoint_scaling_actions_total', 'auto', 'direction="down"') >= 1);
  assert.equal(await srv.stop(), 0);
  srv = null;
});
