// Egress denials as an agent sees them, through a real MCP client
// (@modelcontextprotocol/sdk 1.x over `cleanroom mcp`), against the real
// daemon, a real QEMU sandbox with a network, nftables and NFLOG:
//   - a connection the policy rejects (the gateway's port 80: a host service)
//     and a DNS lookup of a name it does not allow show up in `egress_events`
//     and in `sandbox_inspect`'s network.recent_denials;
//   - they are still there, with the same seq, after the daemon is killed
//     (SIGKILL: nothing flushed at exit) and started again, and new events
//     go on from the old seq.
// No traffic leaves the host: the only destinations are the sandbox's own
// gateway address and our resolver (the denied name is never sent upstream).
//
//   CLEANROOM_BIN=... CLEANROOM_TEST_VM=1 node --test tests/integration/mcp-egress.test.mjs
//
// Root (TAP, nftables). The daemon gets a table, an address pool and an
// NFLOG group of its own; everything it made (sandbox, TAP, table, daemon,
// temp dir) is removed at the end, also on failure, and the end checks that
// no TAP or nftables chain of the sandbox is left.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const SRC_ROOT = join(HERE, '..', '..');
const BIN = process.env.CLEANROOM_BIN;
const IMAGE = 'test/busybox';
const CALL_TIMEOUT = 300_000; // a cold boot under TCG

function which(p) {
  return spawnSync('sh', ['-c', `command -v ${p}`]).status === 0;
}
const skip = !BIN ? 'CLEANROOM_BIN is not set'
  : process.env.CLEANROOM_TEST_VM !== '1' ? 'set CLEANROOM_TEST_VM=1 to boot sandboxes'
    : (process.getuid() !== 0 || !existsSync('/dev/net/tun') || !which('nft') || !which('ip'))
      ? 'needs root, /dev/net/tun, nft and ip' : false;

const TAG = String(process.pid % 100000).padStart(5, '0');
const TABLE = `crmcp_${process.pid}`;
let TMP;
let ENV;
let sandboxId;

function sh(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...opts });
}

function cr(args, opts = {}) {
  const p = sh(BIN, args, { env: ENV, timeout: 300_000, ...opts });
  if (opts.check !== false && p.status !== 0)
    throw new Error(`cleanroom ${args.join(' ')} -> ${p.status}: ${p.stderr}`);
  return p;
}

// A /24 of the pool no interface here uses (other runs pick others).
function freeSubnet() {
  const used = sh('ip', ['-o', '-4', 'addr']).stdout;
  for (let k = 0; k < 200; k++) {
    const n = 16 + (process.pid + 97 + k) % 200;
    if (!used.includes(`10.213.${n}.`)) return n;
  }
  return 16 + process.pid % 200;
}

function rpc(method, params = {}) {
  return new Promise((resolve, reject) => {
    const s = createConnection(join(TMP, 'run', 'cleanroom.sock'));
    let buf = '';
    s.on('connect', () => s.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) + '\n'));
    s.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) { s.end(); resolve(JSON.parse(buf.slice(0, nl))); }
    });
    s.on('error', reject);
  });
}

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

// Kills the daemon (not our child: it was started by `cleanroom mcp`) and
// waits for its pid to go.
async function killDaemon(signal) {
  const info = await rpc('system.info');
  const pid = info.result.pid;
  process.kill(pid, signal);
  for (let i = 0; i < 300 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(!alive(pid), `daemon ${pid} still there after ${signal}`);
}

async function connect() {
  const transport = new StdioClientTransport({
    command: BIN, args: ['mcp', '--repo', TMP, '--image', IMAGE], env: ENV, stderr: 'pipe',
  });
  const client = new Client({ name: 'cleanroom-egress-e2e', version: '1.0.0' });
  await client.connect(transport);
  // the SDK validates every structuredContent against the tool's outputSchema
  // once it has listed the tools
  await client.listTools();
  const call = (name, args) => client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT });
  return { client, call };
}

