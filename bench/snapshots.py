#!/usr/bin/env python3
"""Templates, clones and snapshots, next to the bare-QEMU floor.

Through the real daemon's control API:
  - `sandbox.create` -> first `exec true` answered, median and p90 over
    --runs creates: cold (`cold: true`) and warm (a clone of the image's boot
    template; the template is built once before the runs);
  - snapshot create, restore (in place) and fork times: --snap-runs new
    snapshots (each restored once and forked once), then --restore-runs
    more restores of the last one; restore -> first exec median/p90 over
    all restores (and each kind apart);
  - the proportional set size (PSS) of idle warm clones (template pages are
    shared between clones, so PSS is what each one really costs).
Each median is given as a ratio to ../shared/bench/qemu-floor.py (cold boot
and snapshot clone to an answering guest), run in the same invocation, or read
from --floor-json (that script's last output line), or skipped (--no-floor).

"Warm with pool": the daemon is restarted with CLEANROOM_POOL_SIZE=--pool
(the pool holds clones of the default template: the bench image is made the
default, --mem must be the pool's 512 MiB); before each create the bench waits
until the pool is full again (the steady state a pool is for: bursts up to its
size), then measures create -> first exec as above. The other numbers come
from a daemon without a pool (CLEANROOM_POOL_SIZE=0), so that refills do not
run beside them.

Usage: bench/snapshots.py [--runs 20] [--pool 2] [--mem 512] [--bin PATH]
       [--snap-runs 5] [--restore-runs 10] [--skip cold,warm,pss,snapshots,pool]
       [--floor PATH | --floor-json FILE | --no-floor]
Needs an installed kernel (scripts/fetch-kernel.sh). Prints one JSON object
on the last line."""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=20)
ap.add_argument("--cold-runs", type=int, default=None, help="cold creates (default: --runs)")
ap.add_argument("--snap-runs", type=int, default=5, help="snapshot create + restore + fork of a new snapshot")
ap.add_argument("--restore-runs", type=int, default=10,
                help="more restores of the last snapshot (restore -> exec median/p90 over all restores)")
ap.add_argument("--skip", default="", help="comma-separated parts to leave out: cold,warm,pss,snapshots,pool")
ap.add_argument("--clones", type=int, default=3, help="idle clones for the PSS measurement")
ap.add_argument("--mem", type=int, default=512)
ap.add_argument("--pool", type=int, default=2, help="pool size for the warm-with-pool runs (0: skip)")
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--floor", default=os.path.join(root, "..", "shared", "bench", "qemu-floor.py"))
ap.add_argument("--floor-json", default=None)
ap.add_argument("--no-floor", action="store_true")
a = ap.parse_args()
skip = {x for x in a.skip.split(",") if x}
assert skip <= {"cold", "warm", "pss", "snapshots", "pool"}, skip
cold_runs = a.cold_runs if a.cold_runs is not None else a.runs
if "cold" in skip:
    cold_runs = 0
if "pool" in skip:
    a.pool = 0


def p90(v):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]


def stats(v):
    return {"median_s": round(statistics.median(v), 3), "p90_s": round(p90(v), 3), "n": len(v)}


def pss_mib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return None


