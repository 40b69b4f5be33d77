#!/usr/bin/env python3
"""git clone and npm install through the host gateway (docs/gateway.md): cold (cache
emptied first: the upstream is asked) and warm (served from the content
cache), beside the same clone straight from the upstream in the same guest
(egress lets the guest reach the allowed upstream directly; GIT_CONFIG_COUNT=0
turns the gateway's insteadOf off) and the same clone on the host (the
floor: no VM, no gateway). Timed inside the guest around `git clone` only.

The upstream is Debian's `git http-backend` in a network namespace of its
own (tests/integration/gateway_world.py), a generated repository of
--files files of --size bytes. npm: verdaccio in the same namespace
(tests/integration/npm_world.py; npm ci in tests/integration/npm-registry),
crtest-app with --npm-deps dependencies of --npm-size random bytes each,
`npm install` (an empty npm cache each time) in a guest of the debian-node
image (images/debian/build.sh --with nodejs,npm) through the gateway (the
injected npm_config_registry) cold and warm, beside the same install with
--registry pointed straight at verdaccio and on the host. Skipped (said so
in the JSON) without that image or verdaccio.

Usage: bench/gateway.py [--runs N] [--bin PATH] [--image-tar TAR] [--files N] [--size B]
                        [--npm-image-tar TAR] [--npm-deps N] [--npm-size B]
Root (TAP, nftables, netns). Removes all it creates. Prints one JSON object last."""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import gateway_world  # noqa: E402
import npm_world  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--image-tar", default=os.path.join(root, "build-test", "test-assets", "debian.tar"))
ap.add_argument("--files", type=int, default=2000)
ap.add_argument("--size", type=int, default=4000)
ap.add_argument("--mem", type=int, default=1024)
ap.add_argument("--npm-image-tar", default=os.path.join(root, "build-test", "test-assets", "debian-node.tar"))
ap.add_argument("--npm-deps", type=int, default=20)
ap.add_argument("--npm-size", type=int, default=100000)
a = ap.parse_args()

pid = os.getpid()
tmp = tempfile.mkdtemp(prefix="cr-bench-gw-")
w = gateway_world.World(tmp, "b%04d" % (pid % 10000))
reg = npm_world.Registry(w)
table = "crbenchgw_%d" % pid
port = 28470 + pid % 1000
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_DATA_DIR=f"{tmp}/data",
           CLEANROOM_CACHE_DIR=f"{tmp}/cache", CLEANROOM_EGRESS_TABLE=table,
           CLEANROOM_EGRESS_POOL=w.pool, CLEANROOM_EGRESS_NFLOG_GROUP=str(40000 + pid % 20000),
           CLEANROOM_DNS_UPSTREAM="127.0.0.1:9", CLEANROOM_GATEWAY_PORT=str(port),
           CLEANROOM_GATEWAY_NPM_REGISTRY=reg.url)
env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
for k in ("CLEANROOM_HOST", "CLEANROOM_GATEWAY_OFFLINE", "CLEANROOM_GATEWAY_CREDENTIALS"):
    env.pop(k, None)


