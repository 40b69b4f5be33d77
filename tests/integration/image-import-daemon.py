#!/usr/bin/env python3
"""Image import and removal go through the daemon (it owns the image store).

- `cleanroom image import` and `image rm` talk to the daemon (image.import
  with the archive's descriptor passed over the socket, image.remove);
- an import runs off the loop: while the image store's lock is held by this
  test (so the import's worker thread waits for it), another client's exec on
  a running sandbox is answered and the import is still pending; once the
  lock is released, the import completes;
- a corrupt tar and a tar with an unsafe path give their reason codes
  through the API (error.data.reason) and through the CLI;
- image.import without a descriptor is refused (invalid_params).
Real daemon, real QEMU VM.

Needs CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR."""
import fcntl, io, json, os, select, shutil, signal, socket, subprocess, sys, tarfile, tempfile, time

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("skip: CLEANROOM_TEST_VM != 1")
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
TAR = os.environ["CLEANROOM_TEST_IMAGE_TAR"]
DEADLINE = 240
tmp = tempfile.mkdtemp(prefix="cr-imp-")
env = dict(os.environ, CLEANROOM_DATA_DIR=f"{tmp}/data", CLEANROOM_RUN_DIR=f"{tmp}/run",
           CLEANROOM_POOL_SIZE="0")
env.pop("CLEANROOM_HOST", None)
env.pop("CLEANROOM_IMAGE", None)
sock_path = f"{tmp}/run/cleanroom.sock"
daemon = None
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


def vmm_pids():
    out = subprocess.run(["pgrep", "-f", f"qemu-system.*{tmp}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def cr(*args, timeout=120):
    return subprocess.run([BIN, *args], env=env, capture_output=True, timeout=timeout)


class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(120)
        self.s.connect(sock_path)
        self.f = self.s.makefile("r")
        self.next = 1
        self.notes = []

    def send(self, method, params=None, fd=None):
        i = self.next
        self.next += 1
        line = (json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                            "params": params or {}}) + "\n").encode()
        if fd is None:
            self.s.sendall(line)
        else:  # the descriptor rides on the request's first bytes, as the CLI sends it
            n = socket.send_fds(self.s, [line], [fd])
            self.s.sendall(line[n:])
        return i

    def reply(self, i):
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("id") == i:
                return msg
            self.notes.append(msg)

    def call(self, method, params=None, fd=None):
        return self.reply(self.send(method, params, fd))

    def pending(self):
        """Nothing has arrived yet (every earlier message was read to its end)."""
        return not select.select([self.s], [], [], 0)[0]

    def close(self):
        self.f.close()
        self.s.close()


def reason(msg):
    return ((msg.get("error") or {}).get("data") or {}).get("reason")


def import_fd(c, path, ref):
    fd = os.open(path, os.O_RDONLY)
    try:
        return c.call("image.import", {"path": path, "ref": ref}, fd=fd)
    finally:
        os.close(fd)


def non_root_dirs():
    """A directory from a client that is not root is checked entry by entry
    (the daemon reads inside it): here a daemon and its client both run as
    nobody (setpriv), so the client is not root."""
    if not shutil.which("setpriv"):
        print("info: no setpriv: the non-root directory check is not tried")
        return
    global nr_daemon
    nr = f"{tmp}/nr"
    for d in ("data", "run", "lay/blobs", "priv/d"):
        os.makedirs(f"{nr}/{d}")
    with open(f"{nr}/lay/index.json", "w") as f:
        f.write("{}")
    os.symlink("/etc/shadow", f"{nr}/lay/blobs/evil")
    with open(f"{nr}/priv/d/f", "w") as f:
        f.write("secret")
    for root, dirs, files in os.walk(nr):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), 65534, 65534)
    os.chown(nr, 65534, 65534)
    os.chown(f"{nr}/priv/d/f", 0, 0)
    os.chmod(f"{nr}/priv/d/f", 0o600)
    os.chmod(tmp, 0o755)
    nenv = dict(env, CLEANROOM_DATA_DIR=f"{nr}/data", CLEANROOM_RUN_DIR=f"{nr}/run")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    nr_daemon = subprocess.Popen(as_nobody + [BIN, "serve"], env=nenv,
                                 stderr=open(f"{tmp}/nr-daemon.log", "w"))
    sock = f"{nr}/run/cleanroom.sock"
    deadline = time.time() + 20
    while not os.path.exists(sock):  # bounded wait for the socket
        if time.time() > deadline or nr_daemon.poll() is not None:
            raise AssertionError("the non-root daemon did not start")
        time.sleep(0.05)
    for d, want in (("lay", b"'blobs/evil' is a symlink"), ("priv", b"may not read 'd/f'")):
        p = subprocess.run(as_nobody + [BIN, "image", "import", f"{nr}/{d}", "--ref", "x/y"],
                           env=nenv, capture_output=True, timeout=60)
        check(p.returncode != 0 and b"permission_denied" in p.stderr and want in p.stderr,
              f"a non-root client's directory with {d}: permission_denied ({p.stderr.decode().strip()})")


