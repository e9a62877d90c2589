// End-to-end tests of POST /v1/embeddings on `vkpt serve` with an encoder,
// driven by the official openai npm client (plus fetch for error bodies and
// vkpt's extensions), and of `vkpt embed`.
//
// The model is the bert fixture (tests/fixtures/hf/bert: transformers'
// golden CLS/mean vectors) in a temporary folder with a WordPiece
// tokenizer.json and sentence-transformers files asking for CLS pooling and
// normalisation, as BGE's do.
// Run: VKPT_BIN=build/tools/vkpt node --test tests/node/server_embed.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, repoRoot, vkptBin, metrics, postJson } from './server_util.mjs';
import { makeEmbedModel } from './embed_model.mjs';

const fixture = path.join(repoRoot, 'tests', 'fixtures', 'hf', 'bert');
const golden = JSON.parse(fs.readFileSync(path.join(fixture, 'golden.json'), 'utf8')).cases;
let dir;
let MODEL;
let srv;
let client;

before(async () => {
  dir = makeEmbedModel();
  MODEL = path.basename(dir);
  srv = await startServer(['-m', dir, '--parallel', '8']);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'not-needed', maxRetries: 0 });
});

after(async () => {
  assert.equal(await srv.stop(), 0, 'vkpt serve exits 0 on SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
});

// max |a - b| / max |b|
function relErr(a, b) {
  assert.equal(a.length, b.length);
  let d = 0, m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

const post = (route, body) => postJson(srv.url, route, body);

test('models.list names the embedding model', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [MODEL]);
  assert.equal(list.data[0].max_model_len, 128); // BERT's position table
});

test('token-id inputs match transformers (CLS + normalize from the model files)', async () => {
  const r = await client.embeddings.create({
    model: MODEL, input: golden.map((c) => c.input_ids), encoding_format: 'float',
  });
  assert.equal(r.object, 'list');
  assert.equal(r.model, MODEL);
  assert.equal(r.data.length, golden.length);
  const tokens = golden.reduce((s, c) => s + c.input_ids.length, 0);
  assert.deepEqual(r.usage, { prompt_tokens: tokens, total_tokens: tokens });
  r.data.forEach((d, i) => {
    assert.equal(d.object, 'embedding');
    assert.equal(d.index, i);
    assert.ok(relErr(d.embedding, golden[i].cls_l2) < 1e-4, `case ${i}: ${relErr(d.embedding, golden[i].cls_l2)}`);
  });
});

test('the client\'s default (base64 on the wire) decodes to the float answer exactly', async () => {
  const input = golden.map((c) => c.input_ids);
  const f = await client.embeddings.create({ model: MODEL, input, encoding_format: 'float' });
  const b = await client.embeddings.create({ model: MODEL, input }); // the client asks for base64
  // JSON carries the shortest decimal of each f32: the same f32 once rounded
  const f32 = (v) => v.map(Math.fround);
  b.data.forEach((d, i) => assert.deepEqual(Array.from(d.embedding), f32(f.data[i].embedding)));
  // explicit base64: the client hands the string through
  const raw = await client.embeddings.create({ model: MODEL, input: golden[0].input_ids, encoding_format: 'base64' });
  assert.equal(typeof raw.data[0].embedding, 'string');
  const buf = Buffer.from(raw.data[0].embedding, 'base64');
  const v = Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4));
  assert.deepEqual(v, f32(f.data[0].embedding));
});

test('string inputs are tokenized with [CLS] .. [SEP]; usage counts their tokens', async () => {
  const input = ['The quick brown fox', 'hello world', 'jumps over the lazy dog!'];
  const r = await client.embeddings.create({ model: MODEL, input, encoding_format: 'float' });
  let tokens = 0;
  for (const text of input) {
    const t = await post('/tokenize', { prompt: text });
    assert.equal(t.body.tokens[0], 1);
    assert.equal(t.body.tokens[t.body.tokens.length - 1], 2);
    tokens += t.body.count;
  }
  assert.equal(r.usage.prompt_tokens, tokens);
  assert.equal(r.data.length, 3);
  for (const d of r.data) assert.ok(Math.abs(norm(d.embedding) - 1) < 1e-5);
  // one string alone gives the same vector as inside the batch
  const one = await client.embeddings.create({ model: MODEL, input: input[1], encoding_format: 'float' });
  assert.deepEqual(one.data[0].embedding, r.data[1].embedding);
});

test('dimensions truncates, then normalizes', async () => {
  const r = await client.embeddings.create({
    model: MODEL, input: golden[1].input_ids, dimensions: 16, encoding_format: 'float',
  });
  const v = r.data[0].embedding;
  assert.equal(v.length, 16);
  const cls = golden[1].cls.slice(0, 16), n = norm(cls);
  assert.ok(relErr(v, cls.map((x) => x / n)) < 1e-4);
});

test('vkpt extensions: pooling and normalize per request', async () => {
  for (const [pooling, normalize, key] of [['mean', false, 'mean'], ['mean', true, 'mean_l2'], ['cls', false, 'cls']]) {
    const r = await post('/v1/embeddings', {
      model: MODEL, input: golden.map((c) => c.input_ids), pooling, normalize,
    });
    assert.equal(r.status, 200);
    r.body.data.forEach((d, i) => assert.ok(relErr(d.embedding, golden[i][key]) < 1e-4, `${key} ${i}`));
  }
});

