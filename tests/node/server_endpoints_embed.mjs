// Provisioned-throughput endpoints of an embedding model (task
// llm/v1/embeddings) on the real `vkpt serve --data-dir`: the small BERT
// model (embed_model.mjs) registered, its throughput chunk size measured on
// this device by the encoder workload (and cached), an endpoint created and
// queried through invocations (`input` as a string and as an array), the
// OpenAI route /v1/embeddings and Databricks' OpenAI base URL
// (/serving-endpoints) with the endpoint's name as the model, vectors equal
// to `vkpt embed`'s for the same text, served-model-name, metrics in input
// tokens; then, with a small test chunk size, 429 REQUEST_LIMIT_EXCEEDED +
// Retry-After above max and scale to zero with a cold start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, vkptBin, sleep, metrics, apiCall } from './server_util.mjs';
import { makeEmbedModel } from './embed_model.mjs';

const NAME = 'main.default.bge';
const TEXTS = ['the quick brown fox jumps over the lazy dog', 'hello world', 'dogs, 42!'];
let modelDir;
let dataDir;
let srv;

const api = (method, route, body) => apiCall(srv.url, method, route, body);

async function waitReady(name, ms = 60000) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    last = await api('GET', `/api/2.0/serving-endpoints/${name}`);
    if (last.json?.state?.ready === 'READY' && last.json.state.config_update === 'NOT_UPDATING') return last.json;
    await sleep(100);
  }
  assert.fail(`${name} not READY in ${ms} ms: ${last.text}`);
}

const create = (name, min, max, more = {}) => api('POST', '/api/2.0/serving-endpoints', {
  name,
  config: { served_entities: [{ entity_name: NAME, entity_version: '1', min_provisioned_throughput: min,
    max_provisioned_throughput: max, ...more }] },
});

