#!/usr/bin/env bash
# The comparison of issue 10: one run, on this machine, of hsmkms beside the three reference
# handlers of `hsmkms-load echo` (parse and answer; + base64 and AES-256-GCM inline; + the
# sealing in an actor on another arbiter: the least the same work costs) and moto's server, all
# loaded by `wrk` (light, so the server keeps most of the machine), with `hsmkms-load bench` (which
# signs and checks every request) beside it, with Sign, Verify and GenerateMac measured beside
# Encrypt at 64 connections; then a 60-second timeline of per-second p99, memory
# and start-up time with 100,000 keys, the previous commit's binary beside this one
# (`--baseline`), criterion figures and a profile; then BENCHMARKS.md and its charts, written by
# `hsmkms-load report`.
#
#   benches/compare.sh                      the whole run (about half an hour on 2 cores)
#   benches/compare.sh --baseline HEAD~1    the same, with that commit's hsmkms measured beside
#                                           (built in target/baseline-src, a git worktree that
#                                           is removed at the end, into target/baseline-target)
#   benches/compare.sh --quick              3-second load runs, one round, a 10-second
#                                           timeline, no criterion figures and no profile (a
#                                           few minutes)
#   benches/compare.sh --rounds N           the load runs of every ratio in N rounds (3 by
#                                           default, 1 with --quick)
#
# This machine's speed drifts by up to a third within a minute, so two figures taken minutes
# apart do not compare. The two sides of every ratio therefore run back to back, and the whole
# set is repeated in rounds whose order alternates (A B, then B A, ...): the report gives each
# figure as the median of its rounds and each ratio as the median of the per-round ratios, with
# their range. With more than one round, those runs last 6 s instead of 10 (--quick: 3 s), so
# three rounds keep the whole run near half an hour.
#
# Installs wrk with apt-get (Debian's package) when it is not on PATH, and moto from PyPI into
# target/bench-venv on first use; without wrk every run falls back to `hsmkms-load bench` and the
# report says so. Every server listens on 127.0.0.1 and is stopped when the script ends, however
# it ends. Every load run is bounded (`wrk -d`, `hsmkms-load bench --duration`).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--quick] [--rounds N (1 to 99)] [--baseline <commit>]" >&2; }
DURATION=10
TIMELINE=60
QUICK=0
BASELINE=""
ROUNDS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) DURATION=3; TIMELINE=10; QUICK=1; shift ;;
    --baseline)
      [ $# -ge 2 ] || { usage; exit 2; }
      BASELINE=$2; shift 2 ;;
    --rounds)
      { [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]?$ ]]; } || { usage; exit 2; }
      ROUNDS=$2; shift 2 ;;
    *) usage; exit 2 ;;
  esac
done
if [ -z "$ROUNDS" ]; then
  ROUNDS=3
  [ "$QUICK" = 1 ] && ROUNDS=1
fi
# The length of each run taken in rounds: 6 s rather than 10 when repeated, so that three
# rounds (78 wrk runs, 18 more with --baseline) take about 10 minutes rather than 15, and the
# whole run stays near half an hour.
ROUND_DURATION=$DURATION
if [ "$ROUNDS" -gt 1 ] && [ "$DURATION" -gt 6 ]; then
  ROUND_DURATION=6
fi
CONNECTIONS=(1 16 64)
REFERENCES=(parse inline actor)
MOTO_VERSION="5.2.5"

OUT=target/bench-compare
rm -rf "$OUT"
mkdir -p "$OUT/wrk"
RESULTS="$OUT/results.jsonl"
COMMANDS="$OUT/commands.txt"
NOTES="$OUT/notes.md"
: >"$RESULTS"
: >"$COMMANDS"
: >"$NOTES"

PIDS=()
BASE_SRC=target/baseline-src
BASE_WORKTREE=0
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
  if [ "$BASE_WORKTREE" = 1 ]; then
    git worktree remove --force "$BASE_SRC" 2>/dev/null || rm -rf "$BASE_SRC"
    git worktree prune 2>/dev/null || true
  fi
}
trap cleanup EXIT

