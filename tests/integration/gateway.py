#!/usr/bin/env python3
"""Host gateway integration test (docs/gateway.md): real sandboxes (QEMU)
with a Debian image that has git, the real daemon, real nftables/TAP, and
Debian's `git http-backend` in a network namespace this test creates
(tests/integration/gateway_world.py). In the guest a plain
`git clone http://<upstream>/repo.git` goes through the gateway (the
insteadOf the daemon injects); a second sandbox's clone is served from the
content cache (hit counter); push is refused; an upstream not in the policy
is refused with host_not_allowed; a host credential reaches the upstream
but never the guest.

Environment: CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_GIT_IMAGE_TAR (a rootfs tar with git: images/debian/build.sh;
scripts/test.sh builds it once). Root. Removes all it creates."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gateway_world  # noqa: E402

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("gateway: skipped (set CLEANROOM_TEST_VM=1)")
    sys.exit(77)
if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("nft") \
        or not shutil.which("git"):
    print("gateway: skipped (needs root, /dev/net/tun, nft, git)")
    sys.exit(77)
IMAGE_TAR = os.environ.get("CLEANROOM_TEST_GIT_IMAGE_TAR")
if not IMAGE_TAR or not os.path.exists(IMAGE_TAR):
    print("gateway: skipped (set CLEANROOM_TEST_GIT_IMAGE_TAR to a rootfs tar with git, "
          "e.g. images/debian/build.sh)")
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
IMAGE = "test/gateway-debian"
DEADLINE = 840
PID = os.getpid()
TAG = "%05d" % (PID % 100000)
TABLE = "crgwtest_%d" % PID
PORT = 18470 + PID % 1000
SECRET = "gw-secret-%d-Zq7" % PID
TMP = tempfile.mkdtemp(prefix="cr-gateway-")
W = gateway_world.World(TMP, TAG)
ENV = dict(os.environ)
ENV.update({
    "CLEANROOM_RUN_DIR": os.path.join(TMP, "run"),
    "CLEANROOM_DATA_DIR": os.path.join(TMP, "data"),
    "CLEANROOM_CACHE_DIR": os.path.join(TMP, "cache"),
    "CLEANROOM_EGRESS_TABLE": TABLE,
    "CLEANROOM_EGRESS_POOL": W.pool,
    "CLEANROOM_EGRESS_NFLOG_GROUP": str(3000 + PID % 20000),
    "CLEANROOM_DNS_UPSTREAM": "127.0.0.1:9",
    "CLEANROOM_GATEWAY_PORT": str(PORT),
    "CLEANROOM_GATEWAY_CREDENTIALS": os.path.join(TMP, "credentials.json"),
    "CLEANROOM_GATEWAY_REQUEST_TIMEOUT_MS": "3000",
    "CLEANROOM_GATEWAY_GOPROXY": "http://%s:8080/gomod" % W.allowed,
    "CLEANROOM_GATEWAY_NPM_REGISTRY": "http://%s:8080/npmreg/" % W.allowed,
    "CLEANROOM_GATEWAY_OCI_INSECURE": "%s:5000,%s:5002" % (W.allowed, W.allowed),  # HTTP registries
    "CLEANROOM_GATEWAY_CA_FILE": W.ca_file,  # the CA of the test's HTTPS upstream
    "CLEANROOM_GATEWAY_RUBYGEMS": "http://%s:8080/gemsrv" % W.allowed,
    "CLEANROOM_GATEWAY_REVALIDATE_S": "600",  # indexes fresh for the whole test (revalidate_row)
    "CLEANROOM_GATEWAY_REVALIDATE_REFS_S": "0",  # refs always revalidated (fetches see new commits)
})
for k in ("CLEANROOM_HOST", "CLEANROOM_EGRESS", "CLEANROOM_GATEWAY_OFFLINE"):
    ENV.pop(k, None)
POLICY = """version: 1
sandbox:
  image:
    ref: %s
  network:
    default: deny
    allow:
      - %s:8080
      - %s:5000
      - host: %s
        ports: [8443, 8444, 8081, 5001, 5002]
  secrets:
    - name: git-upstream
      hosts: ["%s:8080"]
    - name: unscoped
      hosts: ["%s:8443"]
    - name: registry
      hosts: ["%s:5002", "%s:5001"]
