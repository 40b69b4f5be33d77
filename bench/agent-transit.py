#!/usr/bin/env python3
"""The virtio-serial transit by itself (issue 9): frame round trips straight
on a sandbox's agent socket, without the daemon.

Creates a sandbox through a daemon, stops the daemon (the VMM keeps
running), connects to the VMM's agent socket and times, one at a time:
  - HELLO -> HELLO_REPLY (the agent does next to nothing: the transit both
    ways plus one poll wake-up and one frame each way),
  - EXEC true -> EXIT, split by the agent's AGENT_NS/SPAWN_NS (transit =
    round trip - AGENT_NS, agent's own work = AGENT_NS - SPAWN_NS),
  - one HELLO right after each such EXIT (the same ping-pong as the first,
    in the guest state an exec leaves behind),
then starts the daemon again (it re-attaches) and removes the sandbox.

Usage: bench/agent-transit.py [--n 200] [--bin PATH]
Prints one JSON object on the last line."""
import argparse, json, os, shutil, socket, statistics, struct, subprocess, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
a = ap.parse_args()

HDR = struct.Struct("<IHHI")
HELLO, EXEC, HELLO_REPLY, STARTED, EXIT = 0x01, 0x03, 0x81, 0x84, 0x87
T_ARGV, T_VERSION, T_AGENT_NS, T_SPAWN_NS = 1, 15, 36, 37

tmp = tempfile.mkdtemp(prefix="cr-bench-transit-")
env = dict(os.environ, CLEANROOM_DATA_DIR=f"{tmp}/data", CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_POOL_SIZE="0")
env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
env.pop("CLEANROOM_HOST", None)


def field(tag, val):
    return struct.pack("<HI", tag, len(val)) + val


def fields(p):
    out, off = {}, 0
    while off + 6 <= len(p):
        tag, n = struct.unpack_from("<HI", p, off)
        out.setdefault(tag, p[off + 6:off + 6 + n])
        off += 6 + n
    return out


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(30)
        self.s.connect(path)
        self.buf = b""

    def send(self, typ, ch, payload=b""):
        self.s.sendall(HDR.pack(len(payload), typ, 0, ch) + payload)

    def frame(self):
        while True:
            if len(self.buf) >= HDR.size:
                n, typ, _, ch = HDR.unpack_from(self.buf)
                if len(self.buf) >= HDR.size + n:
                    p = self.buf[HDR.size:HDR.size + n]
                    self.buf = self.buf[HDR.size + n:]
                    return typ, ch, p
            d = self.s.recv(1 << 16)
            if not d:
                raise SystemExit("agent connection closed")
            self.buf += d

    def until(self, ch, typ):
        while True:
            f = self.frame()
            if f[1] == ch and f[0] == typ:
                return f


def daemon():
    p = subprocess.Popen([a.bin, "serve"], env=env, stderr=open(f"{tmp}/daemon.log", "a"))
    for _ in range(800):  # the socket answers (a CLI call would start a daemon itself)
        try:
            socket.socket(socket.AF_UNIX).connect(f"{tmp}/run/cleanroom.sock")
            return p
        except OSError:
            time.sleep(0.025)
    raise SystemExit("daemon did not start")


def cli(*args):
    r = subprocess.run([a.bin, *args], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"cleanroom {' '.join(args)}: {r.stderr}")
    return r.stdout


def med(v):
    return round(statistics.median(v), 3)


d, sid, result = None, None, {}
try:
    subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"], check=True, capture_output=True)
    d = daemon()
    cli("image", "import", f"{tmp}/bb.tar", "--ref", "bench/busybox")
    sid = cli("sandbox", "create", "--image", "bench/busybox", "--no-progress").split()[-1]
    cli("exec", "--in", sid, "--", "true")
    d.terminate()
    d.wait(30)
    d = None
    c = Conn(f"{tmp}/data/sandboxes/{sid}/agent.sock")
    hello = field(T_VERSION, struct.pack("<I", 1))
    rt_hello, rt, transit, own, spawn, after = [], [], [], [], [], []
    for i in range(a.n + 20):
        t0 = time.perf_counter()
        c.send(HELLO, 0, hello)
        c.until(0, HELLO_REPLY)
        if i >= 20:  # the first ones after the reconnect warm up
            rt_hello.append((time.perf_counter() - t0) * 1000)
    for i in range(a.n + 20):
        ch = 2 * i + 1
        t0 = time.perf_counter()
        c.send(EXEC, ch, field(T_ARGV, b"true"))
        _, _, p = c.until(ch, EXIT)
        t = (time.perf_counter() - t0) * 1000
        f = fields(p)
        if i < 20 or T_AGENT_NS not in f:
            continue
        total = struct.unpack("<Q", f[T_AGENT_NS])[0] / 1e6
        sp = struct.unpack("<Q", f[T_SPAWN_NS])[0] / 1e6
        rt.append(t)
        transit.append(t - total)
        own.append(total - sp)
        spawn.append(sp)
        t0 = time.perf_counter()
        c.send(HELLO, 0, hello)
        c.until(0, HELLO_REPLY)
        after.append((time.perf_counter() - t0) * 1000)
    c.s.close()
    result = {"hello_round_trip_ms": {"median": med(rt_hello), "min": round(min(rt_hello), 3)},
              "exec_true_ms": {"round_trip": med(rt), "transit": med(transit), "agent_own": med(own),
                               "spawn": med(spawn)} if rt else None,
              "hello_after_exec_ms": med(after) if after else None, "n": a.n}
    print(f"agent socket, no daemon: HELLO round trip median {med(rt_hello)} ms (min {min(rt_hello):.3f}); "
          + (f"exec true round trip {med(rt)} ms = transit {med(transit)} + agent's own work {med(own)} "
             f"+ spawn {med(spawn)} (medians); HELLO right after an exec {med(after)} ms"
             if rt else "agent sends no timing"), flush=True)
finally:
    if d is None and sid:
        d = daemon()  # re-attaches the sandbox
    if d:
        if sid:
            subprocess.run([a.bin, "sandbox", "rm", sid], env=env, capture_output=True)
        d.terminate()
        d.wait(30)
    shutil.rmtree(tmp, ignore_errors=True)
print(json.dumps(result))