note() { echo "== $*" >&2; }
# A line for the report's notes.
report_note() { echo "- $*" >>"$NOTES"; echo "note: $*" >&2; }
# Records a command in the report's list (once: rounds repeat the same commands), then runs it.
record() {
  grep -qxF -- "$*" "$COMMANDS" || echo "$*" >>"$COMMANDS"
  "$@"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 60 s for a line in a log file written by process $3.
wait_for_line() {
  local file=$1 line=$2 pid=$3
  for _ in $(seq 1 6000); do
    grep -qx "$line" "$file" 2>/dev/null && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the process writing $file exited" >&2
      cat "$file" >&2
      return 1
    fi
    sleep 0.01
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
# Passes one JSON line from stdin to stdout, or fails saying what came instead. With a round
# number above 0 as its argument, adds it to the line as "round" (the report pairs the two
# sides of a ratio by it); without one, or with 0, the line is passed as it came.
one_json_line() {
  python3 -c '
import json, sys
line = sys.stdin.read().strip().splitlines()
if not line:
    sys.exit("no result line")
run = json.loads(line[-1])
k = int(sys.argv[1]) if len(sys.argv) > 1 else 0
if k > 0:
    run["round"] = k
    print(json.dumps(run, separators=(",", ":")))
else:
    print(line[-1])' "$@"
}

note "building the release binaries"
record cargo build --release -p hsmkms -p hsmkms-load
BIN=target/release/hsmkms
LOAD=target/release/hsmkms-load

BASE_BIN=""
BASE_COMMIT=""
if [ -n "$BASELINE" ]; then
  BASE_COMMIT=$(git rev-parse --short "$BASELINE^{commit}")
  note "building the baseline, $BASE_COMMIT, in $BASE_SRC"
  git worktree remove --force "$BASE_SRC" 2>/dev/null || rm -rf "$BASE_SRC"
  git worktree prune
  record git worktree add --detach "$BASE_SRC" "$BASE_COMMIT"
  BASE_WORKTREE=1
  BASE_TARGET="$PWD/target/baseline-target"
  echo "(cd $BASE_SRC && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release -p hsmkms)" >>"$COMMANDS"
  (cd "$BASE_SRC" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release -p hsmkms)
  BASE_BIN=target/baseline-target/release/hsmkms
fi

# wrk from Debian when it is missing; without it, every run is `hsmkms-load bench`'s.
WRK=""
if ! command -v wrk >/dev/null 2>&1; then
  note "installing wrk with apt-get"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk) \
    >"$OUT/apt-wrk.log" 2>&1 || true
  echo "apt-get update && apt-get install -y wrk" >>"$COMMANDS"
fi
if command -v wrk >/dev/null 2>&1; then
  WRK=wrk
else
  report_note "**wrk could not be installed** (see \`$OUT/apt-wrk.log\`): there is no external load generator in this run, and every figure is \`hsmkms-load bench\`'s."
fi

note "installing moto $MOTO_VERSION into target/bench-venv"
MOTO=""
if [ ! -x target/bench-venv/bin/moto_server ]; then
  python3 -m venv target/bench-venv && target/bench-venv/bin/pip install -q "moto[server]==$MOTO_VERSION" \
    || echo "moto could not be installed; the comparison goes on without it" >&2
fi
[ -x target/bench-venv/bin/moto_server ] && MOTO=target/bench-venv/bin/moto_server
echo "python3 -m venv target/bench-venv && target/bench-venv/bin/pip install 'moto[server]==$MOTO_VERSION'" >>"$COMMANDS"
[ -n "$MOTO" ] || report_note "moto could not be installed from PyPI: no moto figures in this run."
[ "$QUICK" = 1 ] && report_note "A \`--quick\` run: ${DURATION}-second load runs, a ${TIMELINE}-second timeline, no criterion figures and no profile; the figures are rough."
if [ "$ROUNDS" -gt 1 ]; then
  report_note "The runs behind the ratios (wrk's, or \`hsmkms-load bench\`'s without wrk), CreateKey and before/after: ${ROUNDS} rounds of ${ROUND_DURATION}-second runs$([ "$ROUND_DURATION" = "$DURATION" ] || echo " (not ${DURATION} s: ${ROUNDS} rounds of ${DURATION} s would take the whole run past half an hour)"), each after a 1-second warm-up. The other runs (\`hsmkms-load bench\` beside wrk, moto, the timeline, 100,000 keys, busy cores) are single ${DURATION}-second runs."
fi

# Starts an emulator: binary data-dir port log; sets HSMKMS_PID and READY_SECONDS (from the
# spawn to its `Ready.` line).
start_emulator() {
  local bin=$1 data=$2 port=$3 log=$4
  echo "$bin --data-dir $data --port $port" >>"$COMMANDS"
  local t0=$EPOCHREALTIME
  "$bin" --data-dir "$data" --port "$port" >"$log" 2>&1 &
  HSMKMS_PID=$!
  PIDS+=("$HSMKMS_PID")
  wait_for_line "$log" "Ready." "$HSMKMS_PID"
  local t1=$EPOCHREALTIME
  READY_SECONDS=$(python3 -c "print(round($t1 - $t0, 3))")
}
start_hsmkms() { start_emulator "$BIN" "$@"; }
# Starts `hsmkms-load echo` with a reference handler: handler port; sets ECHO_PID.
start_echo() {
  echo "$LOAD echo --handler $1 --port $2 --workers 2" >>"$COMMANDS"
  "$LOAD" echo --handler "$1" --port "$2" --workers 2 >"$OUT/echo-$1.log" 2>&1 &
  ECHO_PID=$!
  PIDS+=("$ECHO_PID")
  wait_for_line "$OUT/echo-$1.log" "Ready." "$ECHO_PID"
}

# The round being measured (1 to ROUNDS), written into each result line; 0 outside the rounds.
ROUND=0
# A run of `hsmkms-load bench`: seconds label port trust-anchor extra-args...
load_for() {
  local seconds=$1 label=$2 port=$3 anchor=$4 in_round=""
  shift 4
  [ "$ROUND" = 0 ] || in_round=" (round $ROUND)"
  note "hsmkms-load: $label $*$in_round"
  record "$LOAD" bench --label "$label" --endpoint "http://127.0.0.1:$port" --duration "$seconds" \
    --trust-anchor "$anchor" --json "$@" | one_json_line "$ROUND" >>"$RESULTS"
}
# A single run of DURATION s.
load() { load_for "$DURATION" "$@"; }
# A wrk run of ROUND_DURATION s after a 1-second warm-up (an `hsmkms-load bench` run without
# wrk), in round ROUND: label port trust-anchor connections extra-args (as `hsmkms-load bench`
# takes them)...
RUN=0
# The wrk script of each run already set up (by label, port, connections and arguments): a
# later round reuses it rather than making another key on the same emulator.
declare -A SCRIPTS=()
wrk_load() {
  local label=$1 port=$2 anchor=$3 conns=$4
  shift 4
  if [ -z "$WRK" ]; then
    load_for "$ROUND_DURATION" "$label" "$port" "$anchor" --connections "$conns" "$@"
    return
  fi
  RUN=$((RUN + 1))
  local key="$label $port $conns $*" threads=2
  [ "$conns" -ge 2 ] || threads=1
  note "wrk, round $ROUND: $label $* --connections $conns"
  local script=${SCRIPTS[$key]:-}
  if [ -z "$script" ]; then
    script="$OUT/wrk/$RUN-$label.lua"
    record "$LOAD" wrk-script --label "$label" --endpoint "http://127.0.0.1:$port" \
      --trust-anchor "$anchor" --connections "$conns" --out "$script" "$@"
    SCRIPTS[$key]=$script
  fi
  wrk -t"$threads" -c"$conns" -d1s --timeout 10s -s "$script" "http://127.0.0.1:$port/" >/dev/null
  record wrk -t"$threads" -c"$conns" -d"${ROUND_DURATION}s" --timeout 10s -s "$script" \
    "http://127.0.0.1:$port/" >"$OUT/wrk/$RUN-$label.out"
  one_json_line "$ROUND" <"$OUT/wrk/$RUN-$label.out" >>"$RESULTS"
}
# Runs each argument (one run: wrk_load's arguments as words) in order in odd rounds and in
# reverse in even ones (A B, then B A): a drift of the machine's speed within a round then
# weighs on each side of a ratio alike over two rounds.
abba() {
  local runs=("$@") i
  if [ $((ROUND % 2)) = 1 ]; then
    for ((i = 0; i < ${#runs[@]}; i++)); do
      # shellcheck disable=SC2086 # the words of a run are wrk_load's arguments
      wrk_load ${runs[i]}
    done
  else
    for ((i = ${#runs[@]} - 1; i >= 0; i--)); do
      # shellcheck disable=SC2086
      wrk_load ${runs[i]}
    done
  fi
}

HSMKMS_PORT=$(free_port)
DATA="$OUT/data"
ANCHOR="$DATA/customerCA.crt"
note "starting hsmkms on $HSMKMS_PORT, the reference handlers${MOTO:+ and moto}"
start_hsmkms "$DATA" "$HSMKMS_PORT" "$OUT/hsmkms.log"
MAIN_PID=$HSMKMS_PID
declare -A REF_PORT REF_PID
for h in "${REFERENCES[@]}"; do
  REF_PORT[$h]=$(free_port)
  start_echo "$h" "${REF_PORT[$h]}"
  REF_PID[$h]=$ECHO_PID
done
MOTO_PORT=$(free_port)
if [ -n "$MOTO" ]; then
  echo "$MOTO -H 127.0.0.1 -p $MOTO_PORT" >>"$COMMANDS"
  "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$OUT/moto.log" 2>&1 &
  MOTO_PID=$!
  PIDS+=("$MOTO_PID")
  wait_for_http "$MOTO_PORT"
fi

# The runs behind the ratios, in rounds. In each, every run sits next to what it is compared
# with: at each connection count parse, inline, hsmkms with an AWS_KMS key (against inline),
# actor, hsmkms with a key store key (against actor); at 64 connections each hsmkms Encrypt is
# followed by the Decrypt and GenerateDataKey of the same key kind (compared with it), so the
# 64-connection Encrypt runs serve both comparisons, and the AWS_KMS key's by Sign, Verify and
# GenerateMac (each with an AWS_KMS key of its own: ECC_NIST_P256, HMAC_256; a key store holds
# none), three runs more a round; then 4 KiB, inline beside hsmkms. Even
# rounds run each group backwards. Then CreateKey in a key store, on a fresh emulator each
# round: a run at ~5,000 keys/s adds 35,000 keys in 1 + 6 s (55,000 in 1 + 10 s with one
# round), and a second run on the same emulator could meet KMS's quota of 100,000 keys. wrk
# sends the same body each time, which CreateKey allows (each makes a new key).
H="hsmkms $HSMKMS_PORT $ANCHOR"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  note "round $ROUND of $ROUNDS"
  for c in "${CONNECTIONS[@]}"; do
    group=("parse ${REF_PORT[parse]} $ANCHOR $c --op encrypt"
      "inline ${REF_PORT[inline]} $ANCHOR $c --op encrypt"
      "$H $c --op encrypt")
    if [ "$c" = 64 ]; then
      group+=("$H 64 --op decrypt" "$H 64 --op generate-data-key"
        "$H 64 --op sign" "$H 64 --op verify" "$H 64 --op generate-mac")
    fi
    group+=("actor ${REF_PORT[actor]} $ANCHOR $c --op encrypt" "$H $c --op encrypt --key-store")
    if [ "$c" = 64 ]; then
      group+=("$H 64 --op decrypt --key-store" "$H 64 --op generate-data-key --key-store")
    fi
    abba "${group[@]}"
  done
  # 4 KiB plaintexts (KMS's limit).
  abba "inline ${REF_PORT[inline]} $ANCHOR 64 --op encrypt --plaintext-bytes 4096" \
    "$H 64 --op encrypt --plaintext-bytes 4096" \
    "$H 64 --op encrypt --key-store --plaintext-bytes 4096"
  CK_PORT=$(free_port)
  start_hsmkms "$OUT/data-create-$ROUND" "$CK_PORT" "$OUT/hsmkms-create-$ROUND.log"
  wrk_load hsmkms "$CK_PORT" "$OUT/data-create-$ROUND/customerCA.crt" 64 --op create-key --key-store
  stop_pid "$HSMKMS_PID"
  rm -rf "$OUT/data-create-$ROUND"
done
ROUND=0

# The project's own tool beside wrk (every answer checked: for Sign a DER signature, for
# Verify a valid verdict, for GenerateMac the MAC made at set-up), and moto, which closes each
# connection after answering (wrk would count each close as an error; the tool reconnects).
if [ -n "$WRK" ]; then
  load parse "${REF_PORT[parse]}" "$ANCHOR" --op encrypt --connections 64
  load hsmkms "$HSMKMS_PORT" "$ANCHOR" --op encrypt --connections 64
  load hsmkms "$HSMKMS_PORT" "$ANCHOR" --op encrypt --key-store --connections 64
  for op in sign verify generate-mac; do
    load hsmkms "$HSMKMS_PORT" "$ANCHOR" --op "$op" --connections 64
  done
fi
if [ -n "$MOTO" ]; then
  for c in "${CONNECTIONS[@]}"; do
    load moto "$MOTO_PORT" "$ANCHOR" --op encrypt --connections "$c"
  done
  stop_pid "$MOTO_PID"
fi

# A periodic stall would show as seconds whose p99 stands far above the others'.
note "timeline: hsmkms Encrypt, AWS_KMS key, 64 connections, $TIMELINE s, p99 of each second"
record "$LOAD" bench --label hsmkms --endpoint "http://127.0.0.1:$HSMKMS_PORT" \
  --duration "$TIMELINE" --trust-anchor "$ANCHOR" --json --op encrypt --connections 64 \
  --timeline >>"$RESULTS"
stop_pid "$MAIN_PID"

# The parse handler at 1 connection with both cores kept out of idle by two lowest-priority spin
# loops (each ends by itself after the run): how much of a 1-connection figure is wake-up.
note "parse handler at 1 connection with the cores kept busy"
SPINNERS=()
for _ in 1 2; do
  timeout $((DURATION + 5)) nice -n 19 sh -c 'while :; do :; done' &
  SPINNERS+=($!)
  PIDS+=($!)
done
if [ -n "$WRK" ]; then
  "$LOAD" wrk-script --label parse --endpoint "http://127.0.0.1:${REF_PORT[parse]}" \
    --connections 1 --out "$OUT/wrk/busy.lua"
  wrk -t1 -c1 -d"${DURATION}s" -s "$OUT/wrk/busy.lua" "http://127.0.0.1:${REF_PORT[parse]}/" \
    | one_json_line >"$OUT/parse-busy.json"
else
  "$LOAD" bench --label parse --endpoint "http://127.0.0.1:${REF_PORT[parse]}" \
    --duration "$DURATION" --connections 1 --json >"$OUT/parse-busy.json"
fi
for pid in "${SPINNERS[@]}"; do stop_pid "$pid"; done
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"name":"parse-1-connection-busy-cores","value":r["requestsPerSecond"],"unit":"requests/s","note":"(parse handler, Encrypt at 1 connection, %s, both cores kept out of idle by nice -n 19 spin loops)" % r["loader"]}))' "$OUT/parse-busy.json" >>"$RESULTS"
for h in "${REFERENCES[@]}"; do stop_pid "${REF_PID[$h]}"; done

note "memory and start-up: a fresh emulator with 100,000 keys"
MEM_PORT=$(free_port)
start_hsmkms "$OUT/data-100k" "$MEM_PORT" "$OUT/hsmkms-100k.log"
FRESH_READY=$READY_SECONDS
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
# Restart: the state as every later start loads it, timed from the spawn to `Ready.`; then use
# a key under load.
stop_pid "$HSMKMS_PID"
start_hsmkms "$OUT/data-100k" "$MEM_PORT" "$OUT/hsmkms-100k-restart.log"
figure start-ready-100k-keys "$READY_SECONDS" s "(from the spawn of the process to its \`Ready.\` line, restarted on a data directory with ${KEY_COUNT} keys; ${FRESH_READY} s on an empty one)"
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
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"name":"create-key-100k-rate","value":r["requestsPerSecond"],"unit":"keys/s","note":"(AWS_KMS keys, 64 connections, hsmkms-load bench, %d keys)" % (r["requests"]+1)}))' "$OUT/create-100k.json" >>"$RESULTS"
stop_pid "$HSMKMS_PID"

if [ -n "$BASE_BIN" ]; then
  # Each round, both emulators start fresh (CreateKey's keys stay clear of the quota, as
  # above) and each operation loads one, then the other, right after; which goes first
  # alternates from one operation to the next and from one round to the next.
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    note "before ($BASE_COMMIT) and after, round $ROUND of $ROUNDS"
    BEFORE_PORT=$(free_port)
    AFTER_PORT=$(free_port)
    start_emulator "$BASE_BIN" "$OUT/data-before-$ROUND" "$BEFORE_PORT" \
      "$OUT/hsmkms-before-$ROUND.log"
    BEFORE_PID=$HSMKMS_PID
    start_hsmkms "$OUT/data-after-$ROUND" "$AFTER_PORT" "$OUT/hsmkms-after-$ROUND.log"
    AFTER_PID=$HSMKMS_PID
    i=0
    for args in "--op encrypt" "--op encrypt --key-store" "--op create-key --key-store"; do
      before="before $BEFORE_PORT $OUT/data-before-$ROUND/customerCA.crt 64 $args"
      after="after $AFTER_PORT $OUT/data-after-$ROUND/customerCA.crt 64 $args"
      # abba reverses in even rounds; the pair's own order alternates with the operation.
      if [ $((i % 2)) = 0 ]; then abba "$before" "$after"; else abba "$after" "$before"; fi
      i=$((i + 1))
    done
    stop_pid "$BEFORE_PID"
    stop_pid "$AFTER_PID"
    rm -rf "$OUT/data-before-$ROUND" "$OUT/data-after-$ROUND"
  done
  ROUND=0
fi

if [ "$QUICK" = 0 ]; then
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

  note "profile: where an Encrypt's time goes"
  if ! record benches/profile.sh --out "$OUT/profile" --results "$RESULTS" --duration "$DURATION"; then
    report_note "\`benches/profile.sh\` failed (see its output): the profile below may be missing or partial."
  fi
fi

note "writing BENCHMARKS.md"
REPORT_ARGS=(--results "$RESULTS" --commands "$COMMANDS" --notes "$NOTES" --out BENCHMARKS.md
  --chart benches/results/encrypt.svg --timeline-chart benches/results/timeline.svg
  --commit "$(git rev-parse --short HEAD)")
[ -f "$OUT/profile/summary.md" ] && REPORT_ARGS+=(--profile "$OUT/profile/summary.md")
[ -n "$BASE_COMMIT" ] && REPORT_ARGS+=(--baseline "$BASE_COMMIT")
record "$LOAD" report "${REPORT_ARGS[@]}"
