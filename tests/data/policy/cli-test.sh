#!/usr/bin/env bash
# CLI test for `policy validate/show` and `image resolve/bump-ref`.
# Usage: cli-test.sh CLEANROOM_BIN DATA_DIR. Works in a temp dir removed on exit.
set -euo pipefail
bin=$1
data=$(cd "$2" && pwd)
tmp=$(mktemp -d /tmp/cr-policy-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export CLEANROOM_DATA_DIR="$tmp/data"
cd "$tmp"
fail() { echo "FAIL: $*" >&2; exit 1; }
pin="ghcr.io/x/debian@sha256:3333333333333333333333333333333333333333333333333333333333333333"

# not found: exit 1, policy_not_found
git init -q . 2>/dev/null || mkdir .git
set +e; "$bin" policy validate 2>err.txt; rc=$?; set -e
[ $rc -eq 1 ] || fail "not found: rc $rc"
grep -q policy_not_found err.txt || fail "not found: $(cat err.txt)"

# valid fixture at the root, found from a subdirectory
cp "$data/full.yaml" cleanroom.yaml
mkdir -p sub .buildkite
(cd sub && "$bin" policy validate >../out.txt) || fail "valid: rc $?"
grep -q 'valid (sha256:' out.txt || fail "valid: $(cat out.txt)"

# both files: root wins, warning names the ignored one
printf 'version: 1\n' > .buildkite/cleanroom.yaml
"$bin" policy validate 2>err.txt >/dev/null || fail "both: rc $?"
grep -q 'ignoring .buildkite/cleanroom.yaml' err.txt || fail "both: $(cat err.txt)"

# invalid: every error with file:line:col, exit 1, --json
printf 'version: 1\nsandbox:\n  resources:\n    vcpus: 0\n  network:\n    allow: [a.com:70000]\n  dokcer: {}\n' > bad.yaml
set +e; "$bin" policy validate bad.yaml 2>err.txt; rc=$?; set -e
[ $rc -eq 1 ] || fail "invalid: rc $rc"
grep -q '^bad.yaml:4:12: sandbox.resources.vcpus: ' err.txt || fail "invalid: $(cat err.txt)"
grep -q "^bad.yaml:6:13: sandbox.network.allow\[0\]: port 70000 out of range (1-65535)" err.txt || fail "port: $(cat err.txt)"
grep -q "^bad.yaml:7:3: sandbox.dokcer: unknown key 'dokcer'; did you mean 'docker'?" err.txt || fail "key: $(cat err.txt)"
set +e; "$bin" policy validate --json --policy bad.yaml >out.json; rc=$?; set -e
[ $rc -eq 1 ] || fail "json invalid: rc $rc"
python3 - out.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["valid"] is False and d["policy"] is None and d["policy_hash"] is None, d
assert len(d["errors"]) == 3, d["errors"]
e = d["errors"][1]
assert (e["file"], e["line"], e["column"], e["path"]) == ("bad.yaml", 6, 13, "sandbox.network.allow[0]"), e
PY

# show: the same hash as validate, and two spellings agree
h1=$("$bin" policy show --json "$data/full.yaml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["policy_hash"])')
h2=$("$bin" policy validate --json "$data/full-respelled.yaml" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["valid"]; print(d["policy_hash"])')
[ "$h1" = "$h2" ] || fail "hash: $h1 != $h2"
"$bin" policy show "$data/full.yaml" | grep -q "# policy_hash: $h1" || fail "show text"

# image resolve: a pinned ref passes through; a ref naming a registry asks it
# (port 1 on loopback: nothing listens, so registry_unavailable; the real
# registry cases are in tests/integration/registry-pull.py)
[ "$("$bin" image resolve "$pin")" = "$pin" ] || fail "resolve pinned"
set +e; "$bin" image resolve 127.0.0.1:1/x/debian:nope 2>err.txt; rc=$?; set -e
[ $rc -ne 0 ] && grep -q registry_unavailable err.txt || fail "resolve missing: $(cat err.txt)"

# bump-ref: only the ref changes
cp "$data/bump.yaml" p.yaml
"$bin" image bump-ref "$pin" --policy p.yaml >/dev/null || fail "bump-ref rc $?"
sed "s|ghcr.io/buildkite/cleanroom-base/debian:bookworm|$pin|" "$data/bump.yaml" > want.yaml
cmp -s p.yaml want.yaml || { diff want.yaml p.yaml >&2; fail "bump-ref changed more than the ref"; }
"$bin" policy validate p.yaml >/dev/null 2>&1 || fail "bumped policy invalid"

for c in "policy validate" "policy show" "image resolve" "image bump-ref"; do
  $bin $c --help | grep -q "^Usage: cleanroom $c" || fail "$c --help"
done
echo "cli ok"
