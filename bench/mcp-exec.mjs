#!/usr/bin/env node
// Latency of MCP `tools/call exec` of `true` on a ready sandbox (through
// `cleanroom mcp` -> daemon -> VM) beside a direct control-API
// execution.create of the same command on the same sandbox. Prints the
// median, p90 and min of N calls each (default 100) and the MCP overhead.
//
//   CLEANROOM_BIN=build/cleanroom node bench/mcp-exec.mjs [N]
//
// Needs QEMU, the guest kernel (CLEANROOM_KERNEL_DIR) and the MCP SDK in
// tests/integration/node_modules (npm ci there). Runs an isolated daemon in
// a temp dir (CLEANROOM_RUN_DIR/DATA_DIR) and removes everything at the end.
// CLEANROOM_BENCH_IMAGE_TAR: a busybox rootfs tar (built when unset).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SDK = join(ROOT, 'tests', 'integration', 'node_modules', '@modelcontextprotocol', 'sdk', 'dist', 'esm', 'client');
const { Client } = await import(join(SDK, 'index.js'));
const { StdioClientTransport } = await import(join(SDK, 'stdio.js'));

const BIN = process.env.CLEANROOM_BIN || 'cleanroom';
const N = Number(process.argv[2] || 100);
const IMAGE = 'bench/busybox';
const TMP = mkdtempSync(join(tmpdir(), 'cr-bench-mcp-'));
const ENV = { ...process.env, CLEANROOM_RUN_DIR: join(TMP, 'run'), CLEANROOM_DATA_DIR: join(TMP, 'data') };
delete ENV.CLEANROOM_HOST;

function cr(args) {
  const p = spawnSync(BIN, args, { env: ENV, encoding: 'utf8', timeout: 300_000 });
  if (p.status !== 0) throw new Error(`cleanroom ${args.join(' ')}: ${p.stderr}`);
  return p.stdout;
}

// one persistent control-API connection, one request at a time
function apiConnection() {
  const sock = createConnection(join(TMP, 'run', 'cleanroom.sock'));
  let buf = '';
  let waiter = null;
  const queue = [];
  sock.setEncoding('utf8');
  sock.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      if (waiter) waiter(m);
      else queue.push(m);
    }
  });
  const next = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => { waiter = (m) => { waiter = null; r(m); }; }));
  let id = 0;
  return {
    ready: new Promise((r) => sock.on('connect', r)),
    async execTrue(sandboxId) {
      sock.write(JSON.stringify({ jsonrpc: '2.0', id: ++id, method: 'execution.create', params: { sandbox_id: sandboxId, argv: ['true'], attach: true } }) + '\n');
      for (;;) {
        const m = await next();
        if (m.error) throw new Error(JSON.stringify(m.error));
        if (m.method === 'execution.exit') return m.params.execution;
      }
    },
    call(method, params) {
      sock.write(JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }) + '\n');
      return next();
    },
    close: () => sock.end(),
  };
}

function stats(ms) {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p90: q(0.9), min: s[0] };
}

async function main() {
  let tar = process.env.CLEANROOM_BENCH_IMAGE_TAR;
  if (!tar) {
    tar = join(TMP, 'busybox.tar');
    const b = spawnSync(join(ROOT, 'images', 'busybox', 'build.sh'), [tar], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (b.status !== 0) throw new Error('building the busybox image failed');
  }
  cr(['image', 'import', tar, '--ref', IMAGE]);

  const client = new Client({ name: 'cleanroom-bench', version: '1.0.0' });
  await client.connect(new StdioClientTransport({ command: BIN, args: ['mcp', '--image', IMAGE], env: ENV, stderr: 'inherit' }));
  const first = await client.callTool({ name: 'exec', arguments: { argv: ['true'] } }, undefined, { timeout: 300_000 });
  if (first.isError) throw new Error(first.content[0].text);
  const sandboxId = first.structuredContent.sandbox_id;

  const mcp = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    const r = await client.callTool({ name: 'exec', arguments: { argv: ['true'] } });
    mcp.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.structuredContent.exit_code !== 0) throw new Error('exec true failed');
  }
  await client.close();

  const api = apiConnection();
  await api.ready;
  const direct = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    const ex = await api.execTrue(sandboxId);
    direct.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (ex.exit_code !== 0) throw new Error('execution of true failed');
  }
  await api.call('sandbox.terminate', { id: sandboxId });
  const info = await api.call('system.info', {});
  api.close();
  try { process.kill(info.result.pid, 'SIGTERM'); } catch { /* gone */ }

  const m = stats(mcp), d = stats(direct);
  const fmt = (x) => x.toFixed(2);
  console.log(`exec true, ${N} calls each, on a ready sandbox (ms):`);
  console.log(`  mcp tools/call exec   median ${fmt(m.median)}  p90 ${fmt(m.p90)}  min ${fmt(m.min)}`);
  console.log(`  control API execution median ${fmt(d.median)}  p90 ${fmt(d.p90)}  min ${fmt(d.min)}`);
  console.log(`  mcp overhead (median) ${fmt(m.median - d.median)} ms (x${(m.median / d.median).toFixed(2)})`);
  console.log(JSON.stringify({ bench: 'mcp-exec', n: N, mcp_ms: m, api_ms: d }));
}

try {
  await main();
} finally {
  rmSync(TMP, { recursive: true, force: true });
}
