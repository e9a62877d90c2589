// llama.cpp's speed on the same model file and device, for side-by-side
// figures beside `vkpt bench -m` (docs/PERF.md). Not a test: a benchmark.
//
//   node tests/llamacpp/bench.mjs -m MODEL.gguf [-p 512] [-n 128] [-r 3]
//        [--gpu vulkan|cpu] [--npl 1,8] [-npp 128] [-ntg 32] [--json]
//
// Uses node-llama-cpp's prebuilt llama.cpp (pinned in package.json; its
// Vulkan build runs on whatever Vulkan device the loader finds, lavapipe
// here). Meanings follow llama-bench and llama-batched-bench, as vkpt bench
// does:
//   pp N   N prompt tokens evaluated in one call (batch = N), tokens/s;
//   tg N   N tokens generated one at a time after a 1-token prompt, tokens/s;
//   each the mean and standard deviation over -r repetitions after a warm-up.
//   --npl L  for each count P in L, P sequences each evaluate -npp prompt
//            tokens and then generate -ntg tokens concurrently (llama.cpp
//            batches the sequences of one context into shared steps);
//            reports the decode and whole-workload aggregate tokens/s.
// Token ids are drawn from a fixed-seed generator over the vocabulary, as
// vkpt bench does, so the text means nothing and no end-of-generation token
// stops a run (generation is forced to continue).
import {readFileSync} from "node:fs";
import {performance} from "node:perf_hooks";

const args = process.argv.slice(2);
const opt = {p: [512], n: [128], r: 3, gpu: "vulkan", npl: [], npp: 128, ntg: 32, json: false};
for (let i = 0; i < args.length; i++) {
    const a = args[i], v = () => args[++i];
    const list = (s) => s.split(",").map((x) => parseInt(x, 10));
    if (a === "-m" || a === "--model") opt.m = v();
    else if (a === "-p") opt.p = list(v());
    else if (a === "-n") opt.n = list(v());
    else if (a === "-r") opt.r = parseInt(v(), 10);
    else if (a === "--gpu") opt.gpu = v();
    else if (a === "--npl" || a === "-npl") opt.npl = list(v());
    else if (a === "-npp") opt.npp = parseInt(v(), 10);
    else if (a === "-ntg") opt.ntg = parseInt(v(), 10);
    else if (a === "--json") opt.json = true;
    else {
        console.error(`usage: node bench.mjs -m MODEL.gguf [-p LIST] [-n LIST] [-r N] [--gpu vulkan|cpu] ` +
                      `[--npl LIST -npp N -ntg N] [--json]\nunknown argument: ${a}`);
        process.exit(2);
    }
}
if (!opt.m) {
    console.error("bench.mjs: -m MODEL.gguf is required");
    process.exit(2);
}
if (![opt.r, opt.npp, opt.ntg, ...opt.p, ...opt.n, ...opt.npl].every((x) => Number.isInteger(x) && x > 0)) {
    console.error("bench.mjs: counts must be positive integers");
    process.exit(2);
}

// llama.cpp's Vulkan backend skips CPU-type devices (lavapipe) unless they
// are named: make every device visible unless the caller chose.
if (opt.gpu === "vulkan" && process.env.GGML_VK_VISIBLE_DEVICES === undefined)
    process.env.GGML_VK_VISIBLE_DEVICES = "0";
let llamaMod;
try {
    llamaMod = await import("node-llama-cpp");
} catch {
    console.error("node-llama-cpp is not installed (tools/setup-deps installs it)");
    process.exit(77);
}
const pkgVersion = JSON.parse(readFileSync(new URL("node_modules/node-llama-cpp/package.json",
                                                   import.meta.url), "utf8")).version;
const llama = await llamaMod.getLlama({gpu: opt.gpu === "cpu" ? false : opt.gpu, build: "never",
                                       logLevel: "error"});
const devices = opt.gpu === "cpu" ? ["cpu"] : await llama.getGpuDeviceNames();
if (!devices.length) {
    console.error(`bench.mjs: llama.cpp's ${opt.gpu} backend found no device`);
    process.exit(1);
}
const model = await llama.loadModel({modelPath: opt.m, gpuLayers: opt.gpu === "cpu" ? 0 : "max"});
const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? 32000;