nr_daemon = None
signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("test deadline")))
signal.alarm(DEADLINE)
try:
    daemon = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{tmp}/daemon.log", "w"))
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

    # the CLI imports through the daemon: its --json is the daemon's Image
    p = cr("image", "import", TAR, "--ref", "test/busybox", "--json")
    check(p.returncode == 0, f"cleanroom image import exits 0 ({p.stderr.decode()[-300:]})")
    img = json.loads(p.stdout) if p.returncode == 0 else {}
    check(img.get("imported_from") == os.path.realpath(TAR) and
          "test/busybox:latest" in img.get("refs", []),
          f"the image records the client's path and the ref ({img.get('imported_from')}, {img.get('refs')})")
    c1, c2 = Conn(), Conn()
    lst = c1.call("image.list")["result"]["images"]
    check([i["digest"] for i in lst] == [img.get("digest")], "the daemon lists the imported image")

    # no descriptor: refused
    r = c1.call("image.import", {"path": TAR, "ref": "test/nofd"})
    check(r.get("error", {}).get("code") == -32602, f"image.import without a descriptor is refused ({r})")

    # a corrupt tar and a tar with an unsafe path: their reason codes
    corrupt = f"{tmp}/corrupt.tar"
    with open(TAR, "rb") as f:
        data = f.read(3 * 512)
    with open(corrupt, "wb") as f:  # a tar header whose checksum is wrong, then garbage
        f.write(data[:148] + b"9999999\0" + data[156:512] + os.urandom(4096))
    r = import_fd(c1, corrupt, "test/corrupt")
    check(reason(r) == "image_invalid", f"a corrupt tar fails with image_invalid via the API ({r.get('error')})")
    p = cr("image", "import", corrupt, "--ref", "test/corrupt")
    check(p.returncode != 0 and b"image_invalid" in p.stderr,
          f"... and via the CLI (exit {p.returncode}: {p.stderr.decode()[-200:]})")
    unsafe = f"{tmp}/unsafe.tar"
    with tarfile.open(unsafe, "w") as t:
        ti = tarfile.TarInfo("../escape")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"hi\n"))
    r = import_fd(c1, unsafe, "test/unsafe")
    check(reason(r) == "image_unsafe_path", f"a tar with ../ fails with image_unsafe_path via the API ({r.get('error')})")
    check(unsafe in (r.get("error") or {}).get("message", "") and "/proc/self/fd" not in r["error"]["message"],
          "the error names the client's path, not the daemon's descriptor")
    p = cr("image", "import", unsafe, "--ref", "test/unsafe")
    check(p.returncode != 0 and b"image_unsafe_path" in p.stderr,
          f"... and via the CLI (exit {p.returncode})")
    lst = c1.call("image.list")["result"]["images"]
    check(len(lst) == 1, f"failed imports leave nothing in the store ({len(lst)} images)")

    # an import blocked on the store lock does not block the loop
    r = c2.call("sandbox.create", {"image": "test/busybox", "memory_mib": 256})
    check("result" in r, f"a sandbox is ready ({r.get('error')})")
    sid = r["result"]["id"]
    other = f"{tmp}/other.tar"
    with tarfile.open(other, "w") as t:  # another rootfs: another digest, a full import
        with tarfile.open(TAR) as src:
            for m in src.getmembers():
                t.addfile(m, src.extractfile(m) if m.isreg() else None)
        ti = tarfile.TarInfo("etc/other-image")
        ti.size = 6
        t.addfile(ti, io.BytesIO(b"other\n"))
    lock = os.open(f"{tmp}/data/images/.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    locked = True
    try:
        fd = os.open(other, os.O_RDONLY)
        imp = c1.send("image.import", {"path": other, "ref": "test/other"}, fd=fd)
        os.close(fd)
        t0 = time.monotonic()
        ex = c2.call("execution.create", {"sandbox_id": sid, "argv": ["true"], "attach": False})
        check("result" in ex, f"an exec on the running sandbox starts ({ex.get('error')})")
        w = c2.call("execution.wait", {"execution_id": ex["result"]["execution_id"]})
        check((w.get("result") or {}).get("exit_code") == 0, f"it exits 0 ({w})")
        check(c2.call("image.list").get("result") is not None, "image.list is answered too")
        check(c1.pending(), "all that while the import waits for the store lock (no reply yet, "
                            f"{(time.monotonic() - t0) * 1000:.0f} ms)")
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    r = c1.reply(imp)
    check("result" in r and "test/other:latest" in r["result"]["image"]["refs"],
          f"the import completes once the lock is free ({r.get('error')})")
    phases = [n["params"]["phase"] for n in c1.notes
              if n.get("method") == "image.progress" and n["params"].get("request_id") == imp]
    check("done" in phases and "formatting ext4" in phases, f"with progress notifications ({phases})")

    # image rm goes through image.remove
    p = cr("image", "rm", "test/other")
    check(p.returncode == 0 and p.stdout.decode().startswith("Deleted: sha256:"),
          f"cleanroom image rm deletes the image ({p.stdout.decode().strip()} {p.stderr.decode()[-200:]})")
    p = cr("image", "rm", "test/nonexistent")
    check(p.returncode != 0 and b"image_not_found" in p.stderr,
          f"image rm of an unknown ref fails with image_not_found ({p.stderr.decode().strip()})")
    lst = c1.call("image.list")["result"]["images"]
    check([i["digest"] for i in lst] == [img.get("digest")], "only the first image is left")
    r = c2.call("sandbox.terminate", {"id": sid})
    check("result" in r, "the sandbox is removed")
    c1.close()
    c2.close()
    non_root_dirs()
except Exception as e:  # report, then clean up
    print(f"FAIL: {e!r}")
    failures += 1
finally:
    signal.alarm(0)
    for pid in vmm_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for dm in (nr_daemon, daemon):
        if not dm:
            continue
        dm.terminate()
        try:
            dm.wait(20)
        except subprocess.TimeoutExpired:
            dm.kill()
            dm.wait()
    shutil.rmtree(tmp, ignore_errors=True)

print(f"image-import-daemon: {failures} failure(s)")
sys.exit(1 if failures else 0)
