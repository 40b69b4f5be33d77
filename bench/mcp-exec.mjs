#!/usr/bin/env node
// The MCP SDK client's figure: latency of `tools/call exec` of `true` on a
// ready sandbox through the Node SDK (@modelcontextprotocol/sdk Client +
// StdioClientTransport) -> `cleanroom mcp` (stdio, relays to the daemon's
// socket) -> daemon -> VM, as `argv: ["true"]` and as `command: "true"`
// (sh -c), interleaved round by round with a direct control-API
// execution.create of the same command on the same sandbox (under TCG one
// exec's time drifts by ~10 ms between phases of a run: series run one after
// the other compare phases, not paths). Prints the median, p90 and min of N
// calls each (default 100), MCP over the control API (median of per-round
// differences), and the SDK client's own time per call: from callTool until
// its request is written to the pipe (request building, schema parsing) plus
// from the response's bytes arriving on the pipe until callTool resolves
// (line reading, message and result schema parsing). The server side without
// an SDK (raw JSON-RPC over stdio and the unix socket) is bench/foundation.py.
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

  // the SDK's own time: when its request reaches the pipe, when the
  // response's bytes arrive (a listener ahead of the transport's own)
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  let tSent = 0, tChunk = 0;
  const transport = client.transport;
  const send = transport.send.bind(transport);
  transport.send = (m) => { tSent = now(); return send(m); };
  transport._process?.stdout?.prependListener('data', () => { tChunk = now(); });
  const api = apiConnection();
  await api.ready;
  const runs = {
    mcp: async () => client.callTool({ name: 'exec', arguments: { argv: ['true'] } }),
    mcpCmd: async () => client.callTool({ name: 'exec', arguments: { command: 'true' } }),
    direct: async () => ({ structuredContent: await api.execTrue(sandboxId) }),
  };
  const series = { mcp: [], mcpCmd: [], direct: [] };
  const sdkOwn = [];
  const order = Object.keys(runs);
  for (let i = 0; i < N; i++) {
    for (const k of [...order.slice(i % 3), ...order.slice(0, i % 3)]) {
      const t0 = now();
      const r = await runs[k]();
      const t1 = now();
      series[k].push(t1 - t0);
      if (k !== 'direct' && tChunk) sdkOwn.push((tSent - t0) + (t1 - tChunk));
      if (r.structuredContent.exit_code !== 0) throw new Error(`${k}: exec true failed`);
    }
  }
  const { mcp, mcpCmd, direct } = series;
  const paired = (a) => stats(a.map((x, i) => x - direct[i])).median;

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
  const own = stats(sdkOwn);
  console.log(`exec true, ${N} rounds interleaved, on a ready sandbox (ms); MCP through the Node SDK client:`);
  console.log(`  SDK mcp exec argv:["true"]  median ${fmt(m.median)}  p90 ${fmt(m.p90)}  min ${fmt(m.min)}`);
  console.log(`  SDK mcp exec command:"true" median ${fmt(c.median)}  p90 ${fmt(c.p90)}  min ${fmt(c.min)}`);
  console.log(`  control API execution       median ${fmt(d.median)}  p90 ${fmt(d.p90)}  min ${fmt(d.min)}`);
  console.log(`  SDK mcp over control API (median of per-round differences) argv ${fmt(paired(mcp))} ms, ` +
    `command ${fmt(paired(mcpCmd))} ms (goal for the server: <= 1.5 ms)`);
  console.log(`  the SDK client's own time per call (inside the SDK figures; the control API client has its own too): median ${fmt(own.median)}  p90 ${fmt(own.p90)}`);
  console.log(`  command/argv (median) x${(c.median / m.median).toFixed(2)}`);
  const mb = (s) => (20 * MiB / 1e6 / s).toFixed(1);
  console.log(`20 MiB binary file: MCP write ${mb(mcpWrite)} MB/s, read ${mb(mcpRead)} MB/s; ` +
    `control API write ${mb(apiWrite)} MB/s, read ${mb(apiRead)} MB/s; ` +
    `MCP/API write x${(apiWrite / mcpWrite).toFixed(2)}, read x${(apiRead / mcpRead).toFixed(2)}`);
  console.log(JSON.stringify({ bench: 'mcp-exec', n: N, mcp_ms: m, mcp_command_ms: c, api_ms: d,
    sdk_over_api_ms: { argv: paired(mcp), command: paired(mcpCmd) }, sdk_client_own_ms: own,
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
