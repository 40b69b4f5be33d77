#!/usr/bin/env python3
"""The include graph against the layer list in docs/architecture.md.

Reads the ```layers block of docs/architecture.md (one layer per line,
lowest first; modules of one layer separated by spaces; "# ..." comments),
then every #include "module/..." in src/<module>/ and guest/ (module
"guest"), and fails when a module includes one of its own layer or above,
when a module exists in the tree but not in the list (or the other way
round), or when a `forbid:` line of the block is broken. A forbid target
with a slash names one header (`forbid: sandbox -> backend/agent_client.h`).
An `allow:` line exempts one file from the forbid lines
(`allow: cli/cmd-doctor.c -> cache`: that file may include that module or
header); every allow must name a file that exists and an include it makes.

Usage: check-layers.py <repo root>"""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
doc = open(os.path.join(root, "docs", "architecture.md"), encoding="utf-8").read()
m = re.search(r"```layers\n(.*?)```", doc, re.S)
if not m:
    sys.exit("check-layers: no ```layers block in docs/architecture.md")
layer_of, forbid, allow = {}, [], []
n = 0
for line in m.group(1).splitlines():
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    if line.startswith("forbid:"):  # forbid: <module> -> <module> [<module>...]
        a, _, bs = line[len("forbid:"):].partition("->")
        forbid += [(a.strip(), b) for b in bs.split()]
        continue
    if line.startswith("allow:"):  # allow: <module>/<file> -> <module or header> [...]
        a, _, bs = line[len("allow:"):].partition("->")
        allow += [(a.strip(), b) for b in bs.split()]
        continue
    for mod in line.split():
        if mod in layer_of:
            sys.exit(f"check-layers: {mod} is listed twice")
        layer_of[mod] = n
    n += 1

inc = re.compile(r'^\s*#\s*include\s+"(([a-z_]+)/[^"]+)"', re.M)
dirs = {d: os.path.join(root, "src", d) for d in os.listdir(os.path.join(root, "src"))
        if os.path.isdir(os.path.join(root, "src", d))}
dirs["guest"] = os.path.join(root, "guest")
edges, headers = {}, {}
for mod, path in sorted(dirs.items()):
    files = [f for f in os.listdir(path) if f.endswith((".c", ".h"))]
    if not files:
        continue  # a placeholder (README only)
    for f in files:
        for header, dep in inc.findall(open(os.path.join(path, f), encoding="utf-8", errors="replace").read()):
            if dep != mod and dep in dirs:
                edges.setdefault((mod, dep), []).append(f)
                headers.setdefault((mod, header), []).append(f)

bad = []
present = {mod for mod, path in dirs.items() if any(f.endswith((".c", ".h")) for f in os.listdir(path))}
for mod in sorted(present - set(layer_of)):
    bad.append(f"module {mod} is not in the layer list")
for mod in sorted(set(layer_of) - set(dirs)):
    bad.append(f"layer list names {mod}, which does not exist")
for (a, b), files in sorted(edges.items()):
    if a not in layer_of or b not in layer_of:
        continue
    if layer_of[b] >= layer_of[a]:
        bad.append(f"{a} includes {b} ({', '.join(sorted(set(files)))}): {b} is not in a lower layer")
allowed = set()  # (module, file, target)
for f, b in allow:
    mod, _, name = f.partition("/")
    got = headers if "/" in b else edges
    if mod not in dirs or not os.path.exists(os.path.join(dirs[mod], name)):
        bad.append(f"allow: {f}: no such file")
    elif name not in got.get((mod, b), []):
        bad.append(f"allow: {f} -> {b}: it does not include that (drop the line)")
    allowed.add((mod, name, b))
for a, b in forbid:
    got = headers if "/" in b else edges
    if "/" in b and not os.path.exists(os.path.join(root, "src", b)):
        bad.append(f"forbid: {a} -> {b}: no such header")
    files = sorted(set(f for f in got.get((a, b), []) if (a, f, b) not in allowed))
    if files:
        bad.append(f"{a} includes {b} ({', '.join(files)}): forbidden")

print(f"check-layers: {len(present)} modules, {len(edges)} module dependencies, {len(layer_of)} listed")
for e in sorted(edges):
    print(f"  {e[0]} -> {e[1]}")
for b in bad:
    print("FAIL: " + b)
sys.exit(1 if bad else 0)
