#!/usr/bin/env bash
# ugro-watch figures without SSH, side by side with their targets:
#  1. 1 000 simulated nodes, latency spread evenly over 50–500 ms: steady-state cycle time
#     against the slowest node (target ≤ 1.2×) and the watcher's RSS (target ≤ 64 MB).
#  2. RSS over 10 000 cycles (fast mode: 50 nodes, no latency, 5 ms base interval): flat.
#  3. Idle fleet: probes per hour against fixed 5 s polling (target ≥ 90 % fewer) and job-start
#     notice time (target ≤ one base interval), from the real scheduler under fake time.
# Simulation: the command transport with one resident fake probe per node
# (crates/ugro-watch/tests/fixtures/fake-probe.sh: a bash loop that waits its latency with a
# builtin `read -t`, then answers one sample line), i.e. real child processes and pipes, not an
# in-process stand-in.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

echo "building release binaries…" >&2
cargo build --release -q -p ugro-watch
cargo build --release -q -p ugro-watch --example idle_sim
watch=$root/target/release/ugro-watch
fake=$root/crates/ugro-watch/tests/fixtures/fake-probe.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---- 1. 1 000 nodes, 50–500 ms ----
{
  echo "intervals: {base: 2s, max: 2s, spread: 0}"
  echo "timeout: 5s"
  echo "concurrency: 1000"
  echo "nodes:"
  for i in $(seq 0 999); do
    lat=$(awk -v i="$i" 'BEGIN { printf "%.3f", 0.05 + 0.45 * i / 999 }')
    echo "  - {name: sim-$(printf %04d "$i"), transport: {command: [$fake, '{node}', '$lat']}}"
  done
} > "$work/c1000.yaml"
"$watch" -c "$work/c1000.yaml" --cycles 12 --stats-every 2s > "$work/out1.jsonl" &
pid=$!
peak=0
while kill -0 "$pid" 2>/dev/null; do
  r=$(rss_of "$pid"); [ "${r:-0}" -gt "$peak" ] && peak=$r
  sleep 0.5
done
wait "$pid"
samples=$(jq -c 'select(.kind == "sample" and (.unreachable | not))' "$work/out1.jsonl" | wc -l)
unreach=$(jq -c 'select(.kind == "sample" and .unreachable)' "$work/out1.jsonl" | wc -l)
# Steady state: skip the first two stats periods (they include starting 1 000 children).
read -r cyc_mean cyc_max < <(jq -s -r '
  [ .[] | select(.kind == "stats" and .cycles > 0) ] | .[2:] |
  "\((map(.cycle_ms) | add / length | floor)) \(map(.cycle_ms_max) | max)"' "$work/out1.jsonl")
ratio=$(awk -v c="$cyc_max" 'BEGIN { printf "%.2f", c / 500 }')

# ---- 2. RSS over 10 000 cycles ----
{
  echo "intervals: {base: 5ms, max: 5ms, spread: 0}"
  echo "timeout: 2s"
  echo "state: {history: 60}"
  echo "nodes:"
  for i in $(seq 0 49); do
    echo "  - {name: fast-$(printf %02d "$i"), transport: {command: [$fake, '{node}', '0']}}"
  done
} > "$work/c50.yaml"
"$watch" -c "$work/c50.yaml" --cycles 10000 --stats-every 5s --state-dir "$work/state" \
  > "$work/out2.jsonl" &
pid=$!
rss=()
while kill -0 "$pid" 2>/dev/null; do
  r=$(rss_of "$pid"); [ "${r:-0}" -gt 0 ] && rss+=("$r")
  sleep 5
done
wait "$pid"
written2=$(jq -c 'select(.kind == "sample")' "$work/out2.jsonl" | wc -l)
cycles2=$(jq -s '[ .[] | select(.kind == "stats") | .cycles ] | add' "$work/out2.jsonl")
# Polls made (the stats records' probes), and samples the pipeline never saw because it fell
# behind and a newer sample of the same node replaced them in the backlog (counted, by design).
polls2=$(jq -s '[ .[] | select(.kind == "stats") | .probes ] | add' "$work/out2.jsonl")
superseded2=$(jq -s '[ .[] | select(.kind == "stats") | .pipeline_superseded ] | max' "$work/out2.jsonl")
first=${rss[1]:-${rss[0]:-0}}
last=${rss[-1]:-0}
growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%+.1f", (b - a) / 1024 }')

# ---- 3. idle ----
idle=$("$root/target/release/examples/idle_sim" 1000)

printf '\n%-52s %14s %14s\n' "ugro-watch, command transport (resident fake probes)" "measured" "target"
printf '%-52s %14s %14s\n' "1000 nodes: samples / unreachable over 12 cycles" "$samples / $unreach" "12000 / 0"
printf '%-52s %11s ms %14s\n' "1000 nodes: steady cycle time, mean" "$cyc_mean" ""
printf '%-52s %11s ms %11s ms\n' "1000 nodes: steady cycle time, worst" "$cyc_max" "≤ 600"
printf '%-52s %13s× %13s×\n' "  … over the slowest node (500 ms)" "$ratio" "≤ 1.2"
printf '%-52s %11s MB %11s MB\n' "1000 nodes: peak RSS" "$(awk -v k="$peak" 'BEGIN{printf "%.1f", k/1024}')" "≤ 64"
printf '%-52s %14s %14s\n' "fast mode: cycles / polls (50 nodes, 5 ms base)" "$cycles2 / $polls2" "10000 / –"
printf '%-52s %14s %14s\n' "fast mode: samples written / superseded in backlog" "$written2 / $superseded2" ""
printf '%-52s %14s %14s\n' "fast mode: RSS samples every 5 s (kB)" "${rss[*]:0:3} … ${rss[-1]:-}" ""
printf '%-52s %11s MB %14s\n' "fast mode: RSS growth after the first 5 s" "$growth" "flat"
echo
echo "$idle"
