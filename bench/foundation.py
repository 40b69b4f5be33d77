#!/usr/bin/env python3
"""Loop, exec overhead and VMM memory, in one run (issue 9's numbers).

Through the real daemon's control API, for each TCG translation-cache size
given (CLEANROOM_TCG_TB_MIB; QEMU 7.2's own default is 1024):
  - an idle VMM's memory after boot and after 100 `exec true`: RSS, PSS and
    anonymous (from /proc/<pid>/smaps_rollup; the guest RAM is the RAM file,
    the translation cache is anonymous),
  - `exec true` round trip via the control API (execution.create with
    attach + the exit notification), median and p90, beside the guest's own
    cost of spawning /bin/true (a shell loop of 200 inside the guest, timed
    by the daemon): host overhead = round trip - guest spawn cost; and the
    round trip split by timing_ms.agent into client+daemon, transit (VMM,
    both ways), the agent's own work and the agent's spawn (fork to reap);
    bench/agent-transit.py times the transit alone; the same split once more
    with the C client library the CLI uses (bench/exec-rtt.c, built beside
    the binary: build-*/bench/exec-rtt), which leaves out this script's own
    interpreter cost in the client,
  - `sandbox rm` (sandbox.terminate until answered, VMM gone) median,
  - the machine's floor for one hop: a unix-socket ping-pong between two
    processes after 10 ms of idleness (the gap between execs), median. An
    exec's path has at least two such hops (client <-> daemon, daemon <->
    VMM), so "all but the spawn" is also given as a ratio to two floors.
And once, on a daemon with default settings, `exec true` via MCP beside the
control API in the same rounds (interleaved: under TCG one exec's time
drifts by ~10 ms between phases of a run, so series run one after the other
compare phases, not paths): a raw JSON-RPC client (this script, no SDK) over
the stdio server agents use (`cleanroom mcp`, which relays to the daemon's
socket) and over the daemon's unix socket directly; "MCP over control API"
is the median of each round's difference (goal <= 1.5 ms); plus the daemon's
CPU time per call (/proc/<pid>/schedstat) and a call without the VM
(sandbox_inspect vs sandbox.get). The MCP SDK client's own cost (Node,
@modelcontextprotocol/sdk) is bench/mcp-exec.mjs.

Usage: bench/foundation.py [--tb 32,1024] [--execs 100] [--rm-runs 5] [--mcp-rounds 100] [--bin PATH]
Needs an installed kernel (scripts/fetch-kernel.sh); imports the busybox test
image into a temp dir. Prints one JSON object on the last line."""
import argparse, base64, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--tb", default="32,1024", help="comma-separated CLEANROOM_TCG_TB_MIB values")
ap.add_argument("--execs", type=int, default=100)
ap.add_argument("--rm-runs", type=int, default=5)
ap.add_argument("--mem", type=int, default=512)
ap.add_argument("--mcp-rounds", type=int, default=100, help="interleaved API/MCP rounds (0: no MCP row)")
ap.add_argument("--bin", default=shutil.which("cleanroom") or os.path.join(root, "build-release", "cleanroom"))
a = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="cr-bench9-")
base_env = dict(os.environ, CLEANROOM_DATA_DIR=f"{tmp}/data", CLEANROOM_RUN_DIR=f"{tmp}/run")
base_env.setdefault("CLEANROOM_KERNEL_DIR", "/var/lib/cleanroom/kernels/current")
base_env.pop("CLEANROOM_HOST", None)
daemon = None


class Api:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(300)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        self.n = 0

    def send(self, method, params):
        self.n += 1
        self.f.write(json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}) + "\n")
        self.f.flush()
        return self.n

    def call(self, method, params=None):
        i = self.send(method, params or {})
        while True:
            m = json.loads(self.f.readline())
            if m.get("id") == i:
                if "error" in m:
                    raise SystemExit(f"{method}: {m['error']}")
                return m["result"]

    def exec_attached(self, sid, argv):
        """execution.create with attach; returns (round trip s, execution)."""
        t0 = time.perf_counter()
        i = self.send("execution.create", {"sandbox_id": sid, "argv": argv})
        while True:
            m = json.loads(self.f.readline())
            if m.get("id") == i and "error" in m:
                raise SystemExit(f"exec: {m['error']}")
            if m.get("method") == "execution.exit":
                return time.perf_counter() - t0, m["params"]["execution"]


