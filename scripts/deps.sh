#!/usr/bin/env bash
# Debian packages cleanroom needs to build, test and run. Sourced by
# scripts/install.sh and scripts/test.sh; one place for the list.
CR_BUILD_DEPS=(
  build-essential meson ninja-build pkg-config musl-tools
  libjansson-dev libyaml-dev libuv1-dev libarchive-dev libssl-dev
  libcurl4-openssl-dev libgit2-dev libseccomp-dev libhttp-parser-dev
  libcmocka-dev libidn2-dev
)
CR_RUNTIME_DEPS=(
  qemu-system-x86 qemu-utils e2fsprogs cpio busybox-static mmdebstrap
  nftables iproute2 ca-certificates lz4
)
CR_TEST_DEPS=(
  nodejs npm python3 jq python3-jsonschema
)
