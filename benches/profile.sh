#!/usr/bin/env bash
# Where an Encrypt's time goes. Profiles hsmkms (built with the `profiling` profile: release
# code with line tables) under `wrk` at 64 connections, for an AWS_KMS key and a key store key:
#   - perf (cpu-clock samples of every thread), summarised by what the code is (kernel network,
#     kernel scheduling, malloc/free, HTTP, JSON, crypto, TLS, the audit trail, ...) and by thread;
#   - allocations per request, counted with valgrind's DHAT: two runs of different lengths, so
#     start-up is not counted (the difference of the two totals over the difference of requests).
# Writes DIR/summary.md (a Markdown section the report includes) and the raw perf reports, and
# appends figure lines (`profile/<target>/<category>` in %, `allocations-per-request/<target>`) to
# the results file that `hsmkms-load report` reads.
#
#   benches/profile.sh [--out DIR] [--results FILE] [--duration SECONDS]
#
# Installs perf (linux-perf), valgrind and wrk with apt-get when missing. Every process listens on
# 127.0.0.1 and is stopped when the script ends; every load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench-profile
RESULTS=""
DURATION=5
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--results FILE] [--duration SECONDS]" >&2; exit 2 ;;
  esac
done
rm -rf "$OUT"
mkdir -p "$OUT"
[ -n "$RESULTS" ] || RESULTS="$OUT/figures.jsonl"

note() { echo "== $*" >&2; }
install_missing() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  note "installing $2"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null 2>&1 || true
  command -v "$1" >/dev/null 2>&1
}
install_missing wrk wrk || { echo "wrk is not available; no profile" >&2; exit 1; }
PERF=1
install_missing perf linux-perf || { echo "perf is not available; no perf profile" >&2; PERF=0; }
# perf in a container may need the kernel to allow it; a failed probe means no perf profile.
if [ "$PERF" = 1 ] && ! perf record -F 99 -o "$OUT/probe.data" -- true >/dev/null 2>&1; then
  echo "perf cannot record here; no perf profile" >&2
  PERF=0
fi
rm -f "$OUT/probe.data"
DHAT=1
install_missing valgrind valgrind || { echo "valgrind is not available; no allocation counts" >&2; DHAT=0; }

note "building hsmkms (profiling profile) and hsmkms-load"
cargo build --profile profiling -p hsmkms >&2
cargo build --release -p hsmkms-load >&2
BIN=target/profiling/hsmkms
LOAD=target/release/hsmkms-load

PID=""
stop() {
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}
trap stop EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # data-dir port log [wrapper...]
  local data=$1 port=$2 log=$3
  shift 3
  "$@" "$BIN" --data-dir "$data" --port "$port" >"$log" 2>&1 &
  PID=$!
  for _ in $(seq 1 1200); do
    grep -qx "Ready." "$log" 2>/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "hsmkms did not start; see $log" >&2
  return 1
}
# Prints the wrk script's path for a target: aws-kms or key-store.
script() { # target port data-dir
  local extra=()
  [ "$1" = key-store ] && extra=(--key-store)
  "$LOAD" wrk-script --label "hsmkms-$1" --endpoint "http://127.0.0.1:$2" \
    --trust-anchor "$3/customerCA.crt" --out "$OUT/$1.lua" --op encrypt "${extra[@]}" >&2
  echo "$OUT/$1.lua"
}

TARGETS=(aws-kms key-store)
if [ "$PERF" = 1 ]; then
  PORT=$(free_port)
  start "$OUT/data" "$PORT" "$OUT/hsmkms.log"
  for t in "${TARGETS[@]}"; do
    note "perf: Encrypt, $t key, 64 connections, $DURATION s"
    lua=$(script "$t" "$PORT" "$OUT/data")
    wrk -t1 -c64 -d1s -s "$lua" "http://127.0.0.1:$PORT" >/dev/null
    perf record -F 999 -p "$PID" -o "$OUT/$t.perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    PERF_PID=$!
    WRK_CONNECTIONS=64 wrk -t1 -c64 -d"${DURATION}s" -s "$lua" "http://127.0.0.1:$PORT" | tail -1 >"$OUT/$t.wrk.json"
    wait "$PERF_PID" || true
    perf report -i "$OUT/$t.perf.data" --no-children --sort comm,dso,symbol -g none --percent-limit 0 \
      --stdio 2>/dev/null >"$OUT/$t.perf.txt"
    rm -f "$OUT/$t.perf.data"
  done
  stop
