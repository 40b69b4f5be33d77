#!/usr/bin/env python3
"""Workspace integration tests (docs/workspace.md): real git repositories
(file:// and a real `git http-backend` behind a loopback HTTP server), the
real CLI and daemon, real QEMU VMs.

Environment: as control-plane.py (CLEANROOM_TEST_VM=1, CLEANROOM_BIN,
CLEANROOM_KERNEL_DIR, CLEANROOM_TEST_IMAGE_TAR). Everything lives in one temp
dir that is removed at the end; teardown removes every sandbox, stops the
daemon and the HTTP server and fails if a qemu process is left.
"""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.dirname(os.path.dirname(HERE))
IMAGE = "test/busybox"
MEM = "256"
TEST_DEADLINE = 300
CMD_TIMEOUT = 240

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("workspace: skipped (set CLEANROOM_TEST_VM=1 to run; needs QEMU, a kernel and the test image)")
    sys.exit(77)
BIN = os.environ.get("CLEANROOM_BIN") or shutil.which("cleanroom")
GIT = shutil.which("git")
if not BIN or not GIT:
    print("workspace: needs CLEANROOM_BIN and git")
    sys.exit(1)

TMP = ENV = HTTPD = None
SAVED_LOG = None


def log_tail():
    if SAVED_LOG is not None:
        return SAVED_LOG
    try:
        with open(os.path.join(TMP, "run", "daemon.log"), "rb") as f:
            return f.read()[-4000:].decode(errors="replace")
    except OSError as e:
        return "(no daemon.log: %s)" % e


def cr(*args, cwd=None, check=False, timeout=CMD_TIMEOUT):
    p = subprocess.run([BIN] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=ENV, timeout=timeout, cwd=cwd or TMP)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d\nstdout: %r\nstderr: %r\ndaemon.log:\n%s" % (
            " ".join(args), p.returncode, p.stdout[-2000:], p.stderr[-2000:], log_tail()))
    return p


def git(*args, cwd=None, input=None):
    return subprocess.run([GIT] + list(args), cwd=cwd, input=input, check=True,
                          capture_output=True, timeout=60, env=GIT_ENV).stdout.decode()


GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid",
               GIT_CONFIG_NOSYSTEM="1", HOME="/nonexistent")


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


def socket_path():
    return os.path.join(TMP, "run", "cleanroom.sock")


def rpc(method, params):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CMD_TIMEOUT)
    s.connect(socket_path())
    try:
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": params}).encode() + b"\n")
        buf = b""
        while True:
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError("connection closed")
                buf += chunk
            line, buf = buf.split(b"\n", 1)
            m = json.loads(line)
            if m.get("id") == 1:
                return m
    finally:
        s.close()


wait_pid_exit = crtest.wait_pid_exit


class GitHTTP(http.server.BaseHTTPRequestHandler):
    """Runs Debian's `git http-backend` as a CGI for each request."""
    root = None

    def log_message(self, *a):
        pass

    # /private/...: Basic auth required (the host's credential helper has it)
    auth = "Basic " + __import__("base64").b64encode(b"ci-bot:s3cret-token").decode()
    seen_auth = []

    def handle_one(self):
        path, _, query = self.path.partition("?")
        if path.startswith("/private/"):
            got = self.headers.get("Authorization")
            if got is not None:
                GitHTTP.seen_auth.append(got == self.auth)
            if got != self.auth:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path = path[len("/private"):]
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(n) if n else b""
        env = {"GIT_PROJECT_ROOT": self.root, "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
               "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        p = subprocess.run([GIT, "http-backend"], input=body, env=env, capture_output=True,
                           timeout=60)
        head, _, out = p.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, out = p.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = handle_one
    do_POST = handle_one


