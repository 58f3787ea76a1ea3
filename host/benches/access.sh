#!/usr/bin/env bash
# Mail access throughput, mailgate beside Dovecot on the same Maildir content: IMAP FETCH of all
# full bodies and of all BODYSTRUCTUREs for N messages in one folder, and POP3 RETR of 1000
# (implicit TLS for both servers); then mailgate's memory per idle IMAP connection.
# Installs dovecot-imapd and dovecot-pop3d when missing. Run through `cargo xtask bench access`.
# Usage: access.sh [N=10000] [SIZE=4096]; MEMORY_ONLY=1 skips Dovecot and the throughput runs.
set -euo pipefail
N=${1:-10000} L=${2:-4096}
source "$(dirname "$0")/common.sh"
[ -n "${MEMORY_ONLY:-}" ] || [ -x /usr/lib/dovecot/imap ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-pop3d >/dev/null; }
work=$(run_dir access)
imaps=${IMAPS_PORT:-2693} pop3s=${POP3S_PORT:-2695} d_imaps=${DOVECOT_IMAPS:-2793} d_pop3s=${DOVECOT_POP3S:-2795}
cat > "$work/gateway.toml" <<TOML
[server]
hostname = "bench.example.org"
data-dir = "data"
[local]
domains = ["example.org"]
[limits]
max-connections-per-ip = 400
[[listener]]
name = "imaps"
address = "127.0.0.1:$imaps"
protocol = "imap"
tls = "implicit"
[[listener]]
name = "pop3s"
address = "127.0.0.1:$pop3s"
protocol = "pop3"
tls = "implicit"
TOML
echo bench | "$bin" user add bench@example.org --config "$work/gateway.toml" 2>/dev/null
echo bench | "$bin" user add stress@example.org --config "$work/gateway.toml" 2>/dev/null
# N messages of about L bytes, straight into the Maildir (as a delivery would leave them).
python3 - "$work/data/mail/example.org/bench" "$N" "$L" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in ("tmp", "new", "cur"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
for i in range(n):
    head = (f"Return-Path: <sender@example.com>\r\nFrom: Sender <sender@example.com>\r\n"
            f"To: bench@example.org\r\nSubject: message {i}\r\nMessage-ID: <{i}@example.com>\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n")
    body = line * max(1, (size - len(head)) // len(line))
    with open(os.path.join(root, "cur", f"{1700000000 + i}.M{i}.bench:2,S"), "w", newline="") as f:
        f.write(head + body)
PY
start_gateway "$work" "$imaps"
trap 'kill $pid 2>/dev/null || true; [ -f "$work/dovecot/dovecot.conf" ] && doveadm -c "$work/dovecot/dovecot.conf" stop 2>/dev/null || true' EXIT

if [ -z "${MEMORY_ONLY:-}" ]; then
# Dovecot on a copy of the same Maildir, as nobody, with mailgate's certificate.
mkdir -p "$work/dovecot/mail"
cp -a "$work/data/mail/example.org/bench" "$work/dovecot/mail/bench"
rm -f "$work/dovecot/mail/bench/mailgate-uidlist"* "$work/dovecot/mail/bench/mailgate-uidvalidity"* "$work/dovecot/mail/bench/mailgate-cache"
chown -R nobody:nogroup "$work/dovecot/mail"
# The same argon2id hashes mailgate checks (m=19 MiB, t=2), so that logins cost both the same.
sed -n 's/^"\([^@"]*\)@[^"]*" = "\(\$argon2id[^"]*\)"$/\1:{ARGON2ID}\2/p' "$work/data/users.toml" >"$work/dovecot/passwd"
cat > "$work/dovecot/dovecot.conf" <<CONF
protocols = imap pop3
listen = 127.0.0.1
base_dir = $work/dovecot/run
log_path = $work/dovecot/dovecot.log
ssl = required
ssl_cert = <$work/data/tls/cert.pem
ssl_key = <$work/data/tls/key.pem
mail_location = maildir:$work/dovecot/mail/%n
passdb {
  driver = passwd-file
  args = $work/dovecot/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$work/dovecot/mail/%n
}
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = $d_imaps
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = $d_pop3s
  }
}
pop3_uidl_format = %f
CONF
dovecot -c "$work/dovecot/dovecot.conf"
wait_port "$d_imaps"

echo "N=$N messages of ~$L bytes in one folder, $(nproc) cores; implicit TLS"
echo "mailgate:"
python3 "$root/host/benches/access_client.py" "$imaps" "$pop3s" bench@example.org bench 1000
echo "dovecot $(dovecot --version | cut -d' ' -f1):"
python3 "$root/host/benches/access_client.py" "$d_imaps" "$d_pop3s" bench bench 1000

# imaptest's stress mode (random concurrent sessions that check each other's view), 5 clients
# for 30 s, on a mailbox of its own on each server: logins and commands per second, errors.
imaptest_bin=$(bash "$root/../shared/tools/imaptest/build.sh" "$root/target/imaptest" | tail -1)
stress() { # NAME PORT USER
  LD_LIBRARY_PATH=/usr/lib/dovecot "$imaptest_bin" host=127.0.0.1 port="$2" ssl=any-cert user="$3" pass=bench \
    mbox="$(dirname "$imaptest_bin")/tests/default.mbox" secs=30 clients=5 >"$work/stress-$1.log" 2>&1 || true
  awk -v name="$1" '
    /Error:/ { errors++ }
    totals && /^[ 0-9]+$/ { logins = $1; for (i = 1; i <= NF; i++) commands += $i; totals = 0 }
    /^Totals:/ { totals = 1 }
    END { printf "  imaptest stress, %s (5 clients, 30 s): %.0f logins/s, %.0f commands/s, %d errors\n", name, logins / 30, commands / 30, errors }
  ' "$work/stress-$1.log"
}
stress mailgate "$imaps" stress@example.org
stress dovecot "$d_imaps" stress
fi

# Memory per idle IMAP connection: 200 logged-in sessions with INBOX selected.
rss() { awk '/VmRSS/{print $2}' "/proc/$pid/status"; }
before=$(rss)
python3 - "$imaps" <<'PY' &
import imaplib, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conns = []
for _ in range(200):
    c = imaplib.IMAP4_SSL("127.0.0.1", int(sys.argv[1]), ssl_context=ctx)
    c.login("bench@example.org", "bench"); c.select("INBOX", readonly=True)
    conns.append(c)
open("/tmp/mailgate-idle-ready", "w").close()
time.sleep(30)
PY
idlers=$!
for _ in $(seq 1 600); do [ -f /tmp/mailgate-idle-ready ] && break; sleep 0.2; done
after=$(rss)
rm -f /tmp/mailgate-idle-ready
kill $idlers 2>/dev/null || true
printf 'mailgate memory per idle IMAP connection (INBOX of %s selected): %.0f KiB (RSS %s -> %s KiB over 200)\n' \
  "$N" "$(echo "($after - $before) / 200" | bc -l)" "$before" "$after"
