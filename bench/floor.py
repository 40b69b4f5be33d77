"""Runs ../shared/bench/qemu-floor.py, the bare-QEMU floor the benchmarks
report themselves against, and returns its result (its last output line).

qemu-floor.py picks KVM whenever /dev/kvm is writable; where /dev/kvm exists
but cannot run guests (no vmx/svm), it is run in a private mount namespace
without /dev/kvm so that the floor measures TCG, as cleanroom does."""
import json, os, shutil, subprocess, sys, tempfile


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
    cmd = [sys.executable, floor_py, "--runs", str(runs), "--mem", str(mem), "--workdir", work]
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
