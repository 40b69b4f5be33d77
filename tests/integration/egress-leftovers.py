#!/usr/bin/env python3
"""What egress leaves on the host after a daemon stops and after crashes
(docs/egress.md, "Host state"). The daemon, its CLI and its sandboxes run in
a network namespace this test creates (forwarding set off in it), so IPv4
forwarding, TAPs and nftables tables are the namespace's own and no other
daemon on the host is touched. Real daemon, QEMU, nftables.

Rows:
  - a network turns forwarding on (with a record) and makes TAP and table;
  - a stopped daemon leaves the running sandbox's network (it re-attaches);
  - after a SIGKILL and a restart, `rm` removes TAP, chains and table and
    turns forwarding off again;
  - a crash between the network and the journal (CLEANROOM_TEST_CRASH_AT=
    create-dir): the next daemon sweeps TAP and chains, removes the table and
    turns forwarding off;
  - forwarding that was on before is never turned off;
  - nothing left: TAPs, tables, record, processes, namespace.
Prints one line per row and `N passed, N failed`.

Environment: CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR. Root.
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

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("egress-leftovers: skipped (set CLEANROOM_TEST_VM=1)")
    sys.exit(77)
if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("nft") \
        or not shutil.which("ip"):
    print("egress-leftovers: skipped (needs root, /dev/net/tun, nft, ip)")
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
IMAGE = "test/leftovers-busybox"
PID = os.getpid()
NS = "cr-lo-%d" % PID
NSX = ["ip", "netns", "exec", NS]
TMP = tempfile.mkdtemp(prefix="cr-egress-lo-")
ENV = dict(os.environ)
ENV.update({
    "CLEANROOM_RUN_DIR": os.path.join(TMP, "run"),
    "CLEANROOM_DATA_DIR": os.path.join(TMP, "data"),
    "CLEANROOM_DNS_UPSTREAM": "127.0.0.1:9",  # no name is looked up
})
for k in ("CLEANROOM_HOST", "CLEANROOM_EGRESS", "CLEANROOM_EGRESS_TABLE", "CLEANROOM_EGRESS_POOL",
          "CLEANROOM_TEST_CRASH_AT"):
    ENV.pop(k, None)
POLICY = os.path.join(TMP, "policy.yaml")
RESULTS = []


def sh(*args, check=True, timeout=60, env=None):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError("%s -> %d: %s" % (" ".join(args), p.returncode,
                                              p.stderr.decode(errors="replace")[-500:]))
    return p


def ns(*args, **kw):
    return sh(*(NSX + list(args)), **kw)


def cr(*args, check=True, timeout=300, env=None):
    return ns(BIN, *args, check=check, timeout=timeout, env=env or ENV)


def row(name, ok, detail=""):
    RESULTS.append((name, ok))
    print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""),
          flush=True)


def forwarding():
    return ns("cat", "/proc/sys/net/ipv4/ip_forward").stdout.decode().strip()


def ns_inode():
    return ns("stat", "-L", "-c", "%i", "/proc/self/ns/net").stdout.decode().strip()


def record():
    return "/run/cleanroom-egress-ip_forward.%s" % ns_inode()


def taps():
    out = ns("ip", "-o", "link").stdout.decode()
    return sorted(l.split(":")[1].strip().split("@")[0] for l in out.splitlines()
                  if l.split(":")[1].strip().startswith("crt"))


def tables():
    return ns("nft", "list", "tables").stdout.decode().split()


def chains():
    return ns("nft", "list", "chains", check=False).stdout.decode()


def daemon_pid():
    sock = os.path.join(ENV["CLEANROOM_RUN_DIR"], "cleanroom.sock")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return json.loads(buf)["result"]["pid"]


def wait_gone(pid, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.05)  # waiting for a process that is not our child, bounded
    return False


def kill_daemon(sig):
    try:
        pid = daemon_pid()
    except (OSError, ValueError, KeyError):
        return
    os.kill(pid, sig)
    if not wait_gone(pid):
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)


def create():
    return cr("sandbox", "create", "--policy", POLICY, "--memory", "256").stdout.decode().strip()


def state(sid):
    return json.loads(cr("sandbox", "inspect", sid, "--json").stdout).get("state")


def main():
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("deadline")))
    signal.alarm(800)
    err = None
    try:
        sh("ip", "netns", "add", NS)
        ns("ip", "link", "set", "lo", "up")
        # a new namespace copies the host's IPv4 settings: start from "off"
        ns("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
        with open(POLICY, "w") as f:
            f.write("version: 1\nsandbox:\n  image:\n    ref: %s\n  network:\n    default: deny\n"
                    "    allow:\n      - allowed.test:8080\n" % IMAGE)
        tar = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
        if not tar:
            tar = os.path.join(TMP, "busybox.tar")
            sh(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "images",
                            "busybox", "build.sh"), tar, timeout=120)
        cr("image", "import", tar, "--ref", IMAGE)
        row("a namespace with forwarding off and no tables",
            forwarding() == "0" and tables() == [], "%s %s" % (forwarding(), tables()))

        a = create()
        tap = ("crt" + a[-12:]).lower()
        row("a network turns forwarding on with a record, and makes its TAP and table",
            forwarding() == "1" and os.path.exists(record()) and taps() == [tap] and
            "cleanroom" in tables(), "%s %s %s" % (forwarding(), taps(), tables()))

        kill_daemon(signal.SIGTERM)
        row("a stopped daemon leaves the running sandbox's network in place",
            taps() == [tap] and ("f_" + a) in chains() and forwarding() == "1")
        # a restart (any call starts the daemon) re-attaches; then a crash
        deadline = time.time() + 120
        while time.time() < deadline and state(a) != "ready":
            time.sleep(0.2)  # the new daemon re-attaching, bounded
        kill_daemon(signal.SIGKILL)
        ok_state = state(a) == "ready"  # restarted again
        cr("sandbox", "rm", a)
        row("after a SIGKILL and a restart, rm removes TAP, chains and table; forwarding off",
            ok_state and taps() == [] and "cleanroom" not in tables() and forwarding() == "0" and
            not os.path.exists(record()),
            "state %s taps %s tables %s fwd %s" % (ok_state, taps(), tables(), forwarding()))

        # the daemon dies after the network is made, before the sandbox's journal
        kill_daemon(signal.SIGTERM)
        crash_env = dict(ENV, CLEANROOM_TEST_CRASH_AT="create-dir")
        cr("sandbox", "ls", env=crash_env)  # a daemon with the hook armed
        pid = daemon_pid()
        p = cr("sandbox", "create", "--policy", POLICY, "--memory", "256", check=False,
               env=crash_env)
        crashed = p.returncode != 0 and wait_gone(pid)
        left = taps()
        window = crashed and len(left) == 1 and forwarding() == "1"
        cr("sandbox", "ls")  # a new daemon: reconcile + sweep
        row("a crash between the network and the journal: the next daemon sweeps it all",
            window and taps() == [] and "f_" not in chains() and "cleanroom" not in tables() and
            forwarding() == "0" and not os.path.exists(record()),
            "crashed %s left %s -> taps %s tables %s fwd %s" % (crashed, left, taps(), tables(),
                                                               forwarding()))

        # forwarding that was on already is not ours to turn off
        ns("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        b = create()
        had_record = os.path.exists(record())
        cr("sandbox", "rm", b)
        row("forwarding that was on before is left on",
            not had_record and forwarding() == "1" and taps() == [],
            "record %s fwd %s" % (had_record, forwarding()))
    except Exception as e:  # noqa: BLE001 - reported as a row
        err = e
        row("test ran to the end", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        try:
            cr("sandbox", "rm", "--all", check=False, timeout=120)
        except Exception as e:  # noqa: BLE001 - clean-up never raises
            print("cleanup: %s" % e)
        kill_daemon(signal.SIGTERM)
        ps = sh("ps", "-eo", "pid,args", check=False).stdout.decode()
        procs = [l.strip()[:100] for l in ps.splitlines() if TMP in l and "ps -eo" not in l]
        for l in procs:
            try:
                os.kill(int(l.split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        try:
            rec = record()
            left_taps, left_tables, left_rec = taps(), tables(), os.path.exists(rec)
        except Exception:  # noqa: BLE001 - the namespace may not exist
            rec, left_taps, left_tables, left_rec = None, [], [], False
        row("nothing left (TAPs, tables, forwarding record, processes)",
            not left_taps and not left_tables and not left_rec and not procs,
            "taps %s tables %s record %s procs %s" % (left_taps, left_tables, left_rec, procs))
        if rec and left_rec:
            os.unlink(rec)
        sh("ip", "netns", "del", NS, check=False)
        if not all(ok for _, ok in RESULTS):
            try:
                with open(os.path.join(ENV["CLEANROOM_RUN_DIR"], "daemon.log"), "rb") as f:
                    print("daemon.log (tail):\n" + f.read()[-3000:].decode(errors="replace"))
            except OSError:
                pass
        shutil.rmtree(TMP, ignore_errors=True)
    passed = sum(1 for _, ok in RESULTS if ok)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    return 0 if passed == len(RESULTS) and err is None else 1


if __name__ == "__main__":
    sys.exit(main())
