#!/usr/bin/env python3
"""Nothing blocks the daemon loop: while one client removes a sandbox whose
VMM ignores QMP quit (its QEMU is SIGSTOPped), another client's exec on
another sandbox is answered first, without waiting for the removal (which
ends with SIGKILL after the grace). Real daemon, real QEMU VMs.

Needs CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR."""
import json, os, select, shutil, signal, socket, subprocess, sys, tempfile, time

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("skip: CLEANROOM_TEST_VM != 1")
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
tmp = tempfile.mkdtemp(prefix="cr-loop-")
# a long grace before SIGKILL, so that "answered first" does not depend on
# how fast TCG runs the exec on a loaded machine
env = dict(os.environ, CLEANROOM_DATA_DIR=f"{tmp}/data", CLEANROOM_RUN_DIR=f"{tmp}/run",
           CLEANROOM_STOP_GRACE_MS="4000")
env.pop("CLEANROOM_HOST", None)
daemon = None
failures = 0
stopped = []


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


def vmm_pids():
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*{tmp}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(120)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        self.next = 1

    def send(self, method, params=None):
        i = self.next
        self.next += 1
        self.f.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                 "params": params or {}}) + "\n")
        self.f.flush()
        return i

    def reply(self, i):
        while True:  # skip notifications (progress)
            msg = json.loads(self.f.readline())
            if msg.get("id") == i:
                return msg

    def call(self, method, params=None):
        return self.reply(self.send(method, params))

    def pending(self):
        """True when nothing has arrived yet (the socket is not readable;
        every earlier reply was read to its end, so nothing is buffered)."""
        return not select.select([self.s], [], [], 0)[0]


try:
    daemon = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{tmp}/daemon.log", "w"))
    sock_path = f"{tmp}/run/cleanroom.sock"
    deadline = time.time() + 20
    while True:  # wait for the daemon to listen (bounded)
        try:
            probe = socket.socket(socket.AF_UNIX)
            probe.connect(sock_path)
            probe.close()
            break
        except OSError:
            if time.time() > deadline or daemon.poll() is not None:
                raise SystemExit("daemon did not start")
            time.sleep(0.05)
    subprocess.run([BIN, "image", "import", os.environ["CLEANROOM_TEST_IMAGE_TAR"], "--ref", "test/busybox"],
                   env=env, check=True, capture_output=True, timeout=120)
    c1, c2 = Conn(sock_path), Conn(sock_path)
    # two sandboxes booting at once, one per connection
    i1 = c1.send("sandbox.create", {"image": "test/busybox", "memory_mib": 256})
    i2 = c2.send("sandbox.create", {"image": "test/busybox", "memory_mib": 256})
    a, b = c1.reply(i1), c2.reply(i2)
    check("result" in a and "result" in b, f"two sandboxes are ready ({a.get('error')}, {b.get('error')})")
    a, b = a["result"], b["result"]
    pid = a["vmm_pid"]
    os.kill(pid, signal.SIGSTOP)  # this VMM answers nothing now, not even QMP quit
    stopped.append(pid)

    t0 = time.monotonic()
    rm = c1.send("sandbox.terminate", {"id": a["id"]})
    ex = c2.call("execution.create", {"sandbox_id": b["id"], "argv": ["true"], "attach": False})
    check("result" in ex, f"exec on the other sandbox starts ({ex.get('error')})")
    w = c2.call("execution.wait", {"execution_id": ex["result"]["execution_id"]})
    t_exec = time.monotonic() - t0
    rm_pending = c1.pending()
    code = (w.get("result") or {}).get("exit_code")
    check(code == 0, f"exec true in the other sandbox exits 0 ({w})")
    check(rm_pending, f"the exec was answered while the removal still waited for its VMM "
                      f"(exec {t_exec * 1000:.0f} ms after the rm request)")
    r = c1.reply(rm)
    t_rm = time.monotonic() - t0
    check(r.get("result", {}).get("state") == "stopped", f"the removal completes ({r})")
    print(f"info: rm of the stopped VMM answered after {t_rm * 1000:.0f} ms (QMP quit ignored, SIGKILL after the grace)")
    check(pid not in vmm_pids(), "the SIGSTOPped VMM is gone (killed and reaped)")
    lst = c2.call("sandbox.list")["result"]["sandboxes"]
    check([s["id"] for s in lst] == [b["id"]], "only the other sandbox is left")
    r = c2.call("sandbox.terminate", {"id": b["id"]})
    check("result" in r, "the other sandbox is removed")
    check(vmm_pids() == [], "no VMM process is left running")
except Exception as e:  # report, then clean up
    print(f"FAIL: {e!r}")
    failures += 1
finally:
    for pid in stopped + vmm_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if daemon:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    shutil.rmtree(tmp, ignore_errors=True)

print(f"loop-nonblocking: {failures} failure(s)")
sys.exit(1 if failures else 0)
