#!/usr/bin/env python3
"""Workspace: a 10k-file repository into a sandbox, and `workspace diff` of it
with 3 changed files, beside the agent channel's raw transfer rate.

Through the real daemon's control API:
  fetch      workspace.resolve of a new file:// remote (mirror cache fill)
  refetch    the same again (cache hit: nothing fetched)
  checkout   workspace.checkout (goal < 3 s): the tree written on the host,
             `mkfs.ext4 -d` of it onto the sandbox's workspace disk, mounted
             by the guest (method "disk"; "tar" = the older TAR_IN path);
             shown beside its native floor: the same tree extracted (git
             archive | tar -x) into /dev/shm plus `mkfs.ext4 -d` of it on the
             host, no VM involved
  diff       workspace.diff after 3 files changed (goal < 0.5 s), and the
             no-change diff; shown beside LIST + 3 reads
  raw        tar-in rate (workspace.copy_in of one 16 MiB file) and read rate
             (file.read of a 16 MiB guest file) of the agent channel

Usage: bench/workspace.py [--files N] [--runs N] [--bin PATH] [--mem MIB]
Needs an installed kernel and git. Prints one JSON object on the last line."""
import argparse, base64, io, json, os, shutil, socket, statistics, subprocess, sys, tarfile
import tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--files", type=int, default=10000)
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
ap.add_argument("--mem", type=int, default=512)
a = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="cr-bench-ws-")
env = dict(os.environ, CLEANROOM_RUN_DIR=f"{tmp}/run", CLEANROOM_DATA_DIR=f"{tmp}/data")
env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
genv = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.invalid",
            GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid", HOME=tmp)
daemon = None
sid = None


def git(*args, cwd):
    subprocess.run(["git"] + list(args), cwd=cwd, env=genv, check=True, capture_output=True)


