#!/usr/bin/env python3
"""Registry pulls against a real registry on loopback: Debian's
`docker-registry` (the CNCF distribution registry) run from its own config
file in a temp dir on 127.0.0.1, images pushed by Debian's `skopeo` from OCI
layouts this test builds (from the busybox test image tar and small rootfs
tars it makes), the real `cleanroom` CLI and daemon.

Environment:
  CLEANROOM_BIN                the cleanroom binary under test
  CLEANROOM_TEST_IMAGE_TAR     busybox rootfs tar (else built in the temp dir)
  CLEANROOM_TEST_VM=1          also boot a pulled image (needs QEMU + kernel)
Skips (77) when docker-registry or skopeo is not installed. Every registry,
proxy and daemon it starts is stopped in tearDownModule, even on failure,
and the temp dir is removed.
"""
import gzip
import hashlib
import io
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.dirname(os.path.dirname(HERE))
TEST_DEADLINE = 300
CMD_TIMEOUT = 240

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
HTPASSWD = shutil.which("htpasswd")
if not REGISTRY or not SKOPEO or not HTPASSWD:
    print("registry-pull: skipped (needs docker-registry, skopeo, apache2-utils; scripts/deps.sh)")
    sys.exit(77)
BIN = os.environ.get("CLEANROOM_BIN") or shutil.which("cleanroom")
if not BIN or not os.access(BIN, os.X_OK):
    print("registry-pull: CLEANROOM_BIN is not set to an executable cleanroom")
    sys.exit(1)

