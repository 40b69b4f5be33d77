// Load test (issue 11): 20 real MCP clients (@modelcontextprotocol/sdk, each
// its own `cleanroom mcp` process) against 5 real QEMU sandboxes of one
// daemon, 100 operations each, all at once: exec, write_file, read_file,
// list_files. Asserts 0 errors (every result checked), that a warm-up round
// leaves the daemon at most one more open fd per sandbox (its execution
// records file, kept open once a command ran), that its open fds then come
// back to within 10 % of that after the measured round, and its RSS to within 10 % of where it was after a warm-up round of
// the same workload (so first-touch allocations and the allocator's caches
// are in the baseline; what grows per request is not). Prints its figures. Run through mcp-sdk-run.sh (meson test `mcp-load`).
//
//   CLEANROOM_BIN=... CLEANROOM_TEST_VM=1 node --test tests/integration/mcp-load.test.mjs
//
// Environment as mcp-sdk.test.mjs; CLEANROOM_LOAD_CLIENTS/_SANDBOXES/_OPS
// scale it (defaults 20/5/100).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const SRC_ROOT = join(HERE, '..', '..');
const BIN = process.env.CLEANROOM_BIN;
const VM = process.env.CLEANROOM_TEST_VM === '1';
const IMAGE = 'test/busybox';
const CLIENTS = Number(process.env.CLEANROOM_LOAD_CLIENTS || 20);
const SANDBOXES = Number(process.env.CLEANROOM_LOAD_SANDBOXES || 5);
const OPS = Number(process.env.CLEANROOM_LOAD_OPS || 100);
const CALL_TIMEOUT = 300_000;

let TMP;
let ENV;
let daemonPid;
const sandboxes = [];

function cr(args, opts = {}) {
  const p = spawnSync(BIN, args, { env: ENV, encoding: 'utf8', timeout: 300_000, ...opts });
  if (opts.check !== false && p.status !== 0)
    throw new Error(`cleanroom ${args.join(' ')} -> ${p.status}: ${p.stderr}`);
  return p;
}

function rpc(method, params = {}) {
  return new Promise((resolve, reject) => {
    const s = createConnection(join(TMP, 'run', 'cleanroom.sock'));
    let buf = '';
    s.on('connect', () => s.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) + '\n'));
    s.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        s.end();
        resolve(JSON.parse(buf.slice(0, nl)));
      }
    });
    s.on('error', reject);
  });
}

const fds = (pid) => readdirSync(`/proc/${pid}/fd`).length;
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

before(() => {
  if (!BIN || !VM) return;
  TMP = mkdtempSync(join(tmpdir(), 'cr-load-'));
  // The daemon is started on demand by the first command and inherits this
  // environment; ASan's quarantine is kept small so that freed memory is not
  // counted as growth.
  ENV = { ...process.env, CLEANROOM_RUN_DIR: join(TMP, 'run'), CLEANROOM_DATA_DIR: join(TMP, 'data'),
    ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'quarantine_size_mb=8'].filter(Boolean).join(':') };
  delete ENV.CLEANROOM_HOST;
  delete ENV.CLEANROOM_IMAGE;
  let tar = process.env.CLEANROOM_TEST_IMAGE_TAR;
  if (!tar) {
    tar = join(TMP, 'busybox.tar');
    const b = spawnSync(join(SRC_ROOT, 'images', 'busybox', 'build.sh'), [tar],
      { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: 120_000 });
    assert.equal(b.status, 0, `building the busybox image: ${b.stderr}`);
  }
  cr(['image', 'import', tar, '--ref', IMAGE]);
});

after(async () => {
  if (!TMP) return;
  try {
    if (existsSync(join(TMP, 'run', 'cleanroom.sock'))) {
      cr(['sandbox', 'rm', '--all'], { check: false, timeout: 180_000 });
      try {
        const pid = daemonPid || (await rpc('system.info')).result.pid;
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 200; i++) { // the daemon is not our child: poll its pid
          try { process.kill(pid, 0); } catch { break; }
          await new Promise((r) => setTimeout(r, 100));
        }
      } catch { /* already gone */ }
    }
  } finally {
    rmSync(TMP, { recursive: true, force: true });
  }
});