const out = (r) => JSON.parse(r.content[0].text);
const has = (evs, want) => evs.some((e) => Object.entries(want).every(([k, v]) => e[k] === v));

// Polls egress_events until every wanted event is there (NFLOG delivers
// asynchronously), at most 15 s; returns the last answer.
async function waitEvents(call, wants, args = {}) {
  let r;
  for (let i = 0; i < 150; i++) {
    r = await call('egress_events', { sandbox_id: sandboxId, ...args });
    assert.equal(r.isError, undefined, JSON.stringify(r.content));
    if (wants.every((w) => has(r.structuredContent.events, w))) return r;
    await new Promise((res) => setTimeout(res, 100)); // the daemon's event log, bounded
  }
  return r;
}

after(async () => {
  if (!TMP) return;
  try {
    if (existsSync(join(TMP, 'run', 'cleanroom.sock'))) {
      cr(['sandbox', 'rm', '--all'], { check: false, timeout: 120_000 });
      try { await killDaemon('SIGTERM'); } catch { /* gone */ }
    }
  } finally {
    // what the daemon should have removed with the sandbox: a leak fails the test
    const leftovers = [];
    if (sandboxId) {
      const tap = `crt${sandboxId.slice(-12).toLowerCase()}`;
      if (existsSync(`/sys/class/net/${tap}`)) {
        leftovers.push(`TAP ${tap}`);
        sh('ip', ['link', 'del', tap]);
      }
      const chains = sh('nft', ['list', 'table', 'inet', TABLE]).stdout || '';
      if (chains.includes(`f_${sandboxId}`)) leftovers.push(`chain f_${sandboxId}`);
    }
    sh('nft', ['delete', 'table', 'inet', TABLE]);
    const ps = sh('ps', ['-eo', 'pid,args']).stdout;
    for (const l of ps.split('\n')) {
      if (l.includes(TMP) && /qemu/.test(l)) {
        leftovers.push(`process ${l.trim().slice(0, 100)}`);
        try { process.kill(Number(l.trim().split(' ')[0]), 'SIGKILL'); } catch { /* gone */ }
      }
    }
    rmSync(TMP, { recursive: true, force: true });
    assert.deepEqual(leftovers, [], 'left behind');
  }
});

