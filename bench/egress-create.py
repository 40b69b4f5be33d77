#!/usr/bin/env python3
"""Egress overhead on create: sandbox.create with a network policy (TAP,
nftables chain and set, DNS resolver, guest network at ACTIVATE) next to
sandbox.create without one, through the real daemon, alternating runs.
Prints both medians and the ratio (the issue's goal: < 10 % more), twice:
without the VMM pool (each create clones a boot template) and with it
(CLEANROOM_POOL_SIZE=1, CLEANROOM_POOL_NET_SIZE=1: each create takes a
ready entry of its kind, whose refill is waited for before the next create
and not timed; the pool's entries are 512 MiB clones of the default image,
set to the bench's image here).

Both are also given as ratios to the bare-QEMU floor
(../shared/bench/qemu-floor.py: cold boot and snapshot clone to agent),
run here through bench/floor.py unless --floor-json or --no-floor.

Usage: bench/egress-create.py [--runs N] [--bin PATH] [--mem MIB] [--no-pool]
       [--floor PATH | --floor-json FILE | --no-floor]
Root (TAP, nftables). Uses its own temp data dir, an nftables table and an
address pool of its own, and removes them. Prints one JSON object last."""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--mem", type=int, default=256)
ap.add_argument("--floor", default=os.path.join(root, "..", "shared", "bench", "qemu-floor.py"))
ap.add_argument("--floor-json", default=None)
ap.add_argument("--no-floor", action="store_true")
ap.add_argument("--no-pool", action="store_true", help="skip the creates served by the VMM pool")
ap.add_argument("--daemon-log", default=None, help="append the daemons' stderr to this file")
a = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="cr-bench-egress-")
table = "crbench_%d" % os.getpid()
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_DATA_DIR=f"{tmp}/data",
           CLEANROOM_EGRESS_TABLE=table, CLEANROOM_EGRESS_POOL="10.213.%d.0/24" % (os.getpid() % 200 + 16),
           CLEANROOM_EGRESS_NFLOG_GROUP=str(40000 + os.getpid() % 20000),
           CLEANROOM_DNS_UPSTREAM="127.0.0.1:9")  # no query is made
env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
daemon = None
plain, net = [], []          # no pool: each create clones a template
pplain, pnet = [], []        # with the pool: each create takes a ready entry
POOL_MEM = 512               # the pool's entries (SBX_POOL_MEMORY_MIB)


def start_daemon(extra):
    global f, n
    log = open(a.daemon_log, "a") if a.daemon_log else subprocess.DEVNULL
    d = subprocess.Popen([a.bin, "serve"], env=dict(env, **extra), stderr=log)
    s = socket.socket(socket.AF_UNIX)
    deadline = time.monotonic() + 20
    while True:
        try:
            s.connect(f"{tmp}/run/cleanroom.sock")
            break
        except OSError:
            if time.monotonic() > deadline or d.poll() is not None:
                raise SystemExit("the daemon did not start")
            time.sleep(0.025)
    f = s.makefile("rw")
    n = 0
    return d


def stop_daemon(d):
    d.terminate()
    d.wait(30)


n = 0


def call(method, params):
    global n
    n += 1
    f.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}) + "\n")
    f.flush()
    while True:
        m = json.loads(f.readline())
        if m.get("id") == n:
            if "error" in m:
                raise SystemExit(f"{method}: {m['error']}")
            return m["result"]


def wait_pool():
    """Until the pool is full, both kinds ready and nothing starting
    (polling system.info: the refill is the daemon's own background work,
    not what is timed, and must not run beside a timed create)."""
    deadline = time.monotonic() + 120
    while True:
        p = call("system.info", {})["pool"]
        if p["ready"] >= 1 and p["network"]["ready"] >= 1 and not p["starting"] and \
                not p["network"]["starting"]:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the pool has no ready entry: {p}")
        time.sleep(0.05)


