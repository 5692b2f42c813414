#!/usr/bin/env bash
# ugro-watch --pipeline with a webhook receiver that accepts connections and never answers,
# side by side with the same run using the stdout receiver: polls on time.
#
# 10 nodes polled every 2 s for SECS (90) seconds: 8 healthy ones (resident fake probes, 50 ms
# latency, busy GPU so they stay at the base interval) and 2 whose probe exits at every poll, so
# that alerts fire (NodeUnreachable). Each healthy fake probe appends the time of every request
# it receives to its own log: the node's record of when it was polled, independent of what the
# watcher did with the answer. A poll is on time when it comes within the interval + 10 % of
# the previous one; the target is every poll due in the window on time (issue 9 measured 56 of
# 360 with the hung receiver before the pipeline got its own thread).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${SECS:-90}
interval=2

echo "building release binaries…" >&2
cargo build --release -q -p ugro-watch
watch=$root/target/release/ugro-watch
fake=$root/crates/ugro-watch/tests/fixtures/fake-probe.sh
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The receiver: accepts every connection and never reads or answers.
python3 - "$work/port" <<'PY' &
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(1024)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
held = []
while True:
    c, _ = s.accept()
    held.append(c)
PY
pids+=($!)
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

# run NAME RECEIVER: one watcher run; prints "on_time due worst_gap_s alerts spooled".
run() {
  local name=$1 receiver=$2 d=$work/$1
  mkdir -p "$d/logs"
  {
    echo "intervals: {base: ${interval}s, max: ${interval}s, spread: 0.5}"
    echo "timeout: 5s"
    echo "nodes:"
    for i in $(seq 0 7); do
      echo "  - {name: ok-$i, transport: {command: [$fake, '{node}', '0.05', ok, '80', $d/logs/ok-$i.log]}}"
    done
    for i in 0 1; do
      echo "  - {name: bad-$i, transport: {command: [$fake, '{node}', '0', exit]}}"
    done
  } > "$d/cluster.yaml"
  {
    echo "route: {receiver: $receiver, group_wait: 5s, group_interval: 30s}"
    if [ "$receiver" = hook ]; then
      echo "receivers:"
      echo "  - name: hook"
      echo "    webhook: {url: 'http://127.0.0.1:$port/hook'}"
    fi
  } > "$d/alert.yaml"
  local t0
  t0=$(date +%s.%N)
  "$watch" -c "$d/cluster.yaml" --pipeline --alert-config "$d/alert.yaml" \
    --state-dir "$d/state" --stats-every 10s > "$d/out.jsonl" 2> "$d/err.log" &
  local pid=$!
  sleep "$secs"
  kill -TERM "$pid"
  # A delivery in progress can hold the exit up to its timeout; the window is already over.
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local alerts spooled
  alerts=$(jq -c 'select(.kind == "alert")' "$d/out.jsonl" | wc -l)
  spooled=$(jq -r '.spooled // 0' "$d/state/stats.json" 2>/dev/null || echo "?")
  for f in "$d"/logs/ok-*.log; do
    awk -v t0="$t0" -v secs="$secs" -v iv="$interval" '
      $1 >= t0 && $1 < t0 + secs {
        if (n == 0) { first = $1; on = 1 }
        else { g = $1 - prev; if (g <= iv * 1.1) on++; if (g > worst) worst = g }
        prev = $1; n++
      }
      END {
        due = 1 + int((t0 + secs - first) / iv)
        if (on > due) on = due
        if (n == 0) { due = int(secs / iv); on = 0 }
        # The time since the last poll counts as a gap too (a node starved at the end).
        tail = t0 + secs - prev; if (n > 0 && tail > worst) worst = tail
        printf "%d %d %.2f\n", on, due, worst
      }' "$f"
  done | awk -v a="$alerts" -v s="$spooled" '
    { on += $1; due += $2; if ($3 > w) w = $3 }
    END { printf "%d %d %.2f %s %s\n", on, due, w, a, s }'
}

read -r hon hdue hworst halerts hspooled < <(run hung hook)
read -r son sdue sworst salerts sspooled < <(run stdout stdout)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", b ? 100 * a / b : 0 }'; }

printf '\nugro-watch --pipeline, 8 healthy + 2 failing nodes every %ss for %ss\n' "$interval" "$secs"
printf '%-44s %18s %18s %10s\n' "" "webhook, hung" "stdout receiver" "target"
printf '%-44s %18s %18s %10s\n' "healthy polls on time / due" "$hon / $hdue" "$son / $sdue" ""
printf '%-44s %18s %18s %10s\n' "  share on time" "$(pct "$hon" "$hdue")" "$(pct "$son" "$sdue")" "100%"
printf '%-44s %16s s %16s s %10s\n' "worst gap between two polls of a node" "$hworst" "$sworst" "≤ 2.2 s"
printf '%-44s %18s %18s %10s\n' "alert records on stdout" "$halerts" "$salerts" ""
printf '%-44s %18s %18s %10s\n' "notifications spooled (stats.json)" "$hspooled" "$sspooled" ""
printf '%-44s %18s %18s %10s\n' "baseline before issue 9 (hung receiver)" "56 / 360" "" ""
