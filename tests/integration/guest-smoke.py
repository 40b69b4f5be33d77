#!/usr/bin/env python3
"""Boots the real kernel + initramfs (cleanroom-agent as /init) in QEMU under
TCG and speaks the agent protocol (docs/agent-protocol.md) to it.

usage: guest-smoke.py BOOT_ASSETS_HELPER [AGENT]
Kernel dir: $CLEANROOM_KERNEL_DIR or /var/lib/cleanroom/kernels/current;
exit 77 (skip) when there is none. Everything lives in a temp dir that is
removed at the end; QEMU is killed in a finally block.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HDR = struct.Struct("<IHHI")
T = dict(HELLO=0x01, ACTIVATE=0x02, EXEC=0x03, STDIN=0x04, STDIN_EOF=0x05,
         SIGNAL=0x06, FILE_READ=0x07, FILE_WRITE=0x08, STAT=0x09, LIST=0x0a,
         TAR_OUT=0x0b, TAR_IN=0x0c, SHUTDOWN=0x0d, CANCEL=0x0e, DATA=0x20,
         DATA_END=0x21, HELLO_REPLY=0x81, OK=0x82, ERROR=0x83, STARTED=0x84,
         STDOUT=0x85, STDERR=0x86, EXIT=0x87, STAT_RESULT=0x88, ENTRY=0x89,
         LOG=0x8a, WINDOW=0x8b)
TN = {v: k for k, v in T.items()}
ARGV, ENV, CWD, PATH, OFFSET, LENGTH, MODE, FLAGS, PID, EXIT_CODE, SIGNAL, \
    ERRNO, REASON, MESSAGE, VERSION, TIME_NS, SEED, HOSTNAME, SIZE, FTYPE, \
    MTIME_NS, UID, GID, NAME, TARGET, AGENT_VERSION, KERNEL, IMAGE_DEV, \
    SCRATCH_DEV, DEPTH, MAX_PAYLOAD, EXEC_ERRNO, UPTIME_NS, WINDOW, WINSIZE, \
    AGENT_NS, SPAWN_NS = range(1, 38)
WINDOW_INITIAL = 1 << 20  # AP_WINDOW_INITIAL
F_STDIN = 1
RAW = {T["DATA"], T["STDIN"], T["STDOUT"], T["STDERR"], T["LOG"]}
DEADLINE = 420.0  # seconds for the whole test (meson timeout is 480); generous: a loaded 2-core TCG host boots slowly


def field(tag, val):
    if isinstance(val, str):
        val = val.encode()
    return struct.pack("<HI", tag, len(val)) + val


def u32(tag, v):
    return field(tag, struct.pack("<I", v))


def u64(tag, v):
    return field(tag, struct.pack("<Q", v))


def parse_fields(p):
    out, off = {}, 0
    while off < len(p):
        tag, n = struct.unpack_from("<HI", p, off)
        off += 6
        out.setdefault(tag, []).append(p[off:off + n])
        off += n
    return out


def fu32(fields, tag):
    return struct.unpack("<I", fields[tag][0])[0] if tag in fields else None


class Agent:
    def __init__(self, path, deadline):
        self.deadline = deadline
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise RuntimeError("agent socket never appeared")
                time.sleep(0.02)
        self.buf, self.off = bytearray(), 0
        self.frames = []  # parsed, not yet consumed
        # flow control: STDIN/DATA bytes we may still send per channel
        self.credit = {}

    def send(self, typ, ch, payload=b""):
        """Sends a frame; STDIN/DATA wait for the channel's credit (reading
        and keeping other frames meanwhile), like a host must."""
        if typ in ("EXEC", "FILE_WRITE", "TAR_IN"):
            self.credit[ch] = WINDOW_INITIAL
        if typ in ("STDIN", "DATA"):
            while self.credit.get(ch, WINDOW_INITIAL) < len(payload):
                self._pump(True)
        self.send_raw(typ, ch, payload)

    def try_send(self, typ, ch, payload):
        """Sends STDIN/DATA only when the credit allows it now."""
        self._pump(False)
        if self.credit.get(ch, WINDOW_INITIAL) < len(payload):
            return False
        self.send_raw(typ, ch, payload)
        return True

    def send_raw(self, typ, ch, payload=b""):
        """Sends without looking at the window."""
        if typ in ("STDIN", "DATA"):
            self.credit[ch] = self.credit.get(ch, WINDOW_INITIAL) - len(payload)
        self.s.settimeout(max(0.1, self.deadline - time.monotonic()))
        self.s.sendall(HDR.pack(len(payload), T[typ], 0, ch) + payload)

    def _pump(self, block):
        """Reads from the agent (once and waiting when block, else what is
        there) and parses whole frames into self.frames; WINDOW frames
        are credit and consumed here."""
        if block:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("timed out waiting for the agent")
            self.s.settimeout(left)
            d = self.s.recv(1 << 20)
            if not d:
                raise RuntimeError("agent connection closed")
            self.buf += d
        else:
            self.s.settimeout(0)
            try:
                while True:
                    d = self.s.recv(1 << 20)
                    if not d:
                        raise RuntimeError("agent connection closed")
                    self.buf += d
            except (BlockingIOError, socket.timeout):
                pass
        while len(self.buf) - self.off >= 12:
            n, typ, fl, ch = HDR.unpack_from(self.buf, self.off)
            assert fl == 0 and n <= (1 << 20), "bad frame from guest"
            if len(self.buf) - self.off < 12 + n:
                break
            p = bytes(self.buf[self.off + 12:self.off + 12 + n])
            self.off += 12 + n
            if typ == T["WINDOW"]:
                k = struct.unpack("<Q", parse_fields(p)[LENGTH][0])[0]
                self.credit[ch] = self.credit.get(ch, WINDOW_INITIAL) + k
                assert self.credit[ch] <= WINDOW_INITIAL, "credit beyond the window"
                continue
            self.frames.append((TN.get(typ, hex(typ)), ch,
                                p if typ in RAW else parse_fields(p)))
        if self.off == len(self.buf):
            self.buf, self.off = bytearray(), 0
        elif self.off > (1 << 20):
            del self.buf[:self.off]
            self.off = 0

    def until(self, ch, end_types):
        """Collects frames of channel ch until one of end_types."""
        got = []
        while True:
            for i, f in enumerate(self.frames):
                if f[1] == ch:
                    del self.frames[i]
                    break
            else:
                self._pump(True)
                continue
            if f[0] == "LOG":
                continue
            got.append(f)
            if f[0] in end_types:
                return got


def exec_payload(argv, stdin=False, env=(), cwd=None):
    p = b"".join(field(ARGV, a) for a in argv)
    p += b"".join(field(ENV, e) for e in env)
    if cwd:
        p += field(CWD, cwd)
    if stdin:
        p += u32(FLAGS, F_STDIN)
    return p


def run_result(frames):
    out = b"".join(f[2] for f in frames if f[0] == "STDOUT")
    err = b"".join(f[2] for f in frames if f[0] == "STDERR")
    last = frames[-1]
    assert last[0] == "EXIT", last
    return out, err, fu32(last[2], EXIT_CODE), last[2]


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise RuntimeError("QMP socket never appeared")
                time.sleep(0.01)
        self.s.settimeout(max(1, deadline - time.monotonic()))
        self.f = self.s.makefile("rw")
        self.f.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:  # events can come before the reply
            r = json.loads(self.f.readline())
            if "error" in r:
                raise RuntimeError("QMP %s: %s" % (name, r["error"]))
            if "return" in r:
                return r["return"]

    def wait_migration(self, deadline):
        while True:
            st = self.cmd("query-migrate").get("status")
            if st == "completed":
                return
            if st == "failed" or time.monotonic() > deadline:
                raise RuntimeError("migration %s" % st)
            time.sleep(0.01)


def find_kernel_dir():
    d = os.environ.get("CLEANROOM_KERNEL_DIR") or "/var/lib/cleanroom/kernels/current"
    return d if os.path.isdir(os.path.join(d, "boot")) else None


def make_image(tmp):
    root = os.path.join(tmp, "rootfs")
    os.makedirs(os.path.join(root, "bin"))
    bb = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(bb, os.path.join(root, "bin", "busybox"))
    for applet in subprocess.run([bb, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", applet))
    for d in ("etc", "root", "tmp", "proc", "sys", "dev", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    img = os.path.join(tmp, "image.ext4")
    scratch = os.path.join(tmp, "scratch.ext4")
    for path, size, src in ((img, "32M", root), (scratch, "64M", None)):
        cmd = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
        if src:
            cmd += ["-d", src]
        subprocess.run(["truncate", "-s", size, path], check=True)
        subprocess.run(cmd + [path], check=True)
    return img, scratch


def main():
    kdir = find_kernel_dir()
    if not kdir:
        print("SKIP: no kernel (run scripts/fetch-kernel.sh)")
        return 77
    if len(sys.argv) < 2:
        print("usage: guest-smoke.py BOOT_ASSETS_HELPER [AGENT]", file=sys.stderr)
        return 2
    for tool in ("qemu-system-x86_64", "mkfs.ext4", "busybox"):
        if not shutil.which(tool) and not (tool == "busybox" and os.path.exists("/bin/busybox")):
            print("SKIP: %s not installed" % tool)
            return 77
    helper = sys.argv[1]
    agent = sys.argv[2] if len(sys.argv) > 2 else None
    if agent and not os.path.exists(agent):
        print("SKIP: no guest agent built")
        return 77
    start_all = time.monotonic()
    deadline = start_all + DEADLINE
    tmp = tempfile.mkdtemp(prefix="cr-guest-smoke-")
    qemu = None
    try:
        out = subprocess.run([helper, kdir] + ([agent] if agent else []),
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        assets = dict(l.split("=", 1) for l in out.stdout.splitlines() if "=" in l)
        img, scratch = make_image(tmp)
        sock = os.path.join(tmp, "agent.sock")
        console = os.path.join(tmp, "console.log")
        kernel = assets.get("VMLINUX") or assets["KERNEL"]
        def qemu_cmd(with_scratch, machine_extra="", extra=()):
            cmd = list(extra) + [
                "qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on" + machine_extra,
                "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512",
                "-nodefaults", "-no-user-config", "-display", "none",
                "-serial", "file:" + console, "-no-reboot",
                "-kernel", kernel, "-initrd", assets["INITRD"],
                "-append", "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=2000000 tsc=reliable",
                "-drive", "id=d0,file=%s,format=raw,if=none,readonly=on" % img,
                "-device", "virtio-blk-device,drive=d0,serial=cr-image",
            ]
            if with_scratch:
                cmd += ["-drive", "id=d1,file=%s,format=raw,if=none" % scratch,
                        "-device", "virtio-blk-device,drive=d1,serial=cr-scratch"]
            return cmd + [
                "-device", "virtio-serial-device",
                "-chardev", "socket,id=ag,path=%s,server=on,wait=off" % sock,
                "-device", "virtserialport,chardev=ag,name=cleanroom.agent",
            ]

        def snapshot_cmd(name, share, incoming):
            # guest-boot.md: RAM in a file, device state migrated alone
            c = qemu_cmd(True, ",memory-backend=mem")
            c = [x.replace("agent.sock", name + ".sock") for x in c]
            c += ["-object", "memory-backend-file,id=mem,size=512M,mem-path=%s,share=%s"
                  % (os.path.join(tmp, "tmpl.ram"), share),
                  "-qmp", "unix:%s,server=on,wait=off" % os.path.join(tmp, name + ".qmp")]
            return c + (["-incoming", "defer"] if incoming else [])
        cmd = qemu_cmd(True)
        t0 = time.monotonic()
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        a = Agent(sock, deadline)

        a.send("HELLO", 0, u32(VERSION, 1) + u32(MAX_PAYLOAD, 1 << 20))
        hello = a.until(0, {"HELLO_REPLY", "ERROR"})[-1]
        assert hello[0] == "HELLO_REPLY", hello
        assert struct.unpack("<Q", hello[2][WINDOW][0])[0] == WINDOW_INITIAL, hello
        t_hello = time.monotonic() - t0
        print("agent answered HELLO %.2fs after QEMU start (kernel %s, guest uptime %.2fs)"
              % (t_hello, hello[2][KERNEL][0].decode(),
                 struct.unpack("<Q", hello[2][UPTIME_NS][0])[0] / 1e9))

        t1 = time.monotonic()
        a.send("ACTIVATE", 0, u64(TIME_NS, time.time_ns()) + field(SEED, os.urandom(64)) +
               field(HOSTNAME, "smoke") + field(IMAGE_DEV, "serial:cr-image") +
               field(SCRATCH_DEV, "serial:cr-scratch"))
        act = a.until(0, {"OK", "ERROR"})[-1]
        assert act[0] == "OK", act
        print("ACTIVATE ok in %.3fs" % (time.monotonic() - t1))

        t1 = time.monotonic()
        a.send("EXEC", 1, exec_payload(["echo", "hi"]))
        fr = a.until(1, {"EXIT", "ERROR"})
        assert fr[0][0] == "STARTED", fr
        o, e, code, _ = run_result(fr)
        assert (o, code) == (b"hi\n", 0), (o, e, code)
        print("exec echo hi: ok in %.3fs" % (time.monotonic() - t1))
        # the agent's own timing: EXEC read -> EXIT queued, fork -> reap
        total, spawn = (struct.unpack("<Q", fr[-1][2][t][0])[0] for t in (AGENT_NS, SPAWN_NS))
        assert 0 < spawn <= total < 60e9, (spawn, total)

        # the PATH search is the command's PATH (musl's rules: EACCES is
        # remembered and the search goes on, an empty entry is the cwd)
        a.send("EXEC", 101, exec_payload(["sh", "-c", "mkdir -p /tmp/pa /tmp/pb && "
                                          "printf '#!/bin/sh\\necho found $0\\n' > /tmp/pb/pb-cmd && "
                                          "cp /tmp/pb/pb-cmd /tmp/pa/pb-cmd && chmod 755 /tmp/pb/pb-cmd && "
                                          "chmod 644 /tmp/pa/pb-cmd"]))
        assert run_result(a.until(101, {"EXIT", "ERROR"}))[2] == 0
        for ch, path, cwd, want in ((103, "/nonexistent:/tmp/pa:/tmp/pb", None, (b"found /tmp/pb/pb-cmd\n", 0, None)),
                                    (105, "/tmp/pa", None, (b"", 126, 13)),
                                    (107, "/nonexistent::/bin", "/tmp/pb", (b"found pb-cmd\n", 0, None)),
                                    (109, "/nonexistent", None, (b"", 127, 2))):
            a.send("EXEC", ch, exec_payload(["pb-cmd"], env=["PATH=" + path], cwd=cwd))
            o, e, code, f = run_result(a.until(ch, {"EXIT", "ERROR"}))
            assert (o, code, fu32(f, EXEC_ERRNO)) == want, (path, o, e, code, f)
        a.send("EXEC", 111, exec_payload(["true"], cwd="/nonexistent"))
        o, e, code, f = run_result(a.until(111, {"EXIT", "ERROR"}))
        assert code == 126 and fu32(f, EXEC_ERRNO) == 2 and b"cannot change directory" in e, (code, e)

        a.send("EXEC", 3, exec_payload(["sh", "-c", "echo out; echo err >&2; exit 7"]))
        o, e, code, _ = run_result(a.until(3, {"EXIT", "ERROR"}))
        assert (o, e, code) == (b"out\n", b"err\n", 7), (o, e, code)

        a.send("EXEC", 5, exec_payload(["no-such-command-xyz"]))
        o, e, code, f = run_result(a.until(5, {"EXIT", "ERROR"}))
        assert code == 127 and fu32(f, EXEC_ERRNO) == 2, (code, f)
        assert b"command not found: no-such-command-xyz" in e, e

        a.send("EXEC", 7, exec_payload(["cat"], stdin=True))
        a.send("STDIN", 7, b"hello\x00stdin\n")
        a.send("STDIN_EOF", 7)
        o, e, code, _ = run_result(a.until(7, {"EXIT", "ERROR"}))
        assert (o, code) == (b"hello\x00stdin\n", 0), (o, e, code)

        # two at once: the slow one must not block the fast one
        a.send("EXEC", 9, exec_payload(["sh", "-c", "sleep 1; echo slow"]))
        a.send("EXEC", 11, exec_payload(["sh", "-c", "echo fast"]))
        o, _, code, _ = run_result(a.until(11, {"EXIT", "ERROR"}))
        assert (o, code) == (b"fast\n", 0)
        o, _, code, _ = run_result(a.until(9, {"EXIT", "ERROR"}))
        assert (o, code) == (b"slow\n", 0)

        # hostname, env and cwd reach the command; the root is the image
        a.send("EXEC", 13, exec_payload(["sh", "-c", "hostname; echo $FOO; pwd; echo $PATH"],
                                        env=["FOO=bar"], cwd="/tmp"))
        o, _, code, _ = run_result(a.until(13, {"EXIT", "ERROR"}))
        assert o.split(b"\n")[:3] == [b"smoke", b"bar", b"/tmp"], o
        # loopback is up (and has 127.0.0.1)
        a.send("EXEC", 13, exec_payload(["sh", "-c", "cat /sys/class/net/lo/flags; "
                                                     "grep -q 127.0.0.1 /proc/net/fib_trie && echo local"]))
        o, _, code, _ = run_result(a.until(13, {"EXIT", "ERROR"}))
        assert o == b"0x9\nlocal\n", o

        # signal: kill a sleeping process group
        a.send("EXEC", 15, exec_payload(["sleep", "30"]))
        assert a.until(15, {"STARTED", "EXIT"})[-1][0] == "STARTED"
        a.send("SIGNAL", 15, u32(SIGNAL, 9))
        f = a.until(15, {"EXIT"})[-1]
        assert fu32(f[2], SIGNAL) == 9, f

        # flow control: a process that never reads its stdin is offered 4 MiB
        # and gets only its window (plus what the pipe takes); the host stops
        # there and waits, and the connection stays usable meanwhile: another
        # exec runs, and a SIGNAL reaches the stuck process
        t1 = time.monotonic()
        a.send("EXEC", 67, exec_payload(["sleep", "30"], stdin=True))
        assert a.until(67, {"STARTED", "EXIT"})[-1][0] == "STARTED"
        chunk, sent = b"\x00" * 65536, 0
        while sent < (4 << 20) and a.try_send("STDIN", 67, chunk):
            sent += len(chunk)
        assert WINDOW_INITIAL <= sent < (4 << 20), sent
        a.send("EXEC", 69, exec_payload(["echo", "ok"]))
        o, _, code, _ = run_result(a.until(69, {"EXIT", "ERROR"}))
        assert (o, code) == (b"ok\n", 0), (o, code)
        while sent < (4 << 20) and a.try_send("STDIN", 67, chunk):
            sent += len(chunk)  # what the pipe buffer took meanwhile
        assert sent <= WINDOW_INITIAL + (256 << 10), sent
        a.send("SIGNAL", 67, u32(SIGNAL, 9))
        f = a.until(67, {"EXIT", "ERROR"})[-1]
        assert f[0] == "EXIT" and fu32(f[2], SIGNAL) == 9, f
        print("flow control: %d KiB of 4 MiB stdin taken by a non-reader; echo and SIGNAL "
              "got through (%.2fs)" % (sent >> 10, time.monotonic() - t1))
        # a host beyond the window fails that channel only (and kills it)
        a.send("EXEC", 71, exec_payload(["sleep", "30"], stdin=True))
        assert a.until(71, {"STARTED", "EXIT"})[-1][0] == "STARTED"
        for _ in range(2 * WINDOW_INITIAL // len(chunk)):
            a.send_raw("STDIN", 71, chunk)
        f = a.until(71, {"EXIT", "ERROR"})[-1]
        assert f[0] == "ERROR" and f[2][REASON][0] == b"agent_protocol_error", f
        a.send("EXEC", 73, exec_payload(["sh", "-c", "ps | grep -v grep | grep -c 'sleep 30' || true"]))
        o, _, code, _ = run_result(a.until(73, {"EXIT", "ERROR"}))
        assert o.strip() == b"0", "the window violator was not killed: %r" % o

        # a background process holding stdout does not hold the EXIT: it comes
        # AGENT_EXIT_GRACE_MS after the command exits, and the background
        # process keeps running (its later output is dropped)
        t1 = time.monotonic()
        a.send("EXEC", 61, exec_payload(["sh", "-c", "sleep 30 & echo started"]))
        out, err, code, _ = run_result(a.until(61, {"EXIT"}))
        assert (out, code) == (b"started\n", 0), (out, err, code)
        assert time.monotonic() - t1 < 10, "EXIT waited for the background process"
        a.send("EXEC", 63, exec_payload(["sh", "-c", "ps | grep -v grep | grep -q 'sleep 30' && echo alive"]))
        out, err, code, _ = run_result(a.until(63, {"EXIT"}))
        assert out == b"alive\n", (out, err, code)
        # output that a background process writes before the command's EXIT
        # grace ends is still delivered (no sleep in it: the grace is 200 ms
        # and a loaded TCG guest can take that long to fork; either order)
        a.send("EXEC", 65, exec_payload(["sh", "-c", "(echo late) & echo early"]))
        out, err, code, _ = run_result(a.until(65, {"EXIT"}))
        assert sorted(out.splitlines()) == [b"early", b"late"], (out, err, code)

        # file write/read round trip with NUL bytes
        blob = bytes(range(256)) * 300 + b"\x00\x00end"
        a.send("FILE_WRITE", 17, field(PATH, "/work/dir/blob.bin") + u32(MODE, 0o640) +
               u32(FLAGS, 2))
        for i in range(0, len(blob), 65536):
            a.send("DATA", 17, blob[i:i + 65536])
        a.send("DATA_END", 17)
        f = a.until(17, {"OK", "ERROR"})[-1]
        assert f[0] == "OK" and struct.unpack("<Q", f[2][SIZE][0])[0] == len(blob), f
        a.send("FILE_READ", 19, field(PATH, "/work/dir/blob.bin"))
        fr = a.until(19, {"OK", "ERROR"})
        assert fr[-1][0] == "OK", fr[-1]
        assert b"".join(x[2] for x in fr if x[0] == "DATA") == blob
        a.send("STAT", 21, field(PATH, "/work/dir/blob.bin"))
        f = a.until(21, {"STAT_RESULT", "ERROR"})[-1]
        assert f[0] == "STAT_RESULT" and fu32(f[2], MODE) == 0o640, f
        a.send("EXEC", 23, exec_payload(["sh", "-c", "md5sum /work/dir/blob.bin"]))
        o, _, code, _ = run_result(a.until(23, {"EXIT", "ERROR"}))
        import hashlib
        assert o.split()[0].decode() == hashlib.md5(blob).hexdigest(), o
        # a missing file is file_not_found; symlinks cannot escape the root
        a.send("FILE_READ", 25, field(PATH, "/nope"))
        f = a.until(25, {"OK", "ERROR"})[-1]
        assert f[0] == "ERROR" and f[2][REASON][0] == b"file_not_found", f
        a.send("EXEC", 27, exec_payload(["ln", "-s", "/../../../init", "/work/esc"]))
        run_result(a.until(27, {"EXIT", "ERROR"}))
        a.send("FILE_READ", 29, field(PATH, "/work/esc"))
        f = a.until(29, {"OK", "ERROR"})[-1]
        assert f[0] == "ERROR", "symlink escaped the root"

        # devices are refused (a read of /dev/zero would never end)
        a.send("FILE_READ", 51, field(PATH, "/dev/zero"))
        f = a.until(51, {"OK", "ERROR"})[-1]
        assert f[0] == "ERROR" and f[2][REASON][0] == b"file_error", f
        # append
        for ch, flags, data in ((53, 0, b"a\n"), (55, 4, b"b\n")):
            a.send("FILE_WRITE", ch, field(PATH, "/work/app.txt") + u32(FLAGS, flags))
            a.send("DATA", ch, data)
            a.send("DATA_END", ch)
            assert a.until(ch, {"OK", "ERROR"})[-1][0] == "OK"
        a.send("FILE_READ", 57, field(PATH, "/work/app.txt"))
        fr = a.until(57, {"OK", "ERROR"})
        assert b"".join(x[2] for x in fr if x[0] == "DATA") == b"a\nb\n", fr
        a.send("EXEC", 59, exec_payload(["rm", "/work/app.txt"]))
        run_result(a.until(59, {"EXIT", "ERROR"}))

        # LIST and TAR_OUT -> TAR_IN round trip
        a.send("LIST", 31, field(PATH, "/work") + u32(DEPTH, 2))
        fr = a.until(31, {"OK", "ERROR"})
        names = sorted(x[2][NAME][0].decode() for x in fr if x[0] == "ENTRY")
        assert names == ["dir", "dir/blob.bin", "esc"], names
        a.send("TAR_OUT", 33, field(PATH, "/work"))
        fr = a.until(33, {"OK", "ERROR"})
        assert fr[-1][0] == "OK", fr[-1]
        tar = b"".join(x[2] for x in fr if x[0] == "DATA")
        a.send("TAR_IN", 35, field(PATH, "/copy") + u32(FLAGS, 2))
        for i in range(0, len(tar), 65536):
            a.send("DATA", 35, tar[i:i + 65536])
        a.send("DATA_END", 35)
        f = a.until(35, {"OK", "ERROR"})[-1]
        assert f[0] == "OK", f
        a.send("EXEC", 37, exec_payload(["sh", "-c", "cmp /copy/dir/blob.bin /work/dir/blob.bin && readlink /copy/esc"]))
        o, e, code, _ = run_result(a.until(37, {"EXIT", "ERROR"}))
        assert code == 0 and o == b"/../../../init\n", (o, e)

        # unsafe tar entries are refused; long names survive a round trip
        import io
        import tarfile

        def mktar(entries):
            bio = io.BytesIO()
            with tarfile.open(fileobj=bio, mode="w", format=tarfile.PAX_FORMAT) as t:
                for name, kind, data in entries:
                    ti = tarfile.TarInfo(name)
                    if kind == "sym":
                        ti.type, ti.linkname = tarfile.SYMTYPE, data
                        t.addfile(ti)
                    else:
                        ti.size = len(data)
                        t.addfile(ti, io.BytesIO(data))
            return bio.getvalue()

        def tar_in(ch, path, data):
            a.send("TAR_IN", ch, field(PATH, path) + u32(FLAGS, 2))
            a.send("DATA", ch, data)
            a.send("DATA_END", ch)
            return a.until(ch, {"OK", "ERROR"})[-1]

        f = tar_in(41, "/t1", mktar([("../evil", "file", b"x")]))
        assert f[0] == "ERROR" and f[2][REASON][0] == b"image_unsafe_path", f
        f = tar_in(43, "/t2", mktar([("ln", "sym", "/etc"), ("ln/evil", "file", b"x")]))
        assert f[0] == "ERROR" and f[2][REASON][0] == b"image_unsafe_path", f
        longname = "d/" + "n" * 150 + "/" + "f" * 120
        f = tar_in(45, "/t3", mktar([(longname, "file", b"long")]))
        assert f[0] == "OK", f
        a.send("FILE_READ", 47, field(PATH, "/t3/" + longname))
        fr = a.until(47, {"OK", "ERROR"})
        assert fr[-1][0] == "OK" and fr[0][2] == b"long", fr
        a.send("TAR_OUT", 49, field(PATH, "/t3"))
        fr = a.until(49, {"OK", "ERROR"})
        names = tarfile.open(fileobj=io.BytesIO(b"".join(x[2] for x in fr if x[0] == "DATA"))).getnames()
        assert longname in names, names

        # TAR_OUT of / stays on the root filesystem (no /proc, /sys, /dev)
        a.send("TAR_OUT", 51, field(PATH, "/"))
        fr = a.until(51, {"OK", "ERROR"})
        assert fr[-1][0] == "OK", fr[-1]
        names = tarfile.open(fileobj=io.BytesIO(b"".join(x[2] for x in fr if x[0] == "DATA"))).getnames()
        assert "proc" in names and "bin/busybox" in names and "work/dir/blob.bin" in names
        assert not any(n.startswith(("proc/", "sys/", "dev/")) for n in names), names

        # reconnect: a new host connection gets a fresh session
        a.send("EXEC", 39, exec_payload(["sleep", "30"]))
        assert a.until(39, {"STARTED", "EXIT"})[-1][0] == "STARTED"
        a.s.close()
        a = Agent(sock, deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"
        a.send("EXEC", 1, exec_payload(["sh", "-c", "ps -o pid,comm | grep -c 'sleep' || true"]))
        o, _, _, _ = run_result(a.until(1, {"EXIT", "ERROR"}))
        assert o.strip() == b"0", "sleep of the old session survived: %r" % o

        # a second ACTIVATE (as after a snapshot restore) only re-sets
        # clock, seed and hostname
        a.send("ACTIVATE", 0, u64(TIME_NS, time.time_ns()) + field(SEED, os.urandom(32)) +
               field(HOSTNAME, "smoke2") + field(IMAGE_DEV, "serial:cr-image") +
               field(SCRATCH_DEV, "serial:cr-scratch"))
        assert a.until(0, {"OK", "ERROR"})[-1][0] == "OK"
        a.send("EXEC", 3, exec_payload(["sh", "-c", "hostname; cat /work/dir/blob.bin | wc -c"]))
        o, _, code, _ = run_result(a.until(3, {"EXIT", "ERROR"}))
        assert o.split() == [b"smoke2", str(len(blob)).encode()], o

        # bulk output and bulk stdin (backpressure both ways)
        t1 = time.monotonic()
        a.send("EXEC", 5, exec_payload(["dd", "if=/dev/zero", "bs=1M", "count=32"]))
        o, _, code, _ = run_result(a.until(5, {"EXIT", "ERROR"}))
        assert len(o) == 32 << 20 and code == 0
        dt = time.monotonic() - t1
        print("exec stdout: 32 MiB in %.2fs (%.0f MiB/s)" % (dt, 32 / dt))
        t1 = time.monotonic()
        a.send("EXEC", 7, exec_payload(["sh", "-c", "cat | wc -c"], stdin=True))
        chunk = os.urandom(65536)
        for _ in range(256):
            a.send("STDIN", 7, chunk)
        a.send("STDIN_EOF", 7)
        o, _, code, _ = run_result(a.until(7, {"EXIT", "ERROR"}))
        assert o.strip() == str(256 * 65536).encode(), o
        dt = time.monotonic() - t1
        print("exec stdin: 16 MiB in %.2fs (%.0f MiB/s)" % (dt, 16 / dt))

        # garbage from the host resets the session; the next host is served
        a.send("EXEC", 9, exec_payload(["sleep", "30"]))
        assert a.until(9, {"STARTED", "EXIT"})[-1][0] == "STARTED"
        a.s.sendall(HDR.pack(4, T["EXEC"], 1, 11) + b"junk" + os.urandom(100))
        a.s.close()
        a = Agent(sock, deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"

        # random (well-framed) requests and raw garbage: the agent answers
        # or ignores them, and keeps serving
        import random
        rnd = random.Random(1234)
        kinds = ["EXEC", "STDIN", "STDIN_EOF", "SIGNAL", "FILE_READ", "FILE_WRITE",
                 "STAT", "LIST", "TAR_OUT", "TAR_IN", "CANCEL", "DATA", "DATA_END",
                 "HELLO"]
        for i in range(300):
            typ = rnd.choice(kinds)
            ch = 0 if typ == "HELLO" else rnd.choice([1, 3, 5, 1001 + 2 * i])
            p = b""
            for _ in range(rnd.randrange(0, 5)):
                tag = rnd.randrange(0, 40)
                n = rnd.choice([0, 1, 4, 8, rnd.randrange(0, 300)])
                val = bytes(rnd.randrange(256) for _ in range(n))
                if tag in (ARGV, PATH, CWD) and rnd.random() < 0.5:
                    val = rnd.choice([b"/", b"/etc", b"/nonexistent", b"..", b"/proc/self",
                                      b"true", b"/dev/zero"])
                p += field(tag, val)
            if rnd.random() < 0.1:
                p = p[:rnd.randrange(0, len(p) + 1)]  # truncated field list
            a.send(typ, ch, p)
        a.s.close()
        for i in range(3):  # raw garbage, one connection each
            g = Agent(sock, deadline)
            g.s.sendall(os.urandom(rnd.randrange(1, 5000)))
            g.s.close()
        a = Agent(sock, deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"
        a.send("EXEC", 1, exec_payload(["echo", "still here"]))
        o, _, code, _ = run_result(a.until(1, {"EXIT", "ERROR"}))
        assert (o, code) == (b"still here\n", 0), o

        # idle without a host must not burn CPU (agent = /proc/1 in the guest)
        def agent_ticks(ch):
            a.send("EXEC", ch, exec_payload(["cat", "/proc/1/stat"]))
            o, _, _, _ = run_result(a.until(ch, {"EXIT", "ERROR"}))
            fields = o.rsplit(b")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        before = agent_ticks(13)
        a.s.close()
        time.sleep(3)  # measurement window, not synchronization
        t1 = time.monotonic()
        a = Agent(sock, deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"
        print("reconnect to an idle agent: HELLO answered in %.3fs" % (time.monotonic() - t1))
        used = agent_ticks(15) - before
        print("agent CPU while idle without a host for 3 s: %d ticks (1/100 s)" % used)
        assert used < 15, used

        a.send("SHUTDOWN", 0)
        assert a.until(0, {"OK", "ERROR"})[-1][0] == "OK"
        qemu.wait(timeout=max(1, deadline - time.monotonic()))
        print("guest powered off; %.1fs so far" % (time.monotonic() - start_all))
        if os.environ.get("CR_SMOKE_CONSOLE"):
            sys.stdout.write(open(console, errors="replace").read())

        # second boot without a scratch disk: the upper layer is a tmpfs
        sock = os.path.join(tmp, "agent2.sock")
        qemu = subprocess.Popen(qemu_cmd(False), stdin=subprocess.DEVNULL)
        a = Agent(sock, deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"
        a.send("ACTIVATE", 0, u64(TIME_NS, time.time_ns()) + field(HOSTNAME, "tmpfs") +
               field(IMAGE_DEV, "serial:cr-image"))
        act = a.until(0, {"OK", "ERROR"})[-1]
        assert act[0] == "OK", act
        a.send("EXEC", 1, exec_payload(["sh", "-c", "echo x > /f && cat /f && ls /work 2>&1; "
                                                    "grep -c ' / overlay' /proc/mounts"]))
        o, _, code, _ = run_result(a.until(1, {"EXIT", "ERROR"}))
        assert o.split(b"\n")[0] == b"x" and b"No such file" in o, o
        a.send("SHUTDOWN", 0)
        assert a.until(0, {"OK", "ERROR"})[-1][0] == "OK"
        qemu.wait(timeout=max(1, deadline - time.monotonic()))
        print("tmpfs-upper boot ok; total %.1fs" % (time.monotonic() - start_all))

        # snapshot a template after HELLO (before ACTIVATE), restore a clone:
        # it must answer the new host and activate with its own identity
        sock = os.path.join(tmp, "agent.sock")
        subprocess.run(["mkfs.ext4", "-q", "-F", scratch], check=True)
        qemu = subprocess.Popen(snapshot_cmd("tmpl", "on", False), stdin=subprocess.DEVNULL)
        a = Agent(os.path.join(tmp, "tmpl.sock"), deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"
        q = Qmp(os.path.join(tmp, "tmpl.qmp"), deadline)
        q.cmd("stop")
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": "x-ignore-shared", "state": True}])
        q.cmd("migrate", uri="exec:cat > " + os.path.join(tmp, "state"))
        q.wait_migration(deadline)
        qemu.kill()
        qemu.wait()
        a.s.close()
        t1 = time.monotonic()
        qemu = subprocess.Popen(snapshot_cmd("clone", "off", True), stdin=subprocess.DEVNULL)
        q = Qmp(os.path.join(tmp, "clone.qmp"), deadline)
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": "x-ignore-shared", "state": True}])
        q.cmd("migrate-incoming", uri="exec:cat " + os.path.join(tmp, "state"))
        q.wait_migration(deadline)
        q.cmd("cont")
        a = Agent(os.path.join(tmp, "clone.sock"), deadline)
        a.send("HELLO", 0, u32(VERSION, 1))
        assert a.until(0, {"HELLO_REPLY"})[-1][0] == "HELLO_REPLY"
        t_clone = time.monotonic() - t1
        a.send("ACTIVATE", 0, u64(TIME_NS, time.time_ns()) + field(SEED, os.urandom(32)) +
               field(HOSTNAME, "clone") + field(IMAGE_DEV, "serial:cr-image") +
               field(SCRATCH_DEV, "serial:cr-scratch"))
        assert a.until(0, {"OK", "ERROR"})[-1][0] == "OK"
        a.send("EXEC", 1, exec_payload(["hostname"]))
        o, _, code, _ = run_result(a.until(1, {"EXIT", "ERROR"}))
        assert (o, code) == (b"clone\n", 0), o
        print("clone restored: HELLO answered %.3fs after QEMU start, first exec after "
              "ACTIVATE at %.3fs" % (t_clone, time.monotonic() - t1))
        qemu.kill()
        qemu.wait()
        print("total %.1fs" % (time.monotonic() - start_all))
        return 0
    except Exception:
        c = os.path.join(tmp, "console.log")
        if os.path.exists(c):
            sys.stderr.write("---- guest console ----\n" + open(c, errors="replace").read())
        raise
    finally:
        if qemu and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
