// End-to-end tests of `vkpt serve` on the real stories260K model, driven by
// the official openai npm client (plus fetch for vkpt's own routes).
// Run: VKPT_BIN=build/tools/vkpt node --test tests/node/server_e2e.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, repoRoot, postJson } from './server_util.mjs';

const MODEL = 'stories260K';
let srv;
let client;

before(async () => {
  srv = await startServer([]);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'not-needed', maxRetries: 0 });
});

after(async () => {
  assert.equal(await srv.stop(), 0, 'vkpt serve exits 0 on SIGTERM');
});

const story = [{ role: 'user', content: 'Once upon a time' }];

const post = (route, body) => postJson(srv.url, route, body);

// Every chunk of a stream, in order.
async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

test('models.list names the served model', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.deepEqual(ids, [MODEL]);
  assert.equal(list.data[0].object, 'model');
  const one = await client.models.retrieve(MODEL);
  assert.equal(one.id, MODEL);
});

test('completions: greedy output is llama2.c\'s, token for token', async () => {
  const expected = fs
    .readFileSync(path.join(repoRoot, 'models/stories260K/expected-greedy.txt'), 'utf8')
    .split('\n')
    .slice(1)
    .join('\n');
  const r = await client.completions.create({
    model: MODEL,
    prompt: 'Once upon a time',
    max_tokens: 120,
    temperature: 0,
  });
  const text = r.choices[0].text;
  assert.equal(r.object, 'text_completion');
  assert.ok(text.length > 200, `a long story: ${JSON.stringify(text)}`);
  assert.ok(expected.startsWith('Once upon a time' + text), `matches llama2.c: ${JSON.stringify(text)}`);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 120);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 120);
});

test('chat.completions: plain answer, usage counts the rendered template', async () => {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: story,
    max_tokens: 24,
    temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  const m = r.choices[0].message;
  assert.equal(m.role, 'assistant');
  assert.ok(m.content.startsWith(', there was a little girl'), JSON.stringify(m.content));
  assert.equal(r.choices[0].finish_reason, 'length');
  const tok = await post('/tokenize', { model: MODEL, messages: story });
  assert.equal(tok.status, 200);
  assert.equal(r.usage.prompt_tokens, tok.body.count);
  assert.equal(r.usage.completion_tokens, 24);
  assert.equal(r.usage.total_tokens, tok.body.count + 24);
});

test('chat.completions: streaming gives the same text, OpenAI chunk format, usage last', async () => {
  const req = { model: MODEL, messages: story, max_tokens: 40, temperature: 0 };
  const whole = await client.chat.completions.create(req);
  const chunks = await collect(
    await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } }),
  );
  assert.ok(chunks.length >= 3);
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.id, chunks[0].id);
    assert.equal(c.model, MODEL);
  }
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, whole.choices[0].message.content);
  const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.equal(finishes.length, 1);
  assert.equal(finishes[0].choices[0].finish_reason, 'length');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 40);
  assert.equal(last.usage.prompt_tokens, whole.usage.prompt_tokens);
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
});

test('chat.completions: logprobs with top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: story,
    max_tokens: 16,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, 16);
  assert.equal(lp.map((t) => t.token).join(''), r.choices[0].message.content);
  for (const t of lp) {
    assert.ok(t.logprob <= 0 && t.logprob > -50);
    assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
    assert.equal(t.top_logprobs.length, 3);
    // greedy: the chosen token is the most likely one
    assert.equal(t.top_logprobs[0].token, t.token);
    assert.ok(Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5);
    assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
    assert.ok(t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob);
  }
  // streaming carries the same logprobs
  const chunks = await collect(
    await client.chat.completions.create({
      model: MODEL, messages: story, max_tokens: 16, temperature: 0, logprobs: true, top_logprobs: 3, stream: true,
    }),
  );
  const streamed = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
  assert.deepEqual(streamed.map((t) => t.token), lp.map((t) => t.token));
});

test('chat.completions: n=2 shares the prompt, seeded sampling repeats', async () => {
  const req = { model: MODEL, messages: story, max_tokens: 20, temperature: 1.0, seed: 1234, n: 2 };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
  assert.deepEqual(
    a.choices.map((c) => c.message.content),
    b.choices.map((c) => c.message.content),
    'same seed, same choices',
  );
  assert.notEqual(a.choices[0].message.content, a.choices[1].message.content, 'choices sample independently');
  const sum = a.choices.length * 20; // ignore_eos is off: each choice may stop early
  assert.ok(a.usage.completion_tokens <= sum && a.usage.completion_tokens >= 2);
  // streaming n=2: each index gets its own chunks
  const chunks = await collect(await client.chat.completions.create({ ...req, stream: true }));
  const text = [0, 1].map((i) =>
    chunks.map((c) => c.choices.find((x) => x.index === i)?.delta?.content ?? '').join(''),
  );
  assert.deepEqual(text, a.choices.map((c) => c.message.content));
});

test('chat.completions: stop strings end the text before them', async () => {
  const base = { model: MODEL, messages: story, max_tokens: 60, temperature: 0 };
  const full = (await client.chat.completions.create(base)).choices[0].message.content;
  const at = full.indexOf('Lily');
  assert.ok(at > 0, full);
  const r = await client.chat.completions.create({ ...base, stop: ['Lily', 'zzz'] });
  assert.equal(r.choices[0].message.content, full.slice(0, at));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.completion_tokens < 60);
  // a stop string spread over several tokens, streamed
  const stop = 'little girl';
  const k = full.indexOf(stop);
  assert.ok(k > 0);
  const chunks = await collect(await client.chat.completions.create({ ...base, stop, stream: true }));
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), full.slice(0, k));
  assert.equal(chunks.find((c) => c.choices[0]?.finish_reason).choices[0].finish_reason, 'stop');
});

