"""Runs ../shared/bench/qemu-floor.py, the bare-QEMU floor the benchmarks
report themselves against, and returns its result (its last output line).

qemu-floor.py picks KVM whenever /dev/kvm is writable; where /dev/kvm exists
but cannot run guests (no vmx/svm), it is run in a private mount namespace
without /dev/kvm so that the floor measures TCG, as cleanroom does.

qemu-floor.py's ping writes a line every 50 ms with a 50 ms socket timeout
on the send too: when a cold boot takes longer than the socket buffer lasts
(about 3.5 s; seen on a machine whose cold boot takes 4 s), its sendall
times out and the whole floor fails. It is therefore run through a small
driver that loads it as a module and replaces only that probe with one that
skips a send the full buffer cannot take (the lines already queued reach the
guest when it opens its port), and that retries a connect refused in the
moment between QEMU creating the socket and listening on it (seen under
load). Its QEMU command lines, timing points and output are its own."""
import json, os, shutil, subprocess, sys, tempfile

# Loads qemu-floor.py (argv[1]), swaps its ping, runs its main (argv[2:]).
DRIVER = r"""
import importlib.util, socket, sys, time
spec = importlib.util.spec_from_file_location("qemu_floor", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)

def ping(work, tag, deadline):
    m.wait_path(f"{work}/agent{tag}.sock", deadline)
    s = socket.socket(socket.AF_UNIX)
    while True:  # the path exists a moment before QEMU listens on it
        try:
            s.connect(f"{work}/agent{tag}.sock")
            break
        except ConnectionRefusedError:
            if time.time() > deadline:
                raise
            time.sleep(0.002)
    s.settimeout(0.05)
    while time.time() < deadline:
        try:
            s.sendall(b"x\n")
        except socket.timeout:
            pass  # the buffer is full: the guest has not opened its port yet
        try:
            if b"pong" in s.recv(64):
                return
        except socket.timeout:
            pass
    raise TimeoutError("agent")

m.ping = ping
sys.argv = [sys.argv[1]] + sys.argv[2:]
sys.exit(m.main())
"""


def kvm_unusable():
    if not os.path.exists("/dev/kvm"):
        return False
    flags = open("/proc/cpuinfo").read()
    return " vmx" not in flags and " svm" not in flags


def run_floor(floor_py, runs, mem):
    """Returns (result dict, None) or (None, why)."""
    if not os.path.exists(floor_py):
        return None, f"{floor_py} not found"
    # a work dir of its own: two benches running the floor at once must not
    # share qemu-floor.py's default /tmp/qemu-floor
    work = tempfile.mkdtemp(prefix="cr-floor-")
    cmd = [sys.executable, "-c", DRIVER, floor_py, "--runs", str(runs), "--mem", str(mem), "--workdir", work]
    if kvm_unusable():
        cmd = ["unshare", "-m", "sh", "-c", "mount --bind /dev/null /dev/kvm && exec \"$@\"", "sh"] + cmd
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1]), None
    except Exception as e:  # noqa: BLE001 - reported to the caller
        return None, f"{e}: {out.stderr[-300:]}"
