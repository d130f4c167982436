#!/usr/bin/env bash
# Runs the README's walkthroughs as written, against a fresh emulator this script starts and
# stops itself, so the README cannot drift from what hsmkms does.
#
# It takes the fenced blocks marked for checking:
#   ```sh walkthrough        every line, as is
#   ```console walkthrough   the `$ ` commands (with their `\` continuations); `hsm-cli > `
#                            lines after a command are its standard input; the other lines
#                            are its output, which must match what it prints (hsm-, cluster-
#                            ids and ports aside). `$ cargo run --release` is the emulator
#                            this script starts.
# and runs them, in README order, in one `bash` with `set -euo pipefail`, in a fresh directory
# (so `./hsmkms-data` is new, and `./target` links to this worktree's), bounded in time.
#
# Needs: a release build (`cargo build --release`), the AWS CLI (v1 or v2), jq, curl, python3.
# Not part of `cargo test` or CI: it needs the AWS CLI.
#
#   scripts/check-readme-walkthroughs.sh            # port 4599, or a free one if it is taken
#   HSMKMS_WALKTHROUGH_KEEP=1 scripts/check-...     # keep the work directory afterwards
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
exe="$repo/target/release/hsmkms"
# Seconds the walkthroughs may take together, and the emulator to print Ready.
limit="${HSMKMS_WALKTHROUGH_TIMEOUT:-600}"
ready_limit=90

for tool in aws jq curl python3 timeout; do
  command -v "$tool" >/dev/null || { echo "check-readme-walkthroughs: $tool is missing" >&2; exit 2; }
done
[ -x "$exe" ] || { echo "check-readme-walkthroughs: no $exe; run cargo build --release" >&2; exit 2; }

# The README's port, unless something else (another emulator) holds it.
port=$(python3 - <<'PY'
import socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
if free(4599):
    print(4599)
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
)

work=$(mktemp -d /tmp/hsmkms-walkthrough.XXXXXX)
ln -s "$repo/target" "$work/target"
emulator_pid=""
cleanup() {
  status=$?
  if [ -n "$emulator_pid" ] && kill -0 "$emulator_pid" 2>/dev/null; then
    kill -TERM "$emulator_pid"
    for _ in $(seq 100); do kill -0 "$emulator_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$emulator_pid" 2>/dev/null && kill -KILL "$emulator_pid"
    wait "$emulator_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ]; then
    echo "== FAILED (exit $status); the emulator's log ends:" >&2
    tail -n 30 "$work/hsmkms.log" >&2 || true
  fi
  if [ -n "${HSMKMS_WALKTHROUGH_KEEP:-}" ] || [ "$status" -ne 0 ]; then
    echo "== work directory kept: $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT

# The walkthroughs, as one script.
python3 - "$repo/README.md" "$port" > "$work/walkthroughs.sh" <<'PY'
import re, sys
readme, port = sys.argv[1], sys.argv[2]
lines = open(readme, encoding="utf-8").read().split("\n")
out = [
    "set -euo pipefail",
    "shopt -s expand_aliases",
    "PS4='+ '",
    # The trace goes to the first stderr, never into an output that is compared.
    "exec 9>&2",
    "BASH_XTRACEFD=9",
    # What differs from run to run: ids and ports.
    "normalise() { sed -E 's/hsm-[a-z0-9]{11}/hsm-ID/g; s/cluster-[a-z0-9]{11}/cluster-ID/g; s/127[.]0[.]0[.]1:[0-9]+/127.0.0.1:PORT/g'; }",
    "compare_output() {",
    "  { set +x; } 9>/dev/null",
    "  cat .actual",
    "  if ! diff -u <(normalise < .expected) <(normalise < .actual) >&2; then",
    "    echo 'this output differs from README.md (-: README.md, +: this run)' >&2; exit 1",
    "  fi",
    "  set -x",
    "}",
]
i, blocks = 0, 0
while i < len(lines):
    m = re.match(r"^```(sh|console) walkthrough\s*$", lines[i])
    i += 1
    if not m:
        continue
    kind, start = m.group(1), i
    body = []
    while not lines[i].startswith("```"):
        body.append(lines[i]); i += 1
    i += 1
    blocks += 1
    out.append(f"echo '== README.md line {start}: {kind} walkthrough block {blocks}'")
    out.append("set -x")
    if kind == "sh":
        out.extend(body)
    else:
        j = 0
        while j < len(body):
            line = body[j]; j += 1
            if not line.startswith("$ "):
                continue  # example output
            cmd = [line[2:]]
            while cmd[-1].endswith("\\") and j < len(body):
                cmd.append(body[j]); j += 1
            # Its `hsm-cli > ` lines, up to the next command, are its input; the other
            # lines are its output, which must match (ids and ports aside).
            stdin, expected = [], []
            while j < len(body) and not body[j].startswith("$ "):
                if body[j].startswith("hsm-cli > "):
                    stdin.append(body[j][len("hsm-cli > "):])
                else:
                    expected.append(body[j])
                j += 1
            if cmd == ["cargo run --release"]:
                continue  # the emulator this script started
            if stdin:
                cmd[-1] += " <<'HSM_CLI_INPUT'"
                cmd += stdin + ["HSM_CLI_INPUT"]
            while expected and not expected[-1].strip():
                expected.pop()
            if not expected:
                out.extend(cmd)
                continue
            out.append("cat > .expected <<'HSMKMS_EXPECTED'")
            out.extend(expected + ["HSMKMS_EXPECTED", "{"])
            out.extend(cmd)
            out.append("} > .actual 2>&1 || { cat .actual; exit 1; }")
            out.append("compare_output")
    out.append("{ set +x; } 9>/dev/null")
if blocks == 0:
    sys.exit("no ```sh walkthrough or ```console walkthrough block in README.md")
text = "\n".join(out) + "\necho '== every walkthrough ran'\n"
if port != "4599":
    text = text.replace("127.0.0.1:4599", f"127.0.0.1:{port}").replace("localhost:4599", f"localhost:{port}")
print(text)
PY

cd "$work"
echo "== starting $exe in $work on port $port"
"$exe" --data-dir ./hsmkms-data --port "$port" > hsmkms.out 2> hsmkms.log &
emulator_pid=$!
for _ in $(seq $((ready_limit * 5))); do
  grep -qx 'Ready.' hsmkms.out && break
  kill -0 "$emulator_pid" 2>/dev/null || { echo "hsmkms exited before Ready." >&2; exit 1; }
  sleep 0.2
done
grep -qx 'Ready.' hsmkms.out || { echo "hsmkms printed no Ready. within ${ready_limit}s" >&2; exit 1; }

# A developer's own AWS profile and config must not change what the walkthroughs do.
env -u AWS_PROFILE -u AWS_REGION -u AWS_ENDPOINT_URL \
  AWS_CONFIG_FILE="$work/no-aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/no-aws-credentials" \
  AWS_PAGER="" \
  timeout --kill-after=10 "$limit" bash walkthroughs.sh 2>&1
