#!/usr/bin/env bash
# A private Postfix instance used as a downstream MTA by the relay tests.
#   postfix-downstream.sh start DIR PORT DOMAIN [MILTER [hold]]
#                                                 -> SMTP on 127.0.0.1:PORT; mail for DOMAIN is
#                                                    delivered into the Maildir DIR/mail/box/;
#                                                    with MILTER (inet:HOST:PORT), smtpd and
#                                                    sendmail(1) mail goes through that milter;
#                                                    with "hold", every message accepted is put
#                                                    on the hold queue instead (read it with
#                                                    postcat -c DIR/etc -q ID)
#   postfix-downstream.sh stop DIR
# Everything (config, queue, log) lives in DIR; the system's Postfix configuration is not touched.
set -euo pipefail
action=$1 dir=$2
case $action in
stop)
  postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
  exit 0 ;;
start)
  port=$3 domain=$4 milter=${5:-} hold=${6:-}
  mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/mail"
  chown postfix "$dir/data"
  chown nobody "$dir/mail"
  cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = downstream.localdomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = $domain
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
maillog_file = $dir/postfix.log
maillog_file_prefixes = $dir
smtp_dns_support_level = disabled
biff = no
CF
  if [ -n "$milter" ]; then
    cat >> "$dir/etc/main.cf" <<CF
smtpd_milters = $milter
non_smtpd_milters = $milter
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 10s
milter_command_timeout = 30s
milter_content_timeout = 60s
CF
  fi
  if [ "$hold" = hold ]; then
    echo "smtpd_recipient_restrictions = check_recipient_access static:HOLD" >> "$dir/etc/main.cf"
  fi
  cat > "$dir/etc/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
  postfix -c "$dir/etc" set-permissions >/dev/null 2>&1 || true
  postfix -c "$dir/etc" start
  ;;
esac
