# Shared by the bench scripts (sourced): paths, the run directory, the bundled plugin chain,
# waiting for a port, and starting the gateway.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# BIN=path/to/mailgate measures another build (an older revision's, say) with the same script.
bin=${BIN:-$root/target/release/mailgate}
plugins=$root/target/plugins

need_smtp_source() {
  command -v smtp-source >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null; }
}

# A fresh run directory. Runs are kept under target/bench-runs/ rather than deleted: on an ext4
# without a journal (as on these machines) creating files right after deleting thousands makes
# the kernel scan every recently deleted inode, and would slow down the next run for minutes.
run_dir() {
  local dir=$root/target/bench-runs/$1-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$dir"
  echo "$dir"
}

# The three bundled plugins as configured for the benchmarks (TOML on stdout).
bundled_plugins() {
  cat <<TOML
[[plugin]]
path = "$plugins/recipient-policy.wasm"
[plugin.config]
domains = ["example.org"]
[[plugin]]
path = "$plugins/mime-guard.wasm"
[plugin.config]
action = "strip"
extensions = ["exe", "scr", "js", "vbs"]
[[plugin]]
path = "$plugins/header-rewrite.wasm"
[plugin.config]
trace-header = "X-Mailgate"
TOML
}

# The relay gateway of the benches (TOML on stdout): listening on $1, relaying example.org to
# the sink on $2; the caller adds telemetry, keys and plugins.
relay_gateway() {
  cat <<TOML
[server]
hostname = "bench.example.com"
data-dir = "data"
relay-networks = ["127.0.0.0/8"]
[[listener]]
name = "inbound"
address = "127.0.0.1:$1"
[limits]
max-connections-per-ip = 200
[[route]]
domains = ["example.org"]
type = "relay"
host = "127.0.0.1:$2"
tls = "none"
[relay]
max-per-destination = 20
TOML
}

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# Starts `mailgate serve` on $1/gateway.toml (log in $1/server.log), sets $pid, waits for port $2.
start_gateway() {
  "$bin" serve --config "$1/gateway.toml" 2>"$1/server.log" & pid=$!
  wait_port "$2"
}

# The operations part of a gateway config (TOML on stdout): `on` is the defaults (metrics on
# $METRICS_PORT, journal in the data dir), `off` turns both off, `metrics` or `journal` keeps
# only that one. TELEMETRY picks the runs a bench makes: `both` (default: off, then on) or a
# list of those words.
telemetry_config() {
  case $1 in
    off) printf '[metrics]\naddress = ""\n[journal]\nenabled = false\n' ;;
    metrics) printf '[metrics]\naddress = "127.0.0.1:%s"\n[journal]\nenabled = false\n' "${METRICS_PORT:-9926}" ;;
    journal) printf '[metrics]\naddress = ""\n' ;;
    *) printf '[metrics]\naddress = "127.0.0.1:%s"\n' "${METRICS_PORT:-9926}" ;;
  esac
}
telemetry_modes() { case ${TELEMETRY:-both} in both) echo "off on" ;; *) echo "$TELEMETRY" ;; esac; }
