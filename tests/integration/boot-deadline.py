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
    """VMM processes of this test (their command line names its temp dir),
    read from /proc so that no helper program is needed and clean-up
    cannot fail for want of one."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if argv and b"qemu-system" in argv[0] and any(tmp.encode() in a for a in argv):
            pids.append(int(d))
    return pids


try:
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
    subprocess.run([BIN, "image", "import", os.environ["CLEANROOM_TEST_IMAGE_TAR"], "--ref", "test/busybox"],
                   env=env, check=True, capture_output=True, timeout=120)
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
    # Clean-up never raises: each step is guarded so the next still runs.
    try:
        for pid in vmm_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    except Exception as e:  # noqa: BLE001 - report and go on cleaning
        print(f"FAIL: clean-up could not list VMMs: {e}")
        failures += 1
    if daemon:
        try:
            daemon.terminate()
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL: clean-up could not stop the daemon: {e}")
            failures += 1
    shutil.rmtree(tmp, ignore_errors=True)

print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
