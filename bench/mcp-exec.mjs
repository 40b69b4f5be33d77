#!/usr/bin/env node
// Latency of MCP `tools/call exec` of `true` on a ready sandbox (through
// `cleanroom mcp` -> daemon -> VM), as `argv: ["true"]` and as
// `command: "true"` (sh -c), beside a direct control-API execution.create of
// the same command on the same sandbox. Prints the median, p90 and min of N
// calls each (default 100), the MCP overhead and the command/argv ratio.
// Then moves a 20 MiB binary file in and out through MCP (write_file in 4 MiB
// pieces with append, read_file in 4 MiB pages) and through the control API
// (file.write pieces of 3 MiB - 64 KiB, which a 4 MiB request line holds with
// its envelope; file.read 8 MiB) and
// prints MB/s and the MCP/API ratio.
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
let DAEMON_PID = null;
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
  const probe = apiConnection(); // the daemon `cleanroom mcp` started: for the clean-up
  await probe.ready;
  DAEMON_PID = (await probe.call('system.info', {})).result.pid;
  probe.close();

  const series = async (args) => {
    const ms = [];
    for (let i = 0; i < N; i++) {
      const t0 = process.hrtime.bigint();
      const r = await client.callTool({ name: 'exec', arguments: args });
      ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (r.structuredContent.exit_code !== 0) throw new Error(`exec ${JSON.stringify(args)} failed`);
    }
    return ms;
  };
  const mcp = await series({ argv: ['true'] });
  const mcpCmd = await series({ command: 'true' });

  const MiB = 1 << 20;
  const data = Buffer.alloc(20 * MiB);
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
  const secs = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
  let t0 = process.hrtime.bigint();
  for (let off = 0; off < data.length; off += 4 * MiB) {
    const w = await client.callTool({ name: 'write_file', arguments: { path: '/tmp/bench.bin', encoding: 'base64',
      content: data.subarray(off, off + 4 * MiB).toString('base64'), ...(off ? { append: true } : {}) } }, undefined, { timeout: 300_000 });
    if (w.isError) throw new Error(w.content[0].text);
  }
  const mcpWrite = secs(t0);
  t0 = process.hrtime.bigint();
  const parts = [];
  for (let off = 0; ;) {
    const r = await client.callTool({ name: 'read_file', arguments: { path: '/tmp/bench.bin', encoding: 'base64', offset: off, length: 4 * MiB } }, undefined, { timeout: 300_000 });
    if (r.isError) throw new Error(r.content[0].text);
    parts.push(Buffer.from(r.content[0].text, 'base64'));
    if (r.structuredContent.eof) break;
    off = r.structuredContent.next_offset;
  }
  const mcpRead = secs(t0);
  if (!Buffer.concat(parts).equals(data)) throw new Error('MCP read back other bytes');
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
  t0 = process.hrtime.bigint();
  // a request line holds at most 4 MiB (4194304 bytes) with its envelope:
  // the base64 of 3 MiB is that long by itself
  const piece = 3 * MiB - 64 * 1024;
  for (let off = 0; off < data.length; off += piece) {
    const w = await api.call('file.write', { sandbox_id: sandboxId, path: '/tmp/bench2.bin',
      data: data.subarray(off, off + piece).toString('base64'), append: off > 0 });
    if (w.error) throw new Error(JSON.stringify(w.error));
  }
  const apiWrite = secs(t0);
  t0 = process.hrtime.bigint();
  const aparts = [];
  for (let off = 0; off < data.length; off += 8 * MiB) {
    const r = await api.call('file.read', { sandbox_id: sandboxId, path: '/tmp/bench2.bin', offset: off, length: 8 * MiB });
    if (r.error) throw new Error(JSON.stringify(r.error));
    aparts.push(Buffer.from(r.result.data, 'base64'));
  }
  const apiRead = secs(t0);
  if (!Buffer.concat(aparts).equals(data)) throw new Error('API read back other bytes');
  await api.call('sandbox.terminate', { id: sandboxId });
  const info = await api.call('system.info', {});
  api.close();
  try { process.kill(info.result.pid, 'SIGTERM'); } catch { /* gone */ }
  DAEMON_PID = null;

  const m = stats(mcp), c = stats(mcpCmd), d = stats(direct);
  const fmt = (x) => x.toFixed(2);
  console.log(`exec true, ${N} calls each, on a ready sandbox (ms):`);
  console.log(`  mcp exec argv:["true"]  median ${fmt(m.median)}  p90 ${fmt(m.p90)}  min ${fmt(m.min)}`);
  console.log(`  mcp exec command:"true" median ${fmt(c.median)}  p90 ${fmt(c.p90)}  min ${fmt(c.min)}`);
  console.log(`  control API execution   median ${fmt(d.median)}  p90 ${fmt(d.p90)}  min ${fmt(d.min)}`);
  console.log(`  mcp overhead (median) ${fmt(m.median - d.median)} ms (x${(m.median / d.median).toFixed(2)})`);
  console.log(`  command/argv (median) x${(c.median / m.median).toFixed(2)}`);
  const mb = (s) => (20 * MiB / 1e6 / s).toFixed(1);
  console.log(`20 MiB binary file: MCP write ${mb(mcpWrite)} MB/s, read ${mb(mcpRead)} MB/s; ` +
    `control API write ${mb(apiWrite)} MB/s, read ${mb(apiRead)} MB/s; ` +
    `MCP/API write x${(apiWrite / mcpWrite).toFixed(2)}, read x${(apiRead / mcpRead).toFixed(2)}`);
  console.log(JSON.stringify({ bench: 'mcp-exec', n: N, mcp_ms: m, mcp_command_ms: c, api_ms: d,
    file_20mib_s: { mcp_write: mcpWrite, mcp_read: mcpRead, api_write: apiWrite, api_read: apiRead } }));
}

try {
  await main();
} finally {
  // after a failure: no sandbox (VMM) or daemon is left behind (the daemon
  // is still up, so the CLI does not start another)
  if (DAEMON_PID) {
    spawnSync(BIN, ['sandbox', 'rm', '--all'], { env: ENV, timeout: 120_000 });
    try { process.kill(DAEMON_PID, 'SIGTERM'); } catch { /* gone */ }
  }
  rmSync(TMP, { recursive: true, force: true });
}
