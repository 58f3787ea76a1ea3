#!/usr/bin/env bash
# End-to-end relay throughput: smtp-source -> mailgate (three bundled plugins, durable spool)
# -> smtp-sink, measured by ../shared/bench/peers.sh beside Postfix and Haraka in the same run
# (it starts the sink on $SINK_PORT and measures every server the same way). Also prints
# mailgate's CPU per message. Run through `cargo xtask bench relay`.
# Usage: relay.sh [N=20000] [SESSIONS=20] [SIZE=4096]  (20 000: at 2 000 msg/s, 5 000 messages
# last under 3 s, and the same build measured 2.5-3.5x Postfix from run to run)
#   env: PEERS="postfix haraka" (or " " for none), TELEMETRY=both|on|off|metrics|journal (the
#   runs to make; default both: off, then on), SIGN=ed25519-sha256|rsa-sha256 (DKIM-sign every
#   message with a key made for the run), BIN=path/to/mailgate (another build; relay_against.sh
#   measures two builds in one run with it), KV=local|redis (add the JavaScript greylist, a kv-get
#   and a kv-set per message, its store local or in a redis-server started for the run)
set -euo pipefail
N=${1:-20000} S=${2:-20} L=${3:-4096}
source "$(dirname "$0")/common.sh"
peers=$root/../shared/bench/peers.sh
[ -f "$peers" ] || { echo "relay.sh needs $peers (it runs the sink and the peers)" >&2; exit 2; }
port=${GATEWAY_BENCH_PORT:-2625} sink=${SINK_PORT:-2527}
# A [[dkim]] entry for smtp-source's sender domain when SIGN names an algorithm.
dkim_config() {
  [ -n "${SIGN:-}" ] || return 0
  "$bin" dkim keygen example.com bench --algorithm "$SIGN" --out "$1/dkim.key" >/dev/null
  printf '[[dkim]]\ndomain = "example.com"\nselector = "bench"\nkey = "dkim.key"\nalgorithm = "%s"\n' "$SIGN"
}
# The greylist and its store when KV names a backend.
redis_port=${REDIS_BENCH_PORT:-6391}
kv_config() {
  [ -n "${KV:-}" ] || return 0
  [ "$KV" = redis ] && printf '[kv]\nbackend = "redis://127.0.0.1:%s/0"\n' "$redis_port"
  printf '[[plugin]]\npath = "%s/greylist.wasm"\ngrant = ["kv"]\nmemory-mb = 128\ntimeout-ms = 2000\n[plugin.config]\ndelay-seconds = 0\n' "$plugins"
}
if [ "${KV:-}" = redis ]; then
  command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
  redis_dir=$(run_dir redis)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" >/dev/null & redis_pid=$!
  trap 'kill $redis_pid 2>/dev/null || true' EXIT
  wait_port "$redis_port"
fi
modes=$(telemetry_modes)
for mode in $modes; do
work=$(run_dir relay)
cat > "$work/gateway.toml" <<TOML
$(relay_gateway "$port" "$sink")
$(telemetry_config "$mode")
$(dkim_config "$work")
$(bundled_plugins)
$(kv_config)
TOML
start_gateway "$work" "$port"
trap 'kill $pid ${redis_pid:-} 2>/dev/null || true' EXIT
# The greylist defers a triple's first message: the one triple of the load is seen here first.
[ -n "${KV:-}" ] && { smtp-source -m 1 -f bench@example.com -t rcpt@example.org 127.0.0.1:$port || true; }
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
cpu0=$(cpu)
echo "== mailgate with metrics and journal $mode${SIGN:+, signing $SIGN}${KV:+, greylist on the $KV kv store} =="
# The peers run beside each mailgate run (PEERS=" " for none).
GATEWAY_PORT=$port SINK_PORT=$sink PEERS=${PEERS-"postfix haraka"} bash "$peers" "$N" "$S" "$L"
ticks=$(( $(cpu) - cpu0 )); hz=$(getconf CLK_TCK)
printf 'mailgate (%s) CPU %.0f us/msg (user+system, warm-up included; %s)\n' "$mode" \
  "$(echo "$ticks * 1000000 / $hz / ($N + 20)" | bc -l)" "$(awk '{print "utime " $14 " stime " $15 " ticks"}' /proc/$pid/stat)"
left=$(find "$work/data/queue/active" -type f | wc -l)
echo "mailgate queue after the run: $left message(s)"
kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
done
