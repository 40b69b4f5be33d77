#!/usr/bin/env python3
"""The gateway's npm route with a real npm client and a real npm registry
(docs/gateway.md): verdaccio (tests/integration/npm-registry, no uplinks)
in a network namespace this test creates (gateway_world + npm_world), two
packages published to it from the host with `npm publish` (crtest-app and
its scoped dependency @crtest/util), and Debian's npm in the guest (an image
built with `images/debian/build.sh --with nodejs,npm`). `npm install` in the
guest goes through the gateway by the injected npm_config_registry; a second
sandbox's install gets both tarballs from the content cache (verdaccio is not
asked for them again); a registry the policy does not allow fails with the
gateway's reason.

Environment: CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_NPM_IMAGE_TAR (scripts/test.sh builds it when missing). Root.
Removes all it creates."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gateway_world  # noqa: E402
import npm_world  # noqa: E402

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("gateway-npm: skipped (set CLEANROOM_TEST_VM=1)")
    sys.exit(77)
if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("nft"):
    print("gateway-npm: skipped (needs root, /dev/net/tun, nft)")
    sys.exit(77)
IMAGE_TAR = os.environ.get("CLEANROOM_TEST_NPM_IMAGE_TAR")
if not IMAGE_TAR or not os.path.exists(IMAGE_TAR):
    print("gateway-npm: skipped (set CLEANROOM_TEST_NPM_IMAGE_TAR to a rootfs tar with nodejs and npm, "
          "e.g. images/debian/build.sh OUT.tar --with nodejs,npm)")
    sys.exit(77)
WHY = npm_world.missing()
if WHY:
    print("gateway-npm: skipped (%s)" % WHY)
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
IMAGE = "test/gateway-npm"
DEADLINE = 1500  # node under TCG is slow; the meson timeout is above this
INSTALL_S = 480  # one `npm install` in a guest
PID = os.getpid()
TAG = "n%04d" % (PID % 10000)
TABLE = "crgwnpm_%d" % PID
PORT = 19470 + PID % 1000
TMP = tempfile.mkdtemp(prefix="cr-gateway-npm-")
W = gateway_world.World(TMP, TAG)
R = npm_world.Registry(W)
ENV = dict(os.environ)
ENV.update({
    "CLEANROOM_RUN_DIR": os.path.join(TMP, "run"),
    "CLEANROOM_DATA_DIR": os.path.join(TMP, "data"),
    "CLEANROOM_CACHE_DIR": os.path.join(TMP, "cache"),
    "CLEANROOM_EGRESS_TABLE": TABLE,
    "CLEANROOM_EGRESS_POOL": W.pool,
    "CLEANROOM_EGRESS_NFLOG_GROUP": str(23000 + PID % 20000),
    "CLEANROOM_DNS_UPSTREAM": "127.0.0.1:9",
    "CLEANROOM_GATEWAY_PORT": str(PORT),
    "CLEANROOM_GATEWAY_NPM_REGISTRY": R.url,
})
for k in ("CLEANROOM_HOST", "CLEANROOM_EGRESS", "CLEANROOM_GATEWAY_OFFLINE",
          "CLEANROOM_GATEWAY_CREDENTIALS"):
    ENV.pop(k, None)
POLICY = """version: 1
sandbox:
  image:
    ref: %s
  network:
    default: deny
    allow:
      - %s:%d
