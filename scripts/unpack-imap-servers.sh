#!/usr/bin/env bash
# Unpacks Cyrus IMAP and Courier-IMAP from Debian's packages into a cache folder, for the tests
# that run the proxy in front of them (test/support/cyrus.ts, test/support/courier.ts).
#
#   scripts/unpack-imap-servers.sh           download and unpack what is missing, check that
#                                            every shared library the servers need is installed,
#                                            and print the folder holding the unpacked tree
#   scripts/unpack-imap-servers.sh --check   the same without downloading: exit 1 when anything
#                                            is missing
#
# Debian's cyrus-imapd, courier-imap and dovecot-imapd conflict (each provides imap-server):
# installing one removes the others. So the server packages are never installed: `apt-get
# download` fetches them and `dpkg -x` unpacks them into a folder of $IMAP_SERVERS_CACHE named
# after the package versions. Only their shared libraries are installed, with apt, by
# scripts/system-deps.sh. Neither step needs root once the apt lists are there; quick (one
# apt-cache look-up) when the cache is already complete; safe to run concurrently, from any
# number of checkouts.
#
# Part of the unpacked programs run as another user (Cyrus's master starts imapd as the mail
# user, Courier's imaplogin runs imapd as the mail user), who must be able to reach them. A
# checkout may well sit in a folder only its owner can enter (mktemp -d makes them 0700, and
# so is /root), so as root the default cache is /var/cache/pop3-imap-proxy-tests/imap-servers,
# outside the checkout; as any other user (the servers then cannot run: they need root) it is
# the repository's git-ignored .test-tmp/imap-servers. Each tree is made once and never
# replaced, since other runs may be executing from it; one for older versions (about 10 MB)
# can be deleted while no test runs.
set -euo pipefail
export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Everything made here must be readable and executable by the mail user, whatever umask the
# caller had.
umask 022

is_root() { [ "${EUID:-$(id -u)}" -eq 0 ]; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${IMAP_SERVERS_CACHE:-}" ]; then
  cache=$IMAP_SERVERS_CACHE
elif is_root; then
  cache=/var/cache/pop3-imap-proxy-tests/imap-servers
else
  cache=$repo/.test-tmp/imap-servers
fi

# The server packages: Cyrus's master, imapd and database tools; Courier's TCP server, IMAP
# login and server, authentication daemon and userdb module.
readonly PACKAGES=(cyrus-common cyrus-imapd courier-base courier-imap courier-authlib courier-authlib-userdb)

# The programs and modules the tests run, relative to the unpacked root: each must find all its
# libraries.
readonly BINARIES=(
  usr/lib/cyrus/bin/master
  usr/lib/cyrus/bin/imapd
  usr/lib/cyrus/bin/ctl_cyrusdb
  usr/sbin/couriertcpd
  usr/lib/courier/courier/imaplogin
  usr/bin/imapd
  usr/lib/courier/courier-authlib/authdaemond
  usr/lib/courier/courier-authlib/makedatprog
  usr/lib/courier-authlib/libauthuserdb.so.0
)

mode=${1:-}
case "$mode" in
  "" | --check) ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if ! command -v apt-get >/dev/null 2>&1 || ! command -v apt-cache >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
  echo "unpack-imap-servers: apt-get and dpkg are needed (a Debian system)" >&2
  exit 1
fi

# "package version" of every package as apt would download it now, one a line; exit 1 when apt
# knows no installable version of one of them.
candidates() {
  local out p
  out=$(apt-cache policy "${PACKAGES[@]}" 2>/dev/null |
    awk '/^[^ ]/ { p = $1; sub(/:$/, "", p) } /^ *Candidate:/ && $2 != "(none)" { print p, $2 }')
  for p in "${PACKAGES[@]}"; do grep -q "^$p " <<<"$out" || return 1; done
  printf '%s\n' "$out"
}

# Whether $1/root/.complete lists exactly these versions ($2, as candidates() prints them).
complete() {
  [ -f "$1/root/.complete" ] && [ "$(sort "$1/root/.complete")" = "$(sort <<<"$2")" ]
}

