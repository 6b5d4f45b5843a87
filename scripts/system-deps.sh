#!/usr/bin/env bash
# The Debian packages the tests need, and how to get them.
#
#   scripts/system-deps.sh          install what is missing (as root), or say what is missing and
#                                   exit 1 (as any other user); silent when nothing is missing
#   scripts/system-deps.sh --list   print the package list, one line, and exit
#   scripts/system-deps.sh --check  print what is missing (if anything) and exit 1, never install
#
# The tests start their own Dovecot (and Redis, and Postfix) on free loopback ports with private
# configurations; the system-wide services are never used. When this script installs the
# server packages it keeps the system services from starting, and stops them should they have
# started anyway. Cyrus IMAP and Courier-IMAP are never installed (their packages conflict
# with Dovecot's): only their shared libraries are listed here, and
# scripts/unpack-imap-servers.sh (which the tests run) unpacks the servers into a cache folder.
# Docker is not listed either: scripts/docker-setup.sh installs and starts it (as root) for
# test/docker.test.ts alone, which is skipped where Docker cannot be had.
set -euo pipefail
export PATH="${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# package:file — the binary (a command name or an absolute path) or other file whose presence
# shows that the package is installed. An absolute path may hold a glob, for files under a
# versioned directory.
readonly DEPS=(
  "dovecot-imapd:/usr/lib/dovecot/imap"
  "dovecot-pop3d:/usr/lib/dovecot/pop3"
  "redis-server:redis-server"
  "curl:curl"
  "fetchmail:fetchmail"
  "mpop:mpop"
  "python3:python3"
  "getmail6:getmail"
  "haproxy:haproxy"
  "tcl:tclsh"
  "tcllib:/usr/share/tcltk/tcllib*/pop3/pkgIndex.tcl"
  # Cyrus IMAP and Courier-IMAP (test/other-servers.test.ts) are not installed: their server
  # packages conflict with dovecot-imapd, so scripts/unpack-imap-servers.sh unpacks them into a
  # cache folder. These are the shared libraries the unpacked programs need that a plain Debian
  # lacks (found with ldd), and what the tests use to set them up.
  "libpcre3:/usr/lib/*/libpcreposix.so.3"
  "libical3:/usr/lib/*/libical.so.3"
  "libxapian30:/usr/lib/*/libxapian.so.30"
  "libsasl2-2:/usr/lib/*/libsasl2.so.2"
  "libsasl2-modules:/usr/lib/*/sasl2/libplain.so.2"
  "libsasl2-modules-db:/usr/lib/*/sasl2/libsasldb.so.2"
  "libwrap0:/usr/lib/*/libwrap.so.0"
  "libcourier-unicode4:/usr/lib/*/libcourier-unicode.so.4"
  "libltdl7:/usr/lib/*/libltdl.so.7"
  "libgamin0:/usr/lib/*/libfam.so.0"
  "libgdbm6:/usr/lib/*/libgdbm.so.6"
  "libidn12:/usr/lib/*/libidn.so.12"
  # Perl's DB_File writes Cyrus's SASL password database; unshare, setpriv and flock run them.
  "perl:/usr/lib/*/perl/5.*/DB_File.pm"
  "util-linux:unshare"
  # SMTP submission (test/support/postfix.ts): a private Postfix relays to the test Dovecot,
  # which takes the mail by LMTP; swaks, msmtp (and Python's smtplib) are the real clients.
  # Postfix is installed unconfigured (see preseed_postfix), so the Debian instance has no
  # main.cf and never listens on port 25. swaks needs Net::SSLeay for STARTTLS (a Recommends).
  "postfix:/usr/sbin/postfix"
  "dovecot-lmtpd:/usr/lib/dovecot/lmtp"
  "swaks:swaks"
  "libnet-ssleay-perl:/usr/lib/*/perl5/5.*/Net/SSLeay.pm"
  "msmtp:msmtp"
  # Corporate proxies (test/support/tinyproxy.ts): a real forward proxy the token requests and
  # the routing lookups go through; the tests run their own, never the system one on :8888.
  "tinyproxy:tinyproxy"
)

# The tests also call these, which come with the packages above.
readonly IMPLIED_BINARIES=(dovecot doveadm)

all_packages() {
  local d
  for d in "${DEPS[@]}"; do printf '%s ' "${d%%:*}"; done
}