test('a denied connection shows up through MCP and survives a daemon crash', { skip, timeout: 900_000 }, async () => {
  TMP = mkdtempSync(join(tmpdir(), 'cr-mcp-egress-'));
  const n = freeSubnet();
  ENV = {
    ...process.env,
    CLEANROOM_RUN_DIR: join(TMP, 'run'),
    CLEANROOM_DATA_DIR: join(TMP, 'data'),
    CLEANROOM_EGRESS_TABLE: TABLE,
    CLEANROOM_EGRESS_POOL: `10.213.${n}.0/24`,
    CLEANROOM_EGRESS_NFLOG_GROUP: String(30000 + process.pid % 20000),
    CLEANROOM_DNS_UPSTREAM: '127.0.0.1:9', // never asked: the only name looked up is denied
  };
  for (const k of ['CLEANROOM_HOST', 'CLEANROOM_IMAGE', 'CLEANROOM_EGRESS']) delete ENV[k];
  let tar = process.env.CLEANROOM_TEST_IMAGE_TAR;
  if (!tar) {
    tar = join(TMP, 'busybox.tar');
    const b = sh(join(SRC_ROOT, 'images', 'busybox', 'build.sh'), [tar]);
    assert.equal(b.status, 0, `building the busybox image: ${b.stderr}`);
  }
  cr(['image', 'import', tar, '--ref', IMAGE]);
  // the session's policy: cleanroom.yaml of --repo
  writeFileSync(join(TMP, 'cleanroom.yaml'), `version: 1
sandbox:
  image:
    ref: ${IMAGE}
  network:
    default: deny
    allow:
      - allowed.test:8080
`);

  let { client, call } = await connect();
  let before;
  try {
    const first = await call('exec', { command: 'ip -4 addr show eth0 | grep -c inet' });
    assert.equal(first.isError, undefined, JSON.stringify(first.content));
    sandboxId = first.structuredContent.sandbox_id;
    assert.equal(out(first).stdout.trim(), '1'); // it has a network
    const ins0 = await call('sandbox_inspect', {});
    const gw = ins0.structuredContent.network.effective.host_address;
    assert.match(gw, /^10\.213\./);

    // a host service (the gateway's port 80) and a name the policy does not allow
    const r = await call('exec', {
      command: `nc -w 3 ${gw} 80 </dev/null; echo nc=$?; nslookup denied-${TAG}.test 2>&1; true`,
    });
    assert.match(out(r).stdout, /nc=1/);
    const wantConn = { kind: 'connection', action: 'deny', reason: 'host_service_denied', address: gw, port: 80, protocol: 'tcp' };
    const wantDns = { kind: 'dns', action: 'deny', reason: 'host_not_allowed', name: `denied-${TAG}.test` };
    const ev = await waitEvents(call, [wantConn, wantDns]);
    const evs = ev.structuredContent.events;
    assert.ok(has(evs, wantConn), JSON.stringify(evs));
    assert.ok(has(evs, wantDns), JSON.stringify(evs));
    assert.equal(ev.structuredContent.sandbox_id, sandboxId);
    assert.ok(evs.every((e) => e.action === 'deny')); // the default: denials only
    assert.deepEqual(out(ev), ev.structuredContent); // the text block is the same JSON
    // all actions: the network attach is there too
    const all = await call('egress_events', { action: 'all' });
    assert.ok(has(all.structuredContent.events, { kind: 'network', action: 'attach' }));
    // since: nothing newer than the last seq
    const none = await call('egress_events', { since: ev.structuredContent.last_seq });
    assert.deepEqual(none.structuredContent.events, []);
    // sandbox_inspect carries the newest denials
    const ins = await call('sandbox_inspect', {});
    const recent = ins.structuredContent.network.recent_denials;
    assert.ok(has(recent, wantConn) && has(recent, wantDns), JSON.stringify(recent));
    before = evs;
  } finally {
    await client.close();
  }

  // a crash: the events were on disk when they happened
  await killDaemon('SIGKILL');
  ({ client, call } = await connect()); // starts a new daemon
  try {
    const ev = await call('egress_events', { sandbox_id: sandboxId });
    assert.equal(ev.isError, undefined, JSON.stringify(ev.content));
    const seqs = (evs) => evs.map((e) => e.seq);
    assert.deepEqual(seqs(ev.structuredContent.events), seqs(before)); // the same events, same seq
    assert.deepEqual(ev.structuredContent.events, before);
    const last = ev.structuredContent.last_seq;
    assert.ok(last >= Math.max(...seqs(before)));
    // the re-attached sandbox is still enforced and audited; seq goes on
    const r = await call('exec', { command: `nslookup again-${TAG}.test 2>&1; true`, sandbox_id: sandboxId });
    assert.equal(r.isError, undefined, JSON.stringify(r.content));
    const ev2 = await waitEvents(call, [{ kind: 'dns', name: `again-${TAG}.test` }], { since: last });
    const fresh = ev2.structuredContent.events.find((e) => e.name === `again-${TAG}.test`);
    assert.ok(fresh && fresh.seq > last && fresh.reason === 'host_not_allowed', JSON.stringify(ev2.structuredContent));
    // the log on disk is private to the daemon
    const log = join(TMP, 'data', 'egress', 'events.jsonl');
    assert.ok(readFileSync(log, 'utf8').includes(`denied-${TAG}.test`));
  } finally {
    await client.close();
  }
});
