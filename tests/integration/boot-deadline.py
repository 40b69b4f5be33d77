#!/usr/bin/env python3
"""A guest that never answers is killed at the boot deadline with a clear
error, and nothing is left running.

The guest is real: the initramfs gets busybox as /init (CLEANROOM_AGENT), so
the kernel boots but no agent ever answers. Needs CLEANROOM_TEST_VM=1,
CLEANROOM_BIN, CLEANROOM_KERNEL_DIR, CLEANROOM_TEST_IMAGE_TAR."""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("skip: CLEANROOM_TEST_VM != 1")
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
tmp = tempfile.mkdtemp(prefix="cr-deadline-")
env = dict(os.environ, CLEANROOM_DATA_DIR=f"{tmp}/data", CLEANROOM_RUN_DIR=f"{tmp}/run",
           CLEANROOM_AGENT=shutil.which("busybox") or "/bin/busybox",
           CLEANROOM_BOOT_TIMEOUT_MS="6000")
daemon = None
failures = 0
checks = 0


def check(cond, what):
    global failures, checks
    checks += 1
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


def vmm_pids():
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*{tmp}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


try:
    subprocess.run([BIN, "image", "import", os.environ["CLEANROOM_TEST_IMAGE_TAR"], "--ref", "test/busybox"],
                   env=env, check=True, capture_output=True, timeout=120)
    daemon = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{tmp}/daemon.log", "w"))
    sock_path = f"{tmp}/run/cleanroom.sock"
    deadline = time.time() + 20
    s = socket.socket(socket.AF_UNIX)
    while True:  # wait for the daemon to listen (bounded)
        try:
            s.connect(sock_path)
            break
        except OSError:
            if time.time() > deadline or daemon.poll() is not None:
                raise SystemExit("daemon did not start")
            time.sleep(0.05)
    s.settimeout(60)
    f = s.makefile("rw")
    t0 = time.time()
    f.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sandbox.create",
                        "params": {"image": "test/busybox", "memory_mib": 256}}) + "\n")
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if msg.get("id") == 1:
            break
    took = time.time() - t0
    err = msg.get("error") or {}
    check(err.get("data", {}).get("reason") == "runtime_launch_failed",
          f"create fails with runtime_launch_failed ({err.get('data')})")
    check("did not answer" in err.get("message", ""), "the message says the agent did not answer")
    check(took < 40, f"failed at the deadline, not later ({took:.1f}s)")
    f.write(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "sandbox.list"}) + "\n")
    f.flush()
    lst = json.loads(f.readline())["result"]["sandboxes"]
    check(len(lst) == 1 and lst[0]["state"] == "failed", "the sandbox is listed as failed")
    check(vmm_pids() == [], "no VMM process is left running")
    for sb in lst:
        f.write(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "sandbox.terminate", "params": {"id": sb["id"]}}) + "\n")
        f.flush()
        check("result" in json.loads(f.readline()), "a failed sandbox can be removed")
finally:
    for pid in vmm_pids():
        os.kill(pid, signal.SIGKILL)
    if daemon:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
    shutil.rmtree(tmp, ignore_errors=True)

print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