# The most recently unpacked complete tree of this cache (any versions), if there is one: used
# when apt no longer knows the packages (its lists were removed) instead of failing.
latest_complete() {
  local f
  f=$(ls -1t "$cache"/*/root/.complete 2>/dev/null | head -n 1) || return 1
  [ -n "$f" ] && dirname "$(dirname "$f")"
}

lib_path() {
  local p=$1/usr/lib:$1/usr/lib/courier-authlib d
  for d in "$1"/usr/lib/*-linux-gnu; do [ -d "$d" ] && p=$p:$d; done
  printf '%s' "$p"
}

# The sonames that some binary under root $1 cannot find, one per line.
missing_libraries() {
  local b ld
  ld=$(lib_path "$1")
  for b in "${BINARIES[@]}"; do
    if [ ! -e "$1/$b" ]; then
      echo "(file $b)"
      continue
    fi
    LD_LIBRARY_PATH=$ld ldd "$1/$b" 2>/dev/null | sed -n 's/^[[:space:]]*\([^[:space:]]*\) => not found.*/\1/p'
  done | sort -u
}

# As root, exits with an error when other users cannot pass through (o+x) every folder from /
# down to the existing folder $1: the mail user could not run the servers unpacked there.
require_reachable() {
  local p
  is_root || return 0
  p=$(cd "$1" && pwd -P)
  while :; do
    if [ $((8#$(stat -c %a "$p") & 1)) -eq 0 ]; then
      echo "unpack-imap-servers: other users cannot pass through $p (mode $(stat -c %a "$p")), so the mail" >&2
      echo "  user could not run servers unpacked in $1. Set IMAP_SERVERS_CACHE to a folder that every" >&2
      echo "  user can reach (the default for root is /var/cache/pop3-imap-proxy-tests/imap-servers)." >&2
      exit 1
    fi
    [ "$p" = / ] && return 0
    p=$(dirname "$p")
  done
}

# Downloads the packages at versions $2 and unpacks them into $1 (which must not exist yet).
unpack() {
  local dir=$1 versions=$2 tmp deb p v
  local -a wanted=()
  while read -r p v; do wanted+=("$p=$v"); done <<<"$versions"
  tmp=$cache/.unpack.$$
  rm -rf "$tmp"
  mkdir -p "$tmp/debs" "$tmp/root"
  # As root, apt would try to drop to its _apt user, which may not write this folder.
  local -a sandbox=()
  if is_root; then sandbox=(-o APT::Sandbox::User=root); fi
  if ! (cd "$tmp/debs" && apt-get -q "${sandbox[@]}" download "${wanted[@]}") >&2; then
    rm -rf "$tmp"
    echo "unpack-imap-servers: apt-get download ${wanted[*]} failed" >&2
    exit 1
  fi
  for deb in "$tmp"/debs/*.deb; do
    dpkg -x "$deb" "$tmp/root"
    printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$tmp/root/.complete"
  done
  # dpkg -x gives the top folder the mode of the package's "./" entry: make sure of it.
  chmod 0755 "$tmp" "$tmp/root"
  if ! complete "$tmp" "$versions"; then
    echo "unpack-imap-servers: the downloaded packages are not the versions asked for:" >&2
    cat "$tmp/root/.complete" >&2
    rm -rf "$tmp"
    exit 1
  fi
  # Appears whole or not at all: concurrent runs only ever see a complete tree there.
  mv "$tmp" "$dir"
}

versions=$(candidates) || versions=
if [ -z "$versions" ] && [ "$mode" != --check ] && ! latest_complete >/dev/null && is_root; then
  apt-get update -q >&2
  versions=$(candidates) || versions=
fi
if [ -n "$versions" ]; then
  key=$( (dpkg --print-architecture; printf '%s\n' "$versions") | sha256sum | cut -c 1-16)
  dir=$cache/$key
  if ! complete "$dir" "$versions"; then
    if [ "$mode" = --check ]; then
      echo "unpack-imap-servers: Cyrus and Courier ($(tr '\n' ' ' <<<"$versions")) are not unpacked in $cache. Run: $0" >&2
      exit 1
    fi
    # One unpacking at a time (test files start in parallel); the others wait and find it done.
    mkdir -p "$cache"
    # Before any download: a tree the mail user cannot reach is of no use.
    require_reachable "$cache"
    exec 9>"$cache/.lock"
    if ! flock -w 300 9; then
      echo "unpack-imap-servers: $cache/.lock is held by another run for more than 300 s" >&2
      exit 1
    fi
    if ! complete "$dir" "$versions"; then
      # Left over from something other than this script (it only ever moves a complete tree
      # here), and the work folders of unpackings that were killed: none runs but this one.
      rm -rf "$dir" "$cache"/.unpack.*
      unpack "$dir" "$versions"
    fi
    exec 9>&-
  fi
elif dir=$(latest_complete); then
  echo "unpack-imap-servers: apt knows no ${PACKAGES[*]}: using what $dir holds" >&2
else
  if is_root; then
    echo "unpack-imap-servers: apt knows no installable ${PACKAGES[*]}" >&2
  else
    echo "unpack-imap-servers: apt knows no cyrus-imapd package yet. Run as root: apt-get update" >&2
    echo "  (then run $0 again, as any user)" >&2
  fi
  exit 1
fi
root=$dir/root

require_reachable "$root"

missing=$(missing_libraries "$root")
if [ -n "$missing" ]; then
  echo "unpack-imap-servers: the unpacked servers in $root miss these shared libraries:" $missing >&2
  if is_root; then
    echo "  Install them with: bash $repo/scripts/system-deps.sh" >&2
  else
    echo "  Install them as root with: sudo bash $repo/scripts/system-deps.sh" >&2
  fi
  echo "  (and add the package that holds each to the library list there, if it is not in it)" >&2
  exit 1
fi

printf '%s\n' "$root"