TMP = None
ENV = None
PROCS = []  # registries we started (Registry objects)
BUSYBOX_TAR = None

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def sha(b):
    return hashlib.sha256(b).hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, what):
    """Polls another process's state with a deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class Registry:
    """docker-registry with its own config, storage and port."""

    def __init__(self, name, htpasswd=None, token=None):
        self.dir = os.path.join(TMP, name)
        os.makedirs(self.dir)
        self.storage = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc = None
        self.htpasswd = htpasswd
        cfg = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
               "storage:", "  filesystem:", "    rootdirectory: %s" % self.storage,
               "  delete:", "    enabled: true",
               "http:", "  addr: 127.0.0.1:%d" % self.port]
        if htpasswd:
            user, pw = htpasswd
            hp = os.path.join(self.dir, "htpasswd")
            out = subprocess.run([HTPASSWD, "-Bbn", user, pw], check=True,
                                 stdout=subprocess.PIPE).stdout
            with open(hp, "wb") as f:
                f.write(out)
            cfg += ["auth:", "  htpasswd:", "    realm: cleanroom-test", "    path: %s" % hp]
        if token:
            cfg += ["auth:", "  token:", "    realm: %s" % token.realm,
                    "    service: %s" % token.service, "    issuer: %s" % token.issuer,
                    "    rootcertbundle: %s" % token.cert]
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write("\n".join(cfg) + "\n")
        PROCS.append(self)
        self.start()

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.log = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen([REGISTRY, "serve", self.config], stdout=self.log,
                                     stderr=self.log, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("docker-registry exited: %s" % self.log_tail())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, 30, "docker-registry on port %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "registry.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def blob_path(self, hexd):
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256",
                            hexd[:2], hexd, "data")

    def push(self, layout, tag, repo="busybox", all_=False, creds=None):
        cmd = [SKOPEO, "copy", "--quiet", "--dest-tls-verify=false"]
        if all_:
            cmd.append("--all")
        if creds:
            cmd += ["--dest-creds", "%s:%s" % creds]
        cmd += ["oci:%s:%s" % (layout, tag), "docker://%s/%s:%s" % (self.host, repo, tag)]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise AssertionError("skopeo copy failed: %s" % p.stderr.decode(errors="replace"))


class Layout:
    """An OCI image layout written by hand (blobs + index.json)."""

    def __init__(self, name):
        self.dir = os.path.join(TMP, "layouts", name)
        os.makedirs(os.path.join(self.dir, "blobs", "sha256"))
        with open(os.path.join(self.dir, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.entries = []

    def blob(self, data):
        h = sha(data)
        with open(os.path.join(self.dir, "blobs", "sha256", h), "wb") as f:
            f.write(data)
        return h

    def image(self, layers, arch="amd64", compress="gzip"):
        """layers: list of uncompressed tar bytes. Returns (manifest bytes, hex, layer hexes)."""
        descs, diff_ids, hexes = [], [], []
        for raw in layers:
            if compress == "gzip":
                data = gzip.compress(raw, mtime=0)
                mt = "application/vnd.oci.image.layer.v1.tar+gzip"
            elif compress == "zstd":
                data = subprocess.run(["zstd", "-q", "-c", "-3"], input=raw, check=True,
                                      stdout=subprocess.PIPE).stdout
                mt = "application/vnd.oci.image.layer.v1.tar+zstd"
            else:
                data, mt = raw, "application/vnd.oci.image.layer.v1.tar"
            h = self.blob(data)
            hexes.append(h)
            descs.append({"mediaType": mt, "digest": "sha256:" + h, "size": len(data)})
            diff_ids.append("sha256:" + sha(raw))
        config = json.dumps({"architecture": arch, "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids},
                             "config": {}}).encode()
        ch = self.blob(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + ch,
                                          "size": len(config)},
                               "layers": descs}).encode()
        mh = self.blob(manifest)
        return manifest, mh, hexes

    def tag(self, name, data, media_type):
        self.entries.append({"mediaType": media_type, "digest": "sha256:" + sha(data),
                             "size": len(data),
                             "annotations": {"org.opencontainers.image.ref.name": name}})
        with open(os.path.join(self.dir, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.entries}, f)


def small_tar(files):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def cr(*args, timeout=CMD_TIMEOUT, check=False, env=None):
    p = subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=env or ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d\nstdout: %r\nstderr: %r\ndaemon.log:\n%s" % (
            " ".join(args), p.returncode, p.stdout[-2000:], p.stderr[-2000:], daemon_log()))
    return p


def pull_json(*args, check=True):
    """image pull --json: returns (events, result, process)."""
    p = cr("image", "pull", "--json", *args, check=check)
    lines = [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]
    events = [e for e in lines if e.get("event") == "progress"]
    res = [e for e in lines if e.get("event") == "pulled"]
    return events, (res[0] if res else None), p


def reason(p):
    err = p.stderr.decode(errors="replace")
    for line in err.splitlines():
        if line.startswith("cleanroom: "):
            return line.split(": ")[1]
    return err


def daemon_log():
    try:
        with open(os.path.join(TMP, "run", "daemon.log"), "rb") as f:
            return f.read()[-3000:].decode(errors="replace")
    except OSError:
        return ""


def store_dir():
    return os.path.join(TMP, "data", "images")


def store_leftovers():
    """Temp dirs, partial blobs and images without meta.json in the store."""
    out = []
    d = store_dir()
    if not os.path.isdir(d):
        return out
    for n in os.listdir(d):
        if n.startswith(".tmp-"):
            out.append(n)
        elif len(n) == 64 and not os.path.exists(os.path.join(d, n, "meta.json")):
            out.append(n)
    return out


def partials():
    d = os.path.join(store_dir(), "blobs", "sha256")
    if not os.path.isdir(d):
        return {}
    return {n[:-8]: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)
            if n.endswith(".partial")}


def images():
    return json.loads(cr("image", "ls", "--json", check=True).stdout)


def skopeo_digest(ref, creds=None):
    cmd = [SKOPEO, "inspect", "--tls-verify=false"]
    if creds:
        cmd += ["--creds", "%s:%s" % creds]
    p = subprocess.run(cmd + ["docker://" + ref], check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return json.loads(p.stdout)["Digest"]


def stop_daemon():
    sock = os.path.join(TMP, "run", "cleanroom.sock")
    if not os.path.exists(sock):
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(sock)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            c = s.recv(65536)
            if not c:
                break
            buf += c
        pid = json.loads(buf)["result"]["pid"]
    except (OSError, ValueError, KeyError):
        return
    finally:
        s.close()
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        if not select.select([fd], [], [], 20)[0]:
            os.kill(pid, signal.SIGKILL)
            select.select([fd], [], [], 10)
    except OSError:
        pass
    finally:
        os.close(fd)


class CutProxy:
    """A TCP proxy in front of a registry that, when armed, stops the
    registry after `cut_after` bytes of one response have passed and drops
    the connection: a registry that dies mid-pull. Records whether a client
    request carried a Range header."""

    def __init__(self, registry):
        self.reg = registry
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.cut_after = None
        self.saw_range = False
        self.cut_done = threading.Event()
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self.accept_loop, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    def accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self.pump, args=(c,), daemon=True)
            t.start()

    def pump(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.reg.port), timeout=30)
        except OSError:
            c.close()
            return
        sent = 0
        try:
            while True:
                r, _, _ = select.select([c, u], [], [], 30)
                if not r:
                    break
                if c in r:
                    d = c.recv(65536)
                    if not d:
                        break
                    if b"\r\nrange: bytes=" in d.lower():
                        self.saw_range = True
                    u.sendall(d)
                if u in r:
                    d = u.recv(65536)
                    if not d:
                        break
                    if self.cut_after is not None and sent + len(d) > self.cut_after:
                        c.sendall(d[: max(0, self.cut_after - sent)])
                        self.cut_after = None
                        self.reg.stop()  # the registry dies mid-transfer
                        self.cut_done.set()
                        break
                    sent += len(d)
                    c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()
            u.close()

    def close(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass


def setUpModule():
    global TMP, ENV, BUSYBOX_TAR
    TMP = tempfile.mkdtemp(prefix="cr-reg-")
    ENV = dict(os.environ)
    ENV["CLEANROOM_RUN_DIR"] = os.path.join(TMP, "run")
    ENV["CLEANROOM_DATA_DIR"] = os.path.join(TMP, "data")
    ENV["HOME"] = os.path.join(TMP, "home")  # no host docker credentials leak in
    ENV.pop("DOCKER_CONFIG", None)
    ENV.pop("CLEANROOM_HOST", None)
    ENV.pop("CLEANROOM_INSECURE_REGISTRIES", None)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        ENV.pop(k, None)
    os.makedirs(ENV["HOME"])
    BUSYBOX_TAR = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
    if not BUSYBOX_TAR:
        BUSYBOX_TAR = os.path.join(TMP, "busybox.tar")
        subprocess.run([os.path.join(SRC_ROOT, "images", "busybox", "build.sh"), BUSYBOX_TAR],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)


def tearDownModule():
    problems = []
    try:
        stop_daemon()
    except Exception as e:  # clean-up never raises past here
        problems.append("stopping the daemon: %s" % e)
    for r in PROCS:
        try:
            r.stop()
        except Exception as e:
            problems.append("stopping a registry: %s" % e)
    shutil.rmtree(TMP, ignore_errors=True)
    if problems:
        print("registry-pull teardown: %s" % "; ".join(problems), file=sys.stderr)


Deadline = crtest.deadline(TEST_DEADLINE)


class T1Plain(Deadline, unittest.TestCase):
    """An anonymous registry with busybox (gzip), a zstd image, a
    multi-platform index and an arm64-only image."""

    @classmethod
    def setUpClass(cls):
        cls.reg = Registry("plain")
        lay = Layout("plain")
        with open(BUSYBOX_TAR, "rb") as f:
            bb = f.read()
        m, cls.bb_hex, cls.bb_layers = lay.image([bb])
        lay.tag("1", m, OCI_MANIFEST)
        extra = small_tar({"etc/zstd-layer": b"zstd\n"})
        mz, cls.z_hex, _ = lay.image([bb, extra], compress="zstd")
        lay.tag("zstd", mz, OCI_MANIFEST)
        arm = small_tar({"etc/arch": b"arm64\n"})
        marm, cls.arm_hex, _ = lay.image([arm], arch="arm64")
        idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + cls.arm_hex, "size": len(marm),
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + cls.bb_hex, "size": len(m),
             "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
        cls.idx_hex = lay.blob(idx)
        lay.tag("multi", idx, OCI_INDEX)
        armidx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + cls.arm_hex, "size": len(marm),
             "platform": {"os": "linux", "architecture": "arm64"}}]}).encode()
        lay.blob(armidx)
        lay.tag("armonly", armidx, OCI_INDEX)
        # a layer of its own, to corrupt in the registry
        bad = small_tar({"etc/bad": os.urandom(4096)})
        mb, cls.bad_hex, cls.bad_layers = lay.image([bad])
        lay.tag("corrupt", mb, OCI_MANIFEST)
        mc, cls.cache_hex, cls.cache_layers = lay.image([small_tar({"etc/cache": os.urandom(2048)})])
        lay.tag("cache", mc, OCI_MANIFEST)
        for t in ("1", "zstd", "corrupt", "cache"):
            cls.reg.push(lay.dir, t)
        cls.reg.push(lay.dir, "multi", all_=True)
        cls.reg.push(lay.dir, "armonly", all_=True)

    def ref(self, tag, repo="busybox"):
        return "%s/%s:%s" % (self.reg.host, repo, tag)

    def test_a_resolve_matches_skopeo(self):
        for tag in ("1", "multi"):
            p = cr("image", "resolve", self.ref(tag), check=True)
            want = skopeo_digest(self.ref(tag))
            self.assertEqual(p.stdout.decode().strip(),
                             "%s/busybox@%s" % (self.reg.host, want))
        self.assertEqual(skopeo_digest(self.ref("multi")), "sha256:" + self.idx_hex)

    def test_b_pull_then_pull_again(self):
        events, res, p = pull_json(self.ref("1"))
        self.assertTrue(res, p.stderr)
        img = res["image"]
        self.assertEqual(img["digest"], "sha256:" + self.bb_hex)
        self.assertEqual(img["platform"], "linux/amd64")
        self.assertEqual(img["source_format"], "registry")
        self.assertIn(self.ref("1"), img["refs"])
        self.assertIn("%s/busybox@sha256:%s" % (self.reg.host, self.bb_hex), img["refs"])
        self.assertGreater(res["stats"]["downloaded"], 0)
        self.assertTrue(any(e["phase"] == "downloading" for e in events), events)
        self.assertEqual(store_leftovers(), [])
        ls = [i for i in images() if i["digest"] == img["digest"]]
        self.assertEqual(len(ls), 1)
        self.assertEqual(ls[0]["platform"], "linux/amd64")
        # the same digest again: manifests only
        events, res2, p = pull_json(self.ref("1"))
        self.assertTrue(res2["stats"]["already_stored"], res2)
        self.assertEqual(res2["stats"]["downloaded"], 0)
        # the text view lists ref, digest, size, platform
        out = cr("image", "ls", check=True).stdout.decode()
        self.assertIn("PLATFORM", out.splitlines()[0])
        self.assertIn("linux/amd64", out)

    def test_c_multi_platform_picks_amd64(self):
        _, res, p = pull_json(self.ref("multi"))
        self.assertTrue(res, p.stderr)
        self.assertEqual(res["image"]["digest"], "sha256:" + self.bb_hex)
        self.assertIn("%s/busybox@sha256:%s" % (self.reg.host, self.idx_hex), res["image"]["refs"])
        _, res, p = pull_json(self.ref("armonly"), check=False)
        self.assertEqual(p.returncode, 125)
        self.assertEqual(reason(p), "image_platform_not_found", p.stderr)
        self.assertIn("linux/arm64", p.stderr.decode())

    def test_d_zstd_layers_share_cache(self):
        _, res, p = pull_json(self.ref("zstd"))
        self.assertTrue(res, p.stderr)
        self.assertEqual(res["image"]["digest"], "sha256:" + self.z_hex)
        self.assertEqual(res["stats"]["blobs_fetched"], 2)
        info = json.loads(cr("image", "inspect", self.ref("zstd"), "--json", check=True).stdout)
        self.assertGreater(info["size"], 0)

    def test_e_corrupt_blob_is_rejected(self):
        path = self.reg.blob_path(self.bad_layers[0])
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            data[len(data) // 2] ^= 0xFF
            f.seek(0)
            f.write(data)
        before = images()
        _, res, p = pull_json(self.ref("corrupt"), check=False)
        self.assertEqual(p.returncode, 125)
        self.assertEqual(reason(p), "image_digest_mismatch", p.stderr)
        self.assertEqual(images(), before)
        self.assertEqual(store_leftovers(), [])
        self.assertNotIn(self.bad_layers[0], partials())
        self.assertFalse(os.path.exists(os.path.join(store_dir(), "blobs", "sha256",
                                                     self.bad_layers[0])))

    def test_h_damaged_cached_blob_is_dropped(self):
        _, res, p = pull_json(self.ref("cache"))
        self.assertTrue(res, p.stderr)
        p = cr("image", "rm", "--force", "sha256:" + self.cache_hex, check=True)
        blob = os.path.join(store_dir(), "blobs", "sha256", self.cache_layers[0])
        with open(blob, "r+b") as f:  # what a crash could leave behind
            data = bytearray(f.read())
            data[-1] ^= 0xFF
            f.seek(0)
            f.write(data)
        p = cr("image", "pull", self.ref("cache"))
        self.assertEqual(reason(p), "image_invalid", p.stderr)
        self.assertIn(b"damaged", p.stderr)
        self.assertFalse(os.path.exists(blob))
        self.assertEqual(store_leftovers(), [])
        _, res, p = pull_json(self.ref("cache"))
        self.assertEqual(res["image"]["digest"], "sha256:" + self.cache_hex, p.stderr)

    def test_f_errors_say_what(self):
        p = cr("image", "pull", "%s/nosuchrepo:1" % self.reg.host)
        self.assertEqual(reason(p), "registry_unknown_repository", p.stderr)
        p = cr("image", "pull", self.ref("nosuchtag"))
        self.assertEqual(reason(p), "registry_unknown_tag", p.stderr)
        p = cr("image", "pull", "127.0.0.1:%d/busybox:1" % free_port())
        self.assertEqual(reason(p), "registry_unavailable", p.stderr)
        p = cr("image", "pull", "127.0.0.1:5000/Bad_Name")
        self.assertEqual(reason(p), "invalid_argument", p.stderr)
        # a non-loopback registry is never spoken to over plain HTTP: the
        # TLS attempt fails (nothing listens on that port)
        p = cr("image", "resolve", "localhost.invalid:1/x:1")
        self.assertIn(reason(p), ("registry_unavailable", "registry_tls_error"), p.stderr)

    def test_g_bump_ref_asks_registry(self):
        pol = os.path.join(TMP, "cleanroom.yaml")
        with open(pol, "w") as f:
            f.write("version: 1\nsandbox:\n  image:\n    ref: %s\n" % self.ref("1"))
        p = cr("image", "bump-ref", self.ref("multi"), "--policy", pol, check=True)
        with open(pol) as f:
            body = f.read()
        self.assertIn("%s/busybox@sha256:%s" % (self.reg.host, self.idx_hex), body)


class T2Auth(Deadline, unittest.TestCase):
    """htpasswd (Basic) auth: needs and accepts credentials, refuses wrong ones."""

    CREDS = ("cleanroom", "s3cret-pass")

    @classmethod
    def setUpClass(cls):
        cls.reg = Registry("auth", htpasswd=cls.CREDS)
        lay = Layout("auth")
        m, cls.hex, _ = lay.image([small_tar({"etc/auth": b"ok\n"})])
        lay.tag("1", m, OCI_MANIFEST)
        cls.reg.push(lay.dir, "1", repo="private/img", creds=cls.CREDS)
        cls.ref = "%s/private/img:1" % cls.reg.host

    def auth_file(self, user, pw):
        import base64
        p = os.path.join(TMP, "auth-%s.json" % user)
        with open(p, "w") as f:
            json.dump({"auths": {self.reg.host: {
                "auth": base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}}}, f)
        return p

    def test_needs_credentials(self):
        p = cr("image", "pull", self.ref)
        self.assertEqual(reason(p), "registry_auth_required", p.stderr)
        p = cr("image", "pull", self.ref, "--registry-auth", self.auth_file("cleanroom", "wrong"))
        self.assertEqual(reason(p), "registry_auth_refused", p.stderr)
        self.assertNotIn(b"wrong", p.stderr)

    def test_accepts_credentials(self):
        af = self.auth_file(*self.CREDS)
        p = cr("image", "resolve", self.ref, "--registry-auth", af, check=True)
        self.assertEqual(p.stdout.decode().strip().split("@")[1],
                         skopeo_digest(self.ref, creds=self.CREDS))
        _, res, p = pull_json(self.ref, "--registry-auth", af)
        self.assertEqual(res["image"]["digest"], "sha256:" + self.hex)
        # ~/.docker/config.json is the default place
        os.makedirs(os.path.join(ENV["HOME"], ".docker"), exist_ok=True)
        shutil.copy(af, os.path.join(ENV["HOME"], ".docker", "config.json"))
        try:
            p = cr("image", "resolve", self.ref, check=True)
        finally:
            os.unlink(os.path.join(ENV["HOME"], ".docker", "config.json"))


class TokenServer:
    """A distribution token server (the registry's `auth: token` flow): Basic
    credentials in, an RS256 JWT signed with `openssl dgst` out, with an x5c
    header carrying the self-signed certificate the registry trusts. No
    credentials: a token without access; wrong ones: 401."""

    service = "cleanroom-test"
    issuer = "cleanroom-test-issuer"

    def __init__(self, creds):
        import http.server
        import base64
        self.creds = creds
        self.dir = os.path.join(TMP, "token-server")
        os.makedirs(self.dir)
        self.key = os.path.join(self.dir, "key.pem")
        self.cert = os.path.join(self.dir, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=cleanroom-token"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             stdout=subprocess.PIPE).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.handle(self)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.realm = "http://127.0.0.1:%d/token" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def jwt(self, sub, access):
        import base64

        def b64(b):
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        now = int(time.time())
        head = b64(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}).encode())
        claims = b64(json.dumps({"iss": self.issuer, "sub": sub, "aud": self.service,
                                 "exp": now + 600, "nbf": now - 60, "iat": now,
                                 "jti": os.urandom(8).hex(), "access": access}).encode())
        signing = ("%s.%s" % (head, claims)).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing,
                             check=True, stdout=subprocess.PIPE).stdout
        return "%s.%s" % (signing.decode(), b64(sig))

    def handle(self, h):
        import base64
        import urllib.parse
        q = urllib.parse.parse_qs(urllib.parse.urlparse(h.path).query)
        auth = h.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            u, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, pw) != self.creds:
                h.send_response(401)
                h.end_headers()
                self.requests.append(("refused", q.get("scope")))
                return
            user = u
        access = []
        for sc in q.get("scope", []):
            parts = sc.split(":")
            if len(parts) == 3 and parts[0] == "repository" and user:
                access.append({"type": "repository", "name": parts[1],
                               "actions": parts[2].split(",")})
        self.requests.append((user, q.get("scope")))
        body = json.dumps({"token": self.jwt(user or "", access)}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class T2Token(Deadline, unittest.TestCase):
    """Bearer token auth (the registry's own token config): anonymous gets
    nothing, wrong credentials are refused, right ones pull."""

    CREDS = ("tokenuser", "t0ken-pass")

    @classmethod
    def setUpClass(cls):
        cls.tok = TokenServer(cls.CREDS)
        try:
            cls.reg = Registry("token", token=cls.tok)
            lay = Layout("token")
            m, cls.hex, _ = lay.image([small_tar({"etc/token": b"ok\n"})])
            lay.tag("1", m, OCI_MANIFEST)
            cls.reg.push(lay.dir, "1", repo="team/img", creds=cls.CREDS)
        except Exception:
            cls.tok.close()
            raise
        cls.ref = "%s/team/img:1" % cls.reg.host

    @classmethod
    def tearDownClass(cls):
        cls.tok.close()

    def auth_file(self, user, pw):
        import base64
        p = os.path.join(TMP, "tauth-%s.json" % user)
        with open(p, "w") as f:
            json.dump({"auths": {self.reg.host: {
                "auth": base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}}}, f)
        return p

    def test_token_flow(self):
        p = cr("image", "pull", self.ref)
        self.assertEqual(reason(p), "registry_auth_required", p.stderr)
        p = cr("image", "pull", self.ref, "--registry-auth", self.auth_file("tokenuser", "bad"))
        self.assertEqual(reason(p), "registry_auth_refused", p.stderr)
        _, res, p = pull_json(self.ref, "--registry-auth", self.auth_file(*self.CREDS))
        self.assertEqual(res["image"]["digest"], "sha256:" + self.hex)
        self.assertIn(("tokenuser", ["repository:team/img:pull"]), self.tok.requests)


class T3Resume(Deadline, unittest.TestCase):
    """The registry stops mid-pull: nothing half-written; the next pull resumes."""

    def test_stop_mid_pull_then_resume(self):
        reg = Registry("resume")
        lay = Layout("resume")
        rnd = random.Random(15)
        big = small_tar({"data/random.bin": rnd.randbytes(6 << 20)})
        m, hexd, layers = lay.image([big])  # gzip: skopeo pushes it unchanged
        lay.tag("1", m, OCI_MANIFEST)
        reg.push(lay.dir, "1")
        proxy = CutProxy(reg)
        try:
            ref = "%s/busybox:1" % proxy.host
            proxy.cut_after = 4 << 20  # bytes of the first big response
            # manifests and config are small; the layer is the big response
            before = images()
            p = cr("image", "pull", ref)
            self.assertTrue(proxy.cut_done.is_set(), "the proxy never cut the transfer")
            self.assertEqual(p.returncode, 125, p.stderr)
            self.assertEqual(reason(p), "registry_unavailable", p.stderr)
            self.assertEqual(images(), before)
            self.assertEqual(store_leftovers(), [])
            part = partials()
            self.assertIn(layers[0], part)
            self.assertGreater(part[layers[0]], 0)
            reg.start()
            _, res, p = pull_json(ref)
            self.assertTrue(res, p.stderr)
            self.assertEqual(res["image"]["digest"], "sha256:" + hexd)
            self.assertGreater(res["stats"]["resumed"], 0, res)
            self.assertTrue(proxy.saw_range, "no Range request was made")
            self.assertNotIn(layers[0], partials())
        finally:
            proxy.close()


@unittest.skipUnless(os.environ.get("CLEANROOM_TEST_VM") == "1", "needs CLEANROOM_TEST_VM=1")
class T4Boot(Deadline, unittest.TestCase):
    """exec --image REF pulls a missing image, boots it and runs a command."""

    def test_exec_pulls_and_runs(self):
        reg = Registry("boot")
        lay = Layout("boot")
        with open(BUSYBOX_TAR, "rb") as f:
            bb = f.read()
        m, hexd, _ = lay.image([bb, small_tar({"etc/pulled": b"from-registry\n"})])
        lay.tag("boot", m, OCI_MANIFEST)
        reg.push(lay.dir, "boot")
        ref = "%s/busybox:boot" % reg.host
        p = cr("exec", "--rm", "--image", ref, "--memory", "256", "--", "cat", "/etc/pulled",
               timeout=280)
        self.assertEqual((p.returncode, p.stdout), (0, b"from-registry\n"),
                         p.stderr.decode(errors="replace") + daemon_log())
        self.assertTrue(any(i["digest"] == "sha256:" + hexd for i in images()))


if __name__ == "__main__":
    unittest.main(verbosity=2)