def mem(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss", "Anonymous"):
                out[k.lower() + "_mib"] = round(int(v.split()[0]) / 1024, 1)
    return out


# ---- MCP: a raw JSON-RPC session (no SDK) ----
class McpSession:
    """One MCP session, legacy era (initialize), over a pipe pair or a socket."""

    def __init__(self, rfile, wfile):
        self.r, self.w, self.n = rfile, wfile, 0
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "bench-foundation", "version": "1"}})
        self.w.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        self.w.flush()

    def request(self, method, params):
        self.n += 1
        self.w.write((json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}) + "\n").encode())
        self.w.flush()
        while True:
            line = self.r.readline()
            if not line:
                raise SystemExit(f"MCP {method}: the server closed the session")
            m = json.loads(line)
            if m.get("id") == self.n:
                if "error" in m:
                    raise SystemExit(f"MCP {method}: {m['error']}")
                return m["result"]

    def tool(self, name, args):
        r = self.request("tools/call", {"name": name, "arguments": args})
        if r.get("isError"):
            raise SystemExit(f"MCP {name}: {r['content'][0]['text']}")
        return r["structuredContent"]


def cpu_ms(pid):
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0]) / 1e6


def mcp_row(api, sid, rounds):
    """exec true via the control API, MCP over stdio and MCP over the unix
    socket, interleaved; the daemon's CPU per call; a VM-free call pair."""
    binary = os.path.abspath(a.bin) if os.sep in a.bin else a.bin  # run from tmp (no policy file there)
    stdio = subprocess.Popen([binary, "mcp", "--image", "bench/busybox"], env=base_env, cwd=tmp,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=open(f"{tmp}/mcp.log", "a"))
    us = socket.socket(socket.AF_UNIX)
    us.settimeout(300)
    us.connect(f"{tmp}/run/cleanroom.sock")
    try:
        sessions = {"stdio": McpSession(stdio.stdout, stdio.stdin),
                    "unix": McpSession(us.makefile("rb"), us.makefile("wb"))}

        def mcp_exec(k):
            t0 = time.perf_counter()
            r = sessions[k].tool("exec", {"argv": ["true"], "sandbox_id": sid})
            if r.get("exit_code") != 0:
                raise SystemExit(f"MCP exec true: {r}")
            return time.perf_counter() - t0

        def api_exec():
            t, ex = api.exec_attached(sid, ["true"])
            if ex.get("exit_code") != 0:
                raise SystemExit(f"exec true: {ex}")
            return t

        calls = {"api": api_exec, "stdio": lambda: mcp_exec("stdio"), "unix": lambda: mcp_exec("unix")}
        for _ in range(5):  # the first execs of each path (not timed)
            for f in calls.values():
                f()
        ms = {k: [] for k in calls}
        cpu = {k: 0.0 for k in calls}
        bridge_cpu = 0.0
        dpid = daemon.pid
        order = list(calls)
        for i in range(rounds):
            for k in order[i % 3:] + order[:i % 3]:  # each path first in a third of the rounds
                f = calls[k]
                c0, b0 = cpu_ms(dpid), cpu_ms(stdio.pid)
                ms[k].append(f() * 1000)
                cpu[k] += cpu_ms(dpid) - c0
                if k == "stdio":
                    bridge_cpu += cpu_ms(stdio.pid) - b0
        # the MCP layer alone: a call that does not reach the VM
        get, insp = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            api.call("sandbox.get", {"id": sid})
            get.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            sessions["stdio"].tool("sandbox_inspect", {"sandbox_id": sid})
            insp.append((time.perf_counter() - t0) * 1000)
    finally:
        us.close()
        stdio.stdin.close()
        try:
            stdio.wait(30)
        except subprocess.TimeoutExpired:
            stdio.kill()
            stdio.wait()
    st = lambda v: {"median": round(statistics.median(v), 2), "p90": round(pct(v, 0.9), 2)}
    over = {k: round(statistics.median([x - y for x, y in zip(ms[k], ms["api"])]), 2) for k in ("stdio", "unix")}
    r = {"rounds": rounds, "api_exec_true_ms": st(ms["api"]),
         "mcp_stdio_exec_true_ms": st(ms["stdio"]), "mcp_unix_exec_true_ms": st(ms["unix"]),
         "mcp_over_api_ms": dict(over, goal=1.5),
         "daemon_cpu_per_call_ms": {k: round(v / rounds, 3) for k, v in cpu.items()},
         "bridge_cpu_per_call_ms": round(bridge_cpu / rounds, 3),
         "vm_free_call_ms": {"api_sandbox_get": st(get), "mcp_stdio_sandbox_inspect": st(insp),
                             "mcp_over_api": round(statistics.median([x - y for x, y in zip(insp, get)]), 3)}}
    print(f"exec true via MCP, raw JSON-RPC client (no SDK), {rounds} rounds interleaved with the control API: "
          f"stdio `cleanroom mcp` median {r['mcp_stdio_exec_true_ms']['median']} ms (p90 {r['mcp_stdio_exec_true_ms']['p90']}), "
          f"unix socket median {r['mcp_unix_exec_true_ms']['median']} ms (p90 {r['mcp_unix_exec_true_ms']['p90']}), "
          f"control API median {r['api_exec_true_ms']['median']} ms (p90 {r['api_exec_true_ms']['p90']})", flush=True)
    print(f"MCP over control API (median of per-round differences): stdio {over['stdio']:+.2f} ms, "
          f"unix {over['unix']:+.2f} ms (goal <= 1.5 ms: {'met' if max(over.values()) <= 1.5 else 'NOT met'}); "
          f"daemon CPU per exec: api {r['daemon_cpu_per_call_ms']['api']} ms, mcp stdio {r['daemon_cpu_per_call_ms']['stdio']} ms, "
          f"mcp unix {r['daemon_cpu_per_call_ms']['unix']} ms; the stdio bridge's CPU {r['bridge_cpu_per_call_ms']} ms per call; "
          f"without the VM: sandbox_inspect via stdio MCP {r['vm_free_call_ms']['mcp_stdio_sandbox_inspect']['median']} ms vs "
          f"sandbox.get {r['vm_free_call_ms']['api_sandbox_get']['median']} ms ({r['vm_free_call_ms']['mcp_over_api']:+.3f} ms). "
          f"The SDK client's own time: bench/mcp-exec.mjs", flush=True)
    return r


