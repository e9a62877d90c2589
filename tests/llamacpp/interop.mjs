// llama.cpp loads what vkpt writes, and agrees with vkpt where it should.
//
//   node tests/llamacpp/interop.mjs VKPT_BINARY
//
// Uses llama.cpp's prebuilt CPU backend from node-llama-cpp (pinned in
// package.json; tools/setup-deps installs it). Exits 77 (ctest: skipped) when
// the package is not installed. Checks:
//   1. stories260K quantized by vkpt to Q8_0: llama.cpp and vkpt produce the
//      same greedy 48-token continuation of "Once upon a time";
//   2. vkpt synth (llama, Q4_K_M; also with experts when the build's synth
//      supports them) loads and generates in llama.cpp;
//   3. every Hugging Face fixture quantized by vkpt (F16, Q8_0, Q4_K_M) loads
//      in llama.cpp and generates.
import {execFileSync} from "node:child_process";
import {mkdtempSync, rmSync} from "node:fs";
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
const {getLlama, LlamaCompletion} = llamaMod;
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const dir = mkdtempSync(join(tmpdir(), "vkpt-interop-"));
let failures = 0;

async function complete(path, prompt, n) {
    const model = await llama.loadModel({modelPath: path});
    const ctx = await model.createContext({contextSize: 256});
    const c = new LlamaCompletion({contextSequence: ctx.getSequence()});
    const text = await c.generateCompletion(prompt, {maxTokens: n, temperature: 0});
    await ctx.dispose();
    await model.dispose();
    return text;
}

function run(args) {
    return execFileSync(vkpt, args, {encoding: "utf8", stdio: ["ignore", "pipe", "pipe"]});
}

function check(ok, what) {
    console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
    if (!ok) failures++;
}

try {
    const st = join(dir, "stories-q8_0.gguf");
    run(["quantize", join(root, "models/stories260K/stories260K.gguf"), st, "Q8_0"]);
    const prompt = "Once upon a time";
    const ours = run(["run", "-m", st, "-p", prompt, "-n", "48", "--temp", "0"]).replace(/\n$/, "");
    const theirs = prompt + (await complete(st, prompt, 48));
    check(ours === theirs, `stories260K Q8_0 greedy: vkpt and llama.cpp agree (${JSON.stringify(theirs.slice(0, 60))}...)`);
    if (ours !== theirs) console.log(`  vkpt:      ${JSON.stringify(ours)}\n  llama.cpp: ${JSON.stringify(theirs)}`);

    const syn = join(dir, "synth.gguf");
    run(["synth", "--dims", "vocab=1024,embd=256,layers=2,heads=8,kv=4,ff=512", "--type", "Q4_K_M", "-o", syn]);
    const t = await complete(syn, "t1 t2", 6);
    check(t.length > 0, `vkpt synth Q4_K_M loads and generates in llama.cpp (${JSON.stringify(t)})`);
    const moe = join(dir, "synth-moe.gguf");
    let moeOk = true;
    try {
        run(["synth", "--dims", "vocab=1024,embd=256,layers=2,heads=8,kv=4,ff=256,experts=4,used=2", "--type", "Q4_K_M", "-o", moe]);
    } catch {
        moeOk = false;
    }
    if (moeOk) {
        const tm = await complete(moe, "t1 t2", 6);
        check(tm.length > 0, `vkpt synth with experts (Mixtral-shaped) loads and generates in llama.cpp (${JSON.stringify(tm)})`);
    }

    for (const fx of ["llama", "llama_tied", "qwen2", "qwen3"]) {
        for (const type of ["F16", "Q8_0", "Q4_K_M"]) {
            const out = join(dir, `${fx}-${type}.gguf`);
            run(["quantize", join(root, "tests/fixtures/hf", fx), out, type]);
            let ok = true, text = "";
            try {
                text = await complete(out, "Once upon a time there was", 6);
            } catch (e) {
                ok = false;
                text = String(e);
            }
            check(ok, `HF ${fx} -> vkpt quantize ${type} loads and generates in llama.cpp`);
        }
    }
} finally {
    await llama.dispose();
    rmSync(dir, {recursive: true, force: true});
}
process.exit(failures ? 1 : 0);