fi

# DHAT counts every allocation of the process (the HSM threads included) until it exits.
SHORT=500
LONG=2500
if [ "$DHAT" = 1 ]; then
  for t in "${TARGETS[@]}"; do
    for n in $SHORT $LONG; do
      note "dhat: $n Encrypts, $t key"
      PORT=$(free_port)
      start "$OUT/dhat-data-$t-$n" "$PORT" "$OUT/dhat-$t-$n.log" \
        valgrind --tool=dhat --dhat-out-file="$OUT/dhat-$t-$n.json"
      extra=()
      [ "$t" = key-store ] && extra=(--key-store)
      "$LOAD" bench --endpoint "http://127.0.0.1:$PORT" --trust-anchor "$OUT/dhat-data-$t-$n/customerCA.crt" \
        --op encrypt "${extra[@]}" --connections 4 --warmup 0 --requests "$n" --duration 120 --json \
        >"$OUT/dhat-$t-$n.run.json"
      stop
    done
  done
fi

python3 - "$OUT" "$RESULTS" "$PERF" "$DHAT" "$SHORT" "$LONG" <<'EOF'
import json, os, re, sys

out, results, perf, dhat, short, long_ = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1", int(sys.argv[5]), int(sys.argv[6])
targets = ["aws-kms", "key-store"]
titles = {"aws-kms": "AWS_KMS key", "key-store": "key store key"}

# What a sample's symbol is, first match wins.
CATEGORIES = [
    ("kernel: network", lambda dso, s: dso.startswith("[kernel") and re.search(r"tcp|ip_|sock|skb|net_|napi|__dev_|loopback|inet|sk_|__sys_send|__sys_recv|sendto|recvfrom|softirq", s)),
    ("kernel: scheduling and wake-ups", lambda dso, s: dso.startswith("[kernel") and re.search(r"schedul|futex|switch|wake|_raw_spin|idle|epoll|ep_|irqentry|hrtimer|tick", s)),
    ("kernel: other", lambda dso, s: dso.startswith("[kernel") or dso == "[vdso]"),
    ("malloc and free", lambda dso, s: re.search(r"malloc|calloc|free|realloc|_int_|unlink_chunk|tcache|__rust_alloc|__rust_dealloc|__rdl_|alloc::alloc|no_alloc_shim", s)),
    ("memcpy, memset, memcmp", lambda dso, s: re.search(r"mem(move|cpy|set|cmp|chr)|bcmp|strlen", s)),
    ("audit trail", lambda dso, s: "kms_frontend::audit" in s),
    ("JSON (serde_json)", lambda dso, s: "serde_json" in s or "serde_core" in s or "serde::" in s),
    ("crypto (AES-GCM, base64)", lambda dso, s: re.search(r"aes|gcm|ghash|polyval|ctr|base64|hsmkms_common::aead|zeroize|rand::|rand_core|getrandom", s, re.I)),
    ("TLS (rustls)", lambda dso, s: "rustls" in s or "ring::" in s or dso.startswith("libcrypto")),
    ("HTTP (actix-http, actix-web, httparse)", lambda dso, s: re.search(r"actix_http|actix_web|actix_router|actix_server|httparse|http::|h1::|bytestring|actix_service|bytes::", s)),
    ("actors and async runtime (actix, tokio, futures)", lambda dso, s: re.search(r"actix|tokio|mio::|futures|parking_lot|std::sync|std::thread|LocalKey", s)),
    ("KMS frontend", lambda dso, s: "kms_frontend" in s),
    ("std: collections, formatting, strings, ids", lambda dso, s: re.search(r"hashbrown|btree|core::fmt|fmt::|core::str|itoa|uuid|hash_one|alloc::vec|alloc::string|core::iter|core::slice", s)),
    ("HSM node and cluster client", lambda dso, s: "hsm_node" in s or "hsmkms_common" in s or "postcard" in s),
]

