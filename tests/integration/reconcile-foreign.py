#!/usr/bin/env python3
"""A daemon never takes another daemon's VMM for its own orphan. Its
orphan sweep (at start) matches VMMs by their command line naming its
sandboxes dir; that match once was a plain substring, so a daemon whose
data dir was /data (or any path inside another daemon's paths) SIGKILLed
every other daemon's VMMs. Here daemon B's data dir is a substring of
daemon A's; B starts while A's sandbox runs; A's VMM must survive.

Needs CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR."""
import os, signal, sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

crtest.vm_enabled()
signal.alarm(600)  # the whole test's deadline
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


B = crtest.Daemon("f")
B.env["CLEANROOM_DATA_DIR"] = f"{B.tmp}/d"
try:
    # A lives inside B's temp dir, at <B>/w<B>/d: B's sandboxes dir
    # "<B>/d/sandboxes" is a substring of every path of A's VMMs (paths
    # short: sockets have a 108-byte limit)
    a_data = f"{B.tmp}/w{B.tmp}/d"
    A = crtest.Daemon("f", extra_env={"CLEANROOM_DATA_DIR": a_data,
                                      "CLEANROOM_RUN_DIR": f"{B.tmp}/ra"})
    A.sock = f"{B.tmp}/ra/cleanroom.sock"
    A.log = f"{B.tmp}/a-daemon.log"
    try:
        A.start()
        A.import_test_image()
        p = A.cr("sandbox", "create", "--image", crtest.IMAGE, "--memory", crtest.MEM, check=True)
        sid = p.stdout.decode().split()[-1]
        vmm = A.rpc("sandbox.get", {"id": sid})["result"]["vmm_pid"]
        check(vmm in crtest.vmm_pids(B.tmp), f"A's sandbox {sid} runs (VMM {vmm})")
        B.start()  # its orphan sweep runs before it answers
        info = B.rpc("system.info")
        check("result" in info, "B is up and has swept")
        check(os.path.exists(f"/proc/{vmm}"), "A's VMM survived B's start")
        p = A.cr("exec", "--in", sid, "--", "echo", "still here")
        check(p.returncode == 0 and p.stdout == b"still here\n",
              f"A's sandbox still runs commands ({p.returncode}, {p.stderr[-300:]!r})")
        with open(B.log, errors="replace") as f:
            check("killing VMM" not in f.read(), "B killed no VMM")
        A.cr("sandbox", "rm", sid)
    finally:
        A.stop()
finally:
    B.stop()
print(f"reconcile-foreign: {failures} failure(s)")
sys.exit(1 if failures else 0)
