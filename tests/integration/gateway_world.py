"""A small "internet" for the gateway tests and bench/gateway.py: a network
namespace of its own with a veth to the host and Debian's `git http-backend`
(through a tiny CGI server) on two addresses, one the policy allows and one
it does not, and on request Debian's docker-registry. The server logs every request (method, path, Authorization)
to a file. Everything is removed by World.close(), also after failures."""
import os
import shutil
import subprocess
import sys
import time

SERVER_PY = r"""
import http.server, os, subprocess, sys, threading, json
root, log_path = sys.argv[1], sys.argv[2]
log = open(log_path, "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def handle_one(self):
        path, _, query = self.path.partition("?")
        if path.startswith("/redir/"):
            # /redir/<address>/<rest>: a redirect to http://<address>:8080/<rest>
            _, _, addr, rest = path.split("/", 3)
            log.write(json.dumps({"server": self.server.server_address[0], "method": self.command,
                                  "path": self.path, "auth": self.headers.get("Authorization", ""),
                                  "git_protocol": ""}) + "\n")
            self.send_response(302)
            self.send_header("Location", "http://%s:8080/%s" % (addr, rest))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if (path.startswith("/gomod/") or path.startswith("/npmreg/")
                or path.startswith("/gemsrv/")) and ".." not in path:
            # a Go module proxy and an npm registry served from files (<root>/../gomod/...),
            # with an ETag and Last-Modified (a matching If-None-Match is answered 304)
            rec = {"server": self.server.server_address[0], "method": self.command,
                   "path": self.path, "auth": "", "git_protocol": "",
                   "inm": self.headers.get("If-None-Match", "")}
            f = os.path.join(os.path.dirname(root), path.lstrip("/"))
            if os.path.isdir(f):
                f = os.path.join(f, "index")
            if not os.path.isfile(f):
                log.write(json.dumps(dict(rec, status=404)) + "\n")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = open(f, "rb").read()
            self.send_validated(rec, data, [("Last-Modified", self.date_time_string(
                int(os.stat(f).st_mtime)))])
            return
        n = int(self.headers.get("Content-Length") or 0)
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        elif n:
            body = self.rfile.read(n)
        rec = {"server": self.server.server_address[0], "method": self.command,
               "path": self.path, "auth": self.headers.get("Authorization", ""),
               "git_protocol": self.headers.get("Git-Protocol", ""),
               "inm": self.headers.get("If-None-Match", "")}
        env = {"GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                           timeout=120)
        head, sep, out = p.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, _, out = p.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k, v.strip()))
        if self.command == "GET" and path.endswith("/info/refs") and status == 200:
            # the ref advertisement with an ETag (revalidation: 304 while the refs are the same)
            self.send_validated(rec, out, headers)
            return
        log.write(json.dumps(dict(rec, status=status)) + "\n")
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def send_validated(self, rec, data, headers):
        import hashlib
        etag = '"%s"' % hashlib.sha256(data).hexdigest()[:32]
        status = 304 if self.headers.get("If-None-Match") == etag else 200
        log.write(json.dumps(dict(rec, status=status)) + "\n")
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("etag", "content-length"):
                self.send_header(k, v)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", "0" if status == 304 else str(len(data)))
        self.end_headers()
        if status == 200:
            self.wfile.write(data)
    do_GET = handle_one
    do_POST = handle_one
for addr in sys.argv[3:]:
    for port in (8080, 8081):  # 8081: a second upstream on the same host (credential scopes)
        s = http.server.ThreadingHTTPServer((addr, port), H)
        threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


TLS_PY = r"""
import functools, http.server, ssl, sys
d, cert, key, addr, port = sys.argv[1:6]
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer((addr, int(port)), functools.partial(H, directory=d))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"""


TOKEN_PY = r"""
# A distribution token server (the registry's `auth: token` flow): Basic
# credentials in, an RS256 JWT signed with `openssl dgst` out, with an x5c
# header carrying the certificate the registry trusts. Logs each request.
import base64, http.server, json, os, subprocess, sys, time, urllib.parse
addr, port, key, cert, user, pw, log_path = sys.argv[1:8]
der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True,
                     stdout=subprocess.PIPE).stdout