def setUpModule():
    global TMP, ENV, HTTPD
    TMP = tempfile.mkdtemp(prefix="cr-ws-")
    ENV = dict(os.environ)
    ENV["CLEANROOM_RUN_DIR"] = os.path.join(TMP, "run")
    ENV["CLEANROOM_DATA_DIR"] = os.path.join(TMP, "data")
    ENV["HOME"] = TMP  # no user git config
    for k in ("CLEANROOM_HOST", "CLEANROOM_IMAGE", "GIT_DIR", "GIT_WORK_TREE"):
        ENV.pop(k, None)
    tar = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
    if not tar:
        tar = os.path.join(TMP, "busybox.tar")
        subprocess.run([os.path.join(SRC_ROOT, "images", "busybox", "build.sh"), tar],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
    cr("image", "import", tar, "--ref", IMAGE, check=True, timeout=300)
    GitHTTP.root = os.path.join(TMP, "srv")
    HTTPD = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GitHTTP)
    threading.Thread(target=HTTPD.serve_forever, daemon=True).start()


def tearDownModule():
    problems = []
    try:
        if HTTPD:
            HTTPD.shutdown()
            HTTPD.server_close()
        if os.path.exists(socket_path()):
            p = cr("sandbox", "rm", "--all", timeout=120)
            if p.returncode != 0:
                problems.append("sandbox rm --all: %r" % p.stderr)
            try:
                pid = rpc("system.info", {})["result"]["pid"]
                os.kill(pid, signal.SIGTERM)
                if not wait_pid_exit(pid, 20):
                    os.kill(pid, signal.SIGKILL)
                    problems.append("daemon ignored SIGTERM")
            except (OSError, KeyError, ValueError, AssertionError) as e:
                problems.append("stopping the daemon: %s" % e)
        for pid, cmd in crtest.qemu_leftovers(TMP):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            problems.append("qemu left behind: %s" % cmd[:200])
    finally:
        global SAVED_LOG
        SAVED_LOG = log_tail()
        shutil.rmtree(TMP, ignore_errors=True)
    if problems:
        raise AssertionError("; ".join(problems))


Deadline = crtest.deadline(TEST_DEADLINE)


BIN_DATA = bytes(range(256)) * 8 + b"\x00binary\xff"


