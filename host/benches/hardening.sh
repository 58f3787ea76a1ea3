#!/usr/bin/env bash
# Hardening figures: IMAP SEARCH over N messages (one key, ten keys, a body key, and 1 000 flat
# keys in two sessions while a third client's SMTP greeting is timed), the server's peak memory
# during 100 concurrent wrong IMAP logins, the CPU of 20 sessions in IDLE, and IMAP APPEND of 1,
# 10 and 30 MiB (time should grow linearly). Then, through hardening_requests.py, each hostile
# request of the hardening review against a fresh server: its wall time, server CPU, peak memory,
# answer, and another client's slowest answer meanwhile. Run through `cargo xtask bench hardening`.
# Usage: hardening.sh [N=10000]; BIN=path/to/mailgate measures another build (e.g. an old one).
set -euo pipefail
N=${1:-10000}
source "$(dirname "$0")/common.sh"
work=$(run_dir hardening)
imaps=${IMAPS_PORT:-2893} smtp=${SMTP_PORT:-2825}
cat > "$work/gateway.toml" <<TOML
[server]
hostname = "bench.example.org"
data-dir = "data"
[local]
domains = ["example.org"]
[limits]
max-connections-per-ip = 400
max-message-bytes = 40000000
auth-failures-per-ip = 0
[[listener]]
name = "imaps"
address = "127.0.0.1:$imaps"
protocol = "imap"
tls = "implicit"
[[listener]]
name = "inbound"
address = "127.0.0.1:$smtp"
TOML
# The IDLE figure holds 20 sessions of one user: builds with a per-user connection cap have it
# turned off here (an older build refuses the key, and has no cap).
sed 's/^\[limits\]$/[limits]\nmax-connections-per-user = 0/' "$work/gateway.toml" > "$work/capped.toml"
if "$bin" config check --config "$work/capped.toml" >/dev/null 2>&1; then
  mv "$work/capped.toml" "$work/gateway.toml"
fi
echo bench | "$bin" user add bench@example.org --config "$work/gateway.toml" 2>/dev/null
python3 - "$work/data/mail/example.org/bench" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in ("tmp", "new", "cur"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
line = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
for i in range(n):
    head = (f"From: Sender {i % 97} <sender{i % 97}@example.com>\r\nTo: bench@example.org\r\n"
            f"Subject: message {i} about topic{i % 13}\r\nMessage-ID: <{i}@example.com>\r\n"
            f"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n")
    body = line * 50 + (f"needle{i}\r\n" if i % 1000 == 0 else "")
    with open(os.path.join(root, "cur", f"{1700000000 + i}.M{i}.bench:2,S"), "w", newline="") as f:
        f.write(head + body)
PY
start_gateway "$work" "$imaps"
trap 'kill $pid 2>/dev/null || true' EXIT

python3 - "$imaps" "$smtp" "$pid" <<'PY'
import imaplib, os, resource, socket, ssl, sys, threading, time
port, smtp, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def session():
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=600)
    imap.login("bench@example.org", "bench")
    imap.select("INBOX")
    return imap

def cpu():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def timed(label, imap, criteria):
    c0, t0 = cpu(), time.monotonic()
    typ, data = imap.search(None, criteria)
    wall, used = time.monotonic() - t0, cpu() - c0
    hits = len(data[0].split()) if typ == "OK" else typ
    print(f"SEARCH {label:<34} {wall:7.3f} s wall {used:7.3f} s server CPU  {hits} hits")

imap = session()
n = int(imap.select("INBOX")[1][0])
print(f"SEARCH over {n} messages")
timed("one key (SUBJECT topic7)", imap, "SUBJECT topic7")
timed("ten keys", imap, " ".join(["NOT SUBJECT zz%d" % k for k in range(9)] + ["FROM sender3"]))
timed("a body key (BODY needle5000)", imap, "BODY needle5000")
flat = " ".join("NOT SUBJECT zz%d" % k for k in range(1000))
results, greets = [], []
def heavy():
    s = session()
    t0 = time.monotonic(); typ, _ = s.search(None, flat); results.append((typ, time.monotonic() - t0))
threads = [threading.Thread(target=heavy) for _ in range(2)]
for t in threads: t.start()
time.sleep(0.5)
while any(t.is_alive() for t in threads):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", smtp)) as c:
        c.recv(512)
    greets.append(time.monotonic() - t0)
    time.sleep(0.1)
for t in threads: t.join()
print("SEARCH 1000 flat keys x2 sessions     " + ", ".join(f"{typ} in {s:.2f} s" for typ, s in results)
      + f"; SMTP greeting meanwhile: max {max(greets or [0])*1000:.1f} ms over {len(greets)} connections")

def status(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) // 1024
rss_before = status("VmRSS")
refused, dropped, lost = [], [], []
def wrong():
    try:
        imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=600)
    except imaplib.IMAP4.error:  # BYE at connect: too many connections waiting to log in
        refused.append(1)
        return
    except OSError:  # closed unanswered in the TLS handshake: the server refuses in TLS only a
        dropped.append(1)  # few clients at once (TLS_REFUSALS_AT_ONCE), the others it just closes
        return
    try:
        imap.login("bench@example.org", "wrong")
    except imaplib.IMAP4.error:
        pass
    except OSError:  # connection lost after the greeting
        lost.append(1)
peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], status("VmRSS")); time.sleep(0.02)
sampler = threading.Thread(target=sample); sampler.start()
t0 = time.monotonic()
logins = [threading.Thread(target=wrong) for _ in range(100)]
for t in logins: t.start()
for t in logins: t.join()
stop.set(); sampler.join()
print(f"100 concurrent wrong logins: RSS {rss_before} MiB before, peak {peak[0]} MiB, {time.monotonic() - t0:.1f} s"
      f" ({len(refused)} refused at connect as too many waiting to log in, {len(dropped)} closed"
      f" unanswered in the TLS handshake, {len(lost)} lost after the greeting)")

idlers = []
for _ in range(20):
    s = session()
    s.send(b"i IDLE\r\n"); s.readline()
    idlers.append(s)
time.sleep(1)
c0 = cpu(); time.sleep(10); used = cpu() - c0
print(f"20 sessions in IDLE for 10 s: {used:.2f} s server CPU ({used * 10:.1f} % of a core)")
for s in idlers:
    s.send(b"DONE\r\n"); s.readline()

for mib in (1, 10, 30):
    message = (b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n") * (mib * 1024 * 1024 // 88)
    c0, t0 = cpu(), time.monotonic()
    typ, _ = imap.append("INBOX", None, None, message)
    print(f"APPEND {mib:>2} MiB: {typ} {time.monotonic() - t0:6.2f} s wall, {cpu() - c0:6.2f} s server CPU")
PY

# Part two: one fresh server per hostile request (each under RLIMIT_AS 4 GiB).
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
python3 "$(dirname "$0")/hardening_requests.py" "$bin" "$work/requests"