let seed = 0x9e3779b9;
function randomToken() {
    // xorshift32 over the vocabulary, skipping the first 3 ids (control tokens)
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return 3 + (seed % (vocab - 3));
}
const tokens = (n) => Array.from({length: n}, randomToken);

function stats(xs) {
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
    return {mean, sd};
}

// Generate n tokens after `prompt` on one sequence, one token per step; the
// sampler is greedy and every generated token is fed back whatever it is.
async function generate(seq, prompt, n) {
    let got = 0;
    const it = seq.evaluate(prompt, {temperature: 0});
    for (let r = await it.next(); !r.done; r = await it.next()) {
        if (++got >= n) break;
    }
    await it.return?.();
    return got;
}

const results = [];
const maxP = Math.max(...opt.p, 1), maxN = Math.max(...opt.n, 1);
{
    const ctx = await model.createContext({contextSize: Math.max(maxP, maxN + 8) + 8, batchSize: maxP,
                                           sequences: 1, flashAttention: true});
    const seq = ctx.getSequence();
    for (const p of opt.p) {
        const rates = [];
        for (let r = 0; r <= opt.r; r++) {
            await seq.clearHistory();
            const t = tokens(p);
            const t0 = performance.now();
            await seq.evaluateWithoutGeneratingNewTokens(t);
            const s = (performance.now() - t0) / 1000;
            if (r > 0) rates.push(p / s); // the first is the warm-up
        }
        results.push({test: `pp${p}`, ...stats(rates)});
    }
    for (const n of opt.n) {
        const rates = [];
        for (let r = 0; r <= opt.r; r++) {
            await seq.clearHistory();
            await seq.evaluateWithoutGeneratingNewTokens(tokens(1));
            const t0 = performance.now();
            const got = await generate(seq, tokens(1), n);
            const s = (performance.now() - t0) / 1000;
            if (got !== n) throw new Error(`tg${n}: generated ${got} tokens`);
            if (r > 0) rates.push(n / s);
        }
        results.push({test: `tg${n}`, ...stats(rates)});
    }
    await ctx.dispose();
}

for (const P of opt.npl) {
    const ctx = await model.createContext({contextSize: P * (opt.npp + opt.ntg + 8), sequences: P,
                                           batchSize: Math.max(opt.npp, P), flashAttention: true});
    const seqs = Array.from({length: P}, () => ctx.getSequence());
    let t0, t1, t2;
    for (let round = 0; round < 2; round++) { // the first round is the warm-up
        await Promise.all(seqs.map((s) => s.clearHistory()));
        const prompts = seqs.map(() => tokens(opt.npp));
        t0 = performance.now();
        await Promise.all(seqs.map((s, i) => s.evaluateWithoutGeneratingNewTokens(prompts[i].slice(0, -1))));
        t1 = performance.now();
        const got = await Promise.all(seqs.map((s, i) => generate(s, prompts[i].slice(-1), opt.ntg)));
        t2 = performance.now();
        if (got.some((g) => g !== opt.ntg)) throw new Error(`npl ${P}: a sequence stopped early`);
    }
    results.push({test: `batched npl=${P} npp=${opt.npp} ntg=${opt.ntg}`,
                  prefill_tps: P * (opt.npp - 1) / ((t1 - t0) / 1000),
                  decode_tps: P * opt.ntg / ((t2 - t1) / 1000),
                  total_tps: P * (opt.npp + opt.ntg - 1) / ((t2 - t0) / 1000)});
    await ctx.dispose();
}

const info = {model: opt.m, backend: opt.gpu, devices, node_llama_cpp: pkgVersion,
              repetitions: opt.r, results};
if (opt.json) {
    console.log(JSON.stringify(info, null, 1));
} else {
    console.log(`llama.cpp (node-llama-cpp ${info.node_llama_cpp}, ${opt.gpu}: ${devices.join(", ")}), ${opt.m}`);
    for (const r of results) {
        if (r.mean !== undefined) console.log(`${r.test.padEnd(10)} ${r.mean.toFixed(2).padStart(10)} ± ${r.sd.toFixed(2)} tokens/s`);
        else console.log(`${r.test}: prefill ${r.prefill_tps.toFixed(1)}, decode ${r.decode_tps.toFixed(1)}, ` +
                         `total ${r.total_tps.toFixed(1)} tokens/s`);
    }
}
await model.dispose();
await llama.dispose();
