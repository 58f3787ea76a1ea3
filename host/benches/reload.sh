#!/usr/bin/env bash
# Hot reload figures: (1) time from replacing a plugin file to the new set serving, over 20
# swaps; (2) SMTP accept rate (smtp-source, N messages, S sessions, L bytes, into Maildir, the
# bundled plugins plus the stamp fixture) with no reloads and with a reload every second.
# Run through `cargo xtask bench reload`.
# Usage: reload.sh [N=20000] [SESSIONS=20] [SIZE=4096]
set -euo pipefail
N=${1:-20000} S=${2:-20} L=${3:-4096}
source "$(dirname "$0")/common.sh"
need_smtp_source
work=$(run_dir reload)
port=${GATEWAY_BENCH_PORT:-2625}
fixtures=$root/target/test-plugins
cp "$fixtures/stamp-v1.wasm" "$work/filter.wasm"
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
$(bundled_plugins)
[[plugin]]
name = "filter"
path = "filter.wasm"
TOML
echo bench | "$bin" user add rcpt@example.org --config "$work/gateway.toml" 2>/dev/null
reloader=
start_gateway "$work" "$port"
trap 'kill $pid 2>/dev/null || true; kill $reloader 2>/dev/null || true' EXIT
generation() { "$bin" plugins --config "$work/gateway.toml" | awk '/^generation/{print $2; exit}'; }

# (1) file change -> new set serving
lat=()
for i in $(seq 1 20); do
  g=$(generation)
  v=$(( i % 2 == 1 ? 2 : 1 ))
  t0=$(date +%s%N)
  cp "$fixtures/stamp-v$v.wasm" "$work/filter.tmp" && mv "$work/filter.tmp" "$work/filter.wasm"
  while [ "$(generation)" = "$g" ]; do sleep 0.005; done
  lat+=( $(( ($(date +%s%N) - t0) / 1000000 )) )
done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
printf 'file change -> new set serving (20 swaps): min %s ms, median %s ms, max %s ms\n' \
  "$(echo "$sorted" | head -1)" "$(echo "$sorted" | sed -n 10p)" "$(echo "$sorted" | tail -1)"
"$bin" plugins --history --config "$work/gateway.toml" | tail -3 | sed 's/^/  /'

# (2) accept rate without and with a reload every second
delivered() { find "$work/data/mail/example.org/rcpt/new" -type f 2>/dev/null | wc -l; }
rate() {
  local before start t
  before=$(delivered)
  start=$(date +%s.%N)
  smtp-source -s "$S" -m "$N" -l "$L" -f bench@example.com -t rcpt@example.org 127.0.0.1:$port
  for _ in $(seq 1 1200); do [ "$(delivered)" -ge $((before + N)) ] && break; sleep 0.05; done
  t=$(echo "$(date +%s.%N) - $start" | bc)
  echo "$N / $t" | bc -l
}
smtp-source -s 2 -m 20 -l "$L" -f bench@example.com -t rcpt@example.org 127.0.0.1:$port
# Alternate quiet and reloading runs, twice, so drift on the machine hits both alike.
for round in 1 2; do
  quiet=$(rate)
  ( while true; do "$bin" reload --config "$work/gateway.toml" >/dev/null 2>&1; sleep 1; done ) & reloader=$!
  g0=$(generation)
  busy=$(rate)
  kill $reloader 2>/dev/null || true; wait $reloader 2>/dev/null || true
  g1=$(generation)
  printf 'round %s, %s x %s B over %s sessions into Maildir: no reloads %.0f msg/s, reload every second %.0f msg/s (%s reloads during the run): %+.1f%%\n' \
    "$round" "$N" "$L" "$S" "$quiet" "$busy" "$((g1 - g0))" "$(echo "($busy - $quiet) * 100 / $quiet" | bc -l)"
done