def cr(*args, timeout=900):
    p = subprocess.run([a.bin] + list(args), env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("cleanroom %s: %s" % (" ".join(args), p.stderr.decode()[-500:]))
    return p.stdout.decode()


def guest_clone(sid, url, dest, direct=False):
    pre = "GIT_CONFIG_COUNT=0 " if direct else ""
    out = cr("exec", "--in", sid, "--", "sh", "-c",
             "rm -rf %s; s=$(date +%%s%%N); %sGIT_TERMINAL_PROMPT=0 git clone -q %s %s || exit 1; "
             "e=$(date +%%s%%N); echo T=$((e-s))" % (dest, pre, url, dest))
    return int(out.split("T=")[1].split()[0]) / 1e9


NPM = "npm install --no-audit --no-fund --no-update-notifier --loglevel=error"


def guest_npm(sid, direct=False):
    """One `npm install crtest-app` in a new directory with an empty npm cache
    (so the registry path is what is timed); seconds."""
    pre = "--registry %s " % reg.url if direct else ""
    out = cr("exec", "--in", sid, "--", "sh", "-c",
             "rm -rf /tmp/np /tmp/npc; mkdir /tmp/np && cd /tmp/np && s=$(date +%%s%%N); "
             "%s --cache /tmp/npc %s%s@1.0.0 >/dev/null || exit 1; e=$(date +%%s%%N); echo T=$((e-s))"
             % (NPM, pre, npm_world.APP))
    return int(out.split("T=")[1].split()[0]) / 1e9


def host_npm():
    d = f"{tmp}/host-npm"
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(f"{tmp}/host-npm-cache", ignore_errors=True)
    os.makedirs(d)
    t0 = time.monotonic()
    subprocess.run(NPM.split() + ["--cache", f"{tmp}/host-npm-cache", "--registry", reg.url,
                                  npm_world.APP + "@1.0.0"], cwd=d, check=True, timeout=600,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def stop_daemon():
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(f"{tmp}/run/cleanroom.sock")
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
        d = json.loads(s.makefile().readline())["result"]["pid"]
        os.kill(d, signal.SIGTERM)
        for _ in range(200):
            os.kill(d, 0)
            time.sleep(0.05)  # waiting for the daemon to exit, bounded
    except (OSError, ValueError, KeyError):
        pass


host_s, cold_s, warm_s, direct_s = [], [], [], []
npm = {"host": [], "direct": [], "cold": [], "warm": []}
npm_skip = npm_world.missing() or (None if os.path.exists(a.npm_image_tar)
                                   else "no image %s" % a.npm_image_tar)
size = npm_bytes = 0
try:
    w.start()
    w.make_repo("big", files=a.files, size=a.size)
    url = "http://%s:8080/big.git" % w.allowed
    with open(f"{tmp}/p.yaml", "w") as f:
        f.write("version: 1\nsandbox:\n  image:\n    ref: bench/debian\n  network:\n"
                "    default: deny\n    allow:\n      - %s:8080\n" % w.allowed)
    cr("image", "import", a.image_tar, "--ref", "bench/debian")
    sid = cr("sandbox", "create", "--policy", f"{tmp}/p.yaml", "--memory", str(a.mem)).strip()
    guest_clone(sid, url, "/tmp/warmup", direct=True)  # page cache, git's own warm-up
    for i in range(a.runs):
        d = f"{tmp}/host-clone"
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.monotonic()
        subprocess.run(["git", "clone", "-q", url, d], check=True, env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
        host_s.append(time.monotonic() - t0)
        direct_s.append(guest_clone(sid, url, "/tmp/d", direct=True))
        cr("cache", "prune", "--all")
        cold_s.append(guest_clone(sid, url, "/tmp/c"))
        warm_s.append(guest_clone(sid, url, "/tmp/w"))
    st = json.loads(cr("cache", "stats", "--json"))
    size = st["bytes"]
    if not npm_skip:
        cr("sandbox", "rm", sid, timeout=120)  # one VM at a time
        reg.start()
        reg.publish(deps=a.npm_deps, size=a.npm_size)
        with open(f"{tmp}/pn.yaml", "w") as f:
            f.write("version: 1\nsandbox:\n  image:\n    ref: bench/debian-node\n  network:\n"
                    "    default: deny\n    allow:\n      - %s:%d\n" % (w.allowed, npm_world.PORT))
        cr("image", "import", a.npm_image_tar, "--ref", "bench/debian-node")
        sn = cr("sandbox", "create", "--policy", f"{tmp}/pn.yaml", "--memory", str(a.mem)).strip()
        guest_npm(sn, direct=True)  # page cache, node's own warm-up
        for i in range(a.runs):
            npm["host"].append(host_npm())
            npm["direct"].append(guest_npm(sn, direct=True))
            cr("cache", "prune", "--all")
            npm["cold"].append(guest_npm(sn))
            npm["warm"].append(guest_npm(sn))
        npm_bytes = json.loads(cr("cache", "stats", "--json"))["bytes"]
finally:
    try:
        cr("sandbox", "rm", "--all", timeout=120)
    except Exception:
        pass
    stop_daemon()
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    w.close()
    shutil.rmtree(tmp, ignore_errors=True)

med = lambda v: round(statistics.median(v), 3)
res = {"runs": a.runs, "files": a.files, "pack_bytes": size,
       "host_clone_s": med(host_s), "guest_direct_clone_s": med(direct_s),
       "gateway_cold_clone_s": med(cold_s), "gateway_warm_clone_s": med(warm_s)}
res["cold_vs_direct"] = round(res["gateway_cold_clone_s"] / res["guest_direct_clone_s"], 3)
res["warm_vs_direct"] = round(res["gateway_warm_clone_s"] / res["guest_direct_clone_s"], 3)
res["warm_vs_host"] = round(res["gateway_warm_clone_s"] / res["host_clone_s"], 3)
print("git clone (%d files, pack %d bytes), medians of %d: host %.2fs (floor), guest direct %.2fs, "
      "gateway cold %.2fs (x%.2f of direct), warm %.2fs (x%.2f of direct, x%.2f of host)" % (
          a.files, size, a.runs, res["host_clone_s"], res["guest_direct_clone_s"],
          res["gateway_cold_clone_s"], res["cold_vs_direct"], res["gateway_warm_clone_s"],
          res["warm_vs_direct"], res["warm_vs_host"]))
if npm_skip:
    res["npm"] = {"skipped": npm_skip}
    print("npm install: skipped (%s)" % npm_skip)
else:
    n = {"packages": a.npm_deps + 2, "tarball_bytes": npm_bytes,
         "host_install_s": med(npm["host"]), "guest_direct_install_s": med(npm["direct"]),
         "gateway_cold_install_s": med(npm["cold"]), "gateway_warm_install_s": med(npm["warm"])}
    n["cold_vs_direct"] = round(n["gateway_cold_install_s"] / n["guest_direct_install_s"], 3)
    n["warm_vs_direct"] = round(n["gateway_warm_install_s"] / n["guest_direct_install_s"], 3)
    n["warm_vs_host"] = round(n["gateway_warm_install_s"] / n["host_install_s"], 3)
    res["npm"] = n
    print("npm install (%d packages, tarballs %d bytes), medians of %d: host %.2fs (floor), guest direct "
          "%.2fs, gateway cold %.2fs (x%.2f of direct), warm %.2fs (x%.2f of direct, x%.2f of host)" % (
              n["packages"], npm_bytes, a.runs, n["host_install_s"], n["guest_direct_install_s"],
              n["gateway_cold_install_s"], n["cold_vs_direct"], n["gateway_warm_install_s"],
              n["warm_vs_direct"], n["warm_vs_host"]))
print(json.dumps(res))
