#!/usr/bin/env bash
# Builds the default Debian image, cleanroom-base/debian:bookworm, as a
# rootfs tar with mmdebstrap, from the Debian mirror this machine's apt is
# configured with (nothing else on the network is used).
#
#   images/debian/build.sh OUT.tar [--with PKG,...] [--import]
#
# --with adds Debian packages to the list (e.g. `--with nodejs,npm`: the test
# image of the gateway-npm test and bench/gateway.py); such an image leaves
# out /usr/share/doc, man, info and locale (dpkg path-exclude) to stay smaller.
#
# Environment:
#   CLEANROOM_DEBIAN_MIRROR   use this mirror URI instead of apt's
#   CLEANROOM_DEBIAN_SUITE    default bookworm
#   CLEANROOM_DEBIAN_INCLUDE  default bash,coreutils,ca-certificates,git,curl
# --import also runs `cleanroom image import OUT.tar --ref cleanroom-base/debian:bookworm`
# (cleanroom from $CLEANROOM or PATH).
set -euo pipefail

usage() { echo "usage: $0 OUT.tar [--with PKG,...] [--import]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
do_import=0
with=
while [ $# -gt 0 ]; do
  case $1 in
    --import) do_import=1; shift ;;
    --with) [ $# -ge 2 ] && [[ $2 =~ ^[a-z0-9][a-z0-9+.,-]*$ ]] || usage; with=$2; shift 2 ;;
    *) usage ;;
  esac
done
suite=${CLEANROOM_DEBIAN_SUITE:-bookworm}
include=${CLEANROOM_DEBIAN_INCLUDE:-bash,coreutils,ca-certificates,git,curl}
slim=()
if [ -n "$with" ]; then
  include=$include,$with
  for d in doc man info locale; do slim+=("--dpkgopt=path-exclude=/usr/share/$d/*"); done
fi

command -v mmdebstrap >/dev/null || { echo "$0: mmdebstrap not found (apt-get install mmdebstrap)" >&2; exit 1; }

# Prints "deb URI SUITE COMPONENTS" for every enabled apt source of $suite,
# $suite-updates and $suite-security, from sources.list and sources.list.d
# (one-line and deb822 formats).
apt_sources() {
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v want="$suite" '
    function emit(types, uris, suites, comps,   nt, nu, ns, t, u, s, T, U, S) {
      nt = split(types, T, /[ \t]+/); nu = split(uris, U, /[ \t]+/); ns = split(suites, S, /[ \t]+/)
      for (t = 1; t <= nt; t++) if (T[t] == "deb")
        for (u = 1; u <= nu; u++) if (U[u] != "")
          for (s = 1; s <= ns; s++)
            if (S[s] == want || S[s] == want "-updates" || S[s] == want "-security")
              print "deb " U[u] " " S[s] " " (comps == "" ? "main" : comps)
    }
    function flush() {
      if (types != "" && tolower(enabled) != "no") emit(types, uris, suites, comps)
      types = uris = suites = comps = enabled = ""
    }
    FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
    /^[ \t]*#/ { next }
    deb822 {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      line = $0; key = tolower(line); sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
      if (key == "types") types = val; else if (key == "uris") uris = val
      else if (key == "suites") suites = val; else if (key == "components") comps = val
      else if (key == "enabled") enabled = val
      next
    }
    $1 == "deb" {
      i = 2
      if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      c = ""; for (j = i + 2; j <= NF; j++) c = c (c == "" ? "" : " ") $j
      emit("deb", $i, $(i + 1), c)
    }
    END { flush() }
  ' "${files[@]}"
}

mirrors=()
if [ -n "${CLEANROOM_DEBIAN_MIRROR:-}" ]; then
  mirrors=("deb $CLEANROOM_DEBIAN_MIRROR $suite main")
else
  while IFS= read -r line; do mirrors+=("$line"); done < <(apt_sources | awk '!seen[$0]++')
fi
if [ ${#mirrors[@]} -eq 0 ]; then
  echo "$0: no apt source for $suite in /etc/apt/sources.list(.d); set CLEANROOM_DEBIAN_MIRROR" >&2
  exit 1
fi
echo "$0: apt sources:" >&2
printf '  %s\n' "${mirrors[@]}" >&2

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
mmdebstrap --variant=minbase --include="$include" "${slim[@]}" --format=tar \
  "$suite" "$out" "${mirrors[@]}"
echo "$0: wrote $out" >&2

if [ $do_import = 1 ]; then
  "${CLEANROOM:-cleanroom}" image import "$out" --ref "cleanroom-base/debian:$suite"
fi