try:
    subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"],
                   check=True, capture_output=True)
    with open(f"{tmp}/p.yaml", "w") as fp:
        fp.write("version: 1\nsandbox:\n  network:\n    allow:\n      - example.test:443\n")
    shown = json.loads(subprocess.run([a.bin, "policy", "show", f"{tmp}/p.yaml", "--json"],
                                      env=env, check=True, capture_output=True).stdout)
    daemon = start_daemon({"CLEANROOM_POOL_SIZE": "0"})
    subprocess.run([a.bin, "image", "import", f"{tmp}/bb.tar", "--ref", "bench/busybox"],
                   env=env, check=True, capture_output=True)

    def timed_create(params, out):
        t0 = time.monotonic()
        sb = call("sandbox.create", params)
        out.append(time.monotonic() - t0)
        call("sandbox.terminate", {"id": sb["id"]})
        return sb

    base = {"image": "bench/busybox", "memory_mib": a.mem}
    withnet = dict(base, policy=shown["policy"], policy_hash=shown["policy_hash"])
    # warm-up: builds the boot templates of both (without and with a NIC)
    for params in (base, withnet):
        call("sandbox.terminate", {"id": call("sandbox.create", params)["id"]})
    for _ in range(a.runs):
        for params, out in ((base, plain), (withnet, net)):
            timed_create(params, out)
    stop_daemon(daemon)
    daemon = None
    if not a.no_pool:
        # the pool serves the default image at its own size: both kinds of
        # entry are clones of bench/busybox at 512 MiB
        daemon = start_daemon({"CLEANROOM_POOL_SIZE": "1", "CLEANROOM_POOL_NET_SIZE": "1",
                               "CLEANROOM_IMAGE": "bench/busybox"})
        pbase = dict(base, memory_mib=POOL_MEM)
        pwith = dict(withnet, memory_mib=POOL_MEM)
        for params in (pbase, pwith):  # templates at 512 MiB; the first network create
            call("sandbox.terminate", {"id": call("sandbox.create", params)["id"]})
        for _ in range(a.runs):
            for params, out in ((pbase, pplain), (pwith, pnet)):
                wait_pool()
                timed_create(params, out)
        info = call("system.info", {})["pool"]
        if info["handed_out"] < 2 * a.runs:
            raise SystemExit(f"creates did not all come from the pool: {info}")
finally:
    if daemon:
        stop_daemon(daemon)
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)
res = {"runs": a.runs, "create_s": round(statistics.median(plain), 3),
       "create_with_egress_s": round(statistics.median(net), 3)}
res["overhead_ratio"] = round(res["create_with_egress_s"] / res["create_s"] - 1, 3)
if pplain:
    res["pool"] = {"create_s": round(statistics.median(pplain), 4),
                   "create_with_egress_s": round(statistics.median(pnet), 4),
                   "create_p90_s": round(sorted(pplain)[int(0.9 * (len(pplain) - 1))], 4),
                   "create_with_egress_p90_s": round(sorted(pnet)[int(0.9 * (len(pnet) - 1))], 4)}
    res["pool"]["overhead_ratio"] = round(res["pool"]["create_with_egress_s"] / res["pool"]["create_s"] - 1, 3)
    # each round's network create minus the plain one before it: the
    # machine's drift between rounds cancels out
    diffs = [b - a for a, b in zip(pplain, pnet)]
    res["pool"]["paired_diff_ms"] = round(statistics.median(diffs) * 1000, 2)
    res["pool"]["paired_overhead_ratio"] = round(statistics.median(diffs) / statistics.median(pplain), 3)
floor = None
if a.floor_json:
    with open(a.floor_json) as fj:
        floor = json.loads(fj.read().strip().splitlines()[-1])
elif not a.no_floor:
    sys.path.insert(0, here)
    from floor import run_floor
    floor, why = run_floor(a.floor, 5, a.mem)
    if why:
        res["floor_error"] = why + " (give --floor or --floor-json)"
if floor:
    fc, fk = floor["cold_boot_to_agent_s"], floor["snapshot_clone_to_agent_s"]
    res["floor"] = {"cold_s": fc, "clone_s": fk, "accel": floor.get("accel")}
    res["ratios"] = {"create_vs_floor_clone": round(res["create_s"] / fk, 2),
                     "create_with_egress_vs_floor_clone": round(res["create_with_egress_s"] / fk, 2),
                     "create_with_egress_vs_floor_cold": round(res["create_with_egress_s"] / fc, 2)}
print(f"create, no pool: median {res['create_s']:.3f}s without network, {res['create_with_egress_s']:.3f}s "
      f"with egress: +{res['overhead_ratio']*100:.1f}%")
if "pool" in res:
    pr = res["pool"]
    print(f"create, from the pool: median {pr['create_s']*1000:.1f} ms without network, "
          f"{pr['create_with_egress_s']*1000:.1f} ms with egress: +{pr['overhead_ratio']*100:.1f}%; "
          f"median of the rounds' differences {pr['paired_diff_ms']:+.2f} ms "
          f"({pr['paired_overhead_ratio']*100:+.1f}%)")
if "ratios" in res:
    print(f"floor: cold {res['floor']['cold_s']}s, clone {res['floor']['clone_s']}s; ratios {res['ratios']}")
print(json.dumps(res))