def make_upstream(name):
    """A bare remote under srv/ and a clone `name` of it with a few commits."""
    srv = os.path.join(TMP, "srv")
    os.makedirs(srv, exist_ok=True)
    bare = os.path.join(srv, name + ".git")
    git("init", "-q", "--bare", "-b", "main", bare)
    work = os.path.join(TMP, name)
    git("init", "-q", "-b", "main", work)
    write(os.path.join(work, "a.txt"), "hello\n")
    write(os.path.join(work, "bin.dat"), BIN_DATA)
    write(os.path.join(work, "sub", "run.sh"), "#!/bin/sh\necho run\n", 0o755)
    write(os.path.join(work, "keep.txt"), "keep\n")
    write(os.path.join(work, "deep", "x" * 60, "y" * 60, "long.txt"), "long path\n")
    os.symlink("a.txt", os.path.join(work, "link"))
    write(os.path.join(work, ".gitignore"), "*.ignored\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "first", cwd=work)
    git("remote", "add", "origin", bare, cwd=work)
    git("push", "-q", "-u", "origin", "main", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work).strip()
    git("checkout", "-q", "-b", "feature", cwd=work)
    write(os.path.join(work, "feature.txt"), "on feature\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "feature", cwd=work)
    git("push", "-q", "-u", "origin", "feature", cwd=work)
    feature = git("rev-parse", "HEAD", cwd=work).strip()
    git("checkout", "-q", "main", cwd=work)
    return bare, work, first, feature


def free_port():
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_id(p):
    return p.stderr.decode().split("sandbox_id=", 1)[1].split()[0]


class T1Checkout(Deadline, unittest.TestCase):
    """One sandbox from a checkout with --copy-in, then diff, apply, copy-out."""

    @classmethod
    def setUpClass(cls):
        cls.bare, cls.work, cls.first, cls.feature = make_upstream("proj")
        w = cls.work
        # local changes: modified, deleted, renamed, executable untracked, ignored
        write(os.path.join(w, "a.txt"), "hello\nlocal edit\n")
        os.unlink(os.path.join(w, "keep.txt"))
        git("mv", "sub/run.sh", "sub/run2.sh", cwd=w)
        write(os.path.join(w, "tool.sh"), "#!/bin/sh\necho tool\n", 0o755)
        write(os.path.join(w, "junk.ignored"), "ignored\n")
        cls.p = cr("exec", "--image", IMAGE, "--memory", MEM, "--print-sandbox-id", "--copy-in",
                   "--", "sh", "-c",
                   "pwd; cat a.txt; ls -l sub tool.sh | cut -c1-10; ls; "
                   "test -e junk.ignored || echo no-junk; test -e keep.txt || echo no-keep",
                   cwd=w)
        if cls.p.returncode != 0:
            raise AssertionError("exec --copy-in failed: %r\n%s" % (cls.p.stderr, log_tail()))
        cls.sid = sandbox_id(cls.p)

    @classmethod
    def tearDownClass(cls):
        cr("sandbox", "rm", cls.sid)

    def ex(self, script):
        p = cr("exec", "--in", self.sid, "--", "sh", "-c", script)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.decode()

    def test_1_exact_commit_and_copy_in(self):
        out = self.p.stdout.decode()
        self.assertTrue(out.startswith("/workspace\nhello\nlocal edit\n"), out)
        self.assertIn("no-junk", out)
        self.assertIn("no-keep", out)
        self.assertIn("-rwxr-xr-x", out)  # run2.sh and tool.sh keep the x bit
        self.assertNotIn("run.sh\n", out.replace("run2.sh", ""))
        ws = json.loads(cr("sandbox", "inspect", self.sid, "--json", check=True).stdout)["workspace"]
        self.assertEqual(ws["commit"], self.first)
        self.assertEqual(ws["path"], "/workspace")
        self.assertEqual(ws["repo_url"], self.bare)
        self.assertEqual(ws["ref"], "main")
        # the symlink and the long path came through the tar
        self.assertEqual(self.ex("readlink link; cat deep/%s/%s/long.txt" % ("x" * 60, "y" * 60)),
                         "a.txt\nlong path\n")
        # copy-in's changes are changes against the base commit
        st = cr("workspace", "preview", "--in", self.sid, check=True).stdout.decode().split("\n")
        self.assertEqual(sorted(l for l in st if l),
                         ["A sub/run2.sh", "A tool.sh", "D keep.txt", "D sub/run.sh", "M a.txt"])

    def test_2_agent_edit_diff_applies(self):
        self.ex("echo agent >> a.txt; printf '\\000\\001new\\377' > new.bin; "
                "printf 'x' >> bin.dat; chmod +x a.txt; rm link; ln -s tool.sh link2; "
                "mkdir -p n/m; echo nested > n/m/f.txt; touch sub/run2.sh")
        p = cr("workspace", "diff", "--in", self.sid, check=True)
        patch = p.stdout
        self.assertIn(b"GIT binary patch", patch)
        self.assertIn(b"old mode 100644\nnew mode 100755", patch)
        base = os.path.join(TMP, "apply-base")
        git("clone", "-q", self.bare, base)
        git("checkout", "-q", self.first, cwd=base)
        git("apply", "--check", "-", cwd=base, input=patch)
        git("apply", "-", cwd=base, input=patch)
        with open(os.path.join(base, "new.bin"), "rb") as f:
            self.assertEqual(f.read(), b"\x00\x01new\xff")
        with open(os.path.join(base, "bin.dat"), "rb") as f:
            self.assertEqual(f.read(), BIN_DATA + b"x")
        self.assertTrue(os.stat(os.path.join(base, "a.txt")).st_mode & 0o100)
        self.assertEqual(os.readlink(os.path.join(base, "link2")), "tool.sh")
        self.assertFalse(os.path.lexists(os.path.join(base, "link")))
        self.assertFalse(os.path.exists(os.path.join(base, "keep.txt")))
        with open(os.path.join(base, "a.txt")) as f:
            self.assertEqual(f.read(), "hello\nlocal edit\nagent\n")
        # only changed files were read: touched run2.sh is read but dropped
        d = json.loads(cr("workspace", "diff", "--in", self.sid, "--json", check=True).stdout)
        paths = {f["path"]: f["status"] for f in d["files"]}
        self.assertEqual(paths.get("sub/run2.sh"), "A")
        self.assertNotIn("deep/%s/%s/long.txt" % ("x" * 60, "y" * 60), paths)
        self.assertLess(d["stats"]["read"], d["stats"]["listed"])
        # paths limit the diff
        st = cr("workspace", "preview", "--in", self.sid, "n", check=True).stdout.decode()
        self.assertEqual(st, "A n/m/f.txt\n")

    def test_3_unsafe_paths_refused(self):
        for bad in ("../etc", "/etc/passwd", "a/../../x"):
            p = cr("workspace", "diff", "--in", self.sid, bad)
            self.assertEqual(p.returncode, 125, (bad, p.stderr))
            self.assertIn(b"workspace_unsafe_path", p.stderr)

    def test_4_copy_out_conflicts_and_escapes(self):
        w = self.work
        self.ex("echo agent2 > keep2.txt; mkdir -p n2/.git/hooks && echo evil > n2/.git/hooks/post-checkout")
        # a local edit to a file the sandbox also changed: refused, nothing written
        write(os.path.join(w, "a.txt"), "hello\nlocal edit\nlocal again\n")
        p = cr("workspace", "copy-out", "--in", self.sid, cwd=w)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_conflict", p.stderr)
        self.assertIn(b"a.txt", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(w, "keep2.txt")))
        with open(os.path.join(w, "a.txt")) as f:
            self.assertEqual(f.read(), "hello\nlocal edit\nlocal again\n")
        # a symlinked parent in the checkout that points outside: refused
        outside = os.path.join(TMP, "outside")
        os.makedirs(outside)
        shutil.rmtree(os.path.join(w, "n"), ignore_errors=True)
        os.symlink(outside, os.path.join(w, "n"))
        p = cr("workspace", "copy-out", "--in", self.sid, "--force", cwd=w)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_unsafe_path", p.stderr)
        self.assertEqual(os.listdir(outside), [])
        os.unlink(os.path.join(w, "n"))
        # --force writes, and reports every file
        p = cr("workspace", "copy-out", "--in", self.sid, "--force", cwd=w)
        self.assertEqual(p.returncode, 0, p.stderr)
        err = p.stderr.decode()
        for f in ("a.txt", "new.bin", "keep2.txt", "n/m/f.txt", "link2", "bin.dat"):
            self.assertIn("copy-out: wrote %s\n" % f, err)
        self.assertIn("copy-out: deleted link\n", err)
        self.assertNotIn(".git", err)  # a nested .git is never listed nor written
        self.assertFalse(os.path.exists(os.path.join(w, "n2")))
        with open(os.path.join(w, "a.txt")) as f:
            self.assertEqual(f.read(), "hello\nlocal edit\nagent\n")
        self.assertEqual(os.listdir(outside), [])
        # now in sync: a second copy-out has nothing to write
        p = cr("workspace", "copy-out", "--in", self.sid, "--json", cwd=w)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["written"], [])


    def test_5_workspace_disk_snapshot_and_fork(self):
        # the checkout is the host-built workspace disk, mounted at /workspace
        ws = json.loads(cr("sandbox", "inspect", self.sid, "--json", check=True).stdout)["workspace"]
        self.assertEqual(ws["method"], "disk")
        self.assertEqual(self.ex("grep ' /workspace ' /proc/mounts | cut -d' ' -f3; "
                                 "test -e /workspace/lost+found || echo no-lost-found"),
                         "ext4\nno-lost-found\n")
        # a snapshot keeps the workspace disk: a fork and a restore see its files
        self.ex("echo snap > /workspace/snap.txt")
        snap = json.loads(cr("snapshot", "create", self.sid, "--json", check=True).stdout)["id"]
        try:
            self.ex("echo later > /workspace/snap.txt")
            f = json.loads(cr("sandbox", "create", "--from-snapshot", snap, "--json", "--no-progress",
                              check=True).stdout)["id"]
            try:
                p = cr("exec", "--in", f, "--", "sh", "-c", "cat /workspace/snap.txt /workspace/a.txt")
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout.decode(), "snap\nhello\nlocal edit\nagent\n")
                st = cr("workspace", "preview", "--in", f, "snap.txt", check=True).stdout.decode()
                self.assertEqual(st, "A snap.txt\n")
            finally:
                cr("sandbox", "rm", f)
            cr("snapshot", "restore", snap, "--in", self.sid, check=True)
            self.assertEqual(self.ex("cat /workspace/snap.txt"), "snap\n")
        finally:
            cr("snapshot", "rm", snap)


