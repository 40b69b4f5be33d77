#!/usr/bin/env bash
# Builds and installs cleanroom on a Debian 12 machine (as root), fetches the
# guest kernel, builds the default image and starts nothing: the first CLI
# call starts the daemon. Idempotent: re-running rebuilds and skips what is
# already there.
#
#   scripts/install.sh [--prefix /usr/local] [--no-image]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
image=1
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --no-image) image=0; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (apt-get, /var/lib/cleanroom)" >&2; exit 1; }

. scripts/deps.sh
step() { printf '==> %s\n' "$*" >&2; }

step "installing Debian packages"
if ! dpkg -s "${CR_BUILD_DEPS[@]}" "${CR_RUNTIME_DEPS[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${CR_BUILD_DEPS[@]}" "${CR_RUNTIME_DEPS[@]}" >/dev/null
fi

step "building (build-release/)"
if [ -d build-release ]; then
  meson setup --reconfigure build-release --prefix="$prefix" --buildtype=release >/dev/null
else
  meson setup build-release --prefix="$prefix" --buildtype=release >/dev/null
fi
ninja -C build-release >/dev/null
step "installing into $prefix"
meson install -C build-release --quiet

step "VMM user (QEMU drops root to it)"
id cleanroom-vmm >/dev/null 2>&1 ||
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cleanroom-vmm

step "fetching the guest kernel"
scripts/fetch-kernel.sh

if [ "$image" = 1 ] && ! "$prefix/bin/cleanroom" image inspect cleanroom-base/debian:bookworm >/dev/null 2>&1; then
  step "building the default image cleanroom-base/debian:bookworm (mmdebstrap, about a minute)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  images/debian/build.sh "$tmp/debian.tar"
  # through the daemon (it owns the image store; the CLI starts it when none runs)
  "$prefix/bin/cleanroom" image import "$tmp/debian.tar" --ref cleanroom-base/debian:bookworm
fi
step "done: try 'cleanroom doctor' and 'cleanroom exec -- uname -a'"
