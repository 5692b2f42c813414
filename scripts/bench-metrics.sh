#!/usr/bin/env bash
# Benchmark ugro-score --format prometheus: N realistic 8-GPU sample lines over NODES nodes
# (defaults 20 000 and 1 000) through the release binary, side by side in one run with the same
# input in JSON mode (the baseline: scoring alone). Prometheus mode also decodes each scored
# line into the owned record for the node table, and rewrites the exposition of every node at
# most once a second and at end of input (--output to a file in a temporary directory). Prints
# lines/s for both, and the size of the exposition of NODES nodes x 8 GPUs (bytes, series,
# families), which is also what one scrape of ugro-watch's endpoint will carry for that fleet
# (gen_samples writes the fields the score reads; a full probe line, with names, bus ids and
# processes, adds the ugro_gpu_info labels and a few families).
#
#   scripts/bench-metrics.sh
#   N=50000 NODES=2000 scripts/bench-metrics.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
N=${N:-20000}
NODES=${NODES:-1000}
target=${CARGO_TARGET_DIR:-$root/target}

echo "building release ugro-score and the sample generator..." >&2
cargo build --release -q -p ugro-score --bin ugro-score --example gen_samples

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$target/release/examples/gen_samples" "$N" "$NODES" >"$tmp/in.jsonl"
# One sample per node: the cost of filling the table once and rendering it once.
"$target/release/examples/gen_samples" "$NODES" "$NODES" >"$tmp/one.jsonl"
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)

# Runs a command; prints wall seconds and, with /usr/bin/time, CPU seconds (user + system):
# on a shared machine the CPU figure is the stable one.
have_time=false
[ -x /usr/bin/time ] && have_time=true
measure() {
  local s e cpu=""
  s=$(date +%s.%N)
  if $have_time; then
    /usr/bin/time -f "%U %S" -o "$tmp/cpu" "$@" >/dev/null
    cpu=$(awk '{print $1 + $2}' "$tmp/cpu")
  else
    "$@" >/dev/null
  fi
  e=$(date +%s.%N)
  echo "$(echo "$e - $s" | bc -l) ${cpu:-0}"
}
row() {
  local wall cpu
  read -r wall cpu <<<"$2"
  printf '%-46s %8.3f %10.0f %8.3f %10.0f\n' "$1" "$wall" "$(echo "$3 / $wall" | bc -l)" "$cpu" \
    "$(echo "if ($cpu > 0) $3 / $cpu else 0" | bc -l)"
}

echo "### scripts/bench-metrics.sh  ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo "input: $N lines over $NODES nodes, 8 GPUs each; load: $(cut -d' ' -f1-3 /proc/loadavg)"
score=("${pin[@]}" "$target/release/ugro-score")
json=$(measure "${score[@]}" "$tmp/in.jsonl")
prom=$(measure "${score[@]}" --format prometheus --output "$tmp/out.prom" "$tmp/in.jsonl")
dcgm=$(measure "${score[@]}" --format prometheus --metric-names dcgm --output "$tmp/dcgm.prom" "$tmp/in.jsonl")
one=$(measure "${score[@]}" --format prometheus --output "$tmp/one.prom" "$tmp/one.jsonl")
printf '%-46s %8s %10s %8s %10s\n' "run" "wall s" "lines/s" "CPU s" "lines/CPU-s"
row "ugro-score (JSON, baseline)" "$json" "$N"
row "ugro-score --format prometheus --output" "$prom" "$N"
row "  ... --metric-names dcgm" "$dcgm" "$N"
row "one sample per node, one render" "$one" "$NODES"
for f in out dcgm; do
  printf '%s.prom: %d bytes, %d series, %d families\n' "$f" "$(stat -c %s "$tmp/$f.prom")" \
    "$(grep -vc '^#' "$tmp/$f.prom")" "$(grep -c '^# TYPE' "$tmp/$f.prom")"
done