class T2Remote(Deadline, unittest.TestCase):
    """--repo-url over a real git http-backend; the mirror cache is reused."""

    def test_http_ref_and_mirror_reuse(self):
        bare, work, first, feature = make_upstream("web")
        url = "http://127.0.0.1:%d/web.git" % HTTPD.server_address[1]
        p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--print-sandbox-id",
               "--repo-url", url, "--ref", "feature", "--", "sh", "-c",
               "cat feature.txt; pwd", cwd=TMP)
        self.assertEqual(p.returncode, 0, p.stderr + log_tail().encode())
        self.assertEqual(p.stdout, b"on feature\n/workspace\n")
        # the mirror has it: resolving again fetches nothing
        r = rpc("workspace.resolve", {"repo_url": url, "ref": "feature"})["result"]
        self.assertEqual(r["commit"], feature)
        self.assertFalse(r["fetched"])
        self.assertEqual(r["received_objects"], 0)
        r = rpc("workspace.resolve", {"repo_url": url, "ref": first})["result"]
        self.assertEqual(r["commit"], first)
        self.assertFalse(r["fetched"])
        # a new upstream commit: fetched incrementally (only the new objects)
        write(os.path.join(work, "more.txt"), "more\n")
        git("add", "-A", cwd=work)
        git("commit", "-qm", "more", cwd=work)
        git("push", "-q", "origin", "main", cwd=work)
        head = git("rev-parse", "HEAD", cwd=work).strip()
        r = rpc("workspace.resolve", {"repo_url": url})["result"]
        self.assertEqual(r["commit"], head)
        self.assertTrue(r["fetched"])
        self.assertLessEqual(r["received_objects"], 3)  # commit, tree, blob
        # unknown refs and unreachable remotes: stable reasons, nothing booted
        r = rpc("workspace.resolve", {"repo_url": url, "ref": "no-such-branch"})
        self.assertEqual(r["error"]["data"]["reason"], "workspace_ref_not_found", r)
        r = rpc("workspace.resolve", {"repo_url": "file://" + os.path.join(TMP, "nope.git")})
        self.assertEqual(r["error"]["data"]["reason"], "workspace_fetch_failed", r)

    def test_repository_disabled(self):
        bare, work, first, feature = make_upstream("off")
        write(os.path.join(work, "cleanroom.yaml"),
              "version: 1\nrepository:\n  enabled: false\n")
        p = cr("exec", "--copy-in", "--", "true", cwd=work)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_not_found", p.stderr)


