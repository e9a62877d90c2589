// Databricks' serving-endpoints API on the real `vkpt serve --data-dir`:
// the model registry (CLI and REST), get-model-optimization-info with a chunk
// size measured on this device (and cached), invalid bands refused with
// INVALID_PARAMETER_VALUE, the endpoint lifecycle with its state
// transitions (create, get, list, query, update, a refused concurrent
// update, a failed update that keeps the old config serving, traffic split,
// delete), and kill -9 in the middle of an update.
//
// Test-only server settings: VKPT_TEST_REPLICA_DELAY_MS makes every replica
// start take 1.5 s longer so updates are seen IN_PROGRESS;
// VKPT_TEST_FAIL_REPLICA=broken makes the replicas of a served entity named
// "broken" fail to start (docs/PROVISIONING.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, vkptBin, repoRoot, sleep, metrics, apiCall } from './server_util.mjs';

const STORIES = path.join(repoRoot, 'models', 'stories260K', 'stories260K.gguf');
const STORIES_SHA256 = 'sha256:270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d';
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-endpoints-'));
const serveArgs = ['--data-dir', dataDir, '--calibration-seconds', '1', '--autoscale-interval', '0.25'];
const serveEnv = { VKPT_TEST_REPLICA_DELAY_MS: '1500', VKPT_TEST_FAIL_REPLICA: 'broken' };
let srv;
let chunk; // the measured throughput_chunk_size
let calibratedAt;

const api = (method, route, body) => apiCall(srv.url, method, route, body);

const endpoint = (name) => api('GET', `/api/2.0/serving-endpoints/${name}`);

// Poll an endpoint until `ok(json)`; returns the last GET.
async function waitFor(name, ok, what, ms = 60000) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < ms) {
    last = await endpoint(name);
    if (last.status === 200 && ok(last.json)) return last.json;
    await sleep(200);
  }
  assert.fail(`${name}: ${what} not reached in ${ms} ms; last: ${last.text}`);
}
const ready = (j) => j.state.ready === 'READY' && j.state.config_update === 'NOT_UPDATING';

function assertDbError(r, status, code) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.error_code, code, r.text);
  assert.equal(typeof r.json.message, 'string');
  assert.ok(r.json.message.length > 10, r.text);
}

async function invoke(name, content = 'Once upon a time', extra = {}) {
  return api('POST', `/serving-endpoints/${name}/invocations`, {
    messages: [{ role: 'user', content }],
    max_tokens: 4,
    temperature: 0,
    ...extra,
  });
}

const entity = (name, version, min, max, more = {}) => ({
  entity_name: name,
  entity_version: version,
  min_provisioned_throughput: min,
  max_provisioned_throughput: max,
  ...more,
});

before(async () => {
  execFileSync(vkptBin(), ['register', STORIES, '--name', 'main.default.stories', '--context-length', '128',
    '--data-dir', dataDir], { env: process.env });
  srv = await startServer(serveArgs, { env: serveEnv });
});

