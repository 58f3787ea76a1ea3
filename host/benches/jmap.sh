#!/usr/bin/env bash
# JMAP beside IMAP on the same store: Email/query + Email/get (ids, then headers and preview)
# of N messages against IMAP FETCH of the same headers, in one run; JMAP requests per second
# for a small Email/get; and the webmail page's time to first list for an inbox of 1 000
# messages in headless Chromium. Needs target/pyenv (made by `cargo xtask test`). Run
# through `cargo xtask bench jmap`.
# Usage: jmap.sh [N=10000] [SIZE=4096]
set -euo pipefail
N=${1:-10000} L=${2:-4096}
source "$(dirname "$0")/common.sh"
python=$root/target/pyenv/bin/python
[ -x "$python" ] || { echo "jmap.sh needs target/pyenv: run cargo xtask test once" >&2; exit 2; }
work=$(run_dir jmap)
imaps=${IMAPS_PORT:-2693} jmap=${JMAP_PORT:-2643}
cat > "$work/gateway.toml" <<TOML
[server]
hostname = "bench.example.org"
data-dir = "data"
[metrics]
address = ""
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
name = "jmap"
address = "127.0.0.1:$jmap"
protocol = "jmap"
tls = "implicit"
TOML
echo bench | "$bin" user add bench@example.org --config "$work/gateway.toml" 2>/dev/null
echo bench | "$bin" user add web@example.org --config "$work/gateway.toml" 2>/dev/null
# Messages of about L bytes, straight into the Maildirs (as a delivery would leave them).
python3 - "$work/data/mail/example.org" "$N" "$L" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
for user, count in (("bench", n), ("web", 1000)):
    for d in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(root, user, d), exist_ok=True)
    for i in range(count):
        head = (f"Return-Path: <sender@example.com>\r\nFrom: Sender {i % 50} <sender{i % 50}@example.com>\r\n"
                f"To: {user}@example.org\r\nSubject: message {i}\r\nMessage-ID: <{i}@example.com>\r\n"
                f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n")
        body = line * max(1, (size - len(head)) // len(line))
        with open(os.path.join(root, user, "cur", f"{1700000000 + i}.M{i}.bench:2,S"), "w", newline="") as f:
            f.write(head + body)
PY
start_gateway "$work" "$jmap"
trap 'kill $pid 2>/dev/null || true' EXIT
echo "== JMAP beside IMAP, $N messages of ~$L bytes, 2 cores =="
"$python" "$root/host/benches/jmap_bench.py" "$jmap" "$imaps" bench@example.org bench
echo "== webmail: inbox of 1000 messages in headless Chromium =="
for run in 1 2 3; do
  "$python" "$root/tests/e2e/clients/webmail_browser.py" "$jmap" web@example.org bench "$work/shots" inbox "message 999" |
    python3 -c 'import json,sys; o=json.load(sys.stdin); print("run %s: time to first list %.0f ms (%d rows shown)" % (sys.argv[1], o["seconds_to_list"]*1000, o["listed"]))' "$run"
done
printf 'mailgate CPU %s ticks (utime+stime), RSS %s kB\n' "$(awk '{print $14 + $15}' /proc/$pid/stat)" "$(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