have() {
  local f
  case "$1" in
    /*)
      # shellcheck disable=SC2086 # unquoted on purpose: the path may be a glob
      for f in $1; do [ -e "$f" ] && return 0; done
      return 1
      ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

# Whether apt knows an installable version of a package.
installable() {
  local candidate
  command -v apt-cache >/dev/null 2>&1 || return 0
  candidate=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1)
  [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

missing_packages() {
  local d pkg bin
  for d in "${DEPS[@]}"; do
    pkg=${d%%:*}
    bin=${d#*:}
    if ! have "$bin"; then
      printf '%s ' "$pkg"
    elif [ "$pkg" = dovecot-imapd ]; then
      for bin in "${IMPLIED_BINARIES[@]}"; do
        if ! have "$bin" && ! have "/usr/sbin/$bin" && ! have "/usr/bin/$bin"; then
          printf '%s ' "$pkg"
          break
        fi
      done
    fi
  done
}

# A process that a pid file names, if it is still running.
pid_from() {
  local pid
  [ -r "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

wait_gone() {
  local pid=$1 i
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

systemd_running() {
  [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

stop_system_dovecot() {
  local pid
  if systemd_running; then
    systemctl stop dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
  if pid=$(pid_from /run/dovecot/master.pid); then
    doveadm -c /etc/dovecot/dovecot.conf stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid"
  fi
}

stop_system_redis() {
  local pid f
  if systemd_running; then
    systemctl stop redis-server.service >/dev/null 2>&1 || true
  fi
  for f in /run/redis/redis-server.pid /var/run/redis/redis-server.pid; do
    if pid=$(pid_from "$f"); then
      kill -TERM "$pid" 2>/dev/null || true
      wait_gone "$pid"
    fi
  done
}

stop_system_postfix() {
  local pid
  if systemd_running; then
    systemctl stop postfix.service >/dev/null 2>&1 || true
  fi
  # Only the Debian instance's own pid file: the tests' instances keep theirs in their queues.
  if pid=$(pid_from /var/spool/postfix/pid/master.pid); then
    postfix stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid"
  fi
}

# debconf's "No configuration": the package then writes no main.cf, so the Debian instance
# cannot start, and nothing listens on port 25. Installing postfix removes exim4 (both are the
# mail-transport-agent), which apt does without asking under DEBIAN_FRONTEND=noninteractive.
preseed_postfix() {
  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
}

mode=${1:-}
case "$mode" in
  --list)
    pkgs=$(all_packages)
    echo "${pkgs% }"
    exit 0
    ;;
  "" | --check) ;;
  *)
    echo "usage: $0 [--list | --check]" >&2
    exit 2
    ;;
esac

missing=$(missing_packages)
missing=${missing% }
[ -z "$missing" ] && exit 0

# getmail6 is not in every Debian release: without an installable version it is left out
# rather than blocking the other tests.
if [[ " $missing " == *" getmail6 "* ]] && ! installable getmail6; then
  missing=$(printf '%s\n' $missing | grep -vx getmail6 | tr '\n' ' ' || true)
  missing=${missing% }
  echo "system-deps: getmail6 is not available from apt here; tests that use getmail will be skipped" >&2
  [ -z "$missing" ] && exit 0
fi

if [ "$mode" = --check ] || [ "${EUID:-$(id -u)}" -ne 0 ]; then
  echo "Missing: $missing. Install them with: sudo apt-get install -y $missing" >&2
  exit 1
fi

# Keep package scripts from starting services during the installation: a policy-rc.d that
# refuses, unless the machine already has one of its own.
policy=/usr/sbin/policy-rc.d
own_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=yes
fi
cleanup() {
  if [ "$own_policy" = yes ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if [[ " $missing " == *" postfix "* ]]; then preseed_postfix; fi
# shellcheck disable=SC2086 # $missing is a list of package names
{
  apt-get update -q
  # Test processes running side by side may each get here: wait for the other's dpkg lock.
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $missing
} >&2

# Whatever started anyway (an init system that ignores policy-rc.d) is stopped: the tests run
# their own instances with their own configurations.
if [[ " $missing " == *" dovecot-"* ]]; then stop_system_dovecot; fi
if [[ " $missing " == *" redis-server "* ]]; then stop_system_redis; fi
if [[ " $missing " == *" postfix "* ]]; then stop_system_postfix; fi

still=$(missing_packages)
still=${still% }
if [ -n "$still" ] && [ "$still" != getmail6 ]; then
  echo "Missing after installation: $still" >&2
  exit 1
fi