class T2aCredentials(Deadline, unittest.TestCase):
    """A remote that needs credentials: the daemon asks the host's git
    credential helper (here `store`, in the daemon's HOME); the guest never
    sees them; without them the failure is workspace_fetch_failed."""

    def test_credential_helper_on_the_host(self):
        bare, work, first, feature = make_upstream("secret")
        url = "http://127.0.0.1:%d/private/secret.git" % HTTPD.server_address[1]
        # no helper yet: refused, and no prompt hangs the daemon
        p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--repo-url", url, "--",
               "true", cwd=TMP)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_fetch_failed", p.stderr)
        home = ENV["HOME"]
        write(os.path.join(home, ".gitconfig"), "[credential]\n\thelper = store\n")
        write(os.path.join(home, ".git-credentials"),
              "http://ci-bot:s3cret-token@127.0.0.1:%d\n" % HTTPD.server_address[1], 0o600)
        try:
            GitHTTP.seen_auth.clear()
            p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--repo-url", url, "--",
                   "sh", "-c", "cat a.txt; env; cat /proc/cmdline; "
                   "grep -rl s3cret-token / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; true",
                   cwd=TMP)
            self.assertEqual(p.returncode, 0, p.stderr + log_tail().encode())
            self.assertTrue(p.stdout.startswith(b"hello\n"), p.stdout[:200])
            self.assertIn(True, GitHTTP.seen_auth)  # the upstream got the credential
            self.assertNotIn(b"s3cret-token", p.stdout)  # the guest has it nowhere
            self.assertNotIn(b"ci-bot", p.stdout)
        finally:
            os.unlink(os.path.join(home, ".gitconfig"))
            os.unlink(os.path.join(home, ".git-credentials"))


