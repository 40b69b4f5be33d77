#!/usr/bin/env bash
# Runs a command in a freshly made Debian 12 root, as a newcomer's machine
# would run it: nothing installed beyond `--variant=apt` plus ca-certificates,
# git and sudo, the checkout copied to /src, and only this machine's own
# configuration carried over (apt sources and Acquire/proxy settings, the CA
# bundle, npm's configuration), as a newcomer's machine has its own.
#
#   scripts/fresh-root.sh [--keep] [--] 'COMMAND'      (run by bash in /src)
#
# The base tarball is cached between runs on this machine
# ($CLEANROOM_CI_CACHE, default /var/cache/cleanroom-ci; rebuilt after 7
# days). The command runs in its own mount and PID namespaces: every process
# it starts is ended and every mount undone when it finishes, and the root is
# deleted (unless --keep). Needs root. Exit status: the command's.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "fresh-root.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: scripts/fresh-root.sh [--keep] [--] 'COMMAND'" >&2; exit 2; }
cmd=$1
[ "$(id -u)" = 0 ] || { echo "fresh-root.sh: run as root (mmdebstrap, chroot, namespaces)" >&2; exit 1; }
say() { printf '==> fresh-root: %s\n' "$*" >&2; }

for tool in mmdebstrap unshare chroot; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "installing mmdebstrap (for $tool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap util-linux coreutils >/dev/null
    break
  fi
done

# --- the base tarball (cached) ---
cache=${CLEANROOM_CI_CACHE:-/var/cache/cleanroom-ci}
base=$cache/bookworm-apt.tar
mkdir -p "$cache"
if [ ! -s "$base" ] || [ -n "$(find "$base" -mtime +7 2>/dev/null)" ]; then
  say "making the Debian 12 base root (mmdebstrap, cached in $cache)"
  mirrors=()
  [ -s /etc/apt/sources.list ] && grep -qE '^\s*deb ' /etc/apt/sources.list && mirrors+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && mirrors+=("$f")
  done
  [ ${#mirrors[@]} -gt 0 ] || { echo "fresh-root.sh: this machine has no apt sources" >&2; exit 1; }
  aptopts=()
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -qiE 'Acquire|Proxy' "$f" && aptopts+=("--aptopt=$f")
  done
  mmdebstrap --quiet --variant=apt --include=ca-certificates,git,sudo "${aptopts[@]}" \
    bookworm "$base.tmp.tar" "${mirrors[@]}"
  mv -f "$base.tmp.tar" "$base"
fi

# --- the root ---
root=$(mktemp -d /var/tmp/cleanroom-fresh-root.XXXXXX)
cleanup() {
  local rc=$?
  # The namespace is gone, so are its mounts; never descend into one anyway.
  if findmnt -rn -o TARGET | grep -q "^$root"; then
    echo "fresh-root.sh: mounts left under $root; not deleting it" >&2
  elif [ $keep = 1 ]; then
    say "kept $root"
  else
    rm -rf --one-file-system "$root"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
tar -C "$root" -xf "$base"

say "copying the checkout to /src"
mkdir -p "$root/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$root/src" -xf -
[ -d .git ] && cp -a .git "$root/src/.git"
[ -f .git ] && git -C "$root/src" init -q  # a worktree: give the copy a repository of its own
if [ -f .git ]; then
  (cd "$root/src" && git add -A >/dev/null && git -c user.name=ci -c user.email=ci@localhost commit -qm snapshot)
fi

say "carrying over this machine's CA bundle and npm configuration"
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
for f in /etc/npmrc /usr/etc/npmrc /root/.npmrc; do
  if [ -f "$f" ]; then mkdir -p "$root$(dirname "$f")"; cp -a "$f" "$root$f"; fi
done
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

# The environment a newcomer's root shell has, plus this machine's CA and
# proxy settings and the CI flag.
envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
      LANG=C.UTF-8 TERM="${TERM:-dumb}" USER=root LOGNAME=root)
while IFS='=' read -r k v; do
  case $k in
    CI|*_proxy|*_PROXY|SSL_CERT_FILE|SSL_CERT_DIR|NODE_EXTRA_CA_CERTS|CURL_CA_BUNDLE|GIT_SSL_CAINFO|REQUESTS_CA_BUNDLE|CLEANROOM_*)
      envs+=("$k=$v") ;;
  esac
done < <(env)

say "running in the fresh root: $cmd"
rc=0
# In the background and waited for, so that INT/TERM reach us at once: the
# namespace is then ended (its init is killed with unshare, --kill-child).
unshare --mount --propagation private --pid --fork --kill-child -- \
  bash -c '
    set -e
    r=$1; shift
    mount --bind "$r" "$r"  # a mount point, as a real root is (ip netns exec needs one)
    mount -t proc proc "$r/proc"
    mount --rbind /sys "$r/sys"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$r/run"
    exec chroot "$r" /usr/bin/env -i "$@"
  ' fresh-root "$root" "${envs[@]}" bash -c 'cd /src && eval "$0"' "$cmd" &
child=$!
trap 'kill -TERM $child 2>/dev/null; wait $child 2>/dev/null; exit 130' INT TERM
wait $child || rc=$?
exit $rc
