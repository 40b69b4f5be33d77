#!/usr/bin/env python3
"""Confinement of VMMs by cgroup, and one daemon per data dir.

- Each VMM runs in a cgroup of its own with the sandbox's limits (memory:
  guest + 256 MiB, pids 256, CPU: vCPUs + half a CPU), cgroup v2 where the
  host has it, else v1 (this test reads whichever the daemon reports).
- The group goes when its VMM goes: `sandbox rm`, a VMM killed from outside,
  and a VMM that died while no daemon ran (found at the restart).
- A second daemon on the same data dir refuses to start (daemon_unavailable,
  naming the first one's pid) and the first one's sandbox keeps running.

Needs root, CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR."""
import json, os, signal, subprocess, sys, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

crtest.vm_enabled()
signal.alarm(600)  # the whole test's deadline
failures = 0
PARENT = "cleanroom-test-%d" % os.getpid()
ROOT = "/sys/fs/cgroup"


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures += 1


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def groups(mode, sid):
    """{file: path} of the files this test checks in sid's group."""
    if mode == "v2":
        d = f"{ROOT}/{PARENT}/{sid}"
        return {"dir": [d], "procs": f"{d}/cgroup.procs", "mem": f"{d}/memory.max",
                "pids": f"{d}/pids.max", "cpu": f"{d}/cpu.max"}
    dirs = [f"{ROOT}/{c}/{PARENT}/{sid}" for c in ("memory", "pids", "cpu")
            if os.path.isdir(f"{ROOT}/{c}")]
    return {"dir": dirs, "procs": f"{dirs[0]}/cgroup.procs",
            "mem": f"{dirs[0]}/memory.limit_in_bytes", "pids": f"{ROOT}/pids/{PARENT}/{sid}/pids.max",
            "cpu": f"{ROOT}/cpu/{PARENT}/{sid}/cpu.cfs_quota_us"}


def wait_until(cond, deadline_s=30):
    end = time.time() + deadline_s
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)  # polling the cgroup tree / the daemon, bounded
    return cond()


def create(d, *extra):
    p = d.cr("sandbox", "create", "--image", crtest.IMAGE, "--memory", crtest.MEM, *extra,
             check=True)
    sid = p.stdout.decode().split()[-1]
    return sid, d.rpc("sandbox.get", {"id": sid})["result"]["vmm_pid"]


def remove_parent():
    for base in (f"{ROOT}/{PARENT}", *[f"{ROOT}/{c}/{PARENT}" for c in ("memory", "pids", "cpu")]):
        if os.path.isdir(base):
            for child in os.listdir(base):
                if os.path.isdir(f"{base}/{child}"):
                    try:
                        os.rmdir(f"{base}/{child}")
                    except OSError:
                        pass
            try:
                os.rmdir(base)
            except OSError:
                pass


d = crtest.Daemon("cg", extra_env={"CLEANROOM_CGROUP": PARENT, "CLEANROOM_POOL_SIZE": "0"})
try:
    d.start()
    d.import_test_image()
    caps = d.rpc("system.info")["result"].get("capabilities", {})
    mode = caps.get("cgroups") or (caps.get("backend") or {}).get("cgroups")
    if mode is None:
        mode = json.dumps(caps)
    print("cgroups mode:", mode)
    if os.geteuid() != 0 or mode not in ("v1", "v2"):
        check(os.geteuid() != 0, f"a root daemon on this host uses cgroups (mode {mode})")
    else:
        # 1 the limits and the VMM in its group
        sid, vmm = create(d, "--vcpus", "1")
        g = groups(mode, sid)
        procs = (read(g["procs"]) or "").split()
        check(str(vmm) in procs, f"the VMM {vmm} is in its group {g['procs']} ({procs})")
        want_mem = (int(crtest.MEM) + 256) << 20
        check(read(g["mem"]) == str(want_mem), f"memory limit {read(g['mem'])} == {want_mem}")
        check(read(g["pids"]) == "256", f"pids limit {read(g['pids'])} == 256")
        cpu = read(g["cpu"]) or ""
        check(cpu.split()[0] == "150000" if cpu else False, f"CPU quota {cpu!r}: 1.5 CPUs")
        p = d.cr("exec", "--in", sid, "--", "echo", "confined")
        check(p.stdout == b"confined\n", "the confined sandbox runs commands")
        # 2 rm: the group goes with the VMM
        d.cr("sandbox", "rm", sid, check=True)
        check(wait_until(lambda: not any(os.path.isdir(x) for x in g["dir"])),
              "sandbox rm removes the group")
        # 3 a VMM killed from outside: its group goes when the daemon sees it end
        sid, vmm = create(d)
        g = groups(mode, sid)
        os.kill(vmm, signal.SIGKILL)
        check(wait_until(lambda: not any(os.path.isdir(x) for x in g["dir"])),
              "a VMM killed from outside leaves no group")
        d.cr("sandbox", "rm", sid)
        # 4 a VMM that died while no daemon ran: removed at the restart
        sid, vmm = create(d)
        g = groups(mode, sid)
        d.proc.kill()
        d.proc.wait()
        os.kill(vmm, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{vmm}") or
                   read(f"/proc/{vmm}/stat").split()[2] == "Z", 10)
        d.start()
        state = d.rpc("sandbox.get", {"id": sid})["result"]["state"]
        check(wait_until(lambda: not any(os.path.isdir(x) for x in g["dir"])),
              f"a VMM that died with the daemon down leaves no group after the restart ({state})")
        d.cr("sandbox", "rm", sid)

    # 5 one daemon per data dir
    sid, vmm = create(d)
    env2 = dict(d.env, CLEANROOM_RUN_DIR=f"{d.tmp}/run2")
    p = subprocess.run([d.bin, "serve"], env=env2, capture_output=True, timeout=60)
    err = p.stderr.decode(errors="replace")
    check(p.returncode != 0 and "daemon_unavailable" in err and str(d.proc.pid) in err,
          f"a second daemon on the data dir refuses to start ({p.returncode}: {err.strip()[-200:]})")
    p = d.cr("exec", "--in", sid, "--", "echo", "still here")
    check(p.stdout == b"still here\n" and os.path.exists(f"/proc/{vmm}"),
          "the first daemon's sandbox still runs")
    d.cr("sandbox", "rm", sid)
finally:
    d.stop()
    remove_parent()

left = [p for p in (f"{ROOT}/{PARENT}", *[f"{ROOT}/{c}/{PARENT}" for c in ("memory", "pids", "cpu")])
        if os.path.isdir(p)]
check(not left, f"no cgroup left behind ({left})")
print("%s: %d failure(s)" % ("FAIL" if failures else "PASS", failures))
sys.exit(1 if failures else 0)
