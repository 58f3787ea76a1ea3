#!/usr/bin/env bash
# SMTP accept rate of mailgate into local Maildir delivery with the three bundled plugins,
# measured with Postfix's smtp-source, then Postfix and Haraka by ../shared/bench/peers.sh in the
# same run when that script is there. Run through `cargo xtask bench smtp`.
# Usage: smtp_accept.sh [N=5000] [SESSIONS=20] [SIZE=4096]
#   env: PEERS="postfix haraka" (or ""), TELEMETRY=both|on|off (metrics and journal; default both)
set -euo pipefail
N=${1:-5000} S=${2:-20} L=${3:-4096}
source "$(dirname "$0")/common.sh"
need_smtp_source
for mode in $(telemetry_modes); do
work=$(run_dir smtp_accept)
port=${GATEWAY_BENCH_PORT:-2625}
cat > "$work/gateway.toml" <<TOML
[server]
hostname = "bench.example.org"
data-dir = "data"
[local]
domains = ["example.org"]
catch-all = { "example.org" = "rcpt@example.org" }
[[listener]]
name = "inbound"
address = "127.0.0.1:$port"
[limits]
max-connections-per-ip = 200
$(telemetry_config "$mode")
$(bundled_plugins)
TOML
echo bench | "$bin" user add rcpt@example.org --config "$work/gateway.toml" 2>/dev/null
start_gateway "$work" "$port"
trap 'kill $pid 2>/dev/null || true' EXIT
delivered() { find "$work/data/mail/example.org/rcpt/new" -type f 2>/dev/null | wc -l; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
split_cpu() { awk '{print "utime", $14, "stime", $15}' "/proc/$pid/stat"; }
smtp-source -s 2 -m 20 -l "$L" -f bench@example.com -t rcpt@example.org 127.0.0.1:$port
for _ in $(seq 1 100); do [ "$(delivered)" -ge 20 ] && break; sleep 0.1; done
cpu0=$(cpu); start=$(date +%s.%N)
smtp-source -s "$S" -m "$N" -l "$L" -f bench@example.com -t rcpt@example.org 127.0.0.1:$port
t_accept=$(echo "$(date +%s.%N) - $start" | bc)
for _ in $(seq 1 1200); do [ "$(delivered)" -ge $((N + 20)) ] && break; sleep 0.05; done
t_all=$(echo "$(date +%s.%N) - $start" | bc)
ticks=$(( $(cpu) - cpu0 )); hz=$(getconf CLK_TCK)
printf '%-15s accepted %6.0f msg/s   delivered %6.0f msg/s   (%s/%s in the Maildir)   CPU %.0f us/msg\n' \
  "mailgate ($mode)" "$(echo "$N / $t_accept" | bc -l)" "$(echo "$N / $t_all" | bc -l)" "$(( $(delivered) - 20 ))" "$N" \
  "$(echo "$ticks * 1000000 / $hz / $N" | bc -l)"
split_cpu >&2
kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
done
peers=$root/../shared/bench/peers.sh
if [ -f "$peers" ] && [ -n "${PEERS-x}" ]; then
  PEERS=${PEERS-"postfix haraka"} bash "$peers" "$N" "$S" "$L"
fi
