#!/usr/bin/env bash
# Builds cleanroom with ASan/UBSan and runs the whole test suite: unit tests,
# fuzz corpus replays, and integration tests that boot real QEMU microVMs and
# drive the real binaries (CLI, daemon, MCP clients from npm).
#
#   scripts/test.sh [meson test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (apt-get, kernel fetch)" >&2; exit 1; }
. scripts/deps.sh
step() { printf '==> %s\n' "$*" >&2; }

step "installing Debian packages"
mapfile -t node_deps < <(cr_node_deps)
if ! dpkg -s "${CR_BUILD_DEPS[@]}" "${CR_RUNTIME_DEPS[@]}" "${CR_TEST_DEPS[@]}" >/dev/null 2>&1 ||
   [ ${#node_deps[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${CR_BUILD_DEPS[@]}" "${CR_RUNTIME_DEPS[@]}" "${CR_TEST_DEPS[@]}" "${node_deps[@]}" >/dev/null
fi

step "building with ASan/UBSan (build-test/)"
[ -f build-test/build.ninja ] || meson setup build-test -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
ninja -C build-test

step "VMM user (QEMU drops root to it)"
id cleanroom-vmm >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cleanroom-vmm

step "guest kernel"
scripts/fetch-kernel.sh
export CLEANROOM_KERNEL_DIR=${CLEANROOM_KERNEL_DIR:-${CLEANROOM_DATA_DIR:-/var/lib/cleanroom}/kernels/current}

step "test image (busybox)"
mkdir -p build-test/test-assets
if [ ! -s build-test/test-assets/busybox.tar ]; then
  images/busybox/build.sh build-test/test-assets/busybox.tar
fi
export CLEANROOM_TEST_IMAGE_TAR=$PWD/build-test/test-assets/busybox.tar
step "test image with git (debian, for the gateway test)"
if [ ! -s build-test/test-assets/debian.tar ]; then
  images/debian/build.sh build-test/test-assets/debian.tar.tmp && \
    mv build-test/test-assets/debian.tar.tmp build-test/test-assets/debian.tar || \
    echo "test.sh: no debian image: the gateway test is skipped" >&2
fi
[ -s build-test/test-assets/debian.tar ] && export CLEANROOM_TEST_GIT_IMAGE_TAR=$PWD/build-test/test-assets/debian.tar
step "test image with nodejs and npm (debian-node, for the gateway-npm test)"
# Only when the gateway-npm test is among those run (all, or named).
if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx -e gateway-npm -e vm; then
  if [ ! -s build-test/test-assets/debian-node.tar ]; then
    images/debian/build.sh build-test/test-assets/debian-node.tar.tmp --with nodejs,npm && \
      mv build-test/test-assets/debian-node.tar.tmp build-test/test-assets/debian-node.tar || \
      { rm -f build-test/test-assets/debian-node.tar.tmp
        echo "test.sh: no debian-node image: the gateway-npm test is skipped" >&2; }
  fi
fi
[ -s build-test/test-assets/debian-node.tar ] && export CLEANROOM_TEST_NPM_IMAGE_TAR=$PWD/build-test/test-assets/debian-node.tar
export CLEANROOM_TEST_VM=1

# tests/integration: the MCP clients; tests/integration/npm-registry: verdaccio
# (the gateway-npm test's registry).
for dir in tests/integration tests/integration/npm-registry; do
  [ -f $dir/package.json ] || continue
  step "npm packages in $dir (npm ci: exactly the lock file, which stays untouched)"
  # Skipped when node_modules was installed from this very lock file.
  lock_sum=$(sha256sum $dir/package-lock.json | cut -d' ' -f1)
  stamp=$dir/node_modules/.cleanroom-lock-sha256
  if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
    (cd $dir && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" > "$stamp"
  fi
done

# Sanitizer findings fail the test that hit them.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# The tests' VMMs get their cgroups under a parent of this run's own
# (backend/cgroup.c); a test that kills its VMMs after its daemon stopped
# leaves their (empty) groups, which go here with the parent.
export CLEANROOM_CGROUP=${CLEANROOM_CGROUP:-cleanroom-test-$$}
remove_test_cgroups() {
  local base d n=0
  for base in /sys/fs/cgroup /sys/fs/cgroup/memory /sys/fs/cgroup/pids /sys/fs/cgroup/cpu; do
    [ -d "$base/$CLEANROOM_CGROUP" ] || continue
    for d in "$base/$CLEANROOM_CGROUP"/*/; do
      [ -d "$d" ] && rmdir "$d" 2>/dev/null && n=$((n + 1))
    done
    rmdir "$base/$CLEANROOM_CGROUP" 2>/dev/null || echo "test.sh: $base/$CLEANROOM_CGROUP is not empty" >&2
  done
  [ "$n" -eq 0 ] || echo "test.sh: removed $n cgroup(s) of VMMs the tests killed themselves" >&2
}
trap remove_test_cgroups EXIT
step "running the tests"
rc=0
meson test -C build-test --print-errorlogs --num-processes 2 "$@" || rc=$?
# One plain summary line for readers that do not parse meson's own.
python3 - build-test/meson-logs/testlog.json <<'PY' || true
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0}
for line in open(sys.argv[1]):
    r = json.loads(line).get("result", "")
    key = "OK" if r in ("OK", "EXPECTEDFAIL") else "SKIP" if r == "SKIP" else "FAIL"
    counts[key] += 1
print(f"tests: {counts['OK']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
PY
exit $rc
