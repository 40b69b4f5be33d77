"""Shared parts of the Python integration tests: a daemon of their own in a
temp dir, the CLI, the control API, and the helpers every test needs
(deadlines, waiting for a process, QEMU leftovers). New tests use all of it;
older ones use the helpers and still carry their own daemon set-up.

    with crtest.Daemon("console") as d:
        d.import_test_image()
        sid = d.cr("sandbox", "create", "--image", crtest.IMAGE, check=True).stdout.split()[-1]
        d.rpc("sandbox.get", {"id": sid})

Every wait has a deadline; leaving the `with` stops the daemon (SIGTERM,
then SIGKILL), kills any VMM left under the temp dir and removes it."""
import json, os, select, shutil, signal, socket, subprocess, sys, tempfile, time

IMAGE = "test/busybox"
MEM = "256"


def vm_enabled():
    """Exits 77 (meson's skip) unless the VM tests are enabled."""
    if os.environ.get("CLEANROOM_TEST_VM") != "1":
        print("skip: CLEANROOM_TEST_VM != 1")
        sys.exit(77)


def vmm_pids(tmp):
    """QEMU processes whose command line names tmp (through /proc: no pgrep)."""
    return [pid for pid, _ in qemu_leftovers(tmp)]


def qemu_leftovers(tmp):
    """[(pid, command line)] of the QEMU processes whose command line names tmp."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmd and tmp in cmd:
            out.append((int(d), cmd))
    return out


def wait_pid_exit(pid, timeout):
    """Waits (at most timeout s) for a process that is not our child to exit
    (pidfd); True when it did."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        r, _, _ = select.select([fd], [], [], timeout)
        return bool(r)
    finally:
        os.close(fd)


def deadline(seconds):
    """A unittest mixin class: each test fails with TimeoutError once it ran
    `seconds` (SIGALRM)."""
    class Deadline:
        def setUp(self):
            def expired(signum, frame):
                raise TimeoutError("test deadline of %d s passed" % seconds)
            signal.signal(signal.SIGALRM, expired)
            signal.alarm(seconds)

        def tearDown(self):
            signal.alarm(0)
    return Deadline


class Conn:
    """One control-API connection (JSON-RPC lines)."""

    def __init__(self, path, timeout=120):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
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
        while True:  # skip notifications
            line = self.f.readline()
            if not line:
                raise ConnectionError("the daemon closed the connection")
            msg = json.loads(line)
            if msg.get("id") == i:
                return msg

    def call(self, method, params=None):
        return self.reply(self.send(method, params))

    def close(self):
        self.f.close()
        self.s.close()


class Daemon:
    def __init__(self, name, extra_env=None, cmd_timeout=300):
        self.tmp = tempfile.mkdtemp(prefix=f"cr-{name}-")
        self.env = dict(os.environ, CLEANROOM_DATA_DIR=f"{self.tmp}/data",
                        CLEANROOM_RUN_DIR=f"{self.tmp}/run")
        self.env.update(extra_env or {})
        self.env.pop("CLEANROOM_HOST", None)
        self.env.pop("CLEANROOM_IMAGE", None)
        self.bin = os.environ["CLEANROOM_BIN"]
        self.sock = f"{self.tmp}/run/cleanroom.sock"
        self.log = f"{self.tmp}/daemon.log"
        self.cmd_timeout = cmd_timeout
        self.proc = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self, deadline_s=30):
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([self.bin, "serve"], env=self.env, stderr=log)
        deadline = time.time() + deadline_s
        while True:  # wait for the daemon to listen (bounded)
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(self.sock)
                return
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the daemon did not start:\n" + self.log_tail())
                time.sleep(0.05)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in vmm_pids(self.tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, n=4000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def cr(self, *args, check=False, timeout=None, **kw):
        p = subprocess.run([self.bin, *args], env=self.env, capture_output=True,
                           timeout=timeout or self.cmd_timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"cleanroom {' '.join(args)} -> {p.returncode}: "
                                 f"{p.stderr.decode(errors='replace')}")
        return p

    def import_test_image(self):
        self.cr("image", "import", os.environ["CLEANROOM_TEST_IMAGE_TAR"], "--ref", IMAGE,
                check=True)

    def conn(self):
        return Conn(self.sock)

    def rpc(self, method, params=None):
        c = self.conn()
        try:
            return c.call(method, params)
        finally:
            c.close()