after(async () => {
  if (srv) assert.equal(await srv.stop(), 0);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test('the registry over REST and the CLI, system.ai included', async () => {
  const list = await api('GET', '/api/2.0/vkpt/registered-models');
  assert.equal(list.status, 200);
  const names = list.json.registered_models.map((m) => m.name);
  assert.ok(names.includes('main.default.stories'), names);
  assert.ok(names.includes('system.ai.stories260K'), `the bundled model is in system.ai: ${names}`);

  const r = await api('POST', '/api/2.0/vkpt/registered-models', {
    name: 'main.default.storyteller',
    source: STORIES,
    context_length: 128,
    metadata: { system_prompt: 'Tell a story about a dragon and a princess.' },
  });
  assert.equal(r.status, 200, r.text);
  const v = r.json.model_version;
  assert.equal(v.name, 'main.default.storyteller');
  assert.equal(v.version, 1);
  assert.equal(v.checksum, STORIES_SHA256);
  assert.equal(v.task, 'llm/v1/chat');
  assert.equal(v.model_type, 'llama');
  assert.equal(v.context_length, 128);
  assert.equal(v.metadata.system_prompt, 'Tell a story about a dragon and a princess.');

  const cli = await api('GET', '/api/2.0/vkpt/registered-models/main.default.stories/versions/1');
  assert.equal(cli.status, 200);
  assert.equal(cli.json.model_version.checksum, STORIES_SHA256);
  const one = await api('GET', '/api/2.0/vkpt/registered-models/main.default.stories');
  assert.equal(one.json.registered_model.latest_version, 1);

  assertDbError(await api('GET', '/api/2.0/vkpt/registered-models/main.default.stories/versions/9'), 404,
    'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await api('POST', '/api/2.0/vkpt/registered-models', { name: 'stories', source: STORIES }), 400,
    'INVALID_PARAMETER_VALUE');
  assertDbError(await api('POST', '/api/2.0/vkpt/registered-models', { name: 'a.b.c', source: '/no/such.gguf' }),
    404, 'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await api('POST', '/api/2.0/vkpt/registered-models', '{"name":'), 400, 'MALFORMED_REQUEST');
});

test('get-model-optimization-info: a chunk size measured on this device, then cached', async () => {
  const t0 = Date.now();
  const r = await api('GET', '/api/2.0/serving-endpoints/get-model-optimization-info/main.default.stories/1');
  const firstMs = Date.now() - t0;
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.optimizable, true);
  assert.equal(r.json.model_type, 'llama');
  chunk = r.json.throughput_chunk_size;
  assert.ok(Number.isInteger(chunk) && chunk > 0, r.text);
  const cal = r.json.vkpt_calibration;
  assert.equal(cal.source, 'measured');
  const tps = cal.tokens_per_second;
  // rounded down to two significant figures
  const mag = 10 ** Math.max(0, Math.floor(Math.log10(tps)) - 1);
  assert.equal(chunk, Math.floor(tps / mag) * mag, `${tps} tokens/s -> ${chunk}`);
  assert.equal(cal.details.workload.input_tokens, 96); // min(2048, 128 * 3/4)
  assert.equal(cal.details.workload.output_tokens, 16); // min(256, 128 / 8)
  assert.ok(cal.details.levels.length >= 2, 'several concurrency levels ran');
  assert.match(cal.device_uuid, /^[0-9a-f]{32}$/);
  calibratedAt = cal.created_timestamp;
  console.log(`# calibration: ${tps.toFixed(1)} tokens/s -> chunk ${chunk} (${firstMs} ms)`);

  // cached per (checksum, device, version): the REST-registered copy of the same file too
  for (const route of ['main.default.stories/1', 'main.default.storyteller/1', 'system.ai.stories260K/1']) {
    const t1 = Date.now();
    const again = await api('GET', `/api/2.0/serving-endpoints/get-model-optimization-info/${route}`);
    assert.equal(again.status, 200, again.text);
    if (route === 'system.ai.stories260K/1') continue; // its context differs, but the checksum is the same
    assert.equal(again.json.throughput_chunk_size, chunk);
    assert.equal(again.json.vkpt_calibration.created_timestamp, calibratedAt, 'not measured again');
    assert.ok(Date.now() - t1 < 3000, 'answered from the cache');
  }
  assertDbError(await api('GET', '/api/2.0/serving-endpoints/get-model-optimization-info/main.default.nope/1'), 404,
    'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await api('GET', '/api/2.0/serving-endpoints/get-model-optimization-info/main.default.stories/x'), 400,
    'INVALID_PARAMETER_VALUE');
});

test('bands that are not whole chunks are refused with the valid values', async () => {
  const create = (e, name = 'bad') => api('POST', '/api/2.0/serving-endpoints', { name, config: { served_entities: [e] } });
  let r = await create(entity('main.default.stories', 1, chunk + 1, 2 * chunk));
  assertDbError(r, 400, 'INVALID_PARAMETER_VALUE');
  assert.ok(r.json.message.includes(`${chunk}, ${2 * chunk}, ${3 * chunk}`), r.json.message);
  assert.ok(r.json.message.includes('min_provisioned_throughput'), r.json.message);
  r = await create(entity('main.default.stories', 1, chunk, 2 * chunk + 1));
  assertDbError(r, 400, 'INVALID_PARAMETER_VALUE');
  assert.ok(r.json.message.includes('max_provisioned_throughput'), r.json.message);
  r = await create(entity('main.default.stories', 1, 0, chunk));
  assertDbError(r, 400, 'INVALID_PARAMETER_VALUE');
  assert.ok(r.json.message.includes('scale_to_zero_enabled'), r.json.message);
  assertDbError(await create(entity('main.default.stories', 1, 2 * chunk, chunk)), 400, 'INVALID_PARAMETER_VALUE');
  assertDbError(await create(entity('main.default.stories', 1, chunk, 0)), 400, 'INVALID_PARAMETER_VALUE');
  assertDbError(await create({ ...entity('main.default.stories', 1, chunk, chunk), workload_size: 'Small' }), 400,
    'INVALID_PARAMETER_VALUE');
  assertDbError(await create(entity('main.default.stories', 'one', chunk, chunk)), 400, 'INVALID_PARAMETER_VALUE');
  assertDbError(await create(entity('main.default.nope', 1, chunk, chunk)), 404, 'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await create(entity('main.default.stories', 1, chunk, chunk), 'bad name!'), 400,
    'INVALID_PARAMETER_VALUE');
  assertDbError(await api('POST', '/api/2.0/serving-endpoints', { name: 'x', config: {} }), 400,
    'INVALID_PARAMETER_VALUE');
  const list = await api('GET', '/api/2.0/serving-endpoints');
  assert.deepEqual(list.json.endpoints, [], 'nothing was created');
});

test('lifecycle: create (Databricks example: min 2 chunks, max 3), query, update, refuse, fail, split, delete', async () => {
  // create: accepted at once, NOT_READY while its replicas start
  let r = await api('POST', '/api/2.0/serving-endpoints', {
    name: 'stories-pt',
    config: { served_entities: [entity('main.default.stories', '1', 2 * chunk, 3 * chunk)] },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.name, 'stories-pt');
  assert.deepEqual(r.json.state, { ready: 'NOT_READY', config_update: 'IN_PROGRESS' });
  assert.equal(r.json.config, undefined);
  const pe = r.json.pending_config.served_entities[0];
  assert.equal(pe.name, 'stories-1'); // Databricks' default: model name and version
  assert.equal(pe.entity_version, '1');
  assert.equal(pe.min_provisioned_throughput, 2 * chunk);
  assert.equal(pe.state.deployment, 'DEPLOYMENT_CREATING');
  assert.equal(r.json.pending_config.config_version, 1);
  assertDbError(await invoke('stories-pt'), 503, 'TEMPORARILY_UNAVAILABLE');
  assertDbError(await api('POST', '/api/2.0/serving-endpoints', {
    name: 'stories-pt', config: { served_entities: [entity('main.default.stories', 1, chunk, chunk)] },
  }), 409, 'RESOURCE_ALREADY_EXISTS');

  let ep = await waitFor('stories-pt', ready, 'READY');
  assert.equal(ep.pending_config, undefined);
  assert.equal(ep.config.config_version, 1);
  const se = ep.config.served_entities[0];
  assert.equal(se.state.deployment, 'DEPLOYMENT_READY');
  assert.equal(se.vkpt.replicas, 2, 'min = 2 chunks: two replicas');
  assert.equal(se.vkpt.throughput_chunk_size, chunk);
  assert.deepEqual(ep.config.traffic_config.routes, [{ served_model_name: 'stories-1', traffic_percentage: 100 }]);
  const list = await api('GET', '/api/2.0/serving-endpoints');
  assert.deepEqual(list.json.endpoints.map((e) => e.name), ['stories-pt']);

  // query: invocations (chat shape) and the OpenAI routes with the endpoint as the model
  r = await invoke('stories-pt');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('served-model-name'), 'stories-1');
  assert.equal(r.json.object, 'chat.completion');
  assert.equal(r.json.usage.completion_tokens, 4);
  const plainPrompt = r.json.usage.prompt_tokens;
  assertDbError(await api('POST', '/serving-endpoints/stories-pt/invocations', { prompt: 'hi' }), 400,
    'INVALID_PARAMETER_VALUE');
  assertDbError(await invoke('nope'), 404, 'RESOURCE_DOES_NOT_EXIST');
  const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const oc = await client.chat.completions.create({
    model: 'stories-pt', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 4, temperature: 0,
  });
  assert.equal(oc.model, 'stories-pt');
  assert.equal(oc.choices[0].message.content, r.json.choices[0].message.content, 'same greedy answer');
  assert.ok((await client.models.list()).data.some((m) => m.id === 'stories-pt'));
  const dbx = new OpenAI({ baseURL: `${srv.url}/serving-endpoints`, apiKey: 'unused', maxRetries: 0 });
  const dc = await dbx.chat.completions.create({ model: 'stories-pt', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
  assert.equal(dc.usage.completion_tokens, 2);

  // update: the old config serves until the new one is ready; a second update is refused meanwhile
  r = await api('PUT', '/api/2.0/serving-endpoints/stories-pt/config', {
    served_entities: [entity('main.default.storyteller', 1, chunk, 2 * chunk, { name: 'teller' })],
  });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.state, { ready: 'READY', config_update: 'IN_PROGRESS' });
  assert.equal(r.json.pending_config.config_version, 2);
  assert.equal(r.json.pending_config.served_entities[0].name, 'teller');
  assert.equal(r.json.config.served_entities[0].name, 'stories-1');
  assertDbError(await api('PUT', '/api/2.0/serving-endpoints/stories-pt/config', {
    served_entities: [entity('main.default.stories', 1, chunk, chunk)],
  }), 409, 'RESOURCE_CONFLICT');
  r = await invoke('stories-pt');
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('served-model-name'), 'stories-1', 'the old config serves during the update');
  ep = await waitFor('stories-pt', ready, 'config version 2');
  assert.equal(ep.config.config_version, 2);
  assert.equal(ep.config.served_entities[0].name, 'teller');
  assert.equal(ep.config.served_entities[0].vkpt.replicas, 1);
  r = await invoke('stories-pt');
  assert.equal(r.headers.get('served-model-name'), 'teller');
  assert.ok(r.json.usage.prompt_tokens > plainPrompt + 5, 'the version\'s metadata system prompt is applied');

  // a failed update: UPDATE_FAILED with the reason; the previous config keeps serving
  r = await api('PUT', '/api/2.0/serving-endpoints/stories-pt/config', {
    served_entities: [entity('main.default.stories', 1, chunk, chunk, { name: 'broken' })],
  });
  assert.equal(r.status, 200, r.text);
  ep = await waitFor('stories-pt', (j) => j.state.config_update === 'UPDATE_FAILED', 'UPDATE_FAILED');
  assert.equal(ep.state.ready, 'READY');
  assert.match(ep.state.update_message, /broken.*fault injected/);
  assert.equal(ep.pending_config, undefined);
  assert.equal(ep.config.config_version, 2);
  r = await invoke('stories-pt');
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('served-model-name'), 'teller');

  // traffic split by percentage: smooth weighted round robin, exact over 8 requests
  r = await api('PUT', '/api/2.0/serving-endpoints/stories-pt/config', {
    served_entities: [entity('main.default.stories', 1, chunk, chunk, { name: 'a' }),
      entity('main.default.stories', 1, chunk, chunk, { name: 'b' })],
    traffic_config: { routes: [{ served_model_name: 'a', traffic_percentage: 75 },
      { served_model_name: 'b', traffic_percentage: 25 }] },
  });
  assert.equal(r.status, 200, r.text);
  ep = await waitFor('stories-pt', ready, 'config version 3');
  assert.equal(ep.config.config_version, 4, 'the failed update used version 3');
  const seen = { a: 0, b: 0 };
  for (let i = 0; i < 8; i++) {
    const q = await invoke('stories-pt');
    assert.equal(q.status, 200);
    seen[q.headers.get('served-model-name')]++;
  }
  assert.deepEqual(seen, { a: 6, b: 2 });
  assertDbError(await api('PUT', '/api/2.0/serving-endpoints/stories-pt/config', {
    served_entities: [entity('main.default.stories', 1, chunk, chunk, { name: 'a' })],
    traffic_config: { routes: [{ served_model_name: 'a', traffic_percentage: 60 }] },
  }), 400, 'INVALID_PARAMETER_VALUE');

  // per-endpoint metrics in Prometheus text, and in /metrics
  const m = await api('GET', '/api/2.0/serving-endpoints/stories-pt/metrics');
  assert.equal(m.status, 200);
  assert.match(m.headers.get('content-type'), /^text\/plain/);
  assert.ok(m.text.includes('vkpt_endpoint_requests_total{endpoint="stories-pt",served_entity="a"} 6'), m.text);
  assert.ok(m.text.includes(`vkpt_endpoint_provisioned_tokens_per_second{endpoint="stories-pt",served_entity="b",bound="max"} ${chunk}`));
  assert.ok(m.text.includes('vkpt_endpoint_replicas{endpoint="stories-pt",served_entity="a",state="ready"} 1'));
  const all = await metrics(srv.url);
  assert.ok(Object.keys(all).some((k) => k.startsWith('vkpt_endpoint_tokens_total{endpoint="stories-pt"')));

  // delete
  r = await api('DELETE', '/api/2.0/serving-endpoints/stories-pt');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, {});
  assertDbError(await endpoint('stories-pt'), 404, 'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await api('DELETE', '/api/2.0/serving-endpoints/stories-pt'), 404, 'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await invoke('stories-pt'), 404, 'RESOURCE_DOES_NOT_EXIST');
  assertDbError(await api('GET', '/api/2.0/serving-endpoints/stories-pt/metrics'), 404, 'RESOURCE_DOES_NOT_EXIST');
});

test('kill -9 during an update: the endpoint comes back and the update completes', async () => {
  let r = await api('POST', '/api/2.0/serving-endpoints', {
    name: 'persist', config: { served_entities: [entity('main.default.stories', 1, chunk, chunk, { name: 'p1' })] },
  });
  assert.equal(r.status, 200, r.text);
  await waitFor('persist', ready, 'READY');
  r = await api('PUT', '/api/2.0/serving-endpoints/persist/config', {
    served_entities: [entity('main.default.storyteller', 1, chunk, 2 * chunk, { name: 'p2' })],
  });
  assert.equal(r.json.state.config_update, 'IN_PROGRESS');
  await srv.stop('SIGKILL'); // while p2's replica is starting (1.5 s)

  srv = await startServer(serveArgs, { env: serveEnv });
  let ep = (await endpoint('persist')).json;
  assert.equal(ep.state.config_update, 'IN_PROGRESS', 'the update is resumed');
  assert.equal(ep.config.served_entities[0].name, 'p1');
  assert.equal(ep.pending_config.served_entities[0].name, 'p2');
  assert.equal(ep.pending_config.config_version, 2);
  ep = await waitFor('persist', ready, 'the resumed update');
  assert.equal(ep.config.served_entities[0].name, 'p2');
  assert.equal(ep.config.served_entities[0].max_provisioned_throughput, 2 * chunk);
  r = await invoke('persist');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers.get('served-model-name'), 'p2');
  // the registry and the calibration cache came back too
  const names = (await api('GET', '/api/2.0/vkpt/registered-models')).json.registered_models.map((m) => m.name);
  assert.ok(names.includes('main.default.storyteller'));
  const oi = await api('GET', '/api/2.0/serving-endpoints/get-model-optimization-info/main.default.stories/1');
  assert.equal(oi.json.throughput_chunk_size, chunk);
  assert.equal(oi.json.vkpt_calibration.created_timestamp, calibratedAt);

  // and a kill -9 with nothing in progress loses nothing either
  await srv.stop('SIGKILL');
  srv = await startServer(serveArgs, { env: serveEnv });
  ep = await waitFor('persist', ready, 'READY after a restart');
  assert.equal(ep.config.config_version, 2);
  assert.equal(ep.config.served_entities[0].name, 'p2');
  assert.equal(ep.pending_config, undefined);
});