// `vkpt embed`'s vectors for the same texts (same model files, batch invariant as vkpt serve)
function cliVectors(texts) {
  const args = ['embed', '-m', modelDir, '--batch-invariant'];
  for (const t of texts) args.push('-p', t);
  const out = execFileSync(vkptBin(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.trim().split('\n').map((l) => JSON.parse(l));
}

function assertClose(got, want, what) {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  assert.ok(worst <= 1e-5, `${what}: max |diff| ${worst} > 1e-5`);
}

before(() => {
  modelDir = makeEmbedModel();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-ep-embed-'));
  execFileSync(vkptBin(), ['register', modelDir, '--name', NAME, '--data-dir', dataDir], { env: process.env });
});

after(async () => {
  if (srv) assert.equal(await srv.stop(), 0);
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.rmSync(modelDir, { recursive: true, force: true });
});

test('an embedding endpoint: measured chunk, invocations, OpenAI routes, same vectors as vkpt embed', async () => {
  srv = await startServer(['--data-dir', dataDir, '--calibration-seconds', '0.5', '--autoscale-interval', '0.25']);
  const reg = await api('GET', `/api/2.0/vkpt/registered-models/${NAME}/versions/1`);
  assert.equal(reg.status, 200, reg.text);
  const ver = reg.json.model_version ?? reg.json;
  assert.equal(ver.task, 'llm/v1/embeddings');
  assert.equal(ver.context_length, 128);

  // the chunk size: the encoder workload (inputs of min(512, ctx) = 128 tokens), measured
  const oi = await api('GET', `/api/2.0/serving-endpoints/get-model-optimization-info/${NAME}/1`);
  assert.equal(oi.status, 200, oi.text);
  assert.equal(oi.json.optimizable, true, oi.text);
  assert.equal(oi.json.model_type, 'bge'); // a BERT with sentence-transformers' files
  const chunk = oi.json.throughput_chunk_size;
  const cal = oi.json.vkpt_calibration;
  assert.equal(cal.source, 'measured');
  assert.equal(cal.details.workload.kind, 'embeddings');
  assert.equal(cal.details.workload.input_tokens, 128);
  assert.equal(cal.details.workload.output_tokens, 0);
  assert.ok(cal.details.levels.length >= 2, oi.text);
  assert.ok(chunk >= 10 && chunk <= cal.tokens_per_second, oi.text);
  // two significant figures, rounded down
  const mag = 10 ** (Math.floor(Math.log10(cal.tokens_per_second)) - 1);
  assert.equal(chunk, Math.floor(cal.tokens_per_second / mag) * mag);
  // cached: the same measurement again
  const again = await api('GET', `/api/2.0/serving-endpoints/get-model-optimization-info/${NAME}/1`);
  assert.equal(again.json.throughput_chunk_size, chunk);
  assert.equal(again.json.vkpt_calibration.created_timestamp, cal.created_timestamp);

  // a band that is not whole chunks
  const badBand = await create('bge-bad', chunk + 1, 2 * chunk);
  assert.equal(badBand.status, 400, badBand.text);
  assert.equal(badBand.json.error_code, 'INVALID_PARAMETER_VALUE');

  const c = await create('bge-pt', chunk, 2 * chunk);
  assert.equal(c.status, 200, c.text);
  const ep = await waitReady('bge-pt');
  assert.equal(ep.task, 'llm/v1/embeddings');
  assert.equal(ep.config.served_entities[0].state.deployment, 'DEPLOYMENT_READY');

  const want = cliVectors(TEXTS);
  assert.equal(want.length, 3);
  assert.equal(want[0].length, 64);

  // invocations: a string, then an array
  const one = await api('POST', '/serving-endpoints/bge-pt/invocations', { input: TEXTS[0] });
  assert.equal(one.status, 200, one.text);
  assert.equal(one.headers.get('served-model-name'), 'bge-1');
  assert.equal(one.json.object, 'list');
  assert.equal(one.json.model, 'bge-pt');
  assert.equal(one.json.data.length, 1);
  assertClose(one.json.data[0].embedding, want[0], 'invocations (string)');
  const usage0 = one.json.usage.prompt_tokens;
  assert.ok(usage0 >= 10, one.text);
  const many = await api('POST', '/serving-endpoints/bge-pt/invocations', { input: TEXTS });
  assert.equal(many.status, 200, many.text);
  assert.deepEqual(many.json.data.map((d) => d.index), [0, 1, 2]);
  for (let i = 0; i < 3; i++) assertClose(many.json.data[i].embedding, want[i], `invocations [${i}]`);

  // the OpenAI route with the endpoint as the model
  const v1 = await api('POST', '/v1/embeddings', { model: 'bge-pt', input: TEXTS.slice(1) });
  assert.equal(v1.status, 200, v1.text);
  assert.equal(v1.headers.get('served-model-name'), 'bge-1');
  assertClose(v1.json.data[0].embedding, want[1], '/v1/embeddings');
  // Databricks' OpenAI base URL, through the official client
  const dbx = new OpenAI({ baseURL: `${srv.url}/serving-endpoints`, apiKey: 'unused', maxRetries: 0 });
  const r = await dbx.embeddings.create({ model: 'bge-pt', input: TEXTS, encoding_format: 'float' });
  assert.equal(r.data.length, 3);
  for (let i = 0; i < 3; i++) assertClose(r.data[i].embedding, want[i], `openai client [${i}]`);
  assert.equal(r.usage.prompt_tokens, many.json.usage.prompt_tokens);

  // the wrong request shape for this task: Databricks-shaped 400s
  const chatShape = await api('POST', '/serving-endpoints/bge-pt/invocations', {
    messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(chatShape.status, 400, chatShape.text);
  assert.equal(chatShape.json.error_code, 'INVALID_PARAMETER_VALUE');
  assert.match(chatShape.json.message, /llm\/v1\/embeddings/);
  const chat = await api('POST', '/v1/chat/completions', { model: 'bge-pt', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(chat.status, 400, chat.text);
  assert.match(chat.json.error.message, /embeddings/);

  // metrics count input tokens: one, the three texts twice, the last two
  const total = usage0 + 2 * many.json.usage.prompt_tokens + v1.json.usage.prompt_tokens;
  const m = await metrics(srv.url);
  const lbl = 'endpoint="bge-pt",served_entity="bge-1"';
  assert.equal(m[`vkpt_endpoint_tokens_total{${lbl}}`], total);
  assert.equal(m[`vkpt_endpoint_requests_total{${lbl}}`], 4);
  assert.equal(m[`vkpt_endpoint_throughput_chunk_size{${lbl}}`], chunk);
  // the band is 1..2 chunks: a burst above a chunk (measured on a busy
  // machine, it may be small) may have brought the second replica
  const ready = m[`vkpt_endpoint_replicas{${lbl},state="ready"}`];
  assert.ok(ready === 1 || ready === 2, `${ready} ready replicas`);

  const del = await api('DELETE', '/api/2.0/serving-endpoints/bge-pt');
  assert.equal(del.status, 200);
  assert.equal(await srv.stop(), 0);
  srv = null;
});

test('above max: 429 with Retry-After; scale to zero and a cold start', async () => {
  if (srv) await srv.stop();
  // a data directory of its own: endpoints stored above would come back
  // with this test's chunk size
  const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-ep-embed-'));
  execFileSync(vkptBin(), ['register', modelDir, '--name', NAME, '--data-dir', dir2], { env: process.env });
  after(() => fs.rmSync(dir2, { recursive: true, force: true }));
  const CHUNK = 20; // tokens/s (test override): the bucket holds 20 tokens
  srv = await startServer(['--data-dir', dir2, '--test-chunk-size', String(CHUNK), '--autoscale-interval', '0.2',
    '--scale-to-zero-delay', '1']);
  assert.equal((await create('bge-small', CHUNK, CHUNK)).status, 200);
  assert.equal((await create('bge-zero', 0, CHUNK, { scale_to_zero_enabled: true })).status, 200);
  await waitReady('bge-small');
  await waitReady('bge-zero');

  // 98 tokens ([CLS] + 96 words + [SEP]): the first request passes and
  // leaves a debt of 78 tokens (3.9 s at 20 tokens/s), the rest is refused
  const LONG = Array(24).fill('the quick brown fox').join(' ');
  const burst = await Promise.all(Array.from({ length: 6 }, () =>
    api('POST', '/serving-endpoints/bge-small/invocations', { input: LONG })));
  const ok = burst.filter((x) => x.status === 200);
  const limited = burst.filter((x) => x.status === 429);
  assert.equal(ok.length, 1, burst.map((x) => x.status).join(','));
  assert.equal(ok[0].json.usage.prompt_tokens, 98);
  assert.equal(limited.length, 5);
  for (const x of limited) {
    assert.equal(x.json.error_code, 'REQUEST_LIMIT_EXCEEDED', x.text);
    assert.equal(x.headers.get('served-model-name'), 'bge-1');
    const after = Number(x.headers.get('retry-after'));
    assert.ok(after >= 3 && after <= 4, `Retry-After ${after}`);
  }
  // the OpenAI route keeps OpenAI's shape
  const oa = await api('POST', '/v1/embeddings', { model: 'bge-small', input: TEXTS[0] });
  assert.equal(oa.status, 429, oa.text);
  assert.equal(oa.json.error.code, 'rate_limit_exceeded');
  // once the debt is paid, it serves again
  await sleep(1000 * Number(limited[0].headers.get('retry-after')) + 100);
  const later = await api('POST', '/serving-endpoints/bge-small/invocations', { input: 'hello' });
  assert.equal(later.status, 200, later.text);
  const m = await metrics(srv.url);
  assert.equal(m['vkpt_endpoint_throttled_requests_total{endpoint="bge-small",served_entity="bge-1"}'], 6);

  // scale to zero after 1 s idle, then a request brings a replica back
  const zl = 'endpoint="bge-zero",served_entity="bge-1"';
  const t0 = Date.now();
  while ((await metrics(srv.url))[`vkpt_endpoint_replicas{${zl},state="ready"}`] !== 0) {
    assert.ok(Date.now() - t0 < 20000, 'bge-zero did not scale to zero');
    await sleep(200);
  }
  const cold = await api('POST', '/serving-endpoints/bge-zero/invocations', { input: TEXTS[1] });
  assert.equal(cold.status, 200, cold.text);
  assert.ok(cold.headers.get('x-vkpt-cold-start-ms') !== null, 'a cold start is reported');
  assert.equal(cold.json.data[0].embedding.length, 64);
  const mz = await metrics(srv.url);
  assert.equal(mz[`vkpt_endpoint_cold_starts_total{${zl}}`], 1);
});

test('shutdown: a request waiting for a cold start is answered 503 at the drain deadline', async () => {
  if (srv) await srv.stop();
  srv = null;
  const dir3 = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-ep-embed-'));
  execFileSync(vkptBin(), ['register', modelDir, '--name', NAME, '--data-dir', dir3], { env: process.env });
  after(() => fs.rmSync(dir3, { recursive: true, force: true }));
  // every replica takes 5 s longer to start: the cold start outlasts the 1 s deadline
  const s = await startServer(['--data-dir', dir3, '--test-chunk-size', '20', '--autoscale-interval', '0.2',
    '--scale-to-zero-delay', '0.5', '--shutdown-timeout', '1'], { env: { VKPT_TEST_REPLICA_DELAY_MS: '5000' } });
  const call = (method, route, body) => apiCall(s.url, method, route, body);
  assert.equal((await call('POST', '/api/2.0/serving-endpoints', {
    name: 'bge-cold',
    config: { served_entities: [{ entity_name: NAME, entity_version: 1, min_provisioned_throughput: 0,
      max_provisioned_throughput: 20, scale_to_zero_enabled: true }] },
  })).status, 200);
  const t0 = Date.now();
  const zl = 'endpoint="bge-cold",served_entity="bge-1"';
  for (;;) { // ready (one replica, after the 5 s delay), then scaled to zero
    const m = await metrics(s.url);
    if (m[`vkpt_endpoint_scaling_actions_total{${zl},direction="to_zero"}`] >= 1) break;
    assert.ok(Date.now() - t0 < 30000, 'bge-cold did not scale to zero');
    await sleep(100);
  }
  const pending = call('POST', '/serving-endpoints/bge-cold/invocations', { input: 'hello' });
  await sleep(300); // parked: its replica needs 5 s
  const t1 = Date.now();
  s.child.kill('SIGTERM');
  const r = await pending;
  const waited = Date.now() - t1;
  assert.equal(r.status, 503, r.text);
  assert.equal(r.json.error_code, 'TEMPORARILY_UNAVAILABLE', r.text);
  assert.ok(waited < 3500, `answered ${waited} ms after SIGTERM, before the replica could start`);
  // it exits 0 once the replica start under way has ended (no second signal)
  const ex = await s.exited;
  assert.equal(ex.code, 0, `exit ${ex.code} (${ex.signal}); log:\n${s.log().slice(-2000)}`);
});