x5c = base64.b64encode(der).decode()
log = open(log_path, "a", buffering=1)
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get("Authorization", "")
        who = None
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, p) != (user, pw):
                self.send_response(401); self.send_header("Content-Length", "0"); self.end_headers()
                log.write(json.dumps({"user": "refused"}) + "\n")
                return
            who = u
        access = []
        for sc in q.get("scope", []):
            parts = sc.split(":")
            if len(parts) == 3 and parts[0] == "repository" and who:
                access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
        log.write(json.dumps({"user": who, "scope": q.get("scope"), "service": q.get("service")}) + "\n")
        now = int(time.time())
        head = b64(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": [x5c]}).encode())
        claims = b64(json.dumps({"iss": "cr-test-issuer", "sub": who or "", "aud": "cr-test",
                                 "exp": now + 600, "nbf": now - 60, "iat": now,
                                 "jti": os.urandom(8).hex(), "access": access}).encode())
        signing = ("%s.%s" % (head, claims)).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing,
                             check=True, stdout=subprocess.PIPE).stdout
        body = json.dumps({"token": "%s.%s" % (signing.decode(), b64(sig))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.ThreadingHTTPServer((addr, int(port)), H)
print("ready", flush=True)
s.serve_forever()
"""


def sh(*args, check=True, timeout=120, **kw):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s -> %d: %s" % (" ".join(args), p.returncode,
                                              p.stderr.decode(errors="replace")[-500:]))
    return p


def free_subnet(pid):
    used = sh("ip", "-o", "-4", "addr", check=False).stdout.decode()
    for k in range(200):
        n = 16 + (pid + k) % 200
        if ("10.213.%d." % n) not in used and ("10.214.%d." % n) not in used:
            return n
    return 16 + pid % 200


class World:
    def __init__(self, tmp, tag):
        self.tmp = tmp
        n = free_subnet(os.getpid())
        self.ns = "cr-gw-%s" % tag
        self.veth_h, self.veth_n = "crgh%s" % tag, "crgn%s" % tag
        w = "10.214.%d" % n
        self.pool = "10.213.%d.0/24" % n
        self.host_w = w + ".1"
        self.allowed = w + ".10"     # the policy allows it
        self.other = w + ".11"       # it does not
        self.repos = os.path.join(tmp, "repos")
        self.log = os.path.join(tmp, "git-http.log")
        self.procs = []
        self.started = False
        self.ca_file = os.path.join(tmp, "tls-ca.pem")  # written by start_tls()

    def start(self):
        os.makedirs(self.repos, exist_ok=True)
        self.started = True
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth_h, "type", "veth", "peer", "name", self.veth_n)
        sh("ip", "link", "set", self.veth_n, "netns", self.ns)
        sh("ip", "addr", "add", self.host_w + "/24", "dev", self.veth_h)
        sh("ip", "link", "set", self.veth_h, "up")
        nse = ["ip", "netns", "exec", self.ns]
        sh(*nse, "ip", "link", "set", "lo", "up")
        sh(*nse, "ip", "addr", "add", self.allowed + "/24", "dev", self.veth_n)
        sh(*nse, "ip", "addr", "add", self.other + "/32", "dev", self.veth_n)
        sh(*nse, "ip", "link", "set", self.veth_n, "up")
        srv = subprocess.Popen(nse + [sys.executable, "-c", SERVER_PY, self.repos, self.log,
                                      self.allowed, self.other], stdout=subprocess.PIPE)
        self.procs.append(srv)
        if srv.stdout.readline().strip() != b"ready":
            raise AssertionError("git http server in the namespace did not start")

    def make_repo(self, name, files=20, size=2000):
        """A bare repository <repos>/<name>.git with one commit of `files`
        files of `size` pseudo-random bytes each; returns its commit id."""
        work = os.path.join(self.tmp, "src-" + name)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        sh(*git, "init", "-q", work)
        import random
        rnd = random.Random(name)
        for i in range(files):
            d = os.path.join(work, "d%02d" % (i % 16))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
                f.write("".join(rnd.choice("abcdefghij \n") for _ in range(size)))
        sh(*git, "-C", work, "add", "-A")
        sh(*git, "-C", work, "commit", "-q", "-m", "first")
        bare = os.path.join(self.repos, name + ".git")
        sh("git", "clone", "-q", "--bare", work, bare)
        sh("git", "-C", bare, "config", "http.receivepack", "true")  # push: the policy decides
        return sh("git", "-C", bare, "rev-parse", "HEAD").stdout.decode().strip()

    def make_go_module(self, module="example.com/hello", version="v1.0.0"):
        """The files a Go module proxy serves for one version, under
        <tmp>/gomod/<module>/@v/ (served at /gomod/...)."""
        import io, zipfile
        d = os.path.join(self.tmp, "gomod", module, "@v")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "list"), "w") as f:
            f.write(version + "\n")
        with open(os.path.join(d, version + ".info"), "w") as f:
            f.write('{"Version":"%s","Time":"2026-01-01T00:00:00Z"}' % version)
        with open(os.path.join(d, version + ".mod"), "w") as f:
            f.write("module %s\n\ngo 1.19\n" % module)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("%s@%s/go.mod" % (module, version), "module %s\n\ngo 1.19\n" % module)
            z.writestr("%s@%s/hello.go" % (module, version), "package hello\n\nconst Hello = \"hi\"\n")
        with open(os.path.join(d, version + ".zip"), "wb") as f:
            f.write(buf.getvalue())
        return buf.getvalue()

    def make_npm_package(self, name="hello", version="1.0.0"):
        """An npm registry's packument and tarball for one package, served at
        /npmreg/<name> and /npmreg/<name>/-/<name>-<version>.tgz; returns the
        tarball's bytes."""
        import hashlib, io, json as _json, tarfile
        d = os.path.join(self.tmp, "npmreg", name, "-")
        os.makedirs(d, exist_ok=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            data = _json.dumps({"name": name, "version": version}).encode()
            info = tarfile.TarInfo("package/package.json")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        tgz = buf.getvalue()
        with open(os.path.join(d, "%s-%s.tgz" % (name, version)), "wb") as f:
            f.write(tgz)
        url = "http://%s:8080/npmreg/%s/-/%s-%s.tgz" % (self.allowed, name, name, version)
        doc = {"name": name, "dist-tags": {"latest": version},
               "versions": {version: {"name": name, "version": version,
                                      "dist": {"tarball": url,
                                               "shasum": hashlib.sha1(tgz).hexdigest()}}}}
        with open(os.path.join(self.tmp, "npmreg", name, "index"), "w") as f:
            _json.dump(doc, f)
        return tgz

    def make_gem_server(self, name="hello", version="1.0.0"):
        """A RubyGems source served from files at /gemsrv/: the compact index
        (versions, names, info/<name>), a hand-made .gem (a tar of
        metadata.gz, data.tar.gz, checksums.yaml.gz: what `gem build` makes)
        and its quick gemspec; returns (gem bytes, gemspec bytes)."""
        import gzip, hashlib, io, tarfile, zlib
        d = os.path.join(self.tmp, "gemsrv")
        for sub in ("info", "gems", "quick/Marshal.4.8"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)

        def tar(members):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as t:
                for n, data in members:
                    ti = tarfile.TarInfo(n)
                    ti.size = len(data)
                    t.addfile(ti, io.BytesIO(data))
            return buf.getvalue()
        meta = ("--- !ruby/object:Gem::Specification\nname: %s\nversion: !ruby/object:Gem::Version\n"
                "  version: %s\nfiles:\n- lib/%s.rb\n" % (name, version, name)).encode()
        data = gzip.compress(tar([("lib/%s.rb" % name, b"module Hello; end\n")]), mtime=0)
        mgz = gzip.compress(meta, mtime=0)
        sums = gzip.compress(("---\nSHA256:\n  metadata.gz: %s\n  data.tar.gz: %s\n" % (
            hashlib.sha256(mgz).hexdigest(), hashlib.sha256(data).hexdigest())).encode(), mtime=0)
        gem = tar([("metadata.gz", mgz), ("data.tar.gz", data), ("checksums.yaml.gz", sums)])
        spec = zlib.compress(b"\x04\x08" + meta)
        with open(os.path.join(d, "gems", "%s-%s.gem" % (name, version)), "wb") as f:
            f.write(gem)
        with open(os.path.join(d, "quick/Marshal.4.8", "%s-%s.gemspec.rz" % (name, version)), "wb") as f:
            f.write(spec)
        info = "---\n%s |checksum:%s\n" % (version, hashlib.sha256(gem).hexdigest())
        with open(os.path.join(d, "info", name), "w") as f:
            f.write(info)
        with open(os.path.join(d, "versions"), "w") as f:
            f.write("created_at: 2026-01-01T00:00:00Z\n---\n%s %s %s\n" % (
                name, version, hashlib.md5(info.encode()).hexdigest()))
        with open(os.path.join(d, "names"), "w") as f:
            f.write("---\n%s\n" % name)
        return gem, spec

    def add_commit(self, name, text="a later commit\n"):
        """A new commit on main in <repos>/<name>.git (later.txt holds text);
        returns its id."""
        work = os.path.join(self.tmp, "src-" + name)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
        with open(os.path.join(work, "later.txt"), "w") as f:
            f.write(text)
        sh(*git, "-C", work, "add", "-A")
        sh(*git, "-C", work, "commit", "-q", "-m", "later")
        sh("git", "-C", work, "push", "-q", os.path.join(self.repos, name + ".git"), "HEAD:main")
        return sh("git", "-C", work, "rev-parse", "HEAD").stdout.decode().strip()

    def start_token_registry(self, user, pw):
        """docker-registry with token auth on <allowed>:5002 and its token
        server on <allowed>:5001 (log: self.token_log)."""
        d = os.path.join(self.tmp, "token")
        os.makedirs(d, exist_ok=True)
        key, cert = d + "/key.pem", d + "/cert.pem"
        sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
           "-days", "2", "-subj", "/CN=cleanroom-token")
        self.token_log = d + "/token.log"
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", TOKEN_PY,
                              self.allowed, "5001", key, cert, user, pw, self.token_log],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        if p.stdout.readline().strip() != b"ready":
            raise AssertionError("token server did not start")
        self.start_registry(port=5002, name="registry-token",
                            auth="auth:\n  token:\n    realm: http://%s:5001/token\n"
                                 "    service: cr-test\n    issuer: cr-test-issuer\n"
                                 "    rootcertbundle: %s\n" % (self.allowed, cert))

    def start_registry(self, port=5000, name="registry", auth=""):
        """Debian's docker-registry (the CNCF distribution registry) on
        <allowed>:<port> in the namespace, storage under tmp."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                    "    rootdirectory: %s/data\nhttp:\n  addr: %s:%d\n%s" % (d, self.allowed, port, auth))
        log = open(os.path.join(d, "registry.log"), "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, "docker-registry", "serve", cfg],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        import urllib.error
        import urllib.request
        deadline = time.time() + 30
        while True:  # until it answers /v2/ (bounded; 401 is an answer)
            try:
                urllib.request.urlopen("http://%s:%d/v2/" % (self.allowed, port), timeout=2).read()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                if p.poll() is not None or time.time() > deadline:
                    raise AssertionError("docker-registry did not start")
                time.sleep(0.1)  # polling the registry, bounded

    def push_image(self, repo="test/app", tag="v1", port=5000, creds=None):
        """An OCI image (one gzip layer, a config, a manifest) pushed with the
        distribution API (through the token flow with creds when the registry
        asks); returns (manifest bytes, layer digest hex, layer bytes)."""
        import base64 as b64m, gzip, hashlib, io, json, tarfile, urllib.error, urllib.parse
        import urllib.request
        base = "http://%s:%d/v2/%s" % (self.allowed, port, repo)
        bearer = []

        def send(req):
            if bearer:
                req.add_header("Authorization", "Bearer " + bearer[0])
            try:
                return urllib.request.urlopen(req, timeout=10)
            except urllib.error.HTTPError as e:
                ch = e.headers.get("WWW-Authenticate", "")
                if e.code != 401 or bearer or not ch.startswith("Bearer ") or not creds:
                    raise
                import re
                kv = dict(re.findall(r'(\w+)="([^"]*)"', ch))
                turl = "%s?service=%s&scope=%s" % (kv["realm"], urllib.parse.quote(kv["service"]),
                                                   urllib.parse.quote("repository:%s:pull,push" % repo))
                treq = urllib.request.Request(turl, headers={"Authorization": "Basic " + b64m.b64encode(
                    ("%s:%s" % creds).encode()).decode()})
                bearer.append(json.loads(urllib.request.urlopen(treq, timeout=10).read())["token"])
                req.remove_header("Authorization")
                req.add_header("Authorization", "Bearer " + bearer[0])
                return urllib.request.urlopen(req, timeout=10)

        def put_blob(data):
            req = urllib.request.Request(base + "/blobs/uploads/", method="POST", data=b"")
            loc = send(req).headers["Location"]
            if loc.startswith("/"):
                loc = "http://%s:%d%s" % (self.allowed, port, loc)
            dg = "sha256:" + hashlib.sha256(data).hexdigest()
            sep = "&" if "?" in loc else "?"
            req = urllib.request.Request(loc + sep + "digest=" + dg, method="PUT", data=data,
                                         headers={"Content-Type": "application/octet-stream"})
            send(req).read()
            return dg

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            payload = b"hello from the registry %d\n" % os.getpid()
            ti = tarfile.TarInfo("hello.txt")
            ti.size = len(payload)
            t.addfile(ti, io.BytesIO(payload))
        layer = gzip.compress(buf.getvalue(), mtime=0)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers",
                                        "diff_ids": ["sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()]},
                             "config": {}}).encode()
        ldg, cdg = put_blob(layer), put_blob(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdg,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldg,
                        "size": len(layer)}]}).encode()
        req = urllib.request.Request(base + "/manifests/" + tag, method="PUT", data=manifest,
                                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        send(req).read()
        return manifest, ldg.split(":", 1)[1], layer

    def start_tls(self):
        """Two HTTPS servers on <allowed> serving <tmp>/tls-files: :8443 with a
        certificate of a CA written to self.ca_file (the gateway is told to
        trust it), :8444 with a self-signed one nobody trusts."""
        d = os.path.join(self.tmp, "tls")
        files = os.path.join(self.tmp, "tls-files")
        os.makedirs(d, exist_ok=True)
        os.makedirs(files, exist_ok=True)
        o = ["openssl"]
        sh(*o, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/ca.key", "-out",
           self.ca_file, "-days", "2", "-subj", "/CN=cleanroom-test-ca")
        sh(*o, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/srv.key", "-out",
           d + "/srv.csr", "-subj", "/CN=" + self.allowed)
        with open(d + "/ext", "w") as f:
            f.write("subjectAltName=IP:%s\n" % self.allowed)
        sh(*o, "x509", "-req", "-in", d + "/srv.csr", "-CA", self.ca_file, "-CAkey", d + "/ca.key",
           "-CAcreateserial", "-out", d + "/srv.pem", "-days", "2", "-extfile", d + "/ext")
        sh(*o, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d + "/bad.key", "-out",
           d + "/bad.pem", "-days", "2", "-subj", "/CN=" + self.allowed, "-addext",
           "subjectAltName=IP:" + self.allowed)
        for cert, key, port in (("srv.pem", "srv.key", 8443), ("bad.pem", "bad.key", 8444)):
            p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", TLS_PY, files,
                                  d + "/" + cert, d + "/" + key, self.allowed, str(port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.procs.append(p)
            if p.stdout.readline().strip() != b"ready":
                raise AssertionError("HTTPS server on port %d did not start" % port)
        return files

    def requests(self):
        import json
        try:
            with open(self.log) as f:
                return [json.loads(l) for l in f if l.strip()]
        except OSError:
            return []

    def close(self):
        for p in self.procs:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass
        if self.started:
            sh("ip", "link", "del", self.veth_h, check=False)
            sh("ip", "netns", "del", self.ns, check=False)

    def leftovers(self):
        left = []
        if self.ns in sh("ip", "netns", "list", check=False).stdout.decode():
            left.append("netns " + self.ns)
        if os.path.exists("/sys/class/net/" + self.veth_h):
            left.append("link " + self.veth_h)
        return left