class T2bUnreachableRemote(Deadline, unittest.TestCase):
    """A checkout whose remote cannot be fetched (a moved path, as in CI's
    copy of a clone; or a server that is down) runs on its own HEAD, with a
    warning; with an explicit --ref it fails with a stable reason."""

    def test_missing_path_and_down_server(self):
        bare, work, first, feature = make_upstream("moved")
        write(os.path.join(work, "local.txt"), "committed here only\n")
        git("add", "-A", cwd=work)
        git("commit", "-qm", "local only", cwd=work)
        head = git("rev-parse", "HEAD", cwd=work).strip()
        down = "http://127.0.0.1:%d/gone.git" % free_port()
        for url in (os.path.join(TMP, "no-such-dir", "repo.git"), down):
            git("remote", "set-url", "origin", url, cwd=work)
            p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--print-sandbox-id",
                   "--", "sh", "-c", "cat local.txt", cwd=work)
            self.assertEqual(p.returncode, 0, p.stderr + log_tail().encode())
            self.assertEqual(p.stdout, b"committed here only\n")
            self.assertIn(b"warning: ", p.stderr)
            self.assertIn(head[:12].encode(), p.stderr)
        p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--ref", "main", "--", "true",
               cwd=work)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_fetch_failed", p.stderr)


def gitsub(*args, cwd=None):
    """git with local (path) submodule remotes allowed, as `git submodule` needs."""
    return git("-c", "protocol.file.allow=always", *args, cwd=cwd)


def make_repo(name, files, subs=()):
    """A bare srv/<name>.git and its clone <name>: files, then submodules
    (path, relative url) added at their remotes' HEAD; committed, pushed."""
    srv = os.path.join(TMP, "srv")
    os.makedirs(srv, exist_ok=True)
    bare = os.path.join(srv, name + ".git")
    git("init", "-q", "--bare", "-b", "main", bare)
    work = os.path.join(TMP, name)
    git("init", "-q", "-b", "main", work)
    git("remote", "add", "origin", bare, cwd=work)
    for path, data in files.items():
        write(os.path.join(work, path), data)
    for path, url in subs:
        gitsub("submodule", "add", "-q", url, path, cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "c", cwd=work)
    git("push", "-q", "-u", "origin", "main", cwd=work)
    return bare, work, git("rev-parse", "HEAD", cwd=work).strip()


