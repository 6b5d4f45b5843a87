#!/bin/sh
# The first time (no Maildir yet), puts the sample message into demo's Maildir the way a
# delivery agent does (written in tmp/, renamed into new/): Dovecot picks it up at the next
# login, so nothing has to run before Dovecot is up. Then runs Dovecot in the foreground.
set -eu
maildir=/srv/mail/demo/Maildir
if [ ! -d "$maildir" ]; then
  mkdir -p "$maildir/tmp" "$maildir/new" "$maildir/cur"
  name="$(date +%s).welcome.$(uname -n)"
  cp /usr/local/share/dovecot-demo/welcome.eml "$maildir/tmp/$name"
  mv "$maildir/tmp/$name" "$maildir/new/$name"
  chown -R vmail:vmail /srv/mail/demo
  echo "dovecot-demo: the sample message is in demo's mailbox" >&2
fi
exec dovecot -F
