#!/usr/bin/env bash
# Relay throughput of two builds in one run: relay.sh (no peers, one telemetry mode) on the
# baseline build, then on the current one, ROUNDS times (A B A B ...), so both see the same
# machine load. Each line gives the 1-minute load average when the run started, delivered and accepted
# msg/s and mailgate's CPU per message; the summary gives the median of each and current's
# ratio to the baseline. Run through `cargo xtask bench relay --against REV`.
# Usage: relay_against.sh BASELINE_BIN CURRENT_BIN [ROUNDS=2] [N=20000] [SESSIONS=20] [SIZE=4096]
#   env: TELEMETRY=on (one of relay.sh's modes: on, off, metrics, journal), SIGN and KV as relay.sh
set -euo pipefail
baseline=${1:?baseline binary} current=${2:?current binary}
rounds=${3:-2} N=${4:-20000} S=${5:-20} L=${6:-4096}
mode=${TELEMETRY:-on}
case $mode in on | off | metrics | journal) ;; *)
  echo "relay_against.sh compares one telemetry mode; TELEMETRY=$mode is not one" >&2; exit 2 ;;
esac
relay=$(dirname "$0")/relay.sh
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One relay.sh run of build $2 labelled $1; its output is shown indented, its figures appended
# to $results as "label delivered accepted cpu_us load at_sink".
measure() {
  local label=$1 build=$2 load out delivered accepted cpu sunk
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $label ($build); uptime: $(uptime)"
  out=$(BIN=$build PEERS=" " TELEMETRY=$mode bash "$relay" "$N" "$S" "$L" 2>&1) || {
    echo "$out" | sed 's/^/   /'; echo "relay.sh failed on $label" >&2; return 1; }
  echo "$out" | sed 's/^/   /'
  accepted=$(echo "$out" | awk '$1 == "mailgate" && $2 == "accepted" {print $3}')
  delivered=$(echo "$out" | awk '$1 == "mailgate" && $2 == "accepted" {print $6}')
  cpu=$(echo "$out" | awk '$1 == "mailgate" && $3 == "CPU" {print $4}')
  sunk=$(echo "$out" | awk '$1 == "mailgate" && $2 == "accepted" {print substr($8, 2)}')
  [ -n "$accepted" ] && [ -n "$delivered" ] && [ -n "$cpu" ] || {
    echo "no figures in relay.sh's output for $label" >&2; return 1; }
  echo "$label $delivered $accepted $cpu $load $sunk" >> "$results"
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
column_of() { awk -v l="$1" -v c="$2" '$1 == l {print $c}' "$results"; }

echo "relay, baseline against current: N=$N sessions=$S size=$L bytes, telemetry $mode, $rounds rounds, $(nproc) cores"
for round in $(seq 1 "$rounds"); do
  measure baseline "$baseline"
  measure current "$current"
done

echo
echo "round  build     delivered msg/s  accepted msg/s  CPU us/msg  load   at the sink"
awk '{r[$1]++; printf "%5d  %-8s  %15.0f  %14.0f  %10.0f  %-5s  %s\n", r[$1], $1, $2, $3, $4, $5, $6}' "$results"
echo
echo "median   delivered msg/s  accepted msg/s  CPU us/msg   (min-max)"
for label in baseline current; do
  printf '%-8s %16.0f %15.0f %11.0f    delivered %s-%s, accepted %s-%s, CPU %s-%s\n' "$label" \
    "$(column_of $label 2 | median)" "$(column_of $label 3 | median)" "$(column_of $label 4 | median)" \
    "$(column_of $label 2 | sort -n | head -1)" "$(column_of $label 2 | sort -n | tail -1)" \
    "$(column_of $label 3 | sort -n | head -1)" "$(column_of $label 3 | sort -n | tail -1)" \
    "$(column_of $label 4 | sort -n | head -1)" "$(column_of $label 4 | sort -n | tail -1)"
done
ratio() { echo "$(column_of current "$1" | median) / $(column_of baseline "$1" | median)" | bc -l; }
printf 'current / baseline (medians): delivered %.3f, accepted %.3f, CPU per message %.3f\n' \
  "$(ratio 2)" "$(ratio 3)" "$(ratio 4)"
