// The README's "Serving" examples, run as written (only the port differs):
// every curl command and the openai-client snippet must work and print
// what the README says they print.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, repoRoot } from './server_util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## Serving'), readme.indexOf('\n## ', readme.indexOf('## Serving') + 5));
const blocks = (lang) => [...section.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);
let srv;

before(async () => {
  srv = await startServer([]);
});
after(async () => {
  assert.equal(await srv.stop(), 0);
});

const local = (s) => s.replaceAll('http://127.0.0.1:8080', srv.url);

test('README curl examples', () => {
  const curlBlock = blocks('sh').find((b) => b.includes('curl '));
  assert.ok(curlBlock, 'the README has a curl block');
  const commands = curlBlock.replace(/\\\n/g, ' ').split('\n').filter((l) => l.startsWith('curl '));
  assert.ok(commands.length >= 5);
  const out = commands.map((c) => execFileSync('sh', ['-c', local(c)], { encoding: 'utf8' }));
  assert.equal(out[0], '{"status":"ok"}');
  assert.equal(JSON.parse(out[1]).data[0].id, 'stories260K');
  // the chat answer and the error are quoted in the README
  const content = /"content":"(, there[^"]*)"/.exec(section)[1];
  const chat = JSON.parse(out[2]);
  assert.equal(chat.choices[0].message.content, content);
  const usage = /"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+),"total_tokens":(\d+)/.exec(section);
  assert.deepEqual(
    [chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens],
    usage.slice(1).map(Number),
  );
  assert.ok(out[3].trimEnd().endsWith('data: [DONE]'));
  const err = /`(\{"error":[^`]*\})`/.exec(section)[1];
  assert.equal(out[4], err);
  assert.match(out[5], /^vkpt_kv_blocks_used\{model="stories260K"\} 0$/m);
});

test('README openai-client example', () => {
  const js = blocks('js')[0];
  assert.ok(js.includes("from 'openai'"));
  // run it from here so that `openai` resolves to tests/node/node_modules
  const file = path.join(here, `.readme-example-${process.pid}.mjs`);
  fs.writeFileSync(file, local(js));
  try {
    const out = execFileSync(process.execPath, [file], { encoding: 'utf8' });
    const content = /"content":"(, there[^"]*)"/.exec(section)[1];
    assert.ok(out.startsWith(content + ' {'), out);
    assert.match(out, /completion_tokens: 27/);
    assert.ok(out.split('\n').at(-2).length > 20, 'the streamed story is printed');
  } finally {
    fs.unlinkSync(file);
  }
});