try:
    # a repository of a.files small files in 100 directories (~1 KiB each)
    work = f"{tmp}/repo"
    os.makedirs(work)
    git("init", "-q", "-b", "main", cwd=work)
    for i in range(a.files):
        d = f"{work}/d{i % 100:02d}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/f{i:05d}.txt", "w") as f:
            f.write(("line %d of file %d\n" % (i, i)) * (8 + i % 64))
    git("add", "-A", cwd=work)
    git("commit", "-qm", "bench", cwd=work)
    git("clone", "-q", "--bare", work, f"{tmp}/remote.git", cwd=tmp)
    url = f"file://{tmp}/remote.git"

    subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"],
                   check=True, capture_output=True)
    daemon = subprocess.Popen([a.bin, "serve"], env=env, stderr=subprocess.DEVNULL)
    s = socket.socket(socket.AF_UNIX)
    for _ in range(400):
        try:
            s.connect(f"{tmp}/run/cleanroom.sock")
            break
        except OSError:
            time.sleep(0.025)
    f = s.makefile("rw")
    subprocess.run([a.bin, "image", "import", f"{tmp}/bb.tar", "--ref", "bench/busybox"],
                   env=env, check=True, capture_output=True)
    n = 0

    def call(method, params):
        global n
        n += 1
        f.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}) + "\n")
        f.flush()
        while True:
            m = json.loads(f.readline())
            if m.get("id") == n:
                if "error" in m:
                    raise SystemExit(f"{method}: {m['error']}")
                return m["result"]

    def timed(method, params):
        t = time.perf_counter()
        r = call(method, params)
        return time.perf_counter() - t, r

    t_fetch, r = timed("workspace.resolve", {"repo_url": url})
    t_refetch, r2 = timed("workspace.resolve", {"repo_url": url})
    assert not r2["fetched"], r2
    sid = call("sandbox.create", {"image": "bench/busybox", "memory_mib": a.mem})["id"]
    t_checkout, ws = timed("workspace.checkout", {"sandbox_id": sid, "repo_url": url})

    # the checkout's native floor: the same tree and mkfs on the host alone
    floor_dir = tempfile.mkdtemp(prefix="cr-bench-ws-floor-", dir="/dev/shm")
    try:
        os.makedirs(f"{floor_dir}/t")
        t = time.perf_counter()
        arch = subprocess.Popen(["git", "-C", f"{tmp}/remote.git", "archive", "HEAD"],
                                stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", f"{floor_dir}/t"], stdin=arch.stdout, check=True)
        arch.stdout.close()
        arch.wait()
        with open(f"{floor_dir}/img", "wb") as im:
            im.truncate(8192 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                        "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0",
                        "-d", f"{floor_dir}/t", f"{floor_dir}/img"], check=True, capture_output=True)
        t_native = time.perf_counter() - t
    finally:
        shutil.rmtree(floor_dir, ignore_errors=True)

    def sh(script):
        e = call("execution.create", {"sandbox_id": sid, "argv": ["sh", "-c", script], "attach": False})
        x = call("execution.wait", {"execution_id": e["execution_id"]})
        assert x["exit_code"] == 0, x

    sh("test $(find /workspace -type f | wc -l) -eq %d" % a.files)
    nochange = [timed("workspace.diff", {"sandbox_id": sid})[0] for _ in range(a.runs)]
    sh("cd /workspace && echo change >> d00/f00000.txt && echo change >> d50/f00050.txt && "
       "rm d99/f00099.txt && echo new > added.txt")
    diffs, previews = [], []
    for _ in range(a.runs):
        t, d = timed("workspace.diff", {"sandbox_id": sid})
        diffs.append(t)
        previews.append(timed("workspace.diff", {"sandbox_id": sid, "stat_only": True})[0])
    assert len(d["files"]) == 4, d["files"]

    # raw channel: tar-in of one 16 MiB file (2 MiB pieces), read of a 16 MiB file
    big = os.urandom(16 << 20)
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo("raw.bin")
        ti.size = len(big)
        tf.addfile(ti, io.BytesIO(big))
    tb = bio.getvalue()
    t = time.perf_counter()
    for off in range(0, len(tb), 2 << 20):
        piece = tb[off:off + (2 << 20)]
        call("workspace.copy_in", {"sandbox_id": sid, "tar": base64.b64encode(piece).decode(),
                                   "more": off + len(piece) < len(tb)})
    t_rawin = time.perf_counter() - t
    t = time.perf_counter()
    got = 0
    while got < len(big):
        r = call("file.read", {"sandbox_id": sid, "path": "/workspace/raw.bin", "offset": got,
                               "length": 2 << 20})
        got += len(base64.b64decode(r["data"]))
    t_rawout = time.perf_counter() - t
    mb = lambda b, s: round(b / s / 1e6, 1)
    res = {
        "files": a.files, "method": ws.get("method", "tar"), "timing_ms": ws.get("timing_ms"),
        "fetch_s": round(t_fetch, 3), "refetch_s": round(t_refetch, 3),
        "checkout_s": round(t_checkout, 3), "checkout_goal_s": 3.0,
        "checkout_floor_s": round(t_native, 3),
        "checkout_vs_floor": round(t_checkout / t_native, 2),
        "diff_3_changed_s": round(statistics.median(diffs), 3), "diff_goal_s": 0.5,
        "preview_s": round(statistics.median(previews), 3),
        "diff_no_change_s": round(statistics.median(nochange), 3),
        "diff_read_files": d["stats"]["read"], "diff_listed": d["stats"]["listed"],
        "diff_timing_ms": d["stats"].get("timing_ms"),
        "raw_tar_in_MBps": mb(len(tb), t_rawin), "raw_read_MBps": mb(len(big), t_rawout),
    }
    print("10k-file checkout %.2f s (goal < 3 s; method %s %s; %.2f x its native floor %.2f s: "
          "git archive | tar -x into /dev/shm + mkfs.ext4 -d on the host)"
          % (t_checkout, res["method"], json.dumps(res["timing_ms"]), res["checkout_vs_floor"],
             t_native))
    print("diff, 3 changed + 1 added: %.3f s (goal < 0.5 s), preview %.3f s, no change %.3f s; read %d of %d listed; last %s"
          % (res["diff_3_changed_s"], res["preview_s"], res["diff_no_change_s"],
             res["diff_read_files"], res["diff_listed"], json.dumps(res["diff_timing_ms"])))
    print("raw channel: tar-in %.1f MB/s, file.read %.1f MB/s" % (res["raw_tar_in_MBps"], res["raw_read_MBps"]))
    print(json.dumps(res))
finally:
    try:
        if sid:
            call("sandbox.terminate", {"id": sid})
    except Exception:
        pass
    if daemon:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
    shutil.rmtree(tmp, ignore_errors=True)
