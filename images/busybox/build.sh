#!/usr/bin/env bash
# Builds a tiny busybox rootfs tar for fast tests, from the host's
# busybox-static package (/bin/busybox). Reproducible: sorted names, numeric
# root owners, fixed mtimes, so the same busybox gives the same digest.
#
#   images/busybox/build.sh OUT.tar [--import]
#
# --import also runs `cleanroom image import OUT.tar --ref cleanroom-base/busybox:latest`
# (cleanroom from $CLEANROOM or PATH).
set -euo pipefail

usage() { echo "usage: $0 OUT.tar [--import]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
do_import=0
for a in "$@"; do
  case $a in --import) do_import=1 ;; *) usage ;; esac
done

busybox=${BUSYBOX:-/bin/busybox}
# (not `--help | head -1`: with pipefail, head closing the pipe early made
# busybox die of SIGPIPE now and then)
if ! "$busybox" true >/dev/null 2>&1; then
  echo "$0: $busybox does not run; install busybox-static" >&2; exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "$0: $busybox is dynamically linked; install busybox-static" >&2; exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cd "$stage"
mkdir -p bin sbin etc root tmp proc sys dev run var/tmp workspace home usr/bin usr/sbin
chmod 0755 . bin sbin etc proc sys dev run var workspace home usr usr/bin usr/sbin
chmod 0700 root
chmod 1777 tmp var/tmp
install -m 0755 "$busybox" bin/busybox
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] && continue
  [ -e "bin/$applet" ] || ln -s busybox "bin/$applet"
done
cat > etc/passwd <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > etc/group <<'G'
root:x:0:
nogroup:x:65534:
G
printf 'root:*:19000:0:99999:7:::\n' > etc/shadow
chmod 0640 etc/shadow
printf '127.0.0.1 localhost\n::1 localhost\n' > etc/hosts
printf 'cleanroom\n' > etc/hostname
printf 'hosts: files dns\n' > etc/nsswitch.conf
cd - >/dev/null
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 \
  --format=gnu -C "$stage" -cf "$out" .
echo "$0: wrote $out" >&2

if [ $do_import = 1 ]; then
  "${CLEANROOM:-cleanroom}" image import "$out" --ref cleanroom-base/busybox:latest
fi
