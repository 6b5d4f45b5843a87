#!/bin/sh
# The first time (no Maildir yet), puts the sample message into demo's Maildir the way a
# delivery agent does (written in tmp/, renamed into new/): Dovecot picks it up at the next
# login, so nothing has to run before Dovecot is up. A uidlist naming it as UID 1 comes with
# it: an LMTP delivery (from the demo's Postfix) before that login would otherwise take UID 1
# and push the sample behind it. Then runs Dovecot in the foreground.
set -eu
maildir=/srv/mail/demo/Maildir
if [ ! -d "$maildir" ]; then
  mkdir -p "$maildir/tmp" "$maildir/new" "$maildir/cur"
  name="$(date +%s).welcome.$(uname -n)"
  cp /usr/local/share/dovecot-demo/welcome.eml "$maildir/tmp/$name"
  mv "$maildir/tmp/$name" "$maildir/new/$name"
  printf '3 V%s N2\n1 :%s\n' "$(date +%s)" "$name" >"$maildir/dovecot-uidlist"
  chown -R vmail:vmail /srv/mail/demo
  echo "dovecot-demo: the sample message is in demo's mailbox" >&2
fi
exec dovecot -F