test('concurrent clients batch together and get what they get alone', async () => {
  const inputs = [];
  for (let i = 0; i < 24; i++) {
    const n = 3 + ((i * 37) % 100);
    inputs.push([1, ...Array.from({ length: n - 2 }, (_, k) => 8 + ((i * 131 + k * 17) % 500)), 2]);
  }
  const alone = [];
  for (const inp of inputs) {
    const r = await client.embeddings.create({ model: MODEL, input: inp, encoding_format: 'float' });
    alone.push(r.data[0].embedding);
  }
  const steps0 = (await metrics(srv.url))['vkpt_engine_steps_total{model="' + MODEL + '"}'];
  const all = await Promise.all(inputs.map((inp) =>
    client.embeddings.create({ model: MODEL, input: inp, encoding_format: 'float' })));
  all.forEach((r, i) => assert.deepEqual(r.data[0].embedding, alone[i]));
  const steps1 = (await metrics(srv.url))['vkpt_engine_steps_total{model="' + MODEL + '"}'];
  assert.ok(steps1 - steps0 < inputs.length, `batched: ${steps1 - steps0} steps for ${inputs.length} requests`);
});

test('errors are OpenAI-shaped and say what to fix', async () => {
  const cases = [
    [{ model: MODEL }, 400, 'input', 'missing_required_parameter'],
    [{ input: '' }, 400, 'input', 'invalid_value'],
    [{ input: [] }, 400, 'input', 'invalid_value'],
    [{ input: ['a', 1] }, 400, 'input[1]', 'invalid_type'],
    [{ input: [[1, 2], 'a'] }, 400, 'input[1]', 'invalid_type'],
    [{ input: [[]] }, 400, 'input[0]', 'invalid_value'],
    [{ input: [1, -2] }, 400, 'input', 'invalid_type'],
    [{ input: [1, 512, 2] }, 400, 'input', 'invalid_value'],
    [{ input: Array.from({ length: 129 }, () => 7) }, 400, 'input', 'context_length_exceeded'],
    [{ input: 'x', encoding_format: 'int8' }, 400, 'encoding_format', 'invalid_value'],
    [{ input: 'x', dimensions: 0 }, 400, 'dimensions', 'invalid_value'],
    [{ input: 'x', dimensions: 65 }, 400, 'dimensions', 'invalid_value'],
    [{ input: 'x', pooling: 'max' }, 400, 'pooling', 'invalid_value'],
    [{ input: 'x', normalize: 'yes' }, 400, 'normalize', 'invalid_type'],
    [{ input: 'x', temperature: 1 }, 400, 'temperature', 'unknown_parameter'],
    [{ input: 'x', model: 'nope' }, 404, 'model', 'model_not_found'],
    [{ input: Array.from({ length: 2049 }, () => 'a') }, 400, 'input', 'invalid_value'],
  ];
  for (const [body, status, param, code] of cases) {
    const r = await post('/v1/embeddings', body);
    assert.equal(r.status, status, JSON.stringify(body).slice(0, 80));
    assert.equal(r.body.error.param, param, JSON.stringify(r.body));
    assert.equal(r.body.error.code, code, JSON.stringify(r.body));
    assert.equal(r.body.error.type, 'invalid_request_error');
    assert.ok(r.body.error.message.length > 10);
  }
  const bad = await fetch(`${srv.url}/v1/embeddings`, { method: 'POST', body: '{"input": ' });
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.code, 'invalid_json');
  // generation routes on an embedding model: a clear 400
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 400 && /embedding model/.test(e.message));
  await assert.rejects(client.completions.create({ model: MODEL, prompt: 'hi' }), (e) => e.status === 400);
  // and the server still answers
  const ok = await client.embeddings.create({ model: MODEL, input: 'still here', encoding_format: 'float' });
  assert.equal(ok.data[0].embedding.length, 64);
  const m = await metrics(srv.url);
  assert.ok(m['vkpt_http_requests_total{route="/v1/embeddings",status="200"}'] > 0);
  assert.ok(m['vkpt_http_requests_total{route="/v1/embeddings",status="400"}'] >= 15);
});

test('vkpt embed prints the vector as a JSON array', () => {
  const out = execFileSync(vkptBin(), ['embed', '-m', dir, '--tokens', golden[2].input_ids.join(','),
    '--pooling', 'mean', '--no-normalize'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const v = JSON.parse(out.trim());
  assert.ok(relErr(v, golden[2].mean) < 1e-4);
  // defaults from the model files: CLS + normalize; -p text like the server's
  const two = execFileSync(vkptBin(), ['embed', '-m', dir, '--tokens', '1,426,2', '-p', 'hello world'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(two.length, 2);
  assert.ok(relErr(two[0], golden[0].cls_l2) < 1e-4);
  assert.ok(Math.abs(norm(two[1]) - 1) < 1e-5);
});