def parse_perf(path):
    rows = []
    for line in open(path, errors="replace"):
        m = re.match(r"\s*([\d.]+)%\s+(\S.*?)\s{2,}(\S+)\s+\[(.)\]\s+(.*?)(\s+-\s+-)?\s*$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2).strip(), m.group(3), m.group(5).strip()))
    return rows

def classify(dso, sym):
    for name, test in CATEGORIES:
        if test(dso, sym):
            return name
    return "other"

figures = []
md = ["Profiles of `benches/profile.sh` (cpu-clock samples of every thread of hsmkms, "
      "`profiling` build, under `wrk -t1 -c64`, 32-byte Encrypt), by what the code is:\n"]
by_target = {}
threads = {}
for t in targets:
    path = os.path.join(out, f"{t}.perf.txt")
    if not perf or not os.path.exists(path):
        continue
    cats, th = {}, {}
    for pct, comm, dso, sym in parse_perf(path):
        c = classify(dso, sym)
        cats[c] = cats.get(c, 0.0) + pct
        name = re.sub(r"[0-9a-z]{10,}$", "*", comm)  # hsm-<cluster id> threads as one
        th[name] = th.get(name, 0.0) + pct
    by_target[t], threads[t] = cats, th
    for c, pct in cats.items():
        figures.append({"name": f"profile/{t}/{c}", "value": round(pct, 1), "unit": "%",
                        "note": f"(share of hsmkms's CPU samples, Encrypt with an {titles[t]})"})
if by_target:
    names = [n for n, _ in CATEGORIES] + ["other"]
    md.append("| what | " + " | ".join(titles[t] for t in by_target) + " |")
    md.append("|---|" + "---|" * len(by_target))
    for n in names:
        if any(by_target[t].get(n, 0) >= 0.05 for t in by_target):
            md.append(f"| {n} | " + " | ".join(f"{by_target[t].get(n, 0):.1f}%" for t in by_target) + " |")
    md.append("\nBy thread (`actix-rt|system` are the actix arbiters: the HTTP workers and the "
              "frontend's actors; `hsm-*` the in-process HSMs; `kms-audit` the audit writer):\n")
    md.append("| thread | " + " | ".join(titles[t] for t in by_target) + " |")
    md.append("|---|" + "---|" * len(by_target))
    for n in sorted({n for t in threads for n in threads[t]}, key=lambda n: -max(threads[t].get(n, 0) for t in threads)):
        if any(threads[t].get(n, 0) >= 0.5 for t in threads):
            md.append(f"| `{n.replace('|', chr(92) + '|')}` | " + " | ".join(f"{threads[t].get(n, 0):.1f}%" for t in threads) + " |")
    for t in by_target:
        top = sorted(parse_perf(os.path.join(out, f"{t}.perf.txt")), key=lambda r: -r[0])[:12]
        md.append(f"\nHottest symbols, {titles[t]}:\n")
        md.append("| self | thread | symbol |")
        md.append("|---|---|---|")
        for pct, comm, dso, sym in top:
            sym = sym.replace("|", "\\|")
            if len(sym) > 110:
                sym = sym[:107] + "..."
            comm = comm.replace("|", "\\|")
            md.append(f"| {pct:.1f}% | `{comm}` | `{sym}` |")
else:
    md.append("(no perf profile: perf was not available)")

if dhat:
    md.append("\nAllocations per request, counted by valgrind's DHAT over the whole process "
              f"(the HSM threads included): the difference between a run of {long_} and one of "
              f"{short} Encrypts, over {long_ - short}.\n")
    md.append("| target | allocations per request | bytes allocated per request |")
    md.append("|---|---|---|")
    for t in targets:
        totals = {}
        for n in (short, long_):
            path = os.path.join(out, f"dhat-{t}-{n}.json")
            if not os.path.exists(path):
                break
            d = json.load(open(path))
            run = json.load(open(os.path.join(out, f"dhat-{t}-{n}.run.json")))
            totals[n] = (sum(p["tbk"] for p in d["pps"]), sum(p["tb"] for p in d["pps"]), run["requests"] + run["errors"])
        if len(totals) != 2:
            continue
        (b1, y1, r1), (b2, y2, r2) = totals[short], totals[long_]
        blocks, nbytes = (b2 - b1) / (r2 - r1), (y2 - y1) / (r2 - r1)
        md.append(f"| Encrypt, {titles[t]} | {blocks:.0f} | {nbytes:.0f} |")
        figures.append({"name": f"allocations-per-request/encrypt-{t}", "value": round(blocks, 1),
                        "unit": "allocations", "note": f"({nbytes:.0f} bytes; DHAT, runs of {short} and {long_} Encrypts)"})

open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
with open(results, "a") as f:
    for fig in figures:
        f.write(json.dumps(fig) + "\n")
print("\n".join(md))
EOF