class T4Submodules(Deadline, unittest.TestCase):
    """repository.submodules: true brings them (nested, relative URLs) at the
    commit the superproject pins, not their newer HEAD; without it they stay
    empty; a pinned commit the submodule's remote lacks is ref_not_found."""

    def test_submodules(self):
        _, inner, inner_c = make_repo("inner", {"inner.txt": "inner v1\n"})
        _, lib, lib_c = make_repo("lib", {"lib.txt": "lib v1\n"}, [("inner", "../inner.git")])
        _, sup, sup_c = make_repo("super", {"top.txt": "top\n"}, [("vendor/lib", "../lib.git")])
        # the submodules move on after the superproject pinned them
        write(os.path.join(lib, "lib.txt"), "lib v2\n")
        git("commit", "-qam", "v2", cwd=lib)
        git("push", "-q", "origin", "main", cwd=lib)
        write(os.path.join(inner, "inner.txt"), "inner v2\n")
        git("commit", "-qam", "v2", cwd=inner)
        git("push", "-q", "origin", "main", cwd=inner)
        script = ("cat top.txt; cat vendor/lib/lib.txt vendor/lib/inner/inner.txt 2>&1; "
                  "echo entries=$(ls -A vendor/lib | wc -l)")
        # without the flag: an empty directory, as git leaves it
        p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--", "sh", "-c", script,
               cwd=sup)
        self.assertEqual(p.returncode, 0, p.stderr + log_tail().encode())
        out = p.stdout.decode()
        self.assertTrue(out.startswith("top\n"), out)
        self.assertIn("entries=0", out)
        write(os.path.join(sup, "cleanroom.yaml"),
              "version: 1\nrepository:\n  submodules: true\n")
        p = cr("exec", "--image", IMAGE, "--memory", MEM, "--print-sandbox-id", "--", "sh", "-c",
               script, cwd=sup)
        self.assertEqual(p.returncode, 0, p.stderr + log_tail().encode())
        sid = sandbox_id(p)
        try:
            self.assertEqual(p.stdout.decode(), "top\nlib v1\ninner v1\nentries=3\n")
            self.assertNotIn(b"not supported", p.stderr)
            ws = rpc("sandbox.get", {"id": sid})["result"]["workspace"]
            self.assertEqual(ws["commit"], sup_c)
            subs = {m["path"]: m for m in ws["submodules"]}
            self.assertEqual(sorted(subs), ["vendor/lib", "vendor/lib/inner"])
            self.assertEqual(subs["vendor/lib"]["commit"], lib_c)
            self.assertEqual(subs["vendor/lib"]["url"], os.path.join(TMP, "srv", "lib.git"))
            self.assertEqual(subs["vendor/lib/inner"]["commit"], inner_c)
            self.assertEqual(subs["vendor/lib/inner"]["url"], os.path.join(TMP, "srv", "inner.git"))
            # the superproject's diff leaves the submodules' files out
            p = cr("exec", "--in", sid, "--", "sh", "-c",
                   "echo edit >> vendor/lib/lib.txt; echo new > vendor/lib/new.txt; "
                   "echo top2 >> top.txt")
            self.assertEqual(p.returncode, 0, p.stderr)
            p = cr("workspace", "preview", "--in", sid, cwd=sup)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.decode().split(), ["M", "top.txt"])
        finally:
            cr("sandbox", "rm", sid)
        # a pinned commit its remote does not have (never pushed)
        write(os.path.join(sup, "vendor", "lib", "lib.txt"), "unpushed\n")
        git("commit", "-qam", "unpushed", cwd=os.path.join(sup, "vendor", "lib"))
        git("commit", "-qam", "pin unpushed", cwd=sup)
        git("push", "-q", "origin", "main", cwd=sup)
        p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--", "true", cwd=sup)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_ref_not_found", p.stderr)
        self.assertIn(b"vendor/lib", p.stderr)
        # that commit pushed, but the submodule's remote gone before it is
        # fetched: its own reason, and no fallback to the checkout's HEAD (the
        # superproject's remote was fetched; its HEAD has the same submodules)
        git("push", "-q", "origin", "HEAD:refs/heads/side", cwd=os.path.join(sup, "vendor", "lib"))
        srv_lib = os.path.join(TMP, "srv", "lib.git")
        os.rename(srv_lib, srv_lib + ".gone")
        try:
            p = cr("exec", "--image", IMAGE, "--memory", MEM, "--rm", "--", "true", cwd=sup)
        finally:
            os.rename(srv_lib + ".gone", srv_lib)
        self.assertEqual(p.returncode, 125, p.stderr)
        self.assertIn(b"workspace_submodule_fetch_failed", p.stderr)
        self.assertIn(b"vendor/lib", p.stderr)
        self.assertNotIn(b"own HEAD", p.stderr)


