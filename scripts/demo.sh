#!/usr/bin/env bash
# Builds ugro and runs the whole pipeline on this machine with no configuration: no GPU, no SSH,
# no root. The GPU part of a real node is shown by replaying readings recorded on an H200.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "== building (release)" >&2
cargo build --release --locked --workspace --bins >&2
bin=$root/target/release
export PATH=$bin:$PATH
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
pretty() { if command -v jq >/dev/null; then jq -c "$@"; else cat; fi; }

echo
echo "== 1. this machine: ugro-probe | ugro-score --format table"
echo "   (no NVIDIA driver here: the GPU section is absent with the loader's reason, so the"
echo "    score is 'unknown', never 'healthy' by default)"
ugro-probe --cpu-window 50ms | ugro-score --format table

echo
echo "== 2. this machine, the cron pipeline: probe | score | breaker | alert"
ugro-probe --cpu-window 50ms \
  | ugro-score \
  | ugro-breaker --state "$state/breaker.json" \
  | ugro-alert --state "$state/alert.json" \
  | pretty '{status, alert: .labels.alertname, severity: .labels.severity, summary: .annotations.summary}'

echo
echo "== 3. replayed H200 readings (crates/ugro-probe/fixtures): state and action per fixture"
for f in h200x8-idle h200x8-busy fault-hw-slowdown fault-pcie-x8 fault-remap-pending \
         fault-ecc-uncorrected fault-remap-failure fault-xid79-gpu-lost fault-7-of-8; do
  extra=()
  [ "$f" = fault-7-of-8 ] && extra=(--expect-gpus 8)
  ugro-probe --node "$f" --cpu-window 0 --gpu-fixture "crates/ugro-probe/fixtures/$f.json" "${extra[@]}" \
    | ugro-score --format nagios | cut -c1-150 || true
done

echo
echo "== 4. three cron runs of a node whose GPU fell off the bus: alerts once, then the breaker opens"
for run in 1 2 3; do
  echo "-- run $run"
  ugro-probe --node gpu-07 --cpu-window 0 --gpu-fixture crates/ugro-probe/fixtures/fault-xid79-gpu-lost.json \
    | ugro-score \
    | ugro-breaker --state "$state/b2.json" \
    | ugro-alert --state "$state/a2.json" \
    | pretty '{status, alert: .labels.alertname, gpu: .labels.gpu, action: .annotations.action}'
done
ugro-breaker status --state "$state/b2.json"

echo
echo "== 5. ugro-watch --local: three polls of this machine through a resident probe, scored in-process"
ugro-watch --local --cycles 3 --interval 1s --format json --stats-every 0 \
  | pretty 'select(.kind == "sample") | {ts, node, gpu: .gpu.status, cpu_pct: .host.cpu_pct, load: .host.load}'
echo
echo "done. Man pages: man -l man/ugro.7 (the record schema), man -l man/ugro-score.1, ..."
