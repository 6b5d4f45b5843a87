#!/bin/sh
# Writes the addresses into Postfix's configuration, then runs Postfix in the foreground
# (`start-fg`: the master stays this container's first process and logs to stdout).
#   SUBMISSION_LISTEN  where smtpd listens: PORT or HOST:PORT (default 587)
#   DOVECOT_AUTH       Dovecot's auth service for logins: HOST:PORT (default dovecot:12345)
#   DOVECOT_LMTP       Dovecot's LMTP for deliveries: HOST:PORT (default dovecot:24)
set -eu
listen=${SUBMISSION_LISTEN:-587}
postconf -e "smtpd_sasl_path = inet:${DOVECOT_AUTH:-dovecot:12345}" "virtual_transport = lmtp:inet:${DOVECOT_LMTP:-dovecot:24}"
# No chroot (the fifth column "n"): Dovecot's names resolve as they do everywhere else in the
# container, and nothing has to be copied into the queue directory.
cat >/etc/postfix/master.cf <<MASTER
${listen} inet n - n - - smtpd
  -o syslog_name=postfix/submission
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
MASTER
exec postfix start-fg
