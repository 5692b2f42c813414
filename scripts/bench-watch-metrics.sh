#!/usr/bin/env bash
# ugro-watch --listen at fleet size, side by side in one run: 1 000 simulated nodes x 8 GPUs
# polled every 2 s, once without scrapes (the baseline) and once while a scraper fetches
# /metrics back to back (gzip, as Prometheus asks; every fifth scrape plain text).
# Prints scrape latency (p50, p99, max) and size (gzip and plain), the endpoint's own render
# time, the watcher's RSS, and poll lateness in both runs: each node logs when every request
# reaches it, so a late poll is a gap between two requests of more than the interval + 10 %
# (the target: none), whatever the watcher did with the answers.
# Nodes: the command transport with one resident bash process per node answering a real
# 8-GPU ugro-probe line (h200x8-busy fixture, 9 KB) with its name and time filled in.
#
#   scripts/bench-watch-metrics.sh
#   NODES=500 SECONDS_PER_RUN=30 scripts/bench-watch-metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
NODES=${NODES:-1000}
RUN_S=${SECONDS_PER_RUN:-40}
INTERVAL=2
target=${CARGO_TARGET_DIR:-$root/target}

echo "building release ugro-watch and ugro-probe…" >&2
cargo build --release -q -p ugro-watch -p ugro-probe
watch=$target/release/ugro-watch
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# One real 8-GPU sample, as a template: the node name and the time are filled in per answer.
"$target/release/ugro-probe" --node tplnode --no-xid --cpu-window 0 \
  --gpu-fixture "$root/crates/ugro-probe/fixtures/h200x8-busy.json" |
  sed -E 's/"ts":"[^"]*"/"ts":"@TS@"/' > "$work/template.json"
