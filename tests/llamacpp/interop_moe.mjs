// llama.cpp and vkpt agree on mixture-of-experts models vkpt writes.
//
//   node tests/llamacpp/interop_moe.mjs VKPT_BINARY
//
// For `vkpt synth` MoE files (Mixtral-shaped llama with expert_count 8 and
// expert_used_count 2, F32 and Q4_K_M; qwen2moe with its shared expert and
// qwen3moe, Q8_0) and the Hugging Face MoE fixtures quantized by `vkpt
// quantize` (mixtral Q8_0 and Q4_K_M, qwen2_moe Q8_0, dbrx F16 and Q8_0):
// llama.cpp (node-llama-cpp's prebuilt CPU backend, pinned in package.json)
// loads the file and generates 24 greedy tokens; vkpt then reads prompt +
// those tokens in one step and, at every generated position, llama.cpp's
// token must be vkpt's argmax up to a tolerance per format. Two
// implementations round differently (llama.cpp quantizes activations to q8
// for quantized weights), so near-ties may break either way; a wrong expert,
// weight or norm moves logits by far more. Exits 77 (ctest: skipped) when
// node-llama-cpp is not installed.
import {execFileSync} from "node:child_process";
import {mkdtempSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join, dirname} from "node:path";
import {fileURLToPath} from "node:url";

const vkpt = process.argv[2];
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let llamaMod;
try {
    llamaMod = await import("node-llama-cpp");
} catch {
    console.log("node-llama-cpp is not installed (tools/setup-deps installs it): skipped");
    process.exit(77);
}
const llama = await llamaMod.getLlama({gpu: false, build: "never", logLevel: "error"});
const dir = mkdtempSync(join(tmpdir(), "vkpt-interop-moe-"));
const N = 24;
// logit units; measured worst gaps (2026-11-25): F32/F16 7e-4 (a near-tie in
// the synth), Q8_0 8e-5, Q4_K_M 0.047 (the synth, over 32 tokens)
const tolerance = {F32: 0.01, F16: 0.01, Q8_0: 0.05, Q4_K_M: 0.15};
let failures = 0;

function run(args) {
    return execFileSync(vkpt, args, {encoding: "utf8", stdio: ["ignore", "pipe", "pipe"]});
}

// The largest (vkpt's best logit - vkpt's logit of llama.cpp's greedy token)
// over the generated positions.
async function worstGap(path, prompt) {
    const model = await llama.loadModel({modelPath: path});
    const toks = Array.from(model.tokenize(prompt));
    const ctx = await model.createContext({contextSize: 256});
    const gen = [];
    for await (const t of ctx.getSequence().evaluate(toks, {temperature: 0})) {
        gen.push(t);
        if (gen.length >= N) break;
    }
    await ctx.dispose();
    await model.dispose();
    const all = toks.concat(gen.slice(0, gen.length - 1));
    const out = join(dir, "logits.f32");
    run(["run", "-m", path, "--tokens", all.join(","), "--logits-out", out]);
    const buf = readFileSync(out);
    const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
    const vocab = f.length / all.length;
    let worst = 0;
    for (let i = 0; i < gen.length; i++) {
        const row = f.subarray((toks.length - 1 + i) * vocab, (toks.length + i) * vocab);
        let best = -Infinity;
        for (const v of row) best = Math.max(best, v);
        const gap = gen[i] < vocab ? best - row[gen[i]] : Infinity;
        worst = Math.max(worst, gap);
    }
    return {worst, n: gen.length};
}

async function check(path, type, what, prompt) {
    let r;
    try {
        r = await worstGap(path, prompt);
    } catch (e) {
        console.log(`FAIL ${what}: ${String(e).slice(0, 300)}`);
        failures++;
        return;
    }
    const ok = r.n > 0 && r.worst <= tolerance[type];
    console.log(`${ok ? "ok  " : "FAIL"} ${what}: llama.cpp loads it; its ${r.n} greedy tokens are ` +
                `vkpt's argmax within ${r.worst.toFixed(5)} (tolerance ${tolerance[type]})`);
    if (!ok) failures++;
}

try {
    const dims = "vocab=1024,embd=256,layers=2,heads=8,kv=4,ff=256,experts=8,used=2";
    for (const [arch, type] of [["llama", "F32"], ["llama", "Q4_K_M"], ["qwen2moe", "Q8_0"],
                                ["qwen3moe", "Q8_0"]]) {
        const p = join(dir, `synth-${arch}-${type}.gguf`);
        run(["synth", "--arch", arch, "--dims", dims, "--type", type, "-o", p]);
        await check(p, type, `vkpt synth ${arch === "llama" ? "Mixtral-shaped" : arch} ${type}`,
                    "t1 t2 t3");
    }
    // each vkpt run starts a device and builds pipelines: a few per fixture
    for (const [fx, types] of [["mixtral", ["Q8_0", "Q4_K_M"]], ["qwen2_moe", ["Q8_0"]],
                               ["dbrx", ["F16", "Q8_0"]]]) {
        for (const type of types) {
            const p = join(dir, `${fx}-${type}.gguf`);
            run(["quantize", join(root, "tests/fixtures/hf", fx), p, type]);
            await check(p, type, `HF ${fx} -> vkpt quantize ${type}`, "Once upon a time there was");
        }
    }
} finally {
    await llama.dispose();
    rmSync(dir, {recursive: true, force: true});
}
process.exit(failures ? 1 : 0);
