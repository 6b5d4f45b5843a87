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
# download` fetches them and `dpkg -x` unpacks them into $IMAP_SERVERS_CACHE (default: the
# repository's git-ignored .test-tmp/imap-servers). Only their shared libraries are installed,
# with apt, by scripts/system-deps.sh. Neither step needs root once the apt lists are there;
# quick (no apt call at all) when the cache is already complete; safe to run concurrently.
set -euo pipefail
export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${IMAP_SERVERS_CACHE:-$repo/.test-tmp/imap-servers}
root=$cache/root

# The server packages: Cyrus's master, imapd and database tools; Courier's TCP server, IMAP
# login and server, authentication daemon and userdb module.
readonly PACKAGES=(cyrus-common cyrus-imapd courier-base courier-imap courier-authlib courier-authlib-userdb)

# The programs and modules the tests run, relative to $root: each must find all its libraries.
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

is_root() { [ "${EUID:-$(id -u)}" -eq 0 ]; }

mode=${1:-}
case "$mode" in
  "" | --check) ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

complete() {
  [ -f "$root/.complete" ] || return 1
  local p
  for p in "${PACKAGES[@]}"; do grep -q "^$p " "$root/.complete" || return 1; done
}

lib_path() {
  local p=$root/usr/lib:$root/usr/lib/courier-authlib d
  for d in "$root"/usr/lib/*-linux-gnu; do [ -d "$d" ] && p=$p:$d; done
  printf '%s' "$p"
}

# The sonames that some binary cannot find, one per line.
missing_libraries() {
  local b ld
  ld=$(lib_path)
  for b in "${BINARIES[@]}"; do
    if [ ! -e "$root/$b" ]; then
      echo "(file $b)"
      continue
    fi
    LD_LIBRARY_PATH=$ld ldd "$root/$b" 2>/dev/null | sed -n 's/^[[:space:]]*\([^[:space:]]*\) => not found.*/\1/p'
  done | sort -u
}

unpack() {
  local candidate tmp deb
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "unpack-imap-servers: apt-get and dpkg are needed (a Debian system)" >&2
    exit 1
  fi
  candidate=$(apt-cache policy cyrus-imapd 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1)
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    if is_root; then
      apt-get update -q >&2
    else
      echo "unpack-imap-servers: apt knows no cyrus-imapd package yet. Run as root: apt-get update" >&2
      echo "  (then run $0 again, as any user)" >&2
      exit 1
    fi
  fi
  tmp=$cache/.unpack.$$
  rm -rf "$tmp"
  mkdir -p "$tmp/debs" "$tmp/root"
  # As root, apt would try to drop to its _apt user, which may not reach this folder.
  local -a sandbox=()
  if is_root; then sandbox=(-o APT::Sandbox::User=root); fi
  if ! (cd "$tmp/debs" && apt-get -q "${sandbox[@]}" download "${PACKAGES[@]}") >&2; then
    rm -rf "$tmp"
    echo "unpack-imap-servers: apt-get download ${PACKAGES[*]} failed" >&2
    exit 1
  fi
  for deb in "$tmp"/debs/*.deb; do
    dpkg -x "$deb" "$tmp/root"
    printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$tmp/root/.complete"
  done
  rm -rf "$root" "$cache/debs"
  mv "$tmp/debs" "$cache/debs"
  mv "$tmp/root" "$root"
  rmdir "$tmp"
}

if ! complete; then
  if [ "$mode" = --check ]; then
    echo "unpack-imap-servers: Cyrus and Courier are not unpacked in $cache. Run: $0" >&2
    exit 1
  fi
  # One unpacking at a time (test files start in parallel); the others wait and find it done.
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  if ! flock -w 300 9; then
    echo "unpack-imap-servers: $cache/.lock is held by another run for more than 300 s" >&2
    exit 1
  fi
  complete || unpack
fi

missing=$(missing_libraries)
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
