#!/usr/bin/env bash
# Debian packages cleanroom needs to build, test and run. Sourced by
# scripts/install.sh and scripts/test.sh; one place for the list.
CR_BUILD_DEPS=(
  build-essential meson ninja-build pkg-config musl-tools
  libjansson-dev libyaml-dev libuv1-dev libarchive-dev libssl-dev
  libcurl4-openssl-dev libgit2-dev libseccomp-dev libhttp-parser-dev
  libcmocka-dev libidn2-dev libnftables-dev zlib1g-dev
)
CR_RUNTIME_DEPS=(
  qemu-system-x86 qemu-utils e2fsprogs cpio busybox-static mmdebstrap
  nftables iproute2 ca-certificates lz4
)
# Programs the tests run beyond the runtime's: git (policy CLI and workspace
# tests), procps (ps/pgrep when debugging a test), python3 and its modules;
# docker-registry, skopeo, apache2-utils (htpasswd), zstd, openssl: the
# registry-pull test (a real registry on loopback, images pushed by skopeo).
CR_TEST_DEPS=(
  python3 jq python3-jsonschema python3-yaml git procps
  docker-registry skopeo apache2-utils zstd openssl dnsmasq-base
)
# Node.js and npm (for the MCP client tests) come from Debian only when the
# machine has none: machines that ship their own Node.js conflict with
# Debian's npm package.
cr_node_deps() {
  command -v node >/dev/null 2>&1 || echo nodejs
  command -v npm >/dev/null 2>&1 || echo npm
}
