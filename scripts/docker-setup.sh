#!/usr/bin/env bash
# A Docker engine for test/docker.test.ts, and the base images it builds from.
#
#   scripts/docker-setup.sh [SHARED_DIR]
#
# As root: installs Debian's docker.io and docker-compose when missing, starts dockerd when no
# daemon answers (without the default bridge and without touching iptables: the tests run every
# container with --network host), and builds the local stand-ins for debian:bookworm-slim and
# node:24-bookworm-slim with SHARED_DIR/docker/make-base-images.sh when they are missing
# (SHARED_DIR defaults to the shared/ folder beside the repository, where CI puts it).
# As any other user: uses a daemon that answers, installs and starts nothing.
# Idempotent: a second run finds everything in place and returns at once.
#
# Exit status: 0 ready; 3 Docker cannot be had here (the reason on the last line of standard
# output: the tests are skipped with it); anything else: a step failed (see standard error).
# Prints `started-dockerd PID` when it started the daemon, so that the caller can stop it.
set -euo pipefail
export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
repo=$(cd "$(dirname "$0")/.." && pwd)
shared=${1:-$repo/../shared}
log_dir=${TMPDIR:-/tmp}
root=no
[ "$(id -u)" = 0 ] && root=yes

skip() {
  echo "$1"
  exit 3
}

daemon_answers() { timeout 20 docker info >/dev/null 2>&1; }

if [ "$root" = yes ]; then
  need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  if [ ${#need[@]} -gt 0 ]; then
    # Package scripts must not start services while installing: a policy-rc.d that refuses,
    # unless the machine has one of its own.
    policy=/usr/sbin/policy-rc.d
    own_policy=no
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=yes
    fi
    status=0
    {
      export DEBIAN_FRONTEND=noninteractive
      timeout 300 apt-get update -q && timeout 600 apt-get install -y -q --no-install-recommends "${need[@]}"
    } >&2 || status=$?
    [ "$own_policy" = yes ] && rm -f "$policy"
    [ "$status" = 0 ] || { echo "docker-setup: installing ${need[*]} failed" >&2; exit 1; }
  fi
fi

command -v docker >/dev/null || skip "no docker command (Debian's docker.io, installed by this script as root)"
command -v docker-compose >/dev/null || skip "no docker-compose command (Debian's docker-compose, installed by this script as root)"

if ! daemon_answers; then
  [ "$root" = yes ] || skip "no Docker daemon answers and starting one needs root"
  log="$log_dir/pop3-imap-proxy-dockerd.log"
  # Detached from this script's output, so that whoever waits for the script does not wait for it.
  setsid dockerd --bridge=none --iptables=false >"$log" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 60); do
    daemon_answers && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if ! daemon_answers; then
    echo "docker-setup: dockerd did not start; its log ($log) ends with:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  echo "started-dockerd $pid"
fi

script="$shared/docker/make-base-images.sh"
if ! timeout 60 bash -c 'docker image inspect debian:bookworm-slim node:24-bookworm-slim >/dev/null 2>&1'; then
  [ "$root" = yes ] || skip "the base images debian:bookworm-slim and node:24-bookworm-slim are missing and building them needs root"
  [ -f "$script" ] || skip "the base images are missing and $script, which builds them, is not there"
  timeout 900 bash "$script" >&2 || { echo "docker-setup: $script failed" >&2; exit 1; }
fi
