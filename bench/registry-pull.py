#!/usr/bin/env python3
"""Pull throughput from a loopback registry, beside curl fetching the same blobs.

Builds a ~100 MiB image (4 incompressible gzip layers + the busybox rootfs),
pushes it with skopeo to Debian's docker-registry on 127.0.0.1, then:
  curl    : the same layer blobs with `curl --parallel --parallel-max 4`
            into files (what a pull must at least do)
  pull    : `cleanroom image pull --json` into an empty store; the download
            phase is timed from the first "downloading" event to the first
            "extracting" one, end-to-end includes extraction and mkfs.ext4
  again   : the same pull a second time (only manifests are fetched)
Prints MiB/s and the ratio pull/curl for the download phase (goal >= 0.8).

  bench/registry-pull.py [--bin build/cleanroom] [--mib 100] [--runs 2]
Needs docker-registry, skopeo, curl (scripts/deps.sh). Everything lives in a
temp dir that is removed at the end; registry and daemon are stopped.
"""
import argparse
import gzip
import hashlib
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tar_of(name, data):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w") as t:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "cleanroom"))
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--busybox-tar", default=os.environ.get("CLEANROOM_TEST_IMAGE_TAR"))
    a = ap.parse_args()
    for prog in ("docker-registry", "skopeo", "curl"):
        if not shutil.which(prog):
            sys.exit("needs %s (scripts/deps.sh)" % prog)
    tmp = tempfile.mkdtemp(prefix="cr-bench-reg-")
    reg = None
    env = dict(os.environ, CLEANROOM_RUN_DIR=os.path.join(tmp, "run"),
               ASAN_OPTIONS="detect_leaks=0")
    env.pop("CLEANROOM_HOST", None)
    try:
        port = free_port()
        cfg = os.path.join(tmp, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                    "storage:\n  filesystem:\n    rootdirectory: %s/regdata\n"
                    "http:\n  addr: 127.0.0.1:%d\n" % (tmp, port))
        reg = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or reg.poll() is not None:
                    sys.exit("docker-registry did not start")
                time.sleep(0.05)
        # the layout: busybox (when given) + 4 random layers
        lay = os.path.join(tmp, "layout")
        os.makedirs(os.path.join(lay, "blobs", "sha256"))

        def blob(data):
            h = sha(data)
            with open(os.path.join(lay, "blobs", "sha256", h), "wb") as f:
                f.write(data)
            return h
        raws = []
        if a.busybox_tar:
            with open(a.busybox_tar, "rb") as f:
                raws.append(f.read())
        per = (a.mib << 20) // 4
        for i in range(4):
            raws.append(tar_of("data/blob%d.bin" % i, os.urandom(per)))
        descs, diff = [], []
        for raw in raws:
            data = gzip.compress(raw, compresslevel=1, mtime=0)
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": "sha256:" + blob(data), "size": len(data)})
            diff.append("sha256:" + sha(raw))
        conf = json.dumps({"architecture": "amd64", "os": "linux",
                           "rootfs": {"type": "layers", "diff_ids": diff}}).encode()
        man = json.dumps({"schemaVersion": 2,
                          "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                     "digest": "sha256:" + blob(conf), "size": len(conf)},
                          "layers": descs}).encode()
        mh = blob(man)
        with open(os.path.join(lay, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + mh, "size": len(man),
                "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, f)
        with open(os.path.join(lay, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        ref = "127.0.0.1:%d/bench/big:big" % port
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        "oci:%s:big" % lay, "docker://" + ref], check=True)
        total = sum(d["size"] for d in descs)
        mib = total / (1 << 20)
        print("image: %d layers, %.1f MiB compressed" % (len(descs), mib))

        curl_s, dl_s, e2e_s, again_s = [], [], [], []
        for run in range(a.runs):
            out = os.path.join(tmp, "curl-%d" % run)
            os.makedirs(out)
            args = ["curl", "-sS", "--fail", "--parallel", "--parallel-max", "4"]
            for d in descs:
                args += ["-o", os.path.join(out, d["digest"][7:]),
                         "http://127.0.0.1:%d/v2/bench/big/blobs/%s" % (port, d["digest"])]
            t0 = time.monotonic()
            subprocess.run(args, check=True)
            curl_s.append(time.monotonic() - t0)
            shutil.rmtree(out)

            data = os.path.join(tmp, "data-%d" % run)
            env["CLEANROOM_DATA_DIR"] = data
            # a fresh daemon per store (it reads CLEANROOM_DATA_DIR at start)
            stop_daemon(tmp)
            t0 = time.monotonic()
            p = subprocess.Popen([a.bin, "image", "pull", "--json", ref], stdout=subprocess.PIPE,
                                 env=env)
            t_dl0 = t_dl1 = None
            for line in p.stdout:
                ev = json.loads(line)
                now = time.monotonic()
                ph = ev.get("phase", "")
                if ph == "downloading" and t_dl0 is None:
                    t_dl0 = now
                if ph.startswith("extracting") and t_dl1 is None:
                    t_dl1 = now
            if p.wait() != 0:
                sys.exit("pull failed")
            e2e_s.append(time.monotonic() - t0)
            dl_s.append((t_dl1 or time.monotonic()) - (t_dl0 or t0))
            t0 = time.monotonic()
            subprocess.run([a.bin, "image", "pull", ref], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            again_s.append(time.monotonic() - t0)
            shutil.rmtree(data, ignore_errors=True)
        c, d = min(curl_s), min(dl_s)
        print("curl     : %6.2f s  %7.1f MiB/s  (best of %d)" % (c, mib / c, a.runs))
        print("pull     : %6.2f s  %7.1f MiB/s  download phase (best of %d)" % (d, mib / d, a.runs))
        print("pull e2e : %6.2f s  (with extraction and mkfs.ext4)" % min(e2e_s))
        print("again    : %6.3f s  (digest stored: manifests only)" % min(again_s))
        print("ratio pull/curl (download): %.2f  (goal >= 0.8)" % (c / d))
    finally:
        stop_daemon(tmp)
        if reg and reg.poll() is None:
            reg.terminate()
            reg.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def stop_daemon(tmp):
    sock = os.path.join(tmp, "run", "cleanroom.sock")
    if not os.path.exists(sock):
        return
    try:
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
        pid = json.loads(buf)["result"]["pid"]
        fd = os.pidfd_open(pid)
        os.kill(pid, signal.SIGTERM)
        import select
        if not select.select([fd], [], [], 20)[0]:
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
    except (OSError, ValueError, KeyError):
        pass
    try:
        os.unlink(sock)
    except OSError:
        pass


if __name__ == "__main__":
    main()
