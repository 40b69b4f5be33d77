#!/usr/bin/env python3
"""Cold boot -> first exec, next to the bare-QEMU floor.

Measures, through the real daemon's control API, `sandbox.create` (cold boot
to an activated guest agent) plus the first `execution.create` of `true`,
and prints it beside ../shared/bench/qemu-floor.py's cold number as a ratio.

Usage: bench/cold-boot.py [--runs N] [--image REF] [--bin PATH] [--no-floor]
Needs an installed kernel (scripts/fetch-kernel.sh) and the image (default: the
busybox test image is imported from images/busybox/build.sh into a temp dir).
Prints one JSON object on the last line."""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--image", default=None, help="image ref already in the data dir (default: import busybox)")
ap.add_argument("--mem", type=int, default=512)
ap.add_argument("--no-floor", action="store_true")
a = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="cr-bench-")
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run")
daemon = None
try:
    if not a.image:
        env["CLEANROOM_DATA_DIR"] = f"{tmp}/data"
        env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
        subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"],
                       check=True, capture_output=True)
        image = "bench/busybox"
    else:
        image = a.image
    daemon = subprocess.Popen([a.bin, "serve"], env=env, stderr=subprocess.DEVNULL)
    s = socket.socket(socket.AF_UNIX)
    for _ in range(400):
        try:
            s.connect(f"{tmp}/run/cleanroom.sock")
            break
        except OSError:
            time.sleep(0.025)
    f = s.makefile("rw")
    if not a.image:  # through the daemon (it owns the store)
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

    # warm-up: builds the initramfs and the scratch template once
    sb = call("sandbox.create", {"image": image, "memory_mib": a.mem})
    call("sandbox.terminate", {"id": sb["id"]})
    totals, boots, execs, rss = [], [], [], []
    for _ in range(a.runs):
        t0 = time.monotonic()
        sb = call("sandbox.create", {"image": image, "memory_mib": a.mem})
        t1 = time.monotonic()
        ex = run_to_exit(sb["id"])
        t2 = time.monotonic()
        assert ex["exit_code"] == 0, ex
        try:  # resident memory of the VMM after boot + one exec
            with open(f"/proc/{sb['vmm_pid']}/status") as st:
                rss.append(next(int(l.split()[1]) for l in st if l.startswith("VmRSS:")) / 1024)
        except (OSError, StopIteration, KeyError, TypeError):
            pass
        totals.append(t2 - t0)
        boots.append(t1 - t0)
        execs.append(t2 - t1)
        call("sandbox.terminate", {"id": sb["id"]})
finally:
    if daemon:
        daemon.terminate()
        daemon.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)

res = {"runs": a.runs, "create_s": statistics.median(boots), "first_exec_s": statistics.median(execs),
       "cold_to_first_exec_s": statistics.median(totals),
       "vmm_rss_mib": round(statistics.median(rss), 1) if rss else None, "guest_mem_mib": a.mem}
if not a.no_floor:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from floor import run_floor
    floor, why = run_floor(os.path.join(root, "..", "shared", "bench", "qemu-floor.py"), a.runs, a.mem)
    if floor:
        res["floor_cold_s"] = floor["cold_boot_to_agent_s"]
        res["ratio_to_floor"] = round(res["cold_to_first_exec_s"] / res["floor_cold_s"], 2)
    else:  # the floor is informative; report why it is missing
        res["floor_error"] = why
print(f"cold boot -> first exec: median {res['cold_to_first_exec_s']:.2f}s "
      f"(create {res['create_s']:.2f}s, first exec {res['first_exec_s']*1000:.0f}ms)"
      + (f"; floor {res['floor_cold_s']:.2f}s, ratio {res['ratio_to_floor']}" if "ratio_to_floor" in res else "")
      + (f"; VMM RSS {res['vmm_rss_mib']} MiB for a {a.mem} MiB guest" if res["vmm_rss_mib"] else ""))
print(json.dumps(res))