test('completions: streaming, logprobs in the completions format, echo', async () => {
  const req = { model: MODEL, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 };
  const whole = await client.completions.create({ ...req, logprobs: 2 });
  const lp = whole.choices[0].logprobs;
  assert.equal(lp.tokens.length, 12);
  assert.equal(lp.tokens.join(''), whole.choices[0].text);
  assert.equal(lp.token_logprobs.length, 12);
  assert.equal(lp.top_logprobs.length, 12);
  assert.equal(Object.keys(lp.top_logprobs[0]).length, 2);
  assert.equal(lp.text_offset[0], 0);
  const chunks = await collect(await client.completions.create({ ...req, stream: true }));
  assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), whole.choices[0].text);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'length');
  const echoed = await client.completions.create({ ...req, echo: true });
  assert.equal(echoed.choices[0].text, 'Once upon a time' + whole.choices[0].text);
});

test('sampling parameters are honoured', async () => {
  // logit_bias: forbid the greedy first token
  const first = await client.completions.create({
    model: MODEL, prompt: 'Once upon a time', max_tokens: 1, temperature: 0, logprobs: 1,
  });
  // its id: the one token that the prompt + it has beyond the prompt
  const t1 = await post('/tokenize', { model: MODEL, prompt: 'Once upon a time' });
  const t2 = await post('/tokenize', { model: MODEL, prompt: 'Once upon a time' + first.choices[0].text });
  assert.equal(t2.body.count, t1.body.count + 1);
  const tok = { body: { tokens: [t2.body.tokens.at(-1)] } };
  const biased = await client.completions.create({
    model: MODEL, prompt: 'Once upon a time', max_tokens: 1, temperature: 0,
    logit_bias: { [tok.body.tokens[0]]: -100 },
  });
  assert.notEqual(biased.choices[0].text, first.choices[0].text);
  // stop_token_ids (vkpt/vLLM extension) end the choice with "stop"
  const stopped = await client.completions.create({
    model: MODEL, prompt: 'Once upon a time', max_tokens: 5, temperature: 0,
    stop_token_ids: tok.body.tokens,
  });
  assert.equal(stopped.choices[0].text, '');
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  // ignore_eos gives exactly max_tokens
  const long = await client.completions.create({
    model: MODEL, prompt: 'Once upon a time', max_tokens: 150, temperature: 0.9, seed: 7, ignore_eos: true,
  });
  assert.equal(long.usage.completion_tokens, 150);
  // top_k=1 is greedy whatever the temperature
  const g = await client.completions.create({ model: MODEL, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
  const k1 = await client.completions.create({
    model: MODEL, prompt: 'Once upon a time', max_tokens: 12, temperature: 1.5, top_k: 1, seed: 3,
  });
  assert.equal(k1.choices[0].text, g.choices[0].text);
});

test('bad requests get 4xx OpenAI errors and the server keeps serving', async () => {
  const cases = [
    [{ temperature: -1 }, 400, 'temperature'],
    [{ n: 6 }, 400, 'n'],
    [{ max_tokens: 0 }, 400, 'max_tokens'],
    [{ logprobs: true, top_logprobs: 21 }, 400, 'top_logprobs'],
    [{ top_p: 0 }, 400, 'top_p'],
    [{ stop: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q'] }, 400, 'stop'],
    [{ model: 'no-such-model' }, 404, 'model'],
    [{ max_tokens: 100000 }, 400, 'max_tokens'],
    [{ messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages[0].role'],
    [{ messages: [] }, 400, 'messages'],
    [{ frobnicate: 1 }, 400, 'frobnicate'],
  ];
  for (const [patch, status, param] of cases) {
    const body = { model: MODEL, messages: story, max_tokens: 4, ...patch };
    await assert.rejects(
      () => client.chat.completions.create(body),
      (e) => {
        assert.equal(e.status, status, JSON.stringify(patch));
        assert.equal(e.error?.param ?? e.param, param, JSON.stringify(patch));
        assert.ok(typeof e.error.message === 'string' && e.error.message.length > 10);
        return true;
      },
    );
    const ok = await client.chat.completions.create({ model: MODEL, messages: story, max_tokens: 2, temperature: 0 });
    assert.equal(ok.choices.length, 1);
  }
  // a prompt longer than the context
  const long = 'Once upon a time there was a dog. '.repeat(400);
  await assert.rejects(
    () => client.completions.create({ model: MODEL, prompt: long, max_tokens: 4 }),
    (e) => e.status === 400 && e.code === 'context_length_exceeded',
  );
});

test('tokenize and detokenize round-trip', async () => {
  const t = await post('/tokenize', { model: MODEL, prompt: 'Once upon a time' });
  assert.equal(t.status, 200);
  assert.equal(t.body.count, t.body.tokens.length);
  assert.equal(t.body.tokens[0], 1, 'BOS first');
  const d = await post('/detokenize', { model: MODEL, tokens: t.body.tokens.slice(1) });
  assert.equal(d.status, 200);
  assert.equal(d.body.prompt, 'Once upon a time');
});