""" % (IMAGE, W.allowed, npm_world.PORT)
RESULTS = []
NPM = ("timeout %d npm install --no-audit --no-fund --no-update-notifier --loglevel=warn "
       "--fetch-retries=0" % (INSTALL_S - 30))


def row(name, ok, detail=""):
    RESULTS.append((name, ok))
    print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""),
          flush=True)


def cr(*args, timeout=300, check=True):
    p = subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d: %s" % (" ".join(args), p.returncode,
                                                        p.stderr.decode(errors="replace")[-800:]))
    return p


def guest(sid, script, timeout=INSTALL_S):
    p = cr("exec", "--in", sid, "--", "sh", "-c", script, timeout=timeout, check=False)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def events(sid):
    p = cr("events", "--sandbox", sid, "--json")
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]


def gw_events(sid):
    return [e for e in events(sid) if e.get("kind") == "gateway"]


def cache_stats():
    return json.loads(cr("cache", "stats", "--json").stdout)


def stop_daemon():
    sock = os.path.join(ENV["CLEANROOM_RUN_DIR"], "cleanroom.sock")
    if not os.path.exists(sock):
        return
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sock)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            c = s.recv(65536)
            if not c:
                break
            buf += c
        s.close()
        pid = json.loads(buf)["result"]["pid"]
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)  # waiting for the daemon to exit, bounded
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


def install(sid, where, extra=""):
    return guest(sid, "mkdir -p %s && cd %s && %s %s %s@1.0.0 2>&1; echo rc=$?; "
                      "node -e 'console.log(\"RESULT=\" + require(\"%s\"))' 2>&1; "
                      "ls node_modules/@crtest/util/index.js node_modules/%s/index.js 2>&1"
                 % (where, where, NPM, extra, npm_world.APP, npm_world.APP, npm_world.APP))


def tgz_events(evs):
    return [e for e in evs if e.get("route") == "npm" and (e.get("url") or "").endswith(".tgz")]


def run_rows(a, b):
    want = "RESULT=util-%d+app" % PID
    # 1 the exec environment points npm at the gateway
    _, out = guest(a, "echo REG=$npm_config_registry; npm --version; node --version", timeout=120)
    reg = "/npm/http/%s:%d/" % (W.allowed, npm_world.PORT)
    row("executions get npm_config_registry pointing at the gateway (npm and node in the image)",
        "REG=http://" in out and (":%d%s" % (PORT, reg)) in out, out)
    # 2 npm install through the gateway, cold: both tarballs fetched from verdaccio
    since = len(R.requests())
    st0 = cache_stats()
    rc, out = install(a, "/tmp/p1")
    tars = R.tarball_requests(since)
    evs = tgz_events(gw_events(a))
    st1 = cache_stats()
    row("npm install in the guest goes through the gateway (two packages, one scoped)",
        "rc=0" in out and want in out and "No such file" not in out
        and len({t["url"] for t in tars}) == 2, "%s verdaccio tarballs=%s" % (out[-800:], tars))
    row("the gateway events show both tarballs fetched from upstream (cache miss, stored)",
        len([e for e in evs if e.get("cache") == "miss" and e.get("action") == "allow"]) >= 2
        and all(t["ip"] == W.host_w for t in tars) and st1["stores"] >= st0["stores"] + 2,
        "events %s stats %s -> %s ips %s" % (json.dumps(evs)[:600], st0, st1, [t["ip"] for t in tars]))
    # 3 a second sandbox (an empty npm cache of its own): tarballs from the gateway's cache
    since = len(R.requests())
    st0 = cache_stats()
    rc, out = install(b, "/tmp/p2")
    tars = R.tarball_requests(since)
    meta = [r for r in R.requests()[since:] if not (r["url"] or "").endswith(".tgz")]
    evs = tgz_events(gw_events(b))
    st1 = cache_stats()
    row("a second sandbox's npm install is served from the cache (hits, verdaccio not asked for tarballs)",
        "rc=0" in out and want in out and not tars and st1["hits"] >= st0["hits"] + 2
        and len([e for e in evs if e.get("cache") == "hit"]) >= 2,
        "%s tarballs=%s metadata=%d stats %s -> %s events %s" % (
            out[-500:], tars, len(meta), st0, st1, json.dumps(evs)[:400]))
    # 4 a registry the policy does not allow: refused by the gateway, never asked
    since = len(R.requests())
    gw = json.loads(cr("sandbox", "inspect", b, "--json").stdout)["network"]["host_address"]
    other = "http://%s:%d/npm/http/%s:%d/" % (gw, PORT, W.other, npm_world.PORT)
    rc, out = install(b, "/tmp/p3", "--cache /tmp/npm-cache-deny --registry %s" % other)
    asked = R.requests()[since:]
    row("an npm registry not in the policy fails with the gateway's reason (host_not_allowed)",
        "rc=0" not in out and "host_not_allowed" in out and not asked
        and any(e.get("reason") == "host_not_allowed" and e.get("name") == W.other
                for e in gw_events(b)),
        "%s asked=%s" % ([l for l in out.splitlines() if "ERR" in l or "error" in l][:8], asked))


def main():
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("suite deadline")))
    signal.alarm(DEADLINE)
    err = None
    taps = []
    try:
        W.start()
        R.start()
        R.publish()
        pol = os.path.join(TMP, "policy.yaml")
        with open(pol, "w") as f:
            f.write(POLICY)
        cr("image", "import", IMAGE_TAR, "--ref", IMAGE, timeout=900)
        a = cr("sandbox", "create", "--policy", pol, "--memory", "768").stdout.decode().strip()
        b = cr("sandbox", "create", "--policy", pol, "--memory", "768").stdout.decode().strip()
        for sid in (a, b):
            taps.append(json.loads(cr("sandbox", "inspect", sid, "--json").stdout)["network"]["tap"])
        run_rows(a, b)
        cr("sandbox", "rm", a, b, timeout=120)
        ls = json.loads(cr("cache", "ls", "--json").stdout)
        row("cache ls lists the two tarballs (kind npm-tarball)",
            len([e for e in ls["entries"] if e.get("kind") == "npm-tarball"]) == 2, json.dumps(ls)[:400])
    except Exception as e:
        err = e
        row("suite ran to the end", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        try:
            if os.path.exists(os.path.join(ENV["CLEANROOM_RUN_DIR"], "cleanroom.sock")):
                cr("sandbox", "rm", "--all", timeout=120, check=False)
            stop_daemon()
        except Exception as e:
            print("cleanup: %s" % e)
        if not all(ok for _, ok in RESULTS):
            try:
                with open(os.path.join(ENV["CLEANROOM_RUN_DIR"], "daemon.log"), "rb") as f:
                    print("daemon.log (tail):\n" + f.read()[-3000:].decode(errors="replace"))
            except OSError:
                pass
        leaked = [t for t in taps if os.path.exists("/sys/class/net/" + t)]
        for t in leaked:
            gateway_world.sh("ip", "link", "del", t, check=False)
        gateway_world.sh("nft", "delete", "table", "inet", TABLE, check=False)
        table_left = gateway_world.sh("nft", "list", "table", "inet", TABLE, check=False).returncode == 0
        W.close()
        ps = gateway_world.sh("ps", "-eo", "pid,args", check=False).stdout.decode()
        procs = [l.strip()[:100] for l in ps.splitlines() if TMP in l and "ps -eo" not in l]
        for l in procs:
            try:
                os.kill(int(l.split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        left = W.leftovers() + procs + (["table"] if table_left else []) + leaked
        shutil.rmtree(TMP, ignore_errors=True)
        row("nothing left behind (TAPs, table, namespace, veth, verdaccio, processes)", not left, str(left))
    passed = sum(1 for _, ok in RESULTS if ok)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    return 0 if passed == len(RESULTS) and err is None else 1


if __name__ == "__main__":
    sys.exit(main())
