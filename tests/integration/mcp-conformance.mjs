// The official MCP conformance suite (@modelcontextprotocol/conformance,
// pinned in package.json) against `cleanroom serve --mcp-http`, the real
// daemon and binary. The suite's client sends no credentials, so a loopback
// proxy in this process adds the daemon's bearer token and passes everything
// else (Host and Origin included) through unchanged.
//
//   CLEANROOM_BIN=build/cleanroom node tests/integration/mcp-conformance.mjs
//
// Prints pass/fail per scenario (with the failed checks) and names each
// skipped scenario with the reason; exits 1 when a scenario we run fails.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { request, createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CLEANROOM_BIN;
const SUITE = join(HERE, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');

// what we run, and why the others are not run
const RUN = ['server-initialize', 'ping', 'logging-set-level', 'tools-list', 'resources-list',
  'dns-rebinding-protection', 'server-sse-multiple-streams', 'server-sse-polling'];
const SKIP = {
  'completion-complete': 'needs the suite\'s completions (cleanroom offers none)',
  'tools-call-simple-text': 'calls the suite\'s own test tools (test_simple_text, ...), which cleanroom does not have',
  'tools-call-image': 'calls the suite\'s own test tools',
  'tools-call-audio': 'calls the suite\'s own test tools',
  'tools-call-embedded-resource': 'calls the suite\'s own test tools',
  'tools-call-mixed-content': 'calls the suite\'s own test tools',
  'tools-call-with-logging': 'calls the suite\'s own test tools',
  'tools-call-error': 'calls the suite\'s own test tools',
  'tools-call-with-progress': 'calls the suite\'s own test tools',
  'tools-call-sampling': 'needs sampling and the suite\'s test tools',
  'tools-call-elicitation': 'needs elicitation and the suite\'s test tools',
  'json-schema-2020-12': 'calls the suite\'s own test tool',
  'elicitation-sep1034-defaults': 'needs elicitation and the suite\'s test tools',
  'elicitation-sep1330-enums': 'needs elicitation and the suite\'s test tools',
  'resources-read-text': 'reads the suite\'s own test resources',
  'resources-read-binary': 'reads the suite\'s own test resources',
  'resources-templates-read': 'reads the suite\'s own test resource template',
  'resources-subscribe': 'cleanroom does not offer resource subscriptions',
  'resources-unsubscribe': 'cleanroom does not offer resource subscriptions',
  'prompts-list': 'cleanroom offers no prompts',
  'prompts-get-simple': 'cleanroom offers no prompts',
  'prompts-get-with-args': 'cleanroom offers no prompts',
  'prompts-get-embedded-resource': 'cleanroom offers no prompts',
  'prompts-get-with-image': 'cleanroom offers no prompts',
};

const TMP = mkdtempSync(join(tmpdir(), 'cr-conf-'));
const ENV = { ...process.env, CLEANROOM_RUN_DIR: join(TMP, 'run'), CLEANROOM_DATA_DIR: join(TMP, 'data') };
delete ENV.CLEANROOM_HOST;
let daemon;
let proxy;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function run(args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
}

async function main() {
  daemon = spawn(BIN, ['serve', '--mcp-http', '127.0.0.1:0'], { env: ENV, stdio: ['ignore', 'ignore', 'inherit'] });
  const addrFile = join(TMP, 'run', 'mcp-http.addr');
  for (let i = 0; i < 300 && !existsSync(addrFile); i++) await sleep(100); // the daemon's start
  if (!existsSync(addrFile)) throw new Error('the daemon did not start --mcp-http');
  const [host, port] = readFileSync(addrFile, 'utf8').trim().split(':');
  const t = spawnSync(BIN, ['mcp', 'token'], { env: ENV, encoding: 'utf8' });
  if (t.status !== 0) throw new Error(`cleanroom mcp token: ${t.stderr}`);
  const token = t.stdout.trim();

  proxy = createServer((req, res) => {
    const up = request({ host, port: Number(port), method: req.method, path: req.url,
      headers: { ...req.headers, authorization: `Bearer ${token}` } }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => { res.destroy(); });
    req.pipe(up);
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${proxy.address().port}/mcp`;

  const listed = spawnSync(process.execPath, [SUITE, 'list'], { encoding: 'utf8' });
  const server = (listed.stdout.split('Client scenarios')[0].match(/^\s+- (\S+)/gm) || []).map((l) => l.trim().slice(2));
  let failed = 0;
  console.log(`conformance suite against cleanroom serve --mcp-http (${url} -> ${host}:${port})`);
  for (const name of RUN) {
    const out = join(TMP, 'results', name);
    // async: the proxy above lives in this process and must keep serving
    const p = await run([SUITE, 'server', '--url', url, '--scenario', name, '-o', out], 120_000);
    const checks = [];
    const walk = (d) => { for (const f of existsSync(d) ? readdirSync(d, { withFileTypes: true }) : []) {
      if (f.isDirectory()) walk(join(d, f.name));
      else if (f.name === 'checks.json') checks.push(...JSON.parse(readFileSync(join(d, f.name), 'utf8')));
    } };
    walk(out);
    const bad = checks.filter((c) => c.status === 'FAILURE');
    const ok = p.status === 0 && bad.length === 0 && checks.length > 0;
    if (!ok) failed++;
    console.log(`${ok ? 'PASS' : 'FAIL'} ${name} (${checks.length} checks${bad.length ? `, ${bad.length} failed` : ''})`);
    for (const c of bad) console.log(`     - ${c.id}: ${c.errorMessage ?? ''}`);
    if (!ok && checks.length === 0) console.log(`     ${(p.stdout + p.stderr).trim().split('\n').slice(-5).join('\n     ')}`);
  }
  for (const name of server.filter((n) => !RUN.includes(n)))
    console.log(`SKIP ${name}: ${SKIP[name] ?? 'not in the list this test runs (new in the suite?)'}`);
  console.log(`conformance: ${RUN.length - failed} passed, ${failed} failed, ${server.length - RUN.length} skipped`);
  return failed ? 1 : 0;
}

let rc = 1;
try {
  rc = await main();
} catch (e) {
  console.error(`mcp-conformance: ${e.stack ?? e}`);
} finally {
  proxy?.close();
  if (daemon) {
    const gone = new Promise((r) => daemon.on('exit', r));
    daemon.kill('SIGTERM');
    await gone;
  }
  rmSync(TMP, { recursive: true, force: true });
}
process.exit(rc);
