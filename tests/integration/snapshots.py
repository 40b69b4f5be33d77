#!/usr/bin/env python3
"""Templates, clones, snapshots, restore and fork with the real CLI, the real
daemon and real QEMU VMs (docs/architecture.md, "Templates and snapshots").

Environment: CLEANROOM_TEST_VM=1 (else skipped), CLEANROOM_BIN,
CLEANROOM_KERNEL_DIR, CLEANROOM_TEST_IMAGE_TAR (busybox rootfs tar; built when
unset). Everything lives in one temp dir that is removed at the end; teardown
removes every sandbox, stops the daemon and fails when a qemu process of the
temp dir is left.
"""
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGE = "test/busybox"
MEM = "256"
TEST_DEADLINE = 400  # seconds per test (SIGALRM)
CMD_TIMEOUT = 240

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("snapshots: skipped (set CLEANROOM_TEST_VM=1 to run)")
    sys.exit(77)
BIN = os.environ.get("CLEANROOM_BIN") or shutil.which("cleanroom")
if not BIN or not os.access(BIN, os.X_OK):
    print("snapshots: CLEANROOM_BIN is not set to an executable cleanroom")
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


def snapshot_dir(snap_id):
    return os.path.join(TMP, "data", "snapshots", snap_id)


def setUpModule():
    global TMP, ENV
    TMP = tempfile.mkdtemp(prefix="cr-snap-")
    ENV = dict(os.environ)
    ENV["CLEANROOM_RUN_DIR"] = os.path.join(TMP, "run")
    ENV["CLEANROOM_DATA_DIR"] = os.path.join(TMP, "data")
    for k in ("CLEANROOM_HOST", "CLEANROOM_IMAGE", "CLEANROOM_TEMPLATES"):
        ENV.pop(k, None)
    ENV["CLEANROOM_IMAGE"] = IMAGE
    tar = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
    if not tar:
        tar = os.path.join(TMP, "busybox.tar")
        subprocess.run([os.path.join(SRC_ROOT, "images", "busybox", "build.sh"), tar],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
    cr("image", "import", tar, "--ref", IMAGE, check=True, timeout=300)
    # a second image (one more file): its template is removed with it
    other = os.path.join(TMP, "other.tar")
    with tarfile.open(tar) as src, tarfile.open(other, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        ti = tarfile.TarInfo("etc/other-image")
        ti.size = 3
        dst.addfile(ti, io.BytesIO(b"yes"))


def tearDownModule():
    problems = []
    try:
        if os.path.exists(os.path.join(TMP, "run", "cleanroom.sock")):
            p = cr("sandbox", "rm", "--all", timeout=120)
            if p.returncode != 0:
                problems.append("sandbox rm --all: %r" % p.stderr)
            try:
                pid = rpc("system.info")["result"]["pid"]
                os.kill(pid, signal.SIGTERM)
                if not wait_pid_exit(pid, 20):
                    os.kill(pid, signal.SIGKILL)
                    problems.append("daemon ignored SIGTERM")
            except (OSError, KeyError, ValueError) as e:
                problems.append("stopping the daemon: %s" % e)
        left = qemu_leftovers()
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if left:
            problems.append("qemu processes left behind: %s" % [c[:200] for _, c in left])
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    if problems:
        raise AssertionError("; ".join(problems))


Deadline = crtest.deadline(TEST_DEADLINE)


class T1Templates(Deadline, unittest.TestCase):
    def test_clones_are_unique(self):
        a = create("--memory", MEM)
        b = create("--memory", MEM)
        try:
            for sb in (a, b):
                self.assertEqual(sb["boot"]["mode"], "clone", sb["events"])
            self.assertEqual(a["boot"]["template"], b["boot"]["template"])
            probe = "hostname; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s"
            outs = [sh(sb["id"], probe).split("\n") for sb in (a, b)]
            now = time.time()
            self.assertNotEqual(outs[0][0], outs[1][0], "clones share a hostname")
            self.assertNotEqual(outs[0][1], outs[1][1], "clones share random state")
            for o in outs:
                self.assertLess(abs(int(o[2]) - now), 30, "clone clock not set: %r" % o)
            # each clone has its own scratch disk
            sh(a["id"], "echo only-a > /root/mark")
            self.assertEqual(sh(b["id"], "cat /root/mark 2>/dev/null || echo none").strip(), "none")
            ts = cr_json("template", "ls", "--json")["templates"]
            self.assertIn(a["boot"]["template"], [t["key"] for t in ts if t["valid"]])
            self.assertIn("template ls", cr("template", "ls", "--help").stdout.decode())
        finally:
            cr("sandbox", "rm", a["id"], b["id"])

    def test_cold_stays_available(self):
        c = create("--memory", MEM, "--cold")
        try:
            self.assertEqual(c["boot"]["mode"], "cold")
            self.assertTrue(any("--cold" in e["message"] for e in c["events"]), c["events"])
            self.assertEqual(sh(c["id"], "echo ok").strip(), "ok")
        finally:
            cr("sandbox", "rm", c["id"])

    def test_template_of_removed_image_is_never_used(self):
        other = os.path.join(TMP, "other.tar")
        cr("image", "import", other, "--ref", "test/other", check=True, timeout=300)
        sb = create("--memory", MEM, "--image", "test/other")
        key = sb["boot"]["template"]
        self.assertTrue(key)
        cr("sandbox", "rm", sb["id"], check=True)
        cr("image", "rm", "test/other", check=True)
        keys = [t["key"] for t in cr_json("template", "ls", "--json")["templates"]]
        self.assertNotIn(key, keys, "the template of a removed image is still listed")
        # the same content imported again is a new image file: a new template
        cr("image", "import", other, "--ref", "test/other", check=True, timeout=300)
        sb = create("--memory", MEM, "--image", "test/other")
        try:
            self.assertNotEqual(sb["boot"]["template"], key)
            self.assertEqual(sh(sb["id"], "cat /etc/other-image"), "yes")
        finally:
            cr("sandbox", "rm", sb["id"])
            cr("image", "rm", "test/other")
        p = cr("template", "rm", "nope")
        self.assertEqual(p.returncode, 125)
        self.assertIn(b"template_not_found", p.stderr)


class T2Snapshots(Deadline, unittest.TestCase):
    def test_snapshot_restore_fork(self):
        a = create("--memory", MEM)["id"]
        forks = []
        try:
            sh(a, "echo before > /root/before; (sleep 1000 > /dev/null 2>&1 &) ; "
                  "echo state-in-memory > /dev/shm/mem")
            snap = cr_json("snapshot", "create", a, "--name", "s1", "--json")
            self.assertEqual(snap["name"], "s1")
            self.assertEqual(snap["sandbox_id"], a)
            sh(a, "echo after > /root/after; kill $(ps | awk '/[s]leep 1000/{print $1}'); rm /dev/shm/mem")
            ls = cr_json("snapshot", "ls", "--json")["snapshots"]
            self.assertIn(snap["id"], [s["id"] for s in ls])
            self.assertTrue(cr_json("snapshot", "inspect", "s1")["usable"])

            r = cr("snapshot", "restore", "s1", "--in", a)
            self.assertEqual(r.returncode, 0, r.stderr)
            out = sh(a, "ls /root; ps | grep -q '[s]leep 1000' && echo running; cat /dev/shm/mem")
            self.assertIn("before", out)
            self.assertNotIn("after", out, "a file written after the snapshot survived the restore")
            self.assertIn("running", out, "the background process is gone after restore")
            self.assertIn("state-in-memory", out)
            sb = cr_json("sandbox", "inspect", a, "--json")
            self.assertEqual(sb["boot"]["mode"], "restore")

            # the restored VM maps the snapshot's RAM copy-on-write: what it
            # changes stays its own (restoring s1 again gives s1), and a
            # snapshot of a restored sandbox restores
            sh(a, "echo changed > /dev/shm/mem; echo r2 > /dev/shm/r2")
            s3 = cr_json("snapshot", "create", a, "--json")
            sh(a, "rm /dev/shm/r2")
            r = cr("snapshot", "restore", "s1", "--in", a)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(sh(a, "cat /dev/shm/mem; ls /dev/shm"), "state-in-memory\nmem\n")
            r = cr("snapshot", "restore", s3["id"], "--in", a)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(sh(a, "cat /dev/shm/mem /dev/shm/r2"), "changed\nr2\n")
            r = cr("snapshot", "restore", "s1", "--in", a)
            self.assertEqual(r.returncode, 0, r.stderr)

            # two forks diverge
            for i in range(2):
                f = cr_json("sandbox", "create", "--from-snapshot", "s1", "--json", "--no-progress")
                self.assertEqual(f["boot"]["mode"], "fork")
                forks.append(f["id"])
            for i, f in enumerate(forks):
                sh(f, "echo fork%d > /root/own" % i)
            for i, f in enumerate(forks):
                out = sh(f, "cat /root/before /root/own; hostname; ps | grep -q '[s]leep 1000' && echo running")
                self.assertEqual(out.split("\n")[:2], ["before", "fork%d" % i])
                self.assertIn("running", out)
            hosts = {sh(f, "hostname") for f in forks + [a]}
            self.assertEqual(len(hosts), 3, hosts)
            # a fork with --policy takes that policy (not silently the snapshot's)
            pol = os.path.join(TMP, "fork-policy.yaml")
            with open(pol, "w") as fp:
                fp.write("version: 1\nsandbox:\n  ttl_minutes: 77\n")
            f = cr_json("sandbox", "create", "--from-snapshot", "s1", "--policy", pol, "--json",
                        "--no-progress")
            forks.append(f["id"])
            self.assertEqual((f.get("policy") or {}).get("sandbox", {}).get("ttl_minutes"), 77, f)

            # a snapshot of a fork restores
            s2 = cr_json("snapshot", "create", forks[0], "--json")
            self.assertEqual(s2["parent_snapshot"], snap["id"])
            sh(forks[0], "rm /root/own; echo later > /root/later")
            r = cr("snapshot", "restore", s2["id"], "--in", forks[0])
            self.assertEqual(r.returncode, 0, r.stderr)
            out = sh(forks[0], "cat /root/own; ls /root")
            self.assertIn("fork0", out)
            self.assertNotIn("later", out)

            # removing the sandbox keeps its snapshots
            cr("sandbox", "rm", forks[1], check=True)
            forks.pop()
            self.assertIn(s2["id"], [s["id"] for s in cr_json("snapshot", "ls", "--json")["snapshots"]])
            r = cr("snapshot", "rm", s2["id"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertFalse(os.path.exists(snapshot_dir(s2["id"])))
        finally:
            cr("sandbox", "rm", a, *forks)

    def test_damaged_snapshots_are_refused(self):
        a = create("--memory", MEM)["id"]
        try:
            sh(a, "echo keep > /root/keep")
            pid_before = cr_json("sandbox", "inspect", a, "--json")["vmm_pid"]
            snaps = [cr_json("snapshot", "create", a, "--json")["id"] for _ in range(6)]
            # the device state (vmstate) and the guest RAM as a flat file (ram)
            mem = [os.path.join(snapshot_dir(s), "state", "vmstate") for s in snaps[:3]]
            mem += [os.path.join(snapshot_dir(s), "state", "ram") for s in snaps[3:]]
            for p in mem:
                self.assertTrue(os.path.exists(p), p)
            for i in (0, 3):  # corrupted: bytes flipped mid-file (in data, not a hole)
                with open(mem[i], "r+b") as f:
                    try:
                        off = os.lseek(f.fileno(), os.path.getsize(mem[i]) // 2, os.SEEK_DATA)
                    except OSError:  # no data after the middle
                        off = os.lseek(f.fileno(), 0, os.SEEK_DATA)
                    f.seek(off)
                    b = f.read(64)
                    f.seek(off)
                    f.write(bytes(x ^ 0xff for x in b))
            for i in (1, 4):  # truncated
                with open(mem[i], "r+b") as f:
                    f.truncate(os.path.getsize(mem[i]) // 3)
            for i in (2, 5):  # missing
                os.unlink(mem[i])
            sh(a, "echo later > /root/later")
            for s in snaps:
                r = cr("snapshot", "restore", s, "--in", a)
                self.assertEqual(r.returncode, 125, r.stderr)
                self.assertIn(b"snapshot_invalid", r.stderr)
                r = cr("sandbox", "create", "--from-snapshot", s)
                self.assertEqual(r.returncode, 125, r.stderr)
                self.assertIn(b"snapshot_invalid", r.stderr)
            sb = cr_json("sandbox", "inspect", a, "--json")
            self.assertEqual((sb["state"], sb["vmm_pid"]), ("ready", pid_before))
            self.assertEqual(sh(a, "cat /root/keep /root/later"), "keep\nlater\n")
            r = cr("snapshot", "restore", "no-such-snapshot", "--in", a)
            self.assertIn(b"snapshot_not_found", r.stderr)
        finally:
            cr("sandbox", "rm", a)


if __name__ == "__main__":
    unittest.main(verbosity=2)
