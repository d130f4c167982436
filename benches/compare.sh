#!/usr/bin/env bash
# The side-by-side comparison: one run, on this machine, of hsmkms beside moto's server and a
# minimal actix-web echo server (the ceiling of any actix-web service here), all loaded by the
# same tool (`hsmkms-load bench`) with the same operation and connection counts; then the figures
# that are not load runs (memory with 100,000 keys, an HSM catching up 10,000 keys, AES-GCM
# against ring); then BENCHMARKS.md and its chart, written by `hsmkms-load report`.
#
#   benches/compare.sh            the whole run (about 15 minutes on 2 cores)
#   benches/compare.sh --quick    3-second load runs and no criterion figures (a few minutes)
#
# Installs moto from PyPI into target/bench-venv on first use. Every server listens on
# 127.0.0.1 and is stopped when the script ends, however it ends. Every load run is bounded
# (`hsmkms-load bench --duration`, at most 120 s).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10
CRITERION=1
case "${1:-}" in
  --quick) DURATION=3; CRITERION=0 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
CONNECTIONS=(1 16 64)
MOTO_VERSION="5.2.5"

OUT=target/bench-compare
rm -rf "$OUT"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
COMMANDS="$OUT/commands.txt"
: >"$RESULTS"
: >"$COMMANDS"