async function connect() {
  const transport = new StdioClientTransport({ command: BIN, args: ['mcp'], env: ENV, stderr: 'pipe' });
  const client = new Client({ name: 'cleanroom-load', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

const text = (r) => r.content.map((c) => c.text).join('\n');

// One client's workload: `ops` operations round-robin over the sandboxes,
// each result checked. Returns the list of failures (strings).
async function workload(c, ops, tag) {
  const client = await connect();
  const errors = [];
  const call = (name, args) => client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT });
  try {
    for (let i = 0; i < ops; i++) {
      const sid = sandboxes[(c + i) % sandboxes.length];
      const path = `/tmp/load/${tag}-${c}/${i % 10}.txt`;
      const want = `client ${c} op ${i} ${tag}\n`;
      try {
        switch (i % 4) {
          case 0: {
            const r = await call('exec', { sandbox_id: sid, command: `echo "${want.trim()}"` });
            if (r.isError || r.structuredContent.exit_code !== 0 || JSON.parse(r.content[0].text).stdout !== want)
              errors.push(`exec ${c}/${i}: ${text(r)}`);
            break;
          }
          case 1: {
            const r = await call('write_file', { sandbox_id: sid, path, content: want, create_parents: true });
            if (r.isError) errors.push(`write_file ${c}/${i}: ${text(r)}`);
            break;
          }
          case 2: {
            // the file op 1 wrote into the sandbox of op i-1
            const prev = sandboxes[(c + i - 1) % sandboxes.length];
            const p = `/tmp/load/${tag}-${c}/${(i - 1) % 10}.txt`;
            const r = await call('read_file', { sandbox_id: prev, path: p });
            if (r.isError || r.content[0].text !== `client ${c} op ${i - 1} ${tag}\n`)
              errors.push(`read_file ${c}/${i}: ${text(r)}`);
            break;
          }
          default: {
            // the directory op i-2 wrote into, in that op's sandbox
            const w = sandboxes[(c + i - 2) % sandboxes.length];
            const r = await call('list_files', { sandbox_id: w, path: `/tmp/load/${tag}-${c}` });
            if (r.isError || !text(r).includes(`"${(i - 2) % 10}.txt"`))
              errors.push(`list_files ${c}/${i}: ${text(r)}`);
          }
        }
      } catch (e) {
        errors.push(`${c}/${i}: ${e.message}`);
      }
    }
  } finally {
    await client.close();
  }
  return errors;
}

async function round(clients, ops, tag) {
  const t0 = Date.now();
  const results = await Promise.all(Array.from({ length: clients }, (_, c) => workload(c, ops, tag)));
  return { errors: results.flat(), seconds: (Date.now() - t0) / 1000 };
}

// The daemon's fd count settles once the clients' connections are closed;
// polled (with a deadline) because the daemon sees each hang-up on its loop.
async function settledFds(pid, limit) {
  const deadline = Date.now() + 30_000;
  let n = fds(pid);
  while (n > limit && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200)); // polling the daemon's state
    n = fds(pid);
  }
  return n;
}

test(`${CLIENTS} MCP clients x ${SANDBOXES} sandboxes x ${OPS} operations`,
  { skip: (!BIN && 'CLEANROOM_BIN is not set') || (!VM && 'set CLEANROOM_TEST_VM=1'), timeout: 1_500_000 },
  async () => {
    for (let i = 0; i < SANDBOXES; i++) {
      const p = cr(['sandbox', 'create', '--image', IMAGE, '--memory', '256']);
      sandboxes.push(p.stdout.trim().split('\n').pop());
    }
    daemonPid = (await rpc('system.info')).result.pid;
    const fdStart = fds(daemonPid);
    // warm-up: the same workload once (fills the allocator's caches and
    // ASan's quarantine); a leak then shows as growth over the second round
    const warm = await round(CLIENTS, OPS, 'warm');
    assert.deepEqual(warm.errors, []);
    // each sandbox keeps its executions/slots open once a command ran in it
    const fd0 = await settledFds(daemonPid, fdStart + SANDBOXES);
    assert.ok(fd0 <= fdStart + SANDBOXES, `daemon fds ${fdStart} -> ${fd0} after the warm-up`);
    const rss0 = rssKiB(daemonPid);

    const run = await round(CLIENTS, OPS, 'load');
    const total = CLIENTS * OPS;
    const fdPeak = fds(daemonPid);
    const fd1 = await settledFds(daemonPid, Math.floor(fd0 * 1.1));
    const rss1 = rssKiB(daemonPid);
    console.log(`mcp-load: ${total} operations by ${CLIENTS} clients on ${SANDBOXES} sandboxes in ` +
      `${run.seconds.toFixed(1)} s (${(total / run.seconds).toFixed(0)} ops/s), ${run.errors.length} errors; ` +
      `daemon fds ${fd0} -> ${fd1} (${fdPeak} right after), RSS ${(rss0 / 1024).toFixed(1)} -> ` +
      `${(rss1 / 1024).toFixed(1)} MiB`);
    assert.deepEqual(run.errors.slice(0, 10), [], `${run.errors.length} errors`);
    assert.ok(fd1 <= fd0 * 1.1, `daemon fds ${fd0} -> ${fd1}`);
    assert.ok(rss1 <= rss0 * 1.1, `daemon RSS ${rss0} -> ${rss1} KiB`);
  });
