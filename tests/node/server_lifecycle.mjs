// `vkpt serve` as an operator sees it: API keys (flag, file, config), the
// JSON config file, a server-side system prompt, and graceful shutdown on
// SIGTERM (in-flight requests finish, the process exits 0; past the
// deadline they are canceled).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, sleep, repoRoot } from './server_util.mjs';

const story = [{ role: 'user', content: 'Once upon a time' }];

function tmpfile(name, text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-srv-'));
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

test('API keys, config file, served model name and system prompt', async () => {
  const keys = tmpfile('keys.txt', '# operators\nkey-from-file\n\n');
  const cfg = tmpfile(
    'serve.json',
    JSON.stringify({
      'api-key': ['key-from-config'],
      'api-key-file': keys,
      'served-model-name': 'story',
      'system-prompt': 'Tell a story.',
      port: 1, // the flag (--port 0) wins
    }),
  );
  const srv = await startServer(['--config', cfg]);
  try {
    const h = await fetch(`${srv.url}/health`);
    assert.equal(h.status, 200, '/health needs no key');
    assert.deepEqual(await h.json(), { status: 'ok' });
    for (const auth of [undefined, 'Bearer wrong', 'Basic key-from-file', 'Bearer key-from-fil']) {
      const r = await fetch(`${srv.url}/v1/models`, { headers: auth ? { Authorization: auth } : {} });
      assert.equal(r.status, 401, `${auth}`);
      const e = await r.json();
      assert.equal(e.error.code, 'invalid_api_key');
      assert.equal(typeof e.error.message, 'string');
      assert.equal(r.headers.get('www-authenticate'), 'Bearer');
    }
    for (const path_ of ['/metrics', '/ready']) {
      assert.equal((await fetch(`${srv.url}${path_}`)).status, 401, path_);
      const r = await fetch(`${srv.url}${path_}`, { headers: { Authorization: 'Bearer key-from-file' } });
      assert.equal(r.status, 200, path_);
    }
    const bad = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'nope', maxRetries: 0 });
    await assert.rejects(() => bad.models.list(), (e) => e.status === 401);

    for (const key of ['key-from-file', 'key-from-config']) {
      const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: key, maxRetries: 0 });
      const models = await client.models.list();
      assert.deepEqual(models.data.map((m) => m.id), ['story']);
      const r = await client.chat.completions.create({ model: 'story', messages: story, max_tokens: 4, temperature: 0 });
      assert.equal(r.model, 'story');
      // the server's system prompt is part of the prompt and counts in usage
      const tok = await fetch(`${srv.url}/tokenize`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}` },
        body: JSON.stringify({ messages: [{ role: 'system', content: 'Tell a story.' }, ...story] }),
      }).then((x) => x.json());
      const plain = await fetch(`${srv.url}/tokenize`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}` },
        body: JSON.stringify({ messages: story }),
      }).then((x) => x.json());
      assert.equal(r.usage.prompt_tokens, tok.count);
      assert.equal(plain.count, tok.count, '/tokenize of a chat adds the system prompt too');
      assert.ok(tok.count > 6, 'the system prompt adds tokens');
    }
    // with --served-model-name the file's stem is not a name of the model,
    // but the path it was loaded from is (an alias)
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'key-from-file', maxRetries: 0 });
    await assert.rejects(
      () => client.chat.completions.create({ model: 'stories260K', messages: story, max_tokens: 2 }),
      (e) => e.status === 404 && e.code === 'model_not_found',
    );
    const gguf = path.join(repoRoot, 'models/stories260K/stories260K.gguf');
    const viaPath = await client.chat.completions.create({ model: gguf, messages: story, max_tokens: 2 });
    assert.equal(viaPath.model, 'story');
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

// Read a streaming response's raw SSE text until the stream ends.
async function readAll(res) {
  let text = '';
  const dec = new TextDecoder();
  for await (const part of res.body) text += dec.decode(part, { stream: true });
  return text;
}

test('SIGTERM: in-flight requests finish, new connections are refused, exit 0', async () => {
  const srv = await startServer([]);
  const res = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 60, ignore_eos: true, temperature: 0, stream: true }),
  });
  assert.equal(res.status, 200);
  const reading = readAll(res);
  await sleep(200);
  srv.child.kill('SIGTERM');
  await sleep(200);
  await assert.rejects(() => fetch(`${srv.url}/health`), 'the listener is closed');
  const text = await reading;
  assert.ok(text.endsWith('data: [DONE]\n\n'));
  const events = text.split('\n\n').filter((e) => e.startsWith('data: {'));
  const last = JSON.parse(events.at(-1).slice(6));
  assert.equal(last.choices[0].finish_reason, 'length', 'the request ran to its end');
  const out = events.map((e) => JSON.parse(e.slice(6)).choices[0]?.text ?? '').join('');
  assert.ok(out.length > 100);
  const { code } = await srv.exited;
  assert.equal(code, 0);
  assert.match(srv.log(), /SIGTERM received/);
});

test('SIGTERM past the shutdown deadline cancels what still runs, exit 0', async () => {
  const srv = await startServer(['--shutdown-timeout', '1']);
  const res = await fetch(`${srv.url}/v1/completions`, {
    method: 'POST',
    body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 1900, ignore_eos: true, stream: true }),
  });
  const reading = readAll(res);
  await sleep(300);
  const t0 = Date.now();
  srv.child.kill('SIGTERM');
  const text = await reading;
  const { code } = await srv.exited;
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 10000, 'stopped soon after the deadline');
  assert.match(text, /"code":"server_shutting_down"/, 'the stream says why it ended');
  assert.ok(text.endsWith('data: [DONE]\n\n'));
});