PIDS=()
# Stops a process: SIGTERM, up to 20 s to exit, then SIGKILL; forgets its pid.
stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}
cleanup() {
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT

note() { echo "== $*" >&2; }
# Records a command in the report's list, then runs it.
record() { echo "$*" >>"$COMMANDS"; "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 60 s for a line in a log file written by process $3.
wait_for_line() {
  local file=$1 line=$2 pid=$3
  for _ in $(seq 1 600); do
    grep -qx "$line" "$file" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the process writing $file exited" >&2
      cat "$file" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$line' in $file" >&2
  cat "$file" >&2
  return 1
}
wait_for_http() {
  local port=$1
  for _ in $(seq 1 600); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
    sleep 0.1
  done
  echo "nothing answers on port $port" >&2
  return 1
}
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm_mib() { awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
figure() { # name value unit note
  python3 -c 'import json,sys; print(json.dumps({"name":sys.argv[1],"value":float(sys.argv[2]),"unit":sys.argv[3],"note":sys.argv[4]}))' "$@" >>"$RESULTS"
}

note "building the release binary"
record cargo build --release -p hsmkms -p hsmkms-load
BIN=target/release/hsmkms
LOAD=target/release/hsmkms-load

note "installing moto $MOTO_VERSION into target/bench-venv"
MOTO=""
if [ ! -x target/bench-venv/bin/moto_server ]; then
  python3 -m venv target/bench-venv && target/bench-venv/bin/pip install -q "moto[server]==$MOTO_VERSION" \
    || echo "moto could not be installed; the comparison goes on without it" >&2
fi
[ -x target/bench-venv/bin/moto_server ] && MOTO=target/bench-venv/bin/moto_server
echo "python3 -m venv target/bench-venv && target/bench-venv/bin/pip install 'moto[server]==$MOTO_VERSION'" >>"$COMMANDS"

start_hsmkms() { # data-dir port log
  "$BIN" --data-dir "$1" --port "$2" >"$3" 2>&1 &
  PIDS+=($!)
  HSMKMS_PID=$!
  wait_for_line "$3" "Ready." "$HSMKMS_PID"
}

HSMKMS_PORT=$(free_port)
ECHO_PORT=$(free_port)
MOTO_PORT=$(free_port)
note "starting hsmkms on $HSMKMS_PORT, the echo server on $ECHO_PORT${MOTO:+, moto on $MOTO_PORT}"
echo "$BIN --data-dir $OUT/data --port $HSMKMS_PORT" >>"$COMMANDS"
start_hsmkms "$OUT/data" "$HSMKMS_PORT" "$OUT/hsmkms.log"
echo "$LOAD echo --port $ECHO_PORT --workers 2" >>"$COMMANDS"
"$LOAD" echo --port "$ECHO_PORT" --workers 2 >"$OUT/echo.log" 2>&1 &
PIDS+=($!)
wait_for_line "$OUT/echo.log" "Ready." $!
if [ -n "$MOTO" ]; then
  echo "$MOTO -H 127.0.0.1 -p $MOTO_PORT" >>"$COMMANDS"
  "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$OUT/moto.log" 2>&1 &
  PIDS+=($!)
  wait_for_http "$MOTO_PORT"
fi

load() { # label port extra-args...
  local label=$1 port=$2
  shift 2
  note "load: $label $*"
  record "$LOAD" bench --label "$label" --endpoint "http://127.0.0.1:$port" --duration "$DURATION" \
    --trust-anchor "$OUT/data/customerCA.crt" --json "$@" >>"$RESULTS"
}

for c in "${CONNECTIONS[@]}"; do
  load echo "$ECHO_PORT" --op encrypt --connections "$c"
  load hsmkms "$HSMKMS_PORT" --op encrypt --connections "$c"
  load hsmkms "$HSMKMS_PORT" --op encrypt --key-store --connections "$c"
  [ -n "$MOTO" ] && load moto "$MOTO_PORT" --op encrypt --connections "$c"
done
# 4 KiB plaintexts (KMS's limit), and the other operations, at 64 connections.
load echo "$ECHO_PORT" --op encrypt --plaintext-bytes 4096 --connections 64
load hsmkms "$HSMKMS_PORT" --op encrypt --plaintext-bytes 4096 --connections 64
load hsmkms "$HSMKMS_PORT" --op encrypt --key-store --plaintext-bytes 4096 --connections 64
[ -n "$MOTO" ] && load moto "$MOTO_PORT" --op encrypt --plaintext-bytes 4096 --connections 64
load hsmkms "$HSMKMS_PORT" --op decrypt --connections 64
load hsmkms "$HSMKMS_PORT" --op decrypt --key-store --connections 64
load hsmkms "$HSMKMS_PORT" --op generate-data-key --key-store --connections 64
stop_pid "$HSMKMS_PID"

# The echo server at 1 connection with both cores kept out of idle by two lowest-priority spin
# loops (each ends by itself after the run): how much of a 1-connection figure is wake-up.
note "echo at 1 connection with the cores kept busy"
SPINNERS=()
for _ in 1 2; do
  timeout $((DURATION + 5)) nice -n 19 sh -c 'while :; do :; done' &
  SPINNERS+=($!)
  PIDS+=($!)
done
"$LOAD" bench --label echo --endpoint "http://127.0.0.1:$ECHO_PORT" --duration "$DURATION" \
  --connections 1 --json >"$OUT/echo-busy.json"
for pid in "${SPINNERS[@]}"; do stop_pid "$pid"; done
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"name":"echo-1-connection-busy-cores","value":r["requestsPerSecond"],"unit":"requests/s","note":"(echo encrypt at 1 connection, both cores kept out of idle by nice -n 19 spin loops)"}))' "$OUT/echo-busy.json" >>"$RESULTS"
# CreateKey on a fresh emulator each time: a fast machine could otherwise reach KMS's quota of
# 100,000 keys during the runs.
for c in "${CONNECTIONS[@]}"; do
  CK_PORT=$(free_port)
  start_hsmkms "$OUT/data-create-$c" "$CK_PORT" "$OUT/hsmkms-create-$c.log"
  note "load: hsmkms --op create-key --key-store --connections $c (fresh emulator)"
  record "$LOAD" bench --label hsmkms --endpoint "http://127.0.0.1:$CK_PORT" --duration "$DURATION" \
    --trust-anchor "$OUT/data-create-$c/customerCA.crt" --json --op create-key --key-store \
    --connections "$c" >>"$RESULTS"
  stop_pid "$HSMKMS_PID"
done

note "memory: a fresh emulator with 100,000 keys"
MEM_PORT=$(free_port)
start_hsmkms "$OUT/data-100k" "$MEM_PORT" "$OUT/hsmkms-100k.log"
# The tool's first request makes one key; 99,999 more make the quota's 100,000.
record "$LOAD" bench --label hsmkms --endpoint "http://127.0.0.1:$MEM_PORT" --op create-key \
  --connections 64 --warmup 0 --duration 120 --requests 99999 --json >"$OUT/create-100k.json"
