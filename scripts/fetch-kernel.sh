#!/usr/bin/env bash
# Fetches Debian's cloud kernel into the cleanroom data directory.
#
#   scripts/fetch-kernel.sh [DATA_DIR]
#
# DATA_DIR defaults to $CLEANROOM_DATA_DIR, else /var/lib/cleanroom.
# Result:
#   DATA_DIR/kernels/<version>/boot/vmlinuz-<version>      (bzImage)
#   DATA_DIR/kernels/<version>/boot/vmlinux-<version>      (PVH ELF, when lz4 is there)
#   DATA_DIR/kernels/<version>/lib/modules/<version>/...   (modules)
#   DATA_DIR/kernels/<version>/version
#   DATA_DIR/kernels/current -> <version>
# Nothing is installed into the host's /boot. Idempotent.
set -euo pipefail

data_dir="${1:-${CLEANROOM_DATA_DIR:-/var/lib/cleanroom}}"
meta="linux-image-cloud-amd64"

resolve() {
  apt-cache depends "$meta" 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1
}

pkg="$(resolve || true)"
if [ -z "$pkg" ]; then
  echo "fetch-kernel: apt-cache knows no $meta; running apt-get update" >&2
  apt-get update -qq
  pkg="$(resolve || true)"
fi
if [ -z "$pkg" ]; then
  echo "fetch-kernel: cannot resolve $meta to a versioned kernel package" >&2
  exit 1
fi
version="${pkg#linux-image-}"
kdir="$data_dir/kernels/$version"

link_current() {
  local tmp="$data_dir/kernels/.current.$$"
  ln -sfn "$version" "$tmp"
  mv -T "$tmp" "$data_dir/kernels/current"
}

if [ -f "$kdir/version" ] && [ -f "$kdir/boot/vmlinuz-$version" ]; then
  echo "fetch-kernel: $version already present in $kdir"
  link_current
  exit 0
fi

mkdir -p "$data_dir/kernels"
work="$(mktemp -d "$data_dir/kernels/.fetch.XXXXXX")"
chmod 755 "$work" # apt-get download drops privileges to _apt
trap 'rm -rf "$work"' EXIT

echo "fetch-kernel: downloading $pkg"
(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
deb="$(ls "$work"/*.deb)"
mkdir "$work/tree"
dpkg-deb -x "$deb" "$work/tree"
if [ ! -f "$work/tree/boot/vmlinuz-$version" ]; then
  echo "fetch-kernel: $deb has no boot/vmlinuz-$version" >&2
  exit 1
fi

# Optional: extract the PVH ELF vmlinux from the LZ4-compressed bzImage
# (boots ~0.3 s faster under TCG; Firecracker needs it). The payload starts
# at the LZ4 legacy magic 02 21 4c 18; lz4 stops at the trailing data.
if command -v lz4 >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
  if python3 - "$work/tree/boot/vmlinuz-$version" "$work/vmlinux.lz4" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\x02\x21\x4c\x18")
if off < 0:
    sys.exit(1)
open(sys.argv[2], "wb").write(data[off:])
EOF
  then
    lz4 -dcq "$work/vmlinux.lz4" >"$work/vmlinux" 2>/dev/null || true
    if [ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; then
      mv "$work/vmlinux" "$work/tree/boot/vmlinux-$version"
    else
      echo "fetch-kernel: could not extract vmlinux (bzImage only)" >&2
    fi
  fi
fi

printf '%s\n' "$version" >"$work/tree/version"
rm -rf "$kdir"
mv "$work/tree" "$kdir"
link_current
echo "fetch-kernel: $version ready in $kdir"