cat > "$work/node.sh" <<'EOF'
#!/bin/bash
# NODE TEMPLATE LOG: one sample per line read; builtins only, so 1 000 of these stay cheap.
node=$1 log=$3
IFS= read -r tpl < "$2"
tpl=${tpl//tplnode/$node}
export TZ=UTC
while IFS= read -r _; do
  printf '%s\n' "$EPOCHREALTIME" >> "$log"
  printf -v ts '%(%Y-%m-%dT%H:%M:%S)T' -1
  frac=${EPOCHREALTIME#*.}
  printf '%s\n' "${tpl//@TS@/$ts.${frac:0:3}Z}"
done
EOF
chmod +x "$work/node.sh"

cluster() { # $1: log directory
  echo "intervals: {base: ${INTERVAL}s, max: ${INTERVAL}s, spread: 0}"
  echo "timeout: 5s"
  echo "concurrency: $NODES"
  echo "nodes:"
  for i in $(seq 0 $((NODES - 1))); do
    n=sim-$(printf %04d "$i")
    echo "  - {name: $n, transport: {command: [$work/node.sh, '{node}', $work/template.json, $1/$n]}}"
  done
}

rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Gaps between consecutive requests at each node, after each node's first 3 (start-up):
# "late polls, polls, worst gap".
lateness() {
  for f in "$1"/*; do
    awk 'NR > 3 && prev { print $1 - prev } { prev = $1 }' "$f"
  done | awk -v lim="$(echo "$INTERVAL * 1.1" | bc -l)" \
    '{ n++; if ($1 > lim) late++; if ($1 > w) w = $1 }
     END { printf "%d %d %.3f\n", late, n, w }'
}

# $1: name, $2: scrape (true/false). Leaves $work/$1.{late,rss,scrapes}.
run() {
  local logs=$work/$1-logs port cycles=$((RUN_S / INTERVAL))
  mkdir -p "$logs"
  cluster "$logs" > "$work/$1.yaml"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$watch" -c "$work/$1.yaml" --cycles "$cycles" --stats-every 1h --listen "127.0.0.1:$port" \
    > /dev/null 2> "$work/$1.err" &
  local pid=$! peak=0 i=0 up=false
  : > "$work/$1.scrapes"
  while kill -0 "$pid" 2>/dev/null; do
    if $2; then
      i=$((i + 1))
      local enc=(--compressed -H 'Accept-Encoding: gzip')
      [ $((i % 5)) = 0 ] && enc=()
      # time_total, bytes on the wire, status; then the body's size as text (curl decodes
      # gzip into the file), and 3 for a gzip scrape, 0 for a plain one.
      local got
      got=$(curl -s "${enc[@]}" -o "$work/body" --max-time 30 \
        -w '%{time_total} %{size_download} %{http_code}' "http://127.0.0.1:$port/metrics" \
        2>/dev/null || true)
      # Scrapes refused before the endpoint listens or after the run ended are not failures.
      [ "${got##* }" = 200 ] && up=true
      if $up && { [ "${got##* }" = 200 ] || kill -0 "$pid" 2>/dev/null; }; then
        echo "$got $(stat -c %s "$work/body" 2>/dev/null || echo 0) ${#enc[@]}" >> "$work/$1.scrapes"
      fi
      [ "${got##* }" = 200 ] && cp "$work/body" "$work/last-body"
    else
      sleep 0.5
    fi
    r=$(rss_of "$pid"); [ "${r:-0}" -gt "$peak" ] && peak=$r
  done
  wait "$pid"
  echo "$peak" > "$work/$1.rss"
  lateness "$logs" > "$work/$1.late"
}

echo "### scripts/bench-watch-metrics.sh  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "$NODES nodes x 8 GPUs every ${INTERVAL}s for ${RUN_S}s per run; load: $(cut -d' ' -f1-3 /proc/loadavg)"
run quiet false
run scraped true

# Scrapes that answered 200: latency percentiles; sizes of the gzip and the plain ones.
read -r nscr p50 p99 pmax < <(awk '$3 == 200 { print $1 }' "$work/scraped.scrapes" | sort -n |
  awk '{ a[NR] = $1 } END { if (!NR) { print 0, 0, 0, 0; exit }
    printf "%d %.3f %.3f %.3f\n", NR, a[int((NR + 1) / 2)], a[int(NR * 0.99 + 0.999)], a[NR] }')
failed=$(awk '$3 != 200' "$work/scraped.scrapes" | wc -l)
gz=$(awk '$3 == 200 && $5 == 3 { print $2 }' "$work/scraped.scrapes" | tail -1)
plain=$(awk '$3 == 200 && $5 == 0 { print $2 }' "$work/scraped.scrapes" | tail -1)
series=$(grep -vc '^#' "$work/last-body" || true)
render=$(awk '/^ugro_watch_metrics_render_duration_seconds/ { print $2 }' "$work/last-body")
read -r late_q n_q worst_q < "$work/quiet.late"
read -r late_s n_s worst_s < "$work/scraped.late"

printf '\n%-46s %16s %16s %12s\n' "ugro-watch --listen" "no scrapes" "scraped" "target"
printf '%-46s %16s %16s %12s\n' "polls late (gap > interval + 10 %) / polls" \
  "${late_q:-?} / ${n_q}" "${late_s:-?} / ${n_s}" "0"
printf '%-46s %14s s %14s s %10s s\n' "worst gap between two polls of a node" "$worst_q" "$worst_s" \
  "≤ $(echo "$INTERVAL * 1.1" | bc -l | sed 's/0*$//')"
printf '%-46s %13.1f MB %13.1f MB %12s\n' "peak RSS" "$(echo "$(cat "$work/quiet.rss") / 1024" | bc -l)" \
  "$(echo "$(cat "$work/scraped.rss") / 1024" | bc -l)" ""
printf '%-46s %16s %16s\n' "scrapes answered / failed" "–" "$nscr / $failed"
printf '%-46s %16s %16s\n' "scrape latency p50 / p99 / max (s)" "–" "$p50 / $p99 / $pmax"
printf '%-46s %16s %16s\n' "body, gzip on the wire (bytes)" "–" "${gz:-?}"
printf '%-46s %16s %16s\n' "body, plain text (bytes)" "–" "${plain:-?}"
printf '%-46s %16s %16s\n' "series in the body" "–" "$series"
printf '%-46s %16s %16s\n' "render time, last (ugro_watch_metrics_render_…)" "–" "${render:-?} s"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