KEYS=$(python3 - "$MEM_PORT" <<'EOF'
import json, sys, urllib.request
port = sys.argv[1]
def kms(op, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", json.dumps(body).encode(),
        {"X-Amz-Target": f"TrentService.{op}", "Content-Type": "application/x-amz-json-1.1"})
    return json.load(urllib.request.urlopen(req))
count, marker, first = 0, None, None
for _ in range(200):  # 200 pages of 1,000: twice the quota, so the loop always ends
    page = kms("ListKeys", {"Limit": 1000, **({"Marker": marker} if marker else {})})
    count += len(page["Keys"])
    first = first or page["Keys"][0]["KeyId"]
    if not page.get("Truncated"):
        break
    marker = page["NextMarker"]
print(count, first)
EOF
)
read -r KEY_COUNT KEY_ID <<<"$KEYS"
if [ "$KEY_COUNT" != 100000 ]; then
  echo "the emulator holds $KEY_COUNT keys, not 100000; see $OUT/create-100k.json" >&2
  exit 1
fi
AFTER_CREATE=$(rss_mib "$HSMKMS_PID")
CREATE_PEAK=$(hwm_mib "$HSMKMS_PID")
# Restart: the state as every later start loads it; then use a key under load.
stop_pid "$HSMKMS_PID"
start_hsmkms "$OUT/data-100k" "$MEM_PORT" "$OUT/hsmkms-100k-restart.log"
AT_START=$(rss_mib "$HSMKMS_PID")
record "$LOAD" bench --label hsmkms --endpoint "http://127.0.0.1:$MEM_PORT" --op encrypt \
  --key-id "$KEY_ID" --connections 64 --duration "$DURATION" --json >"$OUT/encrypt-100k.json"
UNDER_LOAD=$(rss_mib "$HSMKMS_PID")
PEAK=$(hwm_mib "$HSMKMS_PID")
python3 -c '
import json, sys
for path in sys.argv[1:]:
    run = json.load(open(path))
    if run["errors"]:
        sys.exit("%s: %d errors: %s" % (path, run["errors"], run["errorSamples"]))
' "$OUT/create-100k.json" "$OUT/encrypt-100k.json"
WORST=$(python3 -c "print(max($CREATE_PEAK, $PEAK))")
figure memory-100k-keys "$WORST" MiB "(the peak resident set of the two processes: ${CREATE_PEAK} MiB creating them, ${AFTER_CREATE} MiB after; ${PEAK} MiB restarted and under ${DURATION} s of Encrypt, ${AT_START} MiB at start, ${UNDER_LOAD} MiB after; ${KEY_COUNT} keys)"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"name":"create-key-100k-rate","value":r["requestsPerSecond"],"unit":"keys/s","note":"(AWS_KMS keys, 64 connections, %d keys)" % (r["requests"]+1)}))' "$OUT/create-100k.json" >>"$RESULTS"
stop_pid "$HSMKMS_PID"

if [ "$CRITERION" = 1 ]; then
  note "criterion: an HSM catching up, and AES-256-GCM against ring"
  record cargo bench --bench replication -- catch_up
  python3 - >>"$RESULTS" <<'EOF'
import json
for n in (1000, 10000):
    est = json.load(open(f"target/criterion/catch_up/{n}/new/estimates.json"))
    median = est["median"]["point_estimate"] / 1e9
    print(json.dumps({"name": f"catch-up-{n}", "value": median, "unit": "s",
                      "note": "(criterion median, from restarting the HSM to holding every key)"}))
EOF
  record cargo bench --bench aead >"$OUT/aead.txt"
  if [ "$(grep -c '^RATIO' "$OUT/aead.txt")" != 6 ]; then
    echo "the AEAD bench printed no ratios; see $OUT/aead.txt" >&2
    exit 1
  fi
  grep '^RATIO' "$OUT/aead.txt" | while read -r _ name ratio; do
    figure "$name" "$ratio" "× ring" "(throughput ratio, median of 3 interleaved runs)"
  done
fi

note "writing BENCHMARKS.md"
record "$LOAD" report --results "$RESULTS" --commands "$COMMANDS" --out BENCHMARKS.md \
  --chart benches/results/encrypt.svg --commit "$(git rev-parse --short HEAD)"
