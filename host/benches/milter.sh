#!/usr/bin/env bash
# Milter both ways, measured with ../shared/bench/peers.sh's load (smtp-source, N messages over
# S sessions of SIZE bytes, relayed to smtp-sink):
#   1. Postfix alone, then Postfix with mailgate as its milter (smtpd_milters; the three bundled
#      plugins), in one run: msg/s, mailgate's CPU per message, and the whole machine's CPU per
#      message (load generator and sink included, the same in both rows).
#   2. mailgate's relay (three bundled plugins), then the same with rspamd as a milter member of
#      its chain: msg/s and CPU per message of mailgate, and of rspamd.
# Run through `cargo xtask bench milter`. Usage: milter.sh [N=5000] [SESSIONS=20] [SIZE=4096]
set -euo pipefail
N=${1:-5000} S=${2:-20} L=${3:-4096}
source "$(dirname "$0")/common.sh"
peers=$root/../shared/bench/peers.sh
[ -f "$peers" ] || { echo "milter.sh needs $peers (it runs the sink and Postfix)" >&2; exit 2; }
relay_port=${GATEWAY_BENCH_PORT:-2625} milter_port=${MILTER_BENCH_PORT:-2630}
rspamd_port=${RSPAMD_BENCH_PORT:-2632} sink=${SINK_PORT:-2527}
command -v rspamd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rspamd >/dev/null; }
hz=$(getconf CLK_TCK)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  postconf -e 'smtpd_milters =' >/dev/null 2>&1 || true
}
trap cleanup EXIT

# CPU ticks of one process and of the whole machine (busy, all cores).
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
per_msg() { echo "$1 * 1000000 / $hz / ($N + 20)" | bc -l; }

# Runs peers.sh for Postfix (smtpd_milters as given) and reports CPU per message.
postfix_row() { # label milters
  postconf -e "smtpd_milters = $2" 'milter_default_action = tempfail' 'milter_protocol = 6' \
    'milter_command_timeout = 30s' 'milter_content_timeout = 60s'
  local m0 g0
  m0=$(machine_ticks); g0=$(proc_ticks "$gateway")
  echo "== $1 =="
  SINK_PORT=$sink PEERS=postfix bash "$peers" "$N" "$S" "$L"
  printf '%s: machine CPU %.0f us/msg, mailgate CPU %.0f us/msg\n' "$1" \
    "$(per_msg $(( $(machine_ticks) - m0 )))" "$(per_msg $(( $(proc_ticks "$gateway") - g0 )))"
}

# 1. mailgate as Postfix's milter.
work=$(run_dir milter-server)
cat > "$work/gateway.toml" <<TOML
[server]
hostname = "bench.example.com"
data-dir = "data"
[[listener]]
name = "milter"
address = "127.0.0.1:$milter_port"
protocol = "milter"
[limits]
max-connections-per-ip = 400
$(telemetry_config off)
$(bundled_plugins)
TOML
start_gateway "$work" "$milter_port"
gateway=$pid; pids+=("$pid")
echo "N=$N sessions=$S size=$L bytes, $(nproc) cores"
postfix_row "Postfix alone" ""
postfix_row "Postfix + mailgate milter (3 bundled plugins)" "inet:127.0.0.1:$milter_port"
postconf -e 'smtpd_milters =' >/dev/null
kill "$gateway" 2>/dev/null || true; wait "$gateway" 2>/dev/null || true

# 2. rspamd as a milter member of mailgate's relay chain.
rs=$work/rspamd
mkdir -p "$rs/override.d" "$rs/local.d" "$rs/db" "$rs/run" "$rs/log"
printf 'bind_socket = "127.0.0.1:%s";\nmilter = yes;\ntimeout = 60s;\ncount = %s;\nupstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n' \
  "$rspamd_port" "$(nproc)" > "$rs/override.d/worker-proxy.inc"
for w in normal controller fuzzy; do echo 'enabled = false;' > "$rs/override.d/worker-$w.inc"; done
printf 'type = "console";\nlevel = "error";\n' > "$rs/override.d/logging.inc"
printf 'dns { nameserver = ["127.0.0.1:1"]; timeout = 1s; retransmits = 1; }\n' > "$rs/local.d/options.inc"
# The bench's messages are bare: scores high enough that rspamd scans and lets them through.
printf 'reject = 1000;\nadd_header = 900;\ngreylist = null;\nrewrite_subject = null;\n' > "$rs/override.d/actions.conf"
as_root=(); [ "$(id -u)" = 0 ] && as_root=(-i -u root -g root)
rspamd -f -c /etc/rspamd/rspamd.conf --var="LOCAL_CONFDIR=$rs" --var="DBDIR=$rs/db" \
  --var="RUNDIR=$rs/run" --var="LOGDIR=$rs/log" "${as_root[@]}" > "$rs/rspamd.log" 2>&1 & rspamd_pid=$!
pids+=("$rspamd_pid")
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$rspamd_port) 2>/dev/null && break; sleep 0.1; done
# rspamd renames its processes ("rspamd: rspamd_proxy process"); this run's are the only ones.
rspamd_ticks() { local t=0 p; for p in $(pgrep -x rspamd || true); do t=$(( t + $(proc_ticks "$p" 2>/dev/null || echo 0) )); done; echo $t; }

relay_row() { # label extra-chain
  local dir
  dir=$(run_dir milter-relay)
  cat > "$dir/gateway.toml" <<TOML
$(relay_gateway "$relay_port" "$sink")
$(telemetry_config off)
$(bundled_plugins)
$2
TOML
  start_gateway "$dir" "$relay_port"
  local g=$pid g0 r0
  pids+=("$pid")
  g0=$(proc_ticks "$g"); r0=$(rspamd_ticks)
  echo "== $1 =="
  GATEWAY_PORT=$relay_port SINK_PORT=$sink PEERS=" " bash "$peers" "$N" "$S" "$L"
  printf '%s: mailgate CPU %.0f us/msg, rspamd CPU %.0f us/msg\n' "$1" \
    "$(per_msg $(( $(proc_ticks "$g") - g0 )))" "$(per_msg $(( $(rspamd_ticks) - r0 )))"
  kill "$g" 2>/dev/null || true; wait "$g" 2>/dev/null || true
}
relay_row "mailgate relay" ""
relay_row "mailgate relay + rspamd milter" \
  "$(printf '[[plugin]]\nname = "rspamd"\nmilter = "inet:127.0.0.1:%s"\ntimeout-ms = 20000\non-failure = "tempfail"\n' "$rspamd_port")"