def idle_hop_floor(rounds=200, gap=0.01):
    """Median round trip (ms) of a 1-byte ping-pong over a unix socket pair
    between two processes, each round after `gap` s of sleep: what waking an
    idle process costs on this machine, with no cleanroom code involved."""
    x, y = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        x.close()
        while True:
            d = y.recv(64)
            if not d:
                os._exit(0)
            y.send(d)
    y.close()
    t = []
    try:
        for _ in range(rounds):
            time.sleep(gap)
            t0 = time.perf_counter()
            x.send(b"x")
            x.recv(64)
            t.append((time.perf_counter() - t0) * 1000)
    finally:
        x.close()
        os.waitpid(pid, 0)
    return statistics.median(t)


def start_daemon(extra):
    global daemon
    env = dict(base_env, **extra)
    daemon = subprocess.Popen([a.bin, "serve"], env=env, stderr=open(f"{tmp}/daemon.log", "a"))
    for _ in range(800):
        try:
            return Api(f"{tmp}/run/cleanroom.sock")
        except OSError:
            time.sleep(0.025)
    raise SystemExit("daemon did not start")


def stop_daemon():
    global daemon
    if daemon:
        daemon.terminate()
        daemon.wait(30)
        daemon = None


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


result = {"tb": {}}
try:
    subprocess.run([os.path.join(root, "images/busybox/build.sh"), f"{tmp}/bb.tar"], check=True, capture_output=True)
    imported = False
    for tb in [t for t in a.tb.split(",") if t]:
        api = start_daemon({"CLEANROOM_TCG_TB_MIB": tb})
        if not imported:  # through this daemon (an import with none listening would start one)
            subprocess.run([a.bin, "image", "import", f"{tmp}/bb.tar", "--ref", "bench/busybox"],
                           env=base_env, check=True, capture_output=True)
            imported = True
        sb = api.call("sandbox.create", {"image": "bench/busybox", "memory_mib": a.mem})
        sid, pid = sb["id"], sb["vmm_pid"]
        time.sleep(1)  # let the freshly booted guest go idle (not a synchronization)
        after_boot = mem(pid)
        rt, dm, split = [], [], []
        for _ in range(a.execs):
            t, ex = api.exec_attached(sid, ["true"])
            if ex.get("exit_code") != 0:
                raise SystemExit(f"exec true: {ex}")
            rt.append(t * 1000)
            if "daemon" in ex.get("timing_ms", {}):
                dm.append(ex["timing_ms"]["daemon"])
            ag = ex.get("timing_ms", {}).get("agent")
            if ag:  # client+daemon, transit (both ways), the agent's own work, spawn
                split.append((t * 1000 - ag["round_trip"], ag["round_trip"] - ag["total"],
                              ag["total"] - ag["spawn"], ag["spawn"]))
        rtt_bin = os.path.join(os.path.dirname(os.path.abspath(a.bin)), "bench", "exec-rtt")
        c_client = None
        if os.access(rtt_bin, os.X_OK):
            c_client = json.loads(subprocess.run([rtt_bin, f"{tmp}/run/cleanroom.sock", sid, str(a.execs)],
                                                 check=True, capture_output=True, timeout=600).stdout)
        n = 200
        _, loop = api.exec_attached(sid, ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"])
        guest_ms = loop["timing_ms"]["run"] / n
        time.sleep(1)
        after_execs = mem(pid)
        med = statistics.median(rt)
        r = {"after_boot": after_boot, f"after_{a.execs}_execs": after_execs,
             "exec_true_ms": {"median": round(med, 2), "p90": round(pct(rt, 0.9), 2)},
             "guest_spawn_true_ms": round(guest_ms, 2),
             "host_overhead_ms": round(med - guest_ms, 2)}
        if dm:
            # the daemon's own part of each round trip (timing_ms.daemon: its
            # start and exit handling); the rest of the overhead is the agent
            # and the virtio-serial transit in the guest
            r["daemon_ms"] = {"median": round(statistics.median(dm), 3), "p90": round(pct(dm, 0.9), 3)}
        if split:
            # medians of each part (timing_ms.agent: the daemon's EXEC sent ->
            # EXIT received, the agent's EXEC read -> EXIT queued, fork -> reap)
            r["split_ms"] = {k: round(statistics.median(x[i] for x in split), 3) for i, k in
                             enumerate(("client_daemon", "transit", "agent_own", "spawn"))}
            # everything but the agent's own spawn of the process
            r["split_ms"]["all_but_spawn"] = round(statistics.median(x[0] + x[1] + x[2] for x in split), 3)
        if c_client:
            r["c_client_split_ms"] = c_client
        result["tb"][tb] = r
        print(f"tb-size={tb} MiB: exec true median {med:.1f} ms (p90 {pct(rt, 0.9):.1f}), "
              f"guest spawn of /bin/true {guest_ms:.2f} ms, host overhead {med - guest_ms:.1f} ms "
              f"(of it the daemon's own handling {r.get('daemon_ms', {}).get('median', 'n/a')} ms); "
              + ("split client+daemon/transit/agent own/spawn {client_daemon}/{transit}/{agent_own}/{spawn} ms "
                 "(all but the agent's spawn {all_but_spawn} ms); "
                 .format(**r["split_ms"]) if split else "") +
              f"VMM after boot rss/pss/anon {after_boot['rss_mib']}/{after_boot['pss_mib']}/{after_boot['anonymous_mib']} MiB, "
              f"after {a.execs} execs {after_execs['rss_mib']}/{after_execs['pss_mib']}/{after_execs['anonymous_mib']} MiB",
              flush=True)
        if c_client:
            hop = idle_hop_floor()
            c_client["idle_hop_floor_ms"] = round(hop, 3)
            c_client["all_but_spawn_vs_two_hops"] = round(c_client["all_but_spawn"] / (2 * hop), 2)
            print("  with the C client library (bench/exec-rtt): exec true median {exec_true_ms} ms, split "
                  "client+daemon/transit/agent own/spawn {client_daemon}/{transit}/{agent_own}/{spawn} ms "
                  "(all but the agent's spawn {all_but_spawn} ms; goal <= 1); floor: an idle process's "
                  "socket round trip {idle_hop_floor_ms} ms, all but the spawn = {all_but_spawn_vs_two_hops}x "
                  "two of them".format(**c_client), flush=True)
        api.call("sandbox.terminate", {"id": sid})
        stop_daemon()
    # sandbox rm: default settings
    api = start_daemon({})
    if a.mcp_rounds > 0:
        sb = api.call("sandbox.create", {"image": "bench/busybox", "memory_mib": a.mem})
        try:
            result["mcp"] = mcp_row(api, sb["id"], a.mcp_rounds)
        finally:  # a sandbox's VMM outlives the daemon: remove it on a failure too
            api.call("sandbox.terminate", {"id": sb["id"]})
    rms = []
    for _ in range(a.rm_runs):
        sb = api.call("sandbox.create", {"image": "bench/busybox", "memory_mib": 256})
        api.exec_attached(sb["id"], ["true"])
        t0 = time.perf_counter()
        api.call("sandbox.terminate", {"id": sb["id"]})
        rms.append((time.perf_counter() - t0) * 1000)
        try:
            os.kill(sb["vmm_pid"], 0)
            raise SystemExit("the VMM is still running after sandbox.terminate answered")
        except ProcessLookupError:
            pass
    stop_daemon()
    result["sandbox_rm_ms"] = {"median": round(statistics.median(rms), 1), "max": round(max(rms), 1),
                               "runs": len(rms), "goal": 100}
    print(f"sandbox rm: median {statistics.median(rms):.1f} ms (max {max(rms):.1f}, {len(rms)} runs; "
          f"goal <= 100 ms, ratio {statistics.median(rms) / 100:.2f})")
    tbs = list(result["tb"])
    if len(tbs) >= 2:
        x, y = result["tb"][tbs[0]], result["tb"][tbs[-1]]
        k = f"after_{a.execs}_execs"
        print(f"tb {tbs[0]} vs {tbs[-1]}: anonymous after {a.execs} execs "
              f"{x[k]['anonymous_mib']} vs {y[k]['anonymous_mib']} MiB (goal <= 64), exec median "
              f"ratio {x['exec_true_ms']['median'] / y['exec_true_ms']['median']:.2f}")
    print(json.dumps(result))
finally:
    stop_daemon()
    shutil.rmtree(tmp, ignore_errors=True)
