#!/usr/bin/env python3
"""Fault injection (issue 11, item 7): the daemon is SIGKILLed at each step
of sandbox create and terminate (CLEANROOM_TEST_CRASH_AT, a test hook in
src/sandbox/reconcile.c). After a restart every VMM process of this data dir
belongs to a listed sandbox, `rm` of each leaves no process, socket, RAM file
or scratch file, and a sandbox that existed before is still there and works.

Real daemon and QEMU; everything under one temp dir, removed at the end.
Environment as tests/integration/control-plane.py.
"""
import json
import os
import select
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

IMAGE = "test/busybox"
CMD_TIMEOUT = 180
TEST_DEADLINE = 900
STEPS = ["create-dir", "create-launched", "create-pid-saved", "terminate-stopping",
         "terminate-rm"]

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("crash-windows: skipped (set CLEANROOM_TEST_VM=1)")
    sys.exit(77)
BIN = os.environ.get("CLEANROOM_BIN") or shutil.which("cleanroom")
if not BIN or not os.access(BIN, os.X_OK):
    print("crash-windows: CLEANROOM_BIN is not set to an executable cleanroom")
    sys.exit(1)

TMP = ENV = None


def cr(*args, env=None, timeout=CMD_TIMEOUT, check=False):
    p = subprocess.run([BIN] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env or ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d: %r" % (" ".join(args), p.returncode,
                                                        p.stderr[-2000:]))
    return p


def sock_path():
    return os.path.join(TMP, "run", "cleanroom.sock")


def daemon_pid():
    """The running daemon's pid, or None."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(sock_path())
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
        return json.loads(s.makefile("rb").readline())["result"]["pid"]
    except (OSError, ValueError, KeyError):
        return None
    finally:
        s.close()


def wait_pid_exit(pid, timeout):
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def stop_daemon():
    pid = daemon_pid()
    if pid:
        os.kill(pid, signal.SIGKILL)
        assert wait_pid_exit(pid, 30), "daemon did not die"


def vmms():
    """{pid: sandbox id} of the qemu processes of this temp dir."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if not any(b"qemu-system" in a for a in args[:1]) or not any(TMP.encode() in a for a in args):
            continue
        for i, a in enumerate(args[:-1]):
            if a == b"-name" and args[i + 1].startswith(b"cleanroom-"):
                out[int(d)] = args[i + 1][10:].decode()
    return out


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.1)


def ram_file(sid):
    return ("/dev/shm/cleanroom/%s.ram" % sid if os.geteuid() == 0
            else "/dev/shm/cleanroom-%d/%s.ram" % (os.geteuid(), sid))


def setUpModule():
    global TMP, ENV
    TMP = tempfile.mkdtemp(prefix="cr-cw-")
    ENV = dict(os.environ)
    ENV["CLEANROOM_RUN_DIR"] = os.path.join(TMP, "run")
    ENV["CLEANROOM_DATA_DIR"] = os.path.join(TMP, "data")
    for k in ("CLEANROOM_HOST", "CLEANROOM_IMAGE", "CLEANROOM_TEST_CRASH_AT"):
        ENV.pop(k, None)
    tar = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
    if not tar:
        tar = os.path.join(TMP, "busybox.tar")
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([os.path.join(here, "..", "..", "images", "busybox", "build.sh"), tar],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
    cr("image", "import", tar, "--ref", IMAGE, check=True, timeout=300)


def tearDownModule():
    problems = []
    try:
        if os.path.exists(sock_path()) and daemon_pid():
            cr("sandbox", "rm", "--all", timeout=120)
            pid = daemon_pid()
            if pid:
                os.kill(pid, signal.SIGTERM)
                if not wait_pid_exit(pid, 20):
                    os.kill(pid, signal.SIGKILL)
        for pid in vmms():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            problems.append("qemu left behind: %d" % pid)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    if problems:
        raise AssertionError("; ".join(problems))


class CrashWindows(crtest.deadline(TEST_DEADLINE), unittest.TestCase):

    def listed(self):
        return {s["id"] for s in json.loads(cr("sandbox", "ls", "--json", check=True).stdout)["sandboxes"]}

    def test_kill_at_each_step(self):
        keeper = cr("sandbox", "create", "--image", IMAGE, "--memory", "256", check=True)
        keeper = keeper.stdout.decode().strip()
        cr("exec", "--in", keeper, "--", "sh", "-c", "echo kept > /marker", check=True)
        sbdir = os.path.join(TMP, "data", "sandboxes")
        for step in STEPS:
            with self.subTest(step=step):
                stop_daemon()
                crash_env = dict(ENV, CLEANROOM_TEST_CRASH_AT=step)
                cr("sandbox", "ls", env=crash_env, check=True)  # a daemon with the hook armed
                pid = daemon_pid()
                victim = None
                if step.startswith("create"):
                    p = cr("sandbox", "create", "--image", IMAGE, "--memory", "256", env=crash_env)
                    self.assertNotEqual(p.returncode, 0, "the daemon did not crash at %s" % step)
                else:
                    victim = cr("sandbox", "create", "--image", IMAGE, "--memory", "256",
                                env=crash_env, check=True).stdout.decode().strip()
                    p = cr("sandbox", "rm", victim, env=crash_env)
                    self.assertNotEqual(p.returncode, 0, "the daemon did not crash at %s" % step)
                self.assertTrue(wait_pid_exit(pid, 30), "the daemon is still running")
                touched = {n for n in os.listdir(sbdir) if not n.startswith(".")} - {keeper}
                if victim:
                    touched.add(victim)
                # restart (the CLI autostarts the daemon without the hook)
                listed = self.listed()
                self.assertIn(keeper, listed)
                # let killed orphans finish dying, then every VMM is a listed sandbox
                wait_until(lambda: set(vmms().values()) <= listed, 30,
                           "VMMs no sandbox lists to be gone (%s)" % vmms())
                gone = sorted(touched & listed)
                if gone:
                    cr("sandbox", "rm", *gone, check=True)
                wait_until(lambda: keeper in vmms().values() and len(vmms()) == 1, 30,
                           "only the keeper's VMM left (%s)" % vmms())
                # a removal renames the dir away and deletes it on the thread pool
                wait_until(lambda: sorted(os.listdir(sbdir)) == [keeper], 30,
                           "only the keeper's dir left (%s)" % os.listdir(sbdir))
                for sid in touched:
                    wait_until(lambda: not os.path.exists(ram_file(sid)), 30,
                               "the RAM file of %s to go" % sid)
                ex = cr("exec", "--in", keeper, "--", "cat", "/marker")
                self.assertEqual((ex.returncode, ex.stdout), (0, b"kept\n"), ex.stderr)
        cr("sandbox", "rm", keeper, check=True)
        wait_until(lambda: not os.path.exists(ram_file(keeper)), 30, "the keeper's RAM file to go")


if __name__ == "__main__":
    unittest.main(verbosity=2)
