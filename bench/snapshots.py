#!/usr/bin/env python3
"""Templates, clones and snapshots, next to the bare-QEMU floor.

Through the real daemon's control API:
  - `sandbox.create` -> first `exec true` answered, median and p90 over
    --runs creates: cold (`cold: true`) and warm (a clone of the image's boot
    template; the template is built once before the runs);
  - snapshot create, restore (in place) and fork times;
  - the proportional set size (PSS) of idle warm clones (template pages are
    shared between clones, so PSS is what each one really costs).
Each median is given as a ratio to ../shared/bench/qemu-floor.py (cold boot
and snapshot clone to an answering guest), run in the same invocation, or read
from --floor-json (that script's last output line), or skipped (--no-floor).

"Warm with pool" (pre-started VMMs waiting in -incoming defer) is not
implemented yet and is reported as such.

Usage: bench/snapshots.py [--runs 20] [--mem 512] [--bin PATH] [--floor PATH |
       --floor-json FILE | --no-floor]
Needs an installed kernel (scripts/fetch-kernel.sh). Prints one JSON object
on the last line."""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=20)
ap.add_argument("--cold-runs", type=int, default=None, help="cold creates (default: --runs)")
ap.add_argument("--snap-runs", type=int, default=5)
ap.add_argument("--clones", type=int, default=3, help="idle clones for the PSS measurement")
ap.add_argument("--mem", type=int, default=512)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--floor", default=os.path.join(root, "..", "shared", "bench", "qemu-floor.py"))
ap.add_argument("--floor-json", default=None)
ap.add_argument("--no-floor", action="store_true")
a = ap.parse_args()
cold_runs = a.cold_runs if a.cold_runs is not None else a.runs


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


tmp = tempfile.mkdtemp(prefix="cr-bench-snap-")
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_DATA_DIR=f"{tmp}/data")
env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
env.pop("CLEANROOM_TEMPLATES", None)
daemon = None
res = {"guest_mem_mib": a.mem, "accel": None}
try:
    subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"],
                   check=True, capture_output=True)
    subprocess.run([a.bin, "image", "import", f"{tmp}/bb.tar", "--ref", "bench/busybox"],
                   env=env, check=True, capture_output=True)
    image = "bench/busybox"
    daemon = subprocess.Popen([a.bin, "serve"], env=env, stderr=subprocess.DEVNULL)
    s = socket.socket(socket.AF_UNIX)
    for _ in range(400):
        try:
            s.connect(f"{tmp}/run/cleanroom.sock")
            break
        except OSError:
            time.sleep(0.025)
    f = s.makefile("rw")
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

    cold, warm, modes, restore_ms = [], [], set(), []
    for _ in range(cold_runs):
        sb, dt = create_to_exec({"cold": True})
        cold.append(dt)
        call("sandbox.terminate", {"id": sb["id"]})
    for _ in range(a.runs):
        sb, dt = create_to_exec({})
        warm.append(dt)
        modes.add(sb["boot"]["mode"])
        restore_ms.append(sb["timing_ms"]["restore"])
        t0 = time.monotonic()
        call("sandbox.terminate", {"id": sb["id"]})
        res.setdefault("clone_rm_s", []).append(time.monotonic() - t0)
    assert modes == {"clone"}, modes
    res["cold"] = stats(cold)
    res["warm_no_pool"] = stats(warm)
    res["warm_no_pool"]["state_load_ms_median"] = statistics.median(restore_ms)
    res["warm_with_pool"] = "not implemented"
    res["clone_rm_s"] = stats(res["clone_rm_s"])

    # idle warm clones: PSS (template pages shared)
    clones = [call("sandbox.create", {"image": image, "memory_mib": a.mem}) for _ in range(a.clones)]
    for c in clones:
        run_to_exit(c["id"])
    time.sleep(2)  # measurement: let them settle idle
    pss = [pss_mib(c["vmm_pid"]) for c in clones]
    res["idle_clone_pss_mib"] = {"median": round(statistics.median(pss), 1), "each": [round(x, 1) for x in pss],
                                 "clones": a.clones}
    for c in clones:
        call("sandbox.terminate", {"id": c["id"]})

    # snapshots: create, restore in place, fork
    sb = call("sandbox.create", {"image": image, "memory_mib": a.mem})
    sid = sb["id"]
    call("execution.create", {"sandbox_id": sid, "argv": ["sh", "-c", "dd if=/dev/urandom of=/root/blob bs=1M count=8 2>/dev/null"], "attach": False})
    run_to_exit(sid)
    snap_c, snap_r, fork, paused, mem_bytes = [], [], [], [], []
    for i in range(a.snap_runs):
        t0 = time.monotonic()
        sn = call("snapshot.create", {"sandbox_id": sid})
        snap_c.append(time.monotonic() - t0)
        paused.append(sn["timing_ms"]["paused"] / 1000)
        mem_bytes.append(sn["memory_bytes"])
        t0 = time.monotonic()
        call("snapshot.restore", {"snapshot": sn["id"], "sandbox_id": sid})
        run_to_exit(sid)
        snap_r.append(time.monotonic() - t0)
        t0 = time.monotonic()
        fk = call("sandbox.create", {"from_snapshot": sn["id"]})
        run_to_exit(fk["id"])
        fork.append(time.monotonic() - t0)
        call("sandbox.terminate", {"id": fk["id"]})
        call("snapshot.remove", {"snapshot": sn["id"]})
    call("sandbox.terminate", {"id": sid})
    res["snapshot_create"] = stats(snap_c)
    res["snapshot_create"]["vm_paused_median_s"] = round(statistics.median(paused), 3)
    res["snapshot_create"]["memory_state_mib"] = round(statistics.median(mem_bytes) / 2**20, 1)
    res["snapshot_restore_to_exec"] = stats(snap_r)
    res["fork_to_exec"] = stats(fork)
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
    res["ratios"] = {
        "cold_vs_floor_cold": round(res["cold"]["median_s"] / fc, 2),
        "warm_no_pool_vs_floor_clone": round(res["warm_no_pool"]["median_s"] / fk, 2),
        "warm_no_pool_vs_floor_cold": round(res["warm_no_pool"]["median_s"] / fc, 2),
        "fork_vs_floor_clone": round(res["fork_to_exec"]["median_s"] / fk, 2),
    }
print(f"create -> first exec (median/p90 over {a.runs}): cold {res['cold']['median_s']:.2f}/{res['cold']['p90_s']:.2f}s, "
      f"warm (clone, no pool) {res['warm_no_pool']['median_s']:.2f}/{res['warm_no_pool']['p90_s']:.2f}s, "
      f"warm with pool: not implemented")
print(f"snapshot create {res['snapshot_create']['median_s']:.2f}s (VM paused {res['snapshot_create']['vm_paused_median_s']:.2f}s, "
      f"{res['snapshot_create']['memory_state_mib']} MiB state), restore -> exec {res['snapshot_restore_to_exec']['median_s']:.2f}s, "
      f"fork -> exec {res['fork_to_exec']['median_s']:.2f}s; idle clone PSS {res['idle_clone_pss_mib']['median']} MiB "
      f"({a.mem} MiB guests)")
if "ratios" in res:
    print(f"floor: cold {res['floor']['cold_s']}s, clone {res['floor']['clone_s']}s; ratios {res['ratios']}")
print(json.dumps(res))
