#!/usr/bin/env python3
"""git clone through the host gateway (docs/gateway.md): cold (cache
emptied first: the upstream is asked) and warm (served from the content
cache), beside the same clone straight from the upstream in the same guest
(egress lets the guest reach the allowed upstream directly; GIT_CONFIG_COUNT=0
turns the gateway's insteadOf off) and the same clone on the host (the
floor: no VM, no gateway). Timed inside the guest around `git clone` only.

The upstream is Debian's `git http-backend` in a network namespace of its
own (tests/integration/gateway_world.py), a generated repository of
--files files of --size bytes.

Usage: bench/gateway.py [--runs N] [--bin PATH] [--image-tar TAR] [--files N] [--size B]
Root (TAP, nftables, netns). Removes all it creates. Prints one JSON object last."""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import gateway_world  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--image-tar", default=os.path.join(root, "build-test", "test-assets", "debian.tar"))
ap.add_argument("--files", type=int, default=2000)
ap.add_argument("--size", type=int, default=4000)
ap.add_argument("--mem", type=int, default=1024)
a = ap.parse_args()

pid = os.getpid()
tmp = tempfile.mkdtemp(prefix="cr-bench-gw-")
w = gateway_world.World(tmp, "b%04d" % (pid % 10000))
table = "crbenchgw_%d" % pid
port = 28470 + pid % 1000
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_DATA_DIR=f"{tmp}/data",
           CLEANROOM_CACHE_DIR=f"{tmp}/cache", CLEANROOM_EGRESS_TABLE=table,
           CLEANROOM_EGRESS_POOL=w.pool, CLEANROOM_EGRESS_NFLOG_GROUP=str(40000 + pid % 20000),
           CLEANROOM_DNS_UPSTREAM="127.0.0.1:9", CLEANROOM_GATEWAY_PORT=str(port))
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
size = 0
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
print(json.dumps(res))
