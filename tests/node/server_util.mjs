// Helpers for the server's end-to-end tests: start the real `vkpt serve` on
// 127.0.0.1 with a free port, wait until it listens, stop it with a signal and
// return its exit code; read /metrics.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

// The vkpt binary: VKPT_BIN (set by ctest) or build/tools/vkpt.
export function vkptBin() {
  return process.env.VKPT_BIN || path.join(repoRoot, 'build', 'tools', 'vkpt');
}

// Start `vkpt serve --port 0 ...args`; resolves once it prints its address.
// `env`: extra environment variables for the server.
export function startServer(args = [], { timeoutMs = 60000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(vkptBin(), ['serve', '--host', '127.0.0.1', '--port', '0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let log = '';
    let settled = false;
    const timer = setTimeout(() => {
      if (!settled) {
        settled = true;
        child.kill('SIGKILL');
        reject(new Error(`vkpt serve did not start in ${timeoutMs} ms:\n${log}`));
      }
    }, timeoutMs);
    const exited = new Promise((res) => child.on('exit', (code, signal) => res({ code, signal })));
    child.stdout.on('data', (d) => { log += d; });
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(log);
      if (m && !settled) {
        settled = true;
        clearTimeout(timer);
        resolve({
          url: m[1],
          child,
          log: () => log,
          exited,
          // SIGTERM (or another signal) and wait for the exit; returns the code.
          // A server that has not exited 90 s later (past any drain deadline
          // a test sets) is a hang: it is killed and the error has its log.
          async stop(signal = 'SIGTERM', { deadlineMs = 90000 } = {}) {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            let timer;
            const hung = new Promise((res) => { timer = setTimeout(() => res(null), deadlineMs); });
            const r = await Promise.race([exited, hung]);
            clearTimeout(timer);
            if (r === null) {
              child.kill('SIGKILL');
              throw new Error(`vkpt serve did not exit ${deadlineMs} ms after ${signal}; its log ends:\n`
                + log.slice(-4000));
            }
            return r.code;
          },
        });
      }
    });
    child.on('exit', (code) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(new Error(`vkpt serve exited with ${code} before listening:\n${log}`));
      }
    });
  });
}

// POST a JSON body; the status and the parsed JSON answer.
export async function postJson(url, route, body) {
  const r = await fetch(`${url}${route}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

// Any method, a JSON body (an object, or a string sent as it is); the
// status, headers, text, and the JSON answer (null when it is not JSON).
export async function apiCall(url, method, route, body) {
  const r = await fetch(`${url}${route}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, headers: r.headers, json, text };
}

// GET /metrics parsed into { 'name{labels}': value }.
export async function metrics(url, headers = {}) {
  const r = await fetch(`${url}/metrics`, { headers });
  if (r.status !== 200) throw new Error(`/metrics: HTTP ${r.status}`);
  const out = {};
  for (const line of (await r.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

// The first metric whose name (before '{') is `name`.
export function metric(m, name) {
  for (const [k, v] of Object.entries(m)) if (k === name || k.startsWith(name + '{')) return v;
  return undefined;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
