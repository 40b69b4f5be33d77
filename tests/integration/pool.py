#!/usr/bin/env python3
"""The VMM pool with the real CLI, daemon and QEMU (docs/architecture.md,
"VMM pool"): a create of the default template is served by a pre-started,
paused clone; the pool refills; a create that does not match the pool's
template (another memory size) is not served by it; a daemon stop kills and
removes the pool's VMMs and directories while sandboxes keep running; a daemon
killed with a full pool leaves nothing after the next start.

Environment: CLEANROOM_TEST_VM=1 (else skipped), CLEANROOM_BIN,
CLEANROOM_KERNEL_DIR, CLEANROOM_TEST_IMAGE_TAR (busybox rootfs tar; built when
unset). One temp dir, removed at the end; teardown fails when a qemu process
of it is left.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGE = "test/busybox"
TEST_DEADLINE = 400  # seconds per test (SIGALRM)
CMD_TIMEOUT = 240
POOL_WAIT = 120  # seconds for the pool to reach a state

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("pool: skipped (set CLEANROOM_TEST_VM=1 to run)")
    sys.exit(77)
BIN = os.environ.get("CLEANROOM_BIN") or shutil.which("cleanroom")
if not BIN or not os.access(BIN, os.X_OK):
    print("pool: CLEANROOM_BIN is not set to an executable cleanroom")
    sys.exit(1)

TMP = None
ENV = None


def log_tail():
    try:
        with open(os.path.join(TMP, "run", "daemon.log"), "rb") as f:
            return f.read()[-4000:].decode(errors="replace")
    except OSError as e:
        return "(no daemon.log: %s)" % e


def cr(*args, check=False, timeout=CMD_TIMEOUT):
    p = subprocess.run([BIN] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d\nstdout: %r\nstderr: %r\ndaemon.log:\n%s" % (
            " ".join(args), p.returncode, p.stdout[-2000:], p.stderr[-2000:], log_tail()))
    return p


def cr_json(*args):
    return json.loads(cr(*args, check=True).stdout)


def sh(sid, script, check=True):
    p = cr("exec", "--in", sid, "--", "sh", "-c", script)
    if check and p.returncode != 0:
        raise AssertionError("exec %r in %s -> %d: %r %r" % (script, sid, p.returncode,
                                                              p.stdout, p.stderr))
    return p.stdout.decode()


def create(*extra):
    sb = cr_json("sandbox", "create", "--json", "--no-progress", *extra)
    assert sb["state"] == "ready", sb
    return sb


def rpc(method, params=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(os.path.join(TMP, "run", "cleanroom.sock"))
    with s:
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": params or {}}).encode() + b"\n")
        f = s.makefile("rb")
        while True:
            m = json.loads(f.readline())
            if m.get("id") == 1:
                return m


def qemu_leftovers():
    return crtest.qemu_leftovers(TMP)


wait_pid_exit = crtest.wait_pid_exit



def pool_info():
    return rpc("system.info")["result"]["pool"]


def wait_pool(pred, what):
    """Waits (bounded) until pred(pool info) holds; the daemon refills on its own."""
    deadline = time.monotonic() + POOL_WAIT
    while True:
        p = pool_info()
        if pred(p):
            return p
        if time.monotonic() > deadline:
            raise AssertionError("pool never got %s: %r\n%s" % (what, p, log_tail()))
        time.sleep(0.05)


def daemon_pid():
    return rpc("system.info")["result"]["pid"]


def stop_daemon(sig=signal.SIGTERM):
    pid = daemon_pid()
    os.kill(pid, sig)
    if not wait_pid_exit(pid, 30):
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("the daemon ignored %s" % sig)


def sandbox_dirs():
    d = os.path.join(TMP, "data", "sandboxes")
    return sorted(x for x in os.listdir(d) if not x.startswith("."))


def setUpModule():
    global TMP, ENV
    TMP = tempfile.mkdtemp(prefix="cr-pool-")
    ENV = dict(os.environ)
    ENV["CLEANROOM_RUN_DIR"] = os.path.join(TMP, "run")
    ENV["CLEANROOM_DATA_DIR"] = os.path.join(TMP, "data")
    for k in ("CLEANROOM_HOST", "CLEANROOM_IMAGE", "CLEANROOM_TEMPLATES"):
        ENV.pop(k, None)
    ENV["CLEANROOM_IMAGE"] = IMAGE
    ENV["CLEANROOM_POOL_SIZE"] = "1"
    tar = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
    if not tar:
        tar = os.path.join(TMP, "busybox.tar")
        subprocess.run([os.path.join(SRC_ROOT, "images", "busybox", "build.sh"), tar],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
    cr("image", "import", tar, "--ref", IMAGE, check=True, timeout=300)


def tearDownModule():
    problems = []
    try:
        if os.path.exists(os.path.join(TMP, "run", "cleanroom.sock")):
            p = cr("sandbox", "rm", "--all", timeout=120)
            if p.returncode != 0:
                problems.append("sandbox rm --all: %r" % p.stderr)
            try:
                stop_daemon()
            except (OSError, KeyError, ValueError, AssertionError) as e:
                problems.append("stopping the daemon: %s" % e)
        left = qemu_leftovers()
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if left:
            problems.append("qemu processes left behind: %s\ndaemon.log:\n%s" % (
                [c[:200] for _, c in left], log_tail()))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    if problems:
        raise AssertionError("; ".join(problems))


Deadline = crtest.deadline(TEST_DEADLINE)


def from_pool(sb):
    return any("VMM pool" in e["message"] for e in sb["events"])


class T1Pool(Deadline, unittest.TestCase):
    def test_pooled_create_refill_and_stop(self):
        cr("image", "warm", IMAGE, check=True, timeout=CMD_TIMEOUT)  # the default template
        p = wait_pool(lambda p: p["ready"] == 1, "one ready entry")
        self.assertEqual(p["size"], 1)
        [(entry_pid, _)] = qemu_leftovers()  # the pool's VMM, nothing else yet
        a = create()
        try:
            self.assertEqual(a["boot"]["mode"], "clone", a["events"])
            self.assertTrue(from_pool(a), a["events"])
            self.assertEqual(a["vmm_pid"], entry_pid)
            out = sh(a["id"], "hostname; date +%s; echo hi > /root/mine; cat /root/mine").split()
            self.assertEqual(out[0], "cleanroom-" + a["id"][16:26])
            self.assertLess(abs(int(out[1]) - time.time()), 30, "the clock was not set: %r" % out)
            self.assertEqual(out[2], "hi")
            # started like any sandbox: with the (blank) workspace disk
            self.assertIn("cr-workspace", sh(a["id"], "for f in /sys/block/*/serial; do cat $f; echo; done").split())
            # the pool refills (a new VMM, a new id)
            p = wait_pool(lambda p: p["ready"] == 1 and p["handed_out"] == 1, "refilled")
            self.assertEqual(p["started"], 2)
            b = create()
            try:
                self.assertTrue(from_pool(b), b["events"])
                self.assertNotEqual(b["id"], a["id"])
                self.assertEqual(cr("sandbox", "inspect", "last").returncode, 0)
                self.assertEqual(sh(b["id"], "cat /root/mine 2>/dev/null || echo none").strip(),
                                 "none", "pooled sandboxes share a scratch disk")
                self.assertNotEqual(sh(a["id"], "hostname"), sh(b["id"], "hostname"))
                wait_pool(lambda p: p["ready"] == 1 and p["handed_out"] == 2, "refilled again")
                # another memory size: another template, never the pool's entry
                c = create("--memory", "384")
                try:
                    self.assertFalse(from_pool(c), c["events"])
                    self.assertEqual(sh(c["id"], "echo ok").strip(), "ok")
                    self.assertEqual(pool_info()["handed_out"], 2)
                    # a cold create is not served by the pool either
                    d = create("--cold")
                    self.assertFalse(from_pool(d), d["events"])
                    self.assertEqual(d["boot"]["mode"], "cold")
                    cr("sandbox", "rm", d["id"], check=True)
                finally:
                    cr("sandbox", "rm", c["id"])
                wait_pool(lambda p: p["ready"] == 1, "ready after the other creates")
                live = {a["vmm_pid"], b["vmm_pid"]}
                pool_pids = {pid for pid, _ in qemu_leftovers()} - live
                self.assertEqual(len(pool_pids), 1, qemu_leftovers())
                # daemon stop: the pool's VMM and directory go, sandboxes stay
                stop_daemon()
                for pid in pool_pids:
                    self.assertTrue(wait_pid_exit(pid, 10), "the pool's VMM survived the stop")
                self.assertEqual({pid for pid, _ in qemu_leftovers()}, live)
                self.assertEqual(sandbox_dirs(), sorted([a["id"], b["id"]]))
                self.assertEqual(sh(b["id"], "echo back").strip(), "back")  # autostart, re-attach
            finally:
                cr("sandbox", "rm", b["id"])
        finally:
            cr("sandbox", "rm", a["id"])

    def test_killed_daemon_leaves_no_pool(self):
        cr("image", "warm", IMAGE, check=True, timeout=CMD_TIMEOUT)
        wait_pool(lambda p: p["ready"] == 1, "one ready entry")
        entries = {pid for pid, _ in qemu_leftovers()}
        dirs = sandbox_dirs()
        self.assertEqual(len(entries), 1)
        self.assertEqual(len(dirs), 1)
        stop_daemon(signal.SIGKILL)
        # the next start reconciles: the entry had no state.json
        self.assertEqual(cr_json("sandbox", "ls", "--json")["sandboxes"], [])
        for pid in entries:
            self.assertTrue(wait_pid_exit(pid, 10), "the old pool's VMM survived the restart")
        self.assertNotIn(dirs[0], sandbox_dirs())
        wait_pool(lambda p: p["ready"] == 1, "refilled after the restart")


if __name__ == "__main__":
    unittest.main(verbosity=2)
