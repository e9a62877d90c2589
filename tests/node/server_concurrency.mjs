// Continuous batching seen from the API: 64 concurrent streaming greedy
// requests return exactly what each returns alone, and a client that
// disconnects mid-stream frees its sequence and KV blocks (visible in
// /metrics). Real `vkpt serve`, real stories260K, official openai client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, metrics, metric, sleep } from './server_util.mjs';

const MODEL = 'stories260K';
let srv;
let client;

before(async () => {
  srv = await startServer(['--parallel', '64']);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'not-needed', maxRetries: 0 });
});

after(async () => {
  assert.equal(await srv.stop(), 0);
});

// 64 distinct prompts of different lengths.
const names = ['Lily', 'Tom', 'Sue', 'Max', 'Ben', 'Mia', 'Sam', 'Amy'];
const things = ['a red ball', 'a big dog', 'a little bird', 'a shiny car', 'a tall tree', 'a blue boat', 'a soft cat', 'a funny hat'];
const prompts = [];
for (const n of names) for (const t of things) prompts.push(`One day, ${n} found ${t}`);

async function streamed(prompt) {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: prompt }],
    max_tokens: 16,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const c of stream) {
    text += c.choices[0]?.delta?.content ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
    usage = c.usage ?? usage;
  }
  return { text, finish, completion_tokens: usage?.completion_tokens };
}

test('64 concurrent streaming greedy requests each equal the request alone', async () => {
  const alone = [];
  for (const p of prompts) alone.push(await streamed(p));
  const distinct = new Set(alone.map((a) => a.text)).size;
  assert.ok(distinct >= 16, `the prompts lead to different stories (${distinct} distinct)`);
  const t0 = Date.now();
  const together = await Promise.all(prompts.map((p) => streamed(p)));
  const ms = Date.now() - t0;
  for (let i = 0; i < prompts.length; i++) {
    assert.deepEqual(together[i], alone[i], `request ${i}: ${prompts[i]}`);
    assert.equal(together[i].completion_tokens, 16);
    assert.equal(together[i].finish, 'length');
  }
  const m = await metrics(srv.url);
  assert.equal(metric(m, 'vkpt_running_sequences'), 0);
  assert.equal(metric(m, 'vkpt_kv_blocks_used'), 0);
  console.log(`64 concurrent streams took ${ms} ms`);
});

test('a client that disconnects mid-stream frees its KV blocks', async () => {
  const before_ = await metrics(srv.url);
  const canceled0 = metric(before_, 'vkpt_engine_requests_canceled_total');
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Once upon a time' }],
    max_tokens: 1500,
    ignore_eos: true,
    temperature: 0,
    stream: true,
  });
  let n = 0;
  for await (const c of stream) {
    if (c.choices[0]?.delta?.content) n++;
    if (n === 5) break; // leaving the loop aborts the HTTP request: the socket closes
  }
  // Right after the disconnect the sequence may still hold blocks; within a
  // few engine steps they are all free again.
  let m;
  for (let i = 0; i < 100; i++) {
    m = await metrics(srv.url);
    if (metric(m, 'vkpt_kv_blocks_used') === 0 && metric(m, 'vkpt_requests_in_flight') === 0) break;
    await sleep(50);
  }
  assert.equal(metric(m, 'vkpt_kv_blocks_used'), 0, 'KV blocks freed');
  assert.equal(metric(m, 'vkpt_running_sequences'), 0);
  assert.equal(metric(m, 'vkpt_requests_in_flight'), 0);
  assert.equal(metric(m, 'vkpt_engine_requests_canceled_total'), canceled0 + 1);
  assert.ok(m['vkpt_requests_finished_total{model="stories260K",reason="abort"}'] >= 1);
  assert.ok(m['vkpt_http_requests_total{route="/v1/chat/completions",status="499"}'] >= 1);
  // and the server serves the next request
  const r = await client.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 4, temperature: 0,
  });
  assert.equal(r.usage.completion_tokens, 4);
});

test('a disconnect is noticed while the request holds KV blocks', async () => {
  // Check the blocks are visible while the stream runs, then freed.
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Once upon a time' }],
    max_tokens: 1500,
    ignore_eos: true,
    temperature: 0,
    stream: true,
  });
  let during;
  let n = 0;
  for await (const c of stream) {
    if (c.choices[0]?.delta?.content && ++n === 3) {
      during = await metrics(srv.url);
      break;
    }
  }
  assert.ok(metric(during, 'vkpt_kv_blocks_used') > 0, 'the running stream holds blocks');
  assert.equal(metric(during, 'vkpt_running_sequences'), 1);
  let m;
  for (let i = 0; i < 100; i++) {
    m = await metrics(srv.url);
    if (metric(m, 'vkpt_kv_blocks_used') === 0) break;
    await sleep(50);
  }
  assert.equal(metric(m, 'vkpt_kv_blocks_used'), 0);
});