""" % (IMAGE, W.allowed, W.allowed, W.allowed, W.allowed, W.allowed, W.allowed, W.allowed)
# sandbox b's: the same, and git push to the allowed upstream (sandbox.network.git_push)
POLICY_PUSH = POLICY.replace("  secrets:\n", "    git_push: [\"%s:8080\"]\n  secrets:\n" % W.allowed, 1)
RESULTS = []


def row(name, ok, detail=""):
    RESULTS.append((name, ok))
    print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""),
          flush=True)


def cr(*args, timeout=300, check=True):
    p = subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d: %s" % (" ".join(args), p.returncode,
                                                        p.stderr.decode(errors="replace")[-800:]))
    return p


def guest(sid, script, timeout=300):
    p = cr("exec", "--in", sid, "--", "sh", "-c", script, timeout=timeout, check=False)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def events(sid):
    p = cr("events", "--sandbox", sid, "--json")
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]


def has_event(evs, **kw):
    return any(all(e.get(k) == v for k, v in kw.items()) for e in evs)


def cache_stats():
    return json.loads(cr("cache", "stats", "--json").stdout)


def stop_daemon():
    sock = os.path.join(ENV["CLEANROOM_RUN_DIR"], "cleanroom.sock")
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
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)  # waiting for the daemon to exit, bounded
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


GIT = "GIT_TERMINAL_PROMPT=0 git -c advice.detachedHead=false"


def run_rows(a, b, commit):
    url = "http://%s:8080/repo.git" % W.allowed
    # 1 the exec environment routes git through the gateway
    _, out = guest(a, "git config --get-regexp '^url\\.' ; env | grep ^GIT_CONFIG_ | sort")
    row("executions get url.<gateway>.insteadOf (GIT_CONFIG_*)",
        "GIT_CONFIG_KEY_0=url.http://" in out and (":%d/git/https/.insteadof https://" % PORT) in out.lower(),
        out)
    # 2 a plain clone through the gateway (cold)
    before = len(W.requests())
    rc, out = guest(a, "%s clone -q %s /tmp/c1 && git -C /tmp/c1 rev-parse HEAD" % (GIT, url))
    reqs = W.requests()[before:]
    row("a plain git clone in the guest goes through the gateway",
        rc == 0 and commit in out and any("git-upload-pack" in r["path"] for r in reqs), out[-600:])
    # the upstream saw the gateway's (host) address, not the guest's: checked through
    # the credential below; the gateway answered for the sandbox
    evs = events(a)
    row("the clone is audited (gateway events, allowed, cache miss)",
        has_event(evs, kind="gateway", action="allow", route="git-upload-pack", cache="miss"),
        json.dumps([e for e in evs if e.get("kind") == "gateway"])[:800])
    # 3 the credential reached the upstream
    auth = [r["auth"] for r in reqs if r["auth"]]
    decoded = [base64.b64decode(x.split()[1]).decode(errors="replace") for x in auth
               if x.startswith("Basic ")]
    row("the host's credential reaches the upstream",
        any(SECRET in d for d in decoded), "auth headers %s" % auth)
    # 4 ...but never the guest
    rc, out = guest(a, "env; cat /proc/self/environ 2>/dev/null | tr '\\0' '\\n'; "
                       "git config --list --show-origin 2>/dev/null; "
                       "grep -rIl -- '%s' /root /tmp /etc /workspace /var 2>/dev/null; "
                       "echo scanned" % SECRET)
    row("the guest never sees the credential (env, git config, files)",
        "scanned" in out and SECRET not in out.replace("grep -rIl -- '%s'" % SECRET, ""), out[-400:])
    # 5 a second sandbox's clone comes from the cache
    st0 = cache_stats()
    before = len(W.requests())
    rc, out = guest(b, "%s clone -q %s /tmp/c2 && git -C /tmp/c2 rev-parse HEAD && "
                       "git -C /tmp/c2 fsck --no-progress && echo FSCK_OK" % (GIT, url))
    reqs = W.requests()[before:]
    st1 = cache_stats()
    packs = [r for r in reqs if r["path"].endswith("git-upload-pack")]
    evs = events(b)
    row("a second sandbox's clone is served from the cache (hit counter, no upstream pack)",
        rc == 0 and commit in out and "FSCK_OK" in out and st1["hits"] > st0["hits"]
        and has_event(evs, kind="gateway", route="git-upload-pack", cache="hit"),
        "rc=%d stats %s -> %s upstream packs %d: %s" % (rc, st0, st1, len(packs), out[-400:]))
    # 5b fetch through the gateway (haves: not cacheable, asked upstream)
    newer = W.add_commit("repo")
    before = len(W.requests())
    rc, out = guest(b, "cd /tmp/c2 && %s pull -q --ff-only && git rev-parse HEAD" % GIT)
    reqs = W.requests()[before:]
    row("a fetch of a new commit goes through the gateway (not from the cache)",
        rc == 0 and newer in out and any(r["path"].endswith("git-upload-pack") for r in reqs),
        out[-400:])
    # 5c immutable download by URL + digest: fetched, checked, cached; a wrong digest refused
    head = open(os.path.join(W.repos, "repo.git", "HEAD"), "rb").read()
    import hashlib
    dg = hashlib.sha256(head).hexdigest()
    gwbase = "http://%s:%d" % (json.loads(cr("sandbox", "inspect", b, "--json").stdout)["network"]
                               ["host_address"], PORT)
    durl = "%s/download/sha256/%s/http/%s:8080/repo.git/HEAD" % (gwbase, dg, W.allowed)
    bad = "%s/download/sha256/%s/http/%s:8080/repo.git/HEAD" % (gwbase, "0" * 64, W.allowed)
    before = len(W.requests())
    _, o1 = guest(b, "curl -sS %s; echo; curl -sS %s; echo; curl -s -o /dev/null -w 'code=%%{http_code}' %s"
                  % (durl, durl, bad))
    reqs = [r for r in W.requests()[before:] if r["path"].endswith("/HEAD")]
    row("a download by URL + digest is checked, cached (one upstream request for two), a wrong digest refused",
        o1.count(head.decode().strip()) == 2 and len(reqs) == 2 and "code=502" in o1
        and has_event(events(b), kind="gateway", route="download", cache="hit")
        and has_event(events(b), kind="gateway", route="download", reason="digest_mismatch"),
        "%s upstream=%d" % (o1[-300:], len(reqs)))
    # 5d the Go module proxy protocol: GOPROXY injected; a version's zip cached, @v/list not
    zipdata = W.make_go_module()
    before = len(W.requests())
    _, o1 = guest(b, "echo GOPROXY=$GOPROXY; for i in 1 2; do curl -sS $GOPROXY/example.com/hello/@v/list; "
                     "curl -sS $GOPROXY/example.com/hello/@v/v1.0.0.zip | sha256sum; done")
    reqs = W.requests()[before:]
    zips = [r for r in reqs if r["path"].endswith(".zip")]
    lists = [r for r in reqs if r["path"].endswith("/list")]
    import hashlib as _h
    row("GOPROXY goes through the gateway: a version's zip is cached, @v/list fresh within its time",
        ("GOPROXY=http://" in o1 and "/go/http/%s:8080/gomod" % W.allowed in o1
         and o1.count(_h.sha256(zipdata).hexdigest()) == 2 and len(zips) == 1 and len(lists) == 1
         and has_event(events(b), kind="gateway", route="goproxy", cache="hit")),
        "%s zips=%d lists=%d" % (o1[-300:], len(zips), len(lists)))
    # 5e the npm registry: npm_config_registry injected, tarball URLs rewritten to the
    # gateway, a tarball cached (npm itself is not in the image: driven with curl)
    tgz = W.make_npm_package()
    before = len(W.requests())
    _, o1 = guest(b, "echo REG=$npm_config_registry; t=$(curl -sS ${npm_config_registry}hello | "
                     "sed 's/.*\"tarball\":\"\\([^\"]*\\)\".*/\\1/'); echo TARBALL=$t; "
                     "for i in 1 2; do curl -sS $t | sha256sum; done")
    reqs = W.requests()[before:]
    tars = [r for r in reqs if r["path"].endswith(".tgz")]
    row("npm: metadata through the gateway with tarballs rewritten to it; a tarball is cached",
        ("REG=http://" in o1 and ("TARBALL=http://%s/npm/http/%s:8080/npmreg/hello/-/hello-1.0.0.tgz"
                                   % (gwbase.split("//")[1], W.allowed)) in o1
         and o1.count(_h.sha256(tgz).hexdigest()) == 2 and len(tars) == 1
         and has_event(events(b), kind="gateway", route="npm", cache="hit")),
        "%s tarballs=%d" % (o1[-400:], len(tars)))
    # 5e' redirects: followed to an allowed host, refused to one the policy does not allow
    th = _h.sha256(tgz).hexdigest()
    before = len(W.requests())
    rpath = "npmreg/hello/-/hello-1.0.0.tgz"
    _, o1 = guest(b, "curl -sS %s/download/sha256/%s/http/%s:8080/redir/%s/%s | sha256sum; "
                     "curl -sS -o /dev/null -w 'denied=%%{http_code}\\n' "
                     "%s/download/sha256/%s/http/%s:8080/redir/%s/%s"
                  % (gwbase, th, W.allowed, W.allowed, rpath, gwbase, "1" * 64, W.allowed, W.other,
                     rpath))
    reqs = W.requests()[before:]
    evs = events(b)
    row("a redirect is followed to an allowed host and refused to one the policy does not allow",
        (th in o1 and "denied=403" in o1 and not any(r["server"] == W.other for r in reqs)
         and has_event(evs, kind="gateway", route="download", redirects=1, action="allow")
         and has_event(evs, kind="gateway", route="download", reason="host_not_allowed")),
        "%s %s" % (o1[-300:], [r["path"] for r in reqs]))
    # 5e'' a TLS upstream: verified against the configured CA; an untrusted certificate fails
    files = W.start_tls()
    blob = os.urandom(50000)
    with open(os.path.join(files, "blob.bin"), "wb") as f:
        f.write(blob)
    blob2 = os.urandom(50000)  # another digest: the first one is in the cache after its fetch
    with open(os.path.join(files, "blob2.bin"), "wb") as f:
        f.write(blob2)
    bh, bh2 = _h.sha256(blob).hexdigest(), _h.sha256(blob2).hexdigest()
    _, o1 = guest(b, "curl -sS %s/download/sha256/%s/https/%s:8443/blob.bin | sha256sum; "
                     "curl -sS -o /dev/null -w 'untrusted=%%{http_code}\\n' "
                     "%s/download/sha256/%s/https/%s:8444/blob2.bin"
                  % (gwbase, bh, W.allowed, gwbase, bh2, W.allowed))
    evs = events(b)
    bad = [e for e in evs if e.get("port") == 8444]
    row("a TLS upstream is verified: the configured CA's certificate works, an untrusted one fails",
        (bh in o1 and "untrusted=502" in o1
         and any("certificate" in (e.get("detail") or "").lower() for e in bad)),
        "%s %s" % (o1[-300:], [e.get("detail") for e in bad]))
    # 5e4 a credential goes only where the policy scopes its secret
    before = len(W.requests())
    _, o1 = guest(b, "curl -sS -D - -o /dev/null %s/download/sha256/%s/http/%s:8081/gomod/scoped-probe "
                     "| tr -d '\\r' | grep -i '^x-cleanroom-reason'" % (gwbase, "2" * 64, W.allowed))
    reqs = W.requests()[before:]
    row("a credential is sent only where the policy scopes its secret (secret_scope_violation)",
        ("secret_scope_violation" in o1 and not any("scoped-probe" in r["path"] for r in reqs)
         and has_event(events(b), kind="gateway", reason="secret_scope_violation", port=8081)),
        "%s %s" % (o1[-300:], reqs))
    # 5f OCI pull-through from Debian's docker-registry (curl drives the distribution API)
    W.start_registry()
    manifest, lhex, layer = W.push_image()
    reg = "%s/v2/%s:5000/test/app" % (gwbase, W.allowed)
    _, o1 = guest(b, "curl -sS %s/v2/; echo; curl -sS -D /tmp/h -o /tmp/m %s/manifests/v1; "
                     "sha256sum /tmp/m; tr -d '\\r' </tmp/h | grep -i -e '^docker-content-digest' "
                     "-e '^content-type'; curl -sS -I %s/manifests/v1 | tr -d '\\r' | "
                     "sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: /HEAD /p'; for i in 1 2; do curl -sS %s/blobs/sha256:%s | sha256sum; done; "
                     "curl -sS -o /dev/null -w 'other=%%{http_code}\\n' %s/v2/%s:5000/test/app/manifests/v1"
                  % (gwbase, reg, reg, reg, lhex, gwbase, W.other))
    mhex = _h.sha256(manifest).hexdigest()
    evs = events(b)
    row("OCI: the registry's manifest and blobs through the gateway, the blob cached, digests checked",
        ("{}" in o1 and o1.count(mhex) >= 3 and ("HEAD sha256:" + mhex) in o1 and "application/vnd.oci.image.manifest.v1+json" in o1
         and o1.count(lhex) == 2 and "other=403" in o1
         and has_event(evs, kind="gateway", route="oci", cache="hit")
         and has_event(evs, kind="gateway", route="oci", reason="host_not_allowed")),
        o1[-600:])
    # 5g a registry with token auth: the gateway does the token flow with the host's
    # credential (scoped to the registry and its token service), the guest sends none
    W.start_token_registry("reguser", SECRET + "-reg")
    tmanifest, _, _ = W.push_image(port=5002, creds=("reguser", SECRET + "-reg"))
    _, o1 = guest(b, "curl -sS %s/v2/%s:5002/test/app/manifests/v1 | sha256sum" % (gwbase, W.allowed))
    try:
        with open(W.token_log) as f:
            tlog = [json.loads(l) for l in f if l.strip()]
    except OSError:
        tlog = []
    row("OCI: a registry with token auth is served through the token flow with the host's credential",
        (_h.sha256(tmanifest).hexdigest() in o1
         and any(t.get("user") == "reguser" and "repository:test/app:pull" in (t.get("scope") or [])
                 for t in tlog)),
        "%s %s" % (o1[-200:], tlog[-3:]))
    # 6 push refused
    before = len(W.requests())
    rc, out = guest(a, "cd /tmp/c1 && echo x > new.txt && git add new.txt && "
                       "git -c user.name=t -c user.email=t@t commit -qm x && "
                       "%s push origin HEAD:refs/heads/pushed 2>&1; echo rc=$?" % GIT)
    reqs = W.requests()[before:]
    row("push is refused (push_not_allowed), never reaches the upstream",
        "rc=0" not in out and not any("receive-pack" in r["path"] for r in reqs)
        and has_event(events(a), kind="gateway", action="deny", reason="push_not_allowed"),
        out[-400:])
    # 7 an upstream not in the policy
    before = len(W.requests())
    rc, out = guest(a, "%s clone -q http://%s:8080/repo.git /tmp/c3 2>&1; echo rc=$?"
                    % (GIT, W.other))
    reqs = W.requests()[before:]
    row("an upstream not in the policy is refused (host_not_allowed), never asked",
        "rc=0" not in out and not reqs
        and has_event(events(a), kind="gateway", action="deny", reason="host_not_allowed",
                      name=W.other), out[-400:])
    # 8 not a forward proxy; Host checked; canonical paths only
    gw = "%s:%d" % (json.loads(cr("sandbox", "inspect", a, "--json").stdout)["network"]
                    ["host_address"], PORT)
    probes = {
        "absolute-form": "GET http://%s:8080/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: %s\r\n\r\n" % (W.allowed, gw),
        "CONNECT": "CONNECT %s:8080 HTTP/1.1\r\nHost: %s\r\n\r\n" % (W.allowed, gw),
        "wrong Host": "GET /git/http/%s:8080/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: %s:8080\r\n\r\n" % (W.allowed, W.allowed),
        "dot-dot": "GET /git/http/%s:8080/x/../repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: %s\r\n\r\n" % (W.allowed, gw),
        "percent": "GET /git/http/%s:8080/%%2e%%2e/repo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: %s\r\n\r\n" % (W.allowed, gw),
    }
    before = len(W.requests())
    bad = []
    for name, req in probes.items():
        script = "printf '%s' | timeout 10 bash -c 'exec 3<>/dev/tcp/%s/%d; cat >&3; cat <&3' 2>&1 | head -1" % (
            req.replace("\r", "\\r").replace("\n", "\\n").replace("%", "%%"), gw.split(":")[0], PORT)
        _, out = guest(a, script, timeout=60)
        if " 200 " in out or "HTTP/1.1 4" not in out:
            bad.append("%s: %s" % (name, out.strip()[:120]))
    row("no forward proxy: absolute URLs, CONNECT, a wrong Host, '..' and %-escapes refused",
        not bad and len(W.requests()) == before, "; ".join(bad))
    # 9 a request that never completes loses its connection (request timeout, 3 s here)
    _, out = guest(a, "timeout 30 bash -c \"exec 3<>/dev/tcp/%s/%d; printf 'GET / HTTP/1.1\\r\\n' >&3; "
                      "cat <&3\"; echo rc=$?" % (gw.split(":")[0], PORT), timeout=60)
    row("a request that never completes is cut off (request_timeout)",
        "rc=0" in out and has_event(events(a), kind="gateway", reason="request_timeout"), out)


def push_row(b):
    """Sandbox b's policy allows git push to the upstream
    (sandbox.network.git_push): the push goes through the gateway (with the
    host's credential) and the upstream repository has the new commit."""
    before = len(W.requests())
    rc, out = guest(b, "cd /tmp/c2 && echo pushed > pushed.txt && git add pushed.txt && "
                       "git -c user.name=t -c user.email=t@t commit -qm pushed && "
                       "%s push origin HEAD:refs/heads/pushed 2>&1; echo rc=$?; git rev-parse HEAD"
                    % GIT)
    reqs = W.requests()[before:]
    head = out.strip().splitlines()[-1] if out.strip() else "?"
    up = gateway_world.sh("git", "-C", os.path.join(W.repos, "repo.git"), "rev-parse",
                          "refs/heads/pushed", check=False).stdout.decode().strip()
    evs = events(b)
    row("push is passed on where the policy allows it (git_push): the upstream has the commit",
        ("rc=0" in out and up == head and any(r["path"].endswith("/git-receive-pack")
                                              and r["auth"] for r in reqs)
         and has_event(evs, kind="gateway", action="allow", route="git-receive-pack", cache="none")),
        "up=%s %s %s" % (up, out[-400:], [r["path"] for r in reqs]))


def revalidate_rows(b):
    """Mutable answers: within CLEANROOM_GATEWAY_REVALIDATE_S (600 s here)
    npm metadata is served from the cache (no upstream request); git refs
    (CLEANROOM_GATEWAY_REVALIDATE_REFS_S=0) are asked every time with the
    kept ETag: 304 while unchanged, the new refs after a commit."""
    before = len(W.requests())
    _, o1 = guest(b, "for i in 1 2; do curl -sS ${npm_config_registry}hello; echo; done")
    reqs = [r for r in W.requests()[before:] if r["path"].endswith("/npmreg/hello")]
    row("npm metadata within its revalidation time comes from the cache (no upstream request)",
        (o1.count("/npm/http/%s:8080/npmreg/hello/-/hello-1.0.0.tgz" % W.allowed) == 2 and not reqs
         and has_event(events(b), kind="gateway", route="npm", cache="fresh")),
        "%s %s" % (o1[-300:], reqs))
    url = "http://%s:8080/repo.git" % W.allowed
    lsr = "%s -c protocol.version=0 ls-remote %s refs/heads/main" % (GIT, url)
    before = len(W.requests())
    _, o1 = guest(b, "%s; %s" % (lsr, lsr))
    refs = [r for r in W.requests()[before:] if r["path"].endswith("/info/refs?service=git-upload-pack")]
    newer = W.add_commit("repo", "a commit after the refs were kept\n")
    before = len(W.requests())
    _, o2 = guest(b, lsr)
    refs2 = [r for r in W.requests()[before:] if r["path"].endswith("/info/refs?service=git-upload-pack")]
    row("git refs are revalidated: a conditional request answered 304, a new commit seen at once",
        (len(refs) == 2 and refs[1]["inm"] and refs[1]["status"] == 304 and newer in o2
         and refs2 and refs2[0]["inm"] and refs2[0]["status"] == 200
         and has_event(events(b), kind="gateway", route="git-info-refs", cache="revalidated")),
        "%s | %s %s %s" % (o1[-200:], o2[-200:], refs, refs2))


def gems_row(b):
    """RubyGems (a source served from files; driven with curl): the
    exec environment names the gateway's source (bundler's mirror and
    CLEANROOM_RUBYGEMS_SOURCE for `gem --source`); the compact index is
    fresh within its time; a .gem is cached."""
    import hashlib
    gem, spec = W.make_gem_server()
    before = len(W.requests())
    # the environment as exec'd (not under sh: dash drops names with ':' or '/')
    envs = cr("exec", "--in", b, "--", "env", check=False).stdout.decode(errors="replace")
    _, o1 = guest(b, "echo SRC=$CLEANROOM_RUBYGEMS_SOURCE; "
                     "for i in 1 2; do curl -sS ${CLEANROOM_RUBYGEMS_SOURCE}versions; "
                     "curl -sS ${CLEANROOM_RUBYGEMS_SOURCE}info/hello; "
                     "curl -sS ${CLEANROOM_RUBYGEMS_SOURCE}gems/hello-1.0.0.gem | sha256sum; done; "
                     "curl -sS ${CLEANROOM_RUBYGEMS_SOURCE}quick/Marshal.4.8/hello-1.0.0.gemspec.rz "
                     "| sha256sum")
    reqs = W.requests()[before:]
    gems = [r for r in reqs if r["path"].endswith(".gem")]
    vers = [r for r in reqs if r["path"].endswith("/versions")]
    src = "/gems/http/%s:8080/gemsrv/" % W.allowed
    evs = events(b)
    row("RubyGems: the source is injected, the compact index fresh within its time, a .gem cached",
        (("SRC=http://" in o1 and src in o1)
         and ("BUNDLE_MIRROR__HTTPS://RUBYGEMS__ORG/=http://" in envs and src in envs)
         and o1.count(hashlib.sha256(gem).hexdigest()) == 2 + 2  # twice in info, twice the file
         and hashlib.sha256(spec).hexdigest() in o1 and len(gems) == 1 and len(vers) == 1
         and has_event(evs, kind="gateway", route="gems", cache="hit")
         and has_event(evs, kind="gateway", route="gems", cache="fresh")),
        "%s gems=%d versions=%d spec=%s events=%s" % (
            envs[-300:] + o1[:300], len(gems), len(vers), hashlib.sha256(spec).hexdigest(),
            [(e.get("cache"), e.get("url")) for e in evs if e.get("route") == "gems"]))


def offline_row(a):
    """CLEANROOM_GATEWAY_OFFLINE=1 (a restarted daemon): a clone that was made
    online is served wholly from the cache (the refs' latest answer, the
    pack); the upstream is not asked."""
    url = "http://%s:8080/repo.git" % W.allowed
    rc0, o0 = guest(a, "%s clone -q %s /tmp/on && git -C /tmp/on rev-parse HEAD" % (GIT, url))
    stop_daemon()
    ENV["CLEANROOM_GATEWAY_OFFLINE"] = "1"
    state = None
    deadline = time.time() + 120
    while time.time() < deadline and state not in ("ready", "failed"):  # re-attach
        state = json.loads(cr("sandbox", "inspect", a, "--json").stdout).get("state")
        if state != "ready":
            time.sleep(0.2)  # polling the sandbox state, bounded
    before = len(W.requests())
    rc, out = guest(a, "%s clone -q %s /tmp/off && git -C /tmp/off rev-parse HEAD" % (GIT, url))
    asked = W.requests()[before:]
    head = o0.strip().splitlines()[-1] if o0.strip() else "?"
    _, miss = guest(a, "%s clone -q http://%s:8080/never.git /tmp/nv 2>&1; echo rc=$?" % (GIT, W.allowed))
    row("offline mode serves a clone made online from the cache alone; anything else fails",
        rc0 == 0 and rc == 0 and head in out and not asked and "rc=0" not in miss
        and has_event(events(a), kind="gateway", reason="offline_not_cached"),
        "state=%s rc=%d asked=%s %s | %s" % (state, rc, asked, out[-300:], miss[-200:]))


def main():
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("suite deadline")))
    signal.alarm(DEADLINE)
    err = None
    taps = []
    try:
        W.start()
        commit = W.make_repo("repo", files=40, size=3000)
        with open(ENV["CLEANROOM_GATEWAY_CREDENTIALS"], "w") as f:
            # the credential for :8080 is a named secret the policy scopes to it; the one
            # filed for :8081 names a secret the policy does not scope there
            json.dump({"hosts": {"%s:8080" % W.allowed: {"secret": "git-upstream"},
                                 "%s:8081" % W.allowed: {"secret": "unscoped"},
                                 "%s:5002" % W.allowed: {"secret": "registry"}},
                       "secrets": {"git-upstream": {"username": "gw", "password": SECRET},
                                   "unscoped": {"token": SECRET + "-unscoped"},
                                   "registry": {"username": "reguser", "password": SECRET + "-reg"}}}, f)
        os.chmod(ENV["CLEANROOM_GATEWAY_CREDENTIALS"], 0o600)
        pol = os.path.join(TMP, "policy.yaml")
        with open(pol, "w") as f:
            f.write(POLICY)
        pol_push = os.path.join(TMP, "policy-push.yaml")
        with open(pol_push, "w") as f:
            f.write(POLICY_PUSH)
        cr("image", "import", IMAGE_TAR, "--ref", IMAGE, timeout=600)
        a = cr("sandbox", "create", "--policy", pol, "--memory", "512").stdout.decode().strip()
        b = cr("sandbox", "create", "--policy", pol_push, "--memory", "512").stdout.decode().strip()
        for sid in (a, b):
            taps.append(json.loads(cr("sandbox", "inspect", sid, "--json").stdout)["network"]["tap"])
        run_rows(a, b, commit)
        push_row(b)
        revalidate_rows(b)
        gems_row(b)
        offline_row(a)
        cr("sandbox", "rm", a, b, timeout=120)
        p = subprocess.run(["ss", "-ltn"], stdout=subprocess.PIPE)
        row("removing the sandboxes closes their gateway listeners",
            (":%d " % PORT) not in p.stdout.decode(), p.stdout.decode()[-300:])
        # the CLI: ls shows the pack, prune --all empties it
        ls = json.loads(cr("cache", "ls", "--json").stdout)
        cr("cache", "prune", "--all")
        st = cache_stats()
        row("cache ls lists the pack; prune --all empties the cache",
            any(e.get("kind") == "git-pack" for e in ls["entries"]) and st["entries"] == 0
            and st["bytes"] == 0, json.dumps(ls)[:300])
    except Exception as e:
        err = e
        row("suite ran to the end", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        try:
            if os.path.exists(os.path.join(ENV["CLEANROOM_RUN_DIR"], "cleanroom.sock")):
                cr("sandbox", "rm", "--all", timeout=120, check=False)
            stop_daemon()
        except Exception as e:
            print("cleanup: %s" % e)
        if not all(ok for _, ok in RESULTS):
            try:
                with open(os.path.join(ENV["CLEANROOM_RUN_DIR"], "daemon.log"), "rb") as f:
                    print("daemon.log (tail):\n" + f.read()[-4000:].decode(errors="replace"))
            except OSError:
                pass
        leaked = [t for t in taps if os.path.exists("/sys/class/net/" + t)]
        for t in leaked:
            gateway_world.sh("ip", "link", "del", t, check=False)
        gateway_world.sh("nft", "delete", "table", "inet", TABLE, check=False)
        table_left = gateway_world.sh("nft", "list", "table", "inet", TABLE, check=False).returncode == 0
        W.close()
        ps = gateway_world.sh("ps", "-eo", "pid,args", check=False).stdout.decode()
        procs = [l.strip()[:100] for l in ps.splitlines() if TMP in l and "ps -eo" not in l]
        for l in procs:
            try:
                os.kill(int(l.split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        left = W.leftovers() + procs + (["table"] if table_left else []) + leaked
        shutil.rmtree(TMP, ignore_errors=True)
        row("nothing left behind (TAPs, table, namespace, veth, processes)", not left, str(left))
    passed = sum(1 for _, ok in RESULTS if ok)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    return 0 if passed == len(RESULTS) and err is None else 1


if __name__ == "__main__":
    sys.exit(main())