def pool_pids(tmp):
    """The pool's paused VMMs: qemu processes of this data dir (no sandbox is left)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as fc:
                    c = fc.read()
            except OSError:
                continue
            if b"qemu-system" in c and tmp.encode() in c:
                out.append(int(d))
    return out


tmp = tempfile.mkdtemp(prefix="cr-bench-snap-")
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_DATA_DIR=f"{tmp}/data")
env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
env.pop("CLEANROOM_TEMPLATES", None)
daemon = None
res = {"guest_mem_mib": a.mem, "accel": None}
try:
    subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"],
                   check=True, capture_output=True)
    image = "bench/busybox"
    env["CLEANROOM_IMAGE"] = image  # the pool's default template is the bench image's

    def start_daemon(pool_size):
        global daemon, f
        if daemon:
            daemon.terminate()
            daemon.wait(20)
        daemon = subprocess.Popen([a.bin, "serve"], env=dict(env, CLEANROOM_POOL_SIZE=str(pool_size)),
                                  stderr=subprocess.DEVNULL)
        s = socket.socket(socket.AF_UNIX)
        for _ in range(400):
            try:
                s.connect(f"{tmp}/run/cleanroom.sock")
                break
            except OSError:
                time.sleep(0.025)
        f = s.makefile("rw")

    start_daemon(0)
    subprocess.run([a.bin, "image", "import", f"{tmp}/bb.tar", "--ref", "bench/busybox"],
                   env=env, check=True, capture_output=True)
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

    def run_to_exit(sid):
        eid = call("execution.create", {"sandbox_id": sid, "argv": ["true"]})["execution_id"]
        while True:
            m = json.loads(f.readline())
            if m.get("method") == "execution.exit" and m["params"]["execution_id"] == eid:
                return m["params"]["execution"]

    def create_to_exec(params):
        t0 = time.monotonic()
        sb = call("sandbox.create", dict(params, image=image, memory_mib=a.mem))
        sb["_create_s"] = time.monotonic() - t0
        ex = run_to_exit(sb["id"])
        t1 = time.monotonic()
        assert ex["exit_code"] == 0, ex
        return sb, t1 - t0

    # warm-up: initramfs, scratch template, boot template
    t0 = time.monotonic()
    tmpl = call("image.warm", {"image": image, "memory_mib": a.mem})
    res["template_build_s"] = round(time.monotonic() - t0, 3)
    res["template_ram_mib"] = round(tmpl.get("ram_bytes", 0) / 2**20, 1)
    res["accel"] = call("system.info", {})["accel"]

    cold, warm, modes, restore_ms, warm_create = [], [], set(), [], []
    for _ in range(cold_runs):
        sb, dt = create_to_exec({"cold": True})
        cold.append(dt)
        call("sandbox.terminate", {"id": sb["id"]})
    for _ in range(a.runs if "warm" not in skip else 0):
        sb, dt = create_to_exec({})
        warm.append(dt)
        warm_create.append(sb["_create_s"])
        modes.add(sb["boot"]["mode"])
        restore_ms.append(sb["timing_ms"]["restore"])
        t0 = time.monotonic()
        call("sandbox.terminate", {"id": sb["id"]})
        res.setdefault("clone_rm_s", []).append(time.monotonic() - t0)
    assert modes <= {"clone"}, modes
    res["cold"] = stats(cold) if cold else "skipped"
    res["warm_no_pool"] = stats(warm) if warm else "skipped"
    if warm:
        res["warm_no_pool"]["state_load_ms_median"] = statistics.median(restore_ms)
        # its two parts: sandbox.create answered, then the first `true`
        # (a fresh QEMU translates the guest's exec path anew under TCG)
        res["warm_no_pool"]["create_median_s"] = round(statistics.median(warm_create), 3)
        res["warm_no_pool"]["first_exec_median_s"] = round(
            statistics.median(w - c for w, c in zip(warm, warm_create)), 3)
        res["clone_rm_s"] = stats(res["clone_rm_s"])

    # idle warm clones: PSS (template pages shared)
    clones = [call("sandbox.create", {"image": image, "memory_mib": a.mem})
              for _ in range(a.clones if "pss" not in skip else 0)]
    for c in clones:
        run_to_exit(c["id"])
    time.sleep(2)  # measurement: let them settle idle
    pss = [pss_mib(c["vmm_pid"]) for c in clones]
    res["idle_clone_pss_mib"] = {"median": round(statistics.median(pss), 1), "each": [round(x, 1) for x in pss],
                                 "clones": a.clones} if pss else {"median": None, "skipped": True}
    for c in clones:
        call("sandbox.terminate", {"id": c["id"]})

    # snapshots: create, restore in place, fork
    sb = call("sandbox.create", {"image": image, "memory_mib": a.mem})
    sid = sb["id"]
    call("execution.create", {"sandbox_id": sid, "argv": ["sh", "-c", "dd if=/dev/urandom of=/root/blob bs=1M count=8 2>/dev/null"], "attach": False})
    run_to_exit(sid)
    snap_c, snap_r, fork, paused, mem_bytes, again, restore_op = [], [], [], [], [], [], []
    for i in range(a.snap_runs if "snapshots" not in skip else 0):
        t0 = time.monotonic()
        sn = call("snapshot.create", {"sandbox_id": sid})
        snap_c.append(time.monotonic() - t0)
        paused.append(sn["timing_ms"]["paused"] / 1000)
        mem_bytes.append(sn["memory_bytes"])
        t0 = time.monotonic()
        call("snapshot.restore", {"snapshot": sn["id"], "sandbox_id": sid})
        restore_op.append(time.monotonic() - t0)
        run_to_exit(sid)
        snap_r.append(time.monotonic() - t0)
        t0 = time.monotonic()
        fk = call("sandbox.create", {"from_snapshot": sn["id"]})
        run_to_exit(fk["id"])
        fork.append(time.monotonic() - t0)
        call("sandbox.terminate", {"id": fk["id"]})
        if i < a.snap_runs - 1:
            call("snapshot.remove", {"snapshot": sn["id"]})
    # the last snapshot restored again and again (the restore a user repeats)
    for _ in range(a.restore_runs if snap_c else 0):
        t0 = time.monotonic()
        call("snapshot.restore", {"snapshot": sn["id"], "sandbox_id": sid})
        restore_op.append(time.monotonic() - t0)
        run_to_exit(sid)
        again.append(time.monotonic() - t0)
    call("sandbox.terminate", {"id": sid})
    if snap_c:
        call("snapshot.remove", {"snapshot": sn["id"]})
        res["snapshot_create"] = stats(snap_c)
        res["snapshot_create"]["vm_paused_median_s"] = round(statistics.median(paused), 3)
        res["snapshot_create"]["memory_state_mib"] = round(statistics.median(mem_bytes) / 2**20, 1)
        res["snapshot_restore_to_exec"] = stats(snap_r + again)
        res["snapshot_restore_to_exec"]["new_snapshot"] = stats(snap_r)
        if again:
            res["snapshot_restore_to_exec"]["again"] = stats(again)
        res["fork_to_exec"] = stats(fork)
        # snapshot.restore answered (the sandbox running its restored state),
        # before the exec above
        res["snapshot_restore"] = stats(restore_op)

    # warm with pool: a daemon with a pool; each create finds it full
    res["warm_with_pool"] = "skipped (--pool 0)"
    if a.pool > 0:
        start_daemon(a.pool)
        pooled, waits = [], []

        def pool_full():
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120:
                p = call("system.info", {})["pool"]
                if p["ready"] >= p["size"]:
                    waits.append(time.monotonic() - t0)
                    return p
                time.sleep(0.02)  # a bench waiting for the daemon's refill, bounded
            raise SystemExit(f"the pool did not fill: {p}")

        pool_full()
        for _ in range(a.runs):
            pool_full()
            sb, dt = create_to_exec({})
            assert any("VMM pool" in e["message"] for e in sb["events"]), sb["events"]
            pooled.append(dt)
            call("sandbox.terminate", {"id": sb["id"]})
        res["warm_with_pool"] = stats(pooled)
        res["warm_with_pool"]["pool_size"] = a.pool
        res["warm_with_pool"]["refill_wait_median_s"] = round(statistics.median(waits[1:] or waits), 3)
        pss = [pss_mib(pid) for pid in pool_pids(tmp)]
        res["warm_with_pool"]["idle_entry_pss_mib"] = [round(x, 1) for x in pss if x]
finally:
    if daemon:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
    shutil.rmtree(tmp, ignore_errors=True)

floor = None
if a.floor_json:
    with open(a.floor_json) as fj:
        floor = json.loads(fj.read().strip().splitlines()[-1])
elif not a.no_floor:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from floor import run_floor
    floor, why = run_floor(a.floor, 5, a.mem)
    if why:
        res["floor_error"] = why + " (give --floor or --floor-json)"
if floor:
    fc, fk = floor["cold_boot_to_agent_s"], floor["snapshot_clone_to_agent_s"]
    res["floor"] = {"cold_s": fc, "clone_s": fk, "accel": floor.get("accel")}
    res["ratios"] = {}
    if isinstance(res["cold"], dict):
        res["ratios"]["cold_vs_floor_cold"] = round(res["cold"]["median_s"] / fc, 2)
    if isinstance(res["warm_no_pool"], dict):
        res["ratios"]["warm_no_pool_vs_floor_clone"] = round(res["warm_no_pool"]["median_s"] / fk, 2)
        res["ratios"]["warm_no_pool_vs_floor_cold"] = round(res["warm_no_pool"]["median_s"] / fc, 2)
    if "fork_to_exec" in res:
        res["ratios"]["fork_vs_floor_clone"] = round(res["fork_to_exec"]["median_s"] / fk, 2)
        res["ratios"]["restore_vs_floor_clone"] = round(res["snapshot_restore_to_exec"]["median_s"] / fk, 2)
    if isinstance(res["warm_with_pool"], dict):
        res["ratios"]["warm_with_pool_vs_floor_clone"] = round(res["warm_with_pool"]["median_s"] / fk, 2)
def mp(x, fmt=".3f"):
    return f"{x['median_s']:{fmt}}/{x['p90_s']:{fmt}}s" if isinstance(x, dict) else str(x)


print(f"create -> first exec (median/p90 over {a.runs}): cold {mp(res['cold'], '.2f')}, "
      f"warm (clone, no pool) {mp(res['warm_no_pool'])}"
      + (f" (create {res['warm_no_pool']['create_median_s']:.3f}s + first exec "
         f"{res['warm_no_pool']['first_exec_median_s']:.3f}s), " if isinstance(res["warm_no_pool"], dict) else ", ")
      + (f"warm with pool ({a.pool}) {mp(res['warm_with_pool'])}"
         if isinstance(res["warm_with_pool"], dict) else f"warm with pool: {res['warm_with_pool']}"))
if "snapshot_create" in res:
    r = res["snapshot_restore_to_exec"]
    print(f"snapshot create {mp(res['snapshot_create'])} (VM paused {res['snapshot_create']['vm_paused_median_s']:.3f}s, "
          f"{res['snapshot_create']['memory_state_mib']} MiB state), restore -> exec {mp(r)} over {r['n']} "
          f"(new snapshot {mp(r['new_snapshot'])}" + (f", again {mp(r['again'])})" if "again" in r else ")")
          + f", restore alone {mp(res['snapshot_restore'])}, fork -> exec {mp(res['fork_to_exec'])}")
if res["idle_clone_pss_mib"].get("median") is not None:
    print(f"idle clone PSS {res['idle_clone_pss_mib']['median']} MiB ({a.mem} MiB guests)")
if "ratios" in res:
    print(f"floor: cold {res['floor']['cold_s']}s, clone {res['floor']['clone_s']}s; ratios {res['ratios']}")
print(json.dumps(res))