class T3MCP(Deadline, unittest.TestCase):
    """`cleanroom mcp --repo DIR`: the default sandbox has DIR's HEAD plus its
    local changes; the `diff` tool shows an agent's edit as a patch."""

    def test_mcp_repo_and_diff(self):
        bare, work, first, feature = make_upstream("agent")
        git("checkout", "-q", "feature", cwd=work)  # HEAD, not the remote's default
        write(os.path.join(work, "a.txt"), "hello\nuncommitted\n")
        p = subprocess.Popen([BIN, "mcp", "--repo", work, "--image", IMAGE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=TMP)
        try:
            def send(m):
                p.stdin.write((json.dumps(m) + "\n").encode())
                p.stdin.flush()

            def call(id, method, params):
                send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
                while True:
                    line = p.stdout.readline()
                    if not line:
                        raise AssertionError("mcp exited: %r" % p.stderr.read()[-2000:])
                    m = json.loads(line)
                    if m.get("id") == id:
                        return m

            r = call(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "ws-test", "version": "1"}})
            self.assertIn("result", r, r)
            send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            r = call(2, "tools/call", {"name": "exec", "arguments": {
                "command": "cd /workspace && cat a.txt feature.txt && echo agent >> a.txt"}})
            self.assertFalse(r["result"].get("isError"), r)
            out = json.loads(r["result"]["content"][0]["text"])
            self.assertEqual(out["stdout"], "hello\nuncommitted\non feature\n")
            r = call(3, "tools/call", {"name": "diff", "arguments": {}})
            self.assertFalse(r["result"].get("isError"), r)
            sc = r["result"]["structuredContent"]
            self.assertEqual(sc["base_commit"], feature)
            self.assertEqual([(f["path"], f["status"]) for f in sc["files"]], [("a.txt", "M")])
            patch = r["result"]["content"][0]["text"].encode()
            base = os.path.join(TMP, "mcp-base")
            git("clone", "-q", bare, base)
            git("checkout", "-q", feature, cwd=base)
            git("apply", "-", cwd=base, input=patch)
            with open(os.path.join(base, "a.txt")) as f:
                self.assertEqual(f.read(), "hello\nuncommitted\nagent\n")
            r = call(4, "tools/call", {"name": "diff", "arguments": {"stat_only": True,
                                                                     "paths": ["../x"]}})
            self.assertTrue(r["result"].get("isError"), r)
            self.assertIn("workspace_unsafe_path", r["result"]["content"][0]["text"])
        finally:
            p.stdin.close()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    t0 = time.monotonic()
    res = unittest.TextTestRunner(verbosity=2).run(suite)
    n = res.testsRun
    bad = len(res.failures) + len(res.errors)
    print("workspace: %d tests, %d passed, %d failed in %.1f s" % (
        n, n - bad, bad, time.monotonic() - t0))
    if bad and TMP:
        print("daemon.log tail:\n" + log_tail())
    return 0 if res.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
